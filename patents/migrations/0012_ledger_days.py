import datetime as dt

from django.db import migrations, models
from django.db.models import CharField, Count, Max, Min
from django.db.models.functions import Substr, TruncDate


def ledger_days_fill(apps, schema_editor):
    """The days of the entries recorded before the table (what ledger_append keeps from now
    on), grouped as patents.ledger groups them: by the UTC day of recorded_at."""
    LedgerEntry = apps.get_model("patents", "LedgerEntry")
    LedgerDay = apps.get_model("patents", "LedgerDay")
    if schema_editor.connection.vendor == "sqlite":
        day = Substr("recorded_at", 1, 10, output_field=CharField())
    else:
        day = TruncDate("recorded_at", tzinfo=dt.UTC)
    rows = (
        LedgerEntry.objects.annotate(day=day)
        .values("day")
        .annotate(count=Count("id"), first_id=Min("id"), last_id=Max("id"))
        .order_by("day")
    )
    LedgerDay.objects.bulk_create(
        LedgerDay(
            day=dt.date.fromisoformat(r["day"]) if isinstance(r["day"], str) else r["day"],
            count=r["count"],
            first_id=r["first_id"],
            last_id=r["last_id"],
        )
        for r in rows
    )


class Migration(migrations.Migration):
    dependencies = [("patents", "0011_generator_model_public_names")]

    operations = [
        migrations.CreateModel(
            name="LedgerDay",
            fields=[
                ("day", models.DateField(primary_key=True, serialize=False)),
                ("count", models.PositiveIntegerField()),
                ("first_id", models.BigIntegerField()),
                ("last_id", models.BigIntegerField()),
            ],
            options={"ordering": ["day"]},
        ),
        migrations.RunPython(ledger_days_fill, migrations.RunPython.noop),
    ]
