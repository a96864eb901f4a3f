from django.db import migrations, models
from django.db.models import Count


def patent_tallies_fill(apps, schema_editor):
    """The tallies of the patents published before the table (what the writes keep from now
    on), counted as patents.selectors.patent_tallies_counted counts them."""
    Patent = apps.get_model("patents", "Patent")
    PatentTally = apps.get_model("patents", "PatentTally")
    rows = (
        Patent.objects.filter(status="published")
        .values("origin", "generator_model", "mode")
        .annotate(count=Count("id"))
        .order_by()
    )
    PatentTally.objects.bulk_create(PatentTally(**r) for r in rows)


class Migration(migrations.Migration):
    dependencies = [("patents", "0012_ledger_days")]

    operations = [
        migrations.CreateModel(
            name="PatentTally",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "origin",
                    models.CharField(
                        choices=[("generated", "Generated"), ("reference", "Reference")],
                        max_length=16,
                    ),
                ),
                ("generator_model", models.CharField(blank=True, max_length=300)),
                ("mode", models.CharField(blank=True, max_length=16)),
                ("count", models.BigIntegerField(default=0)),
            ],
            options={
                "ordering": ["origin", "generator_model", "mode"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("origin", "generator_model", "mode"), name="patent_tally_key"
                    )
                ],
            },
        ),
        migrations.RunPython(patent_tallies_fill, migrations.RunPython.noop),
    ]
