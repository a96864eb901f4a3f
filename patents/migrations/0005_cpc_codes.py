from django.db import migrations, models


def cpc_codes_fill(apps, schema_editor):
    # Imports before this field kept the CPC codes in source_meta only.
    from patents.text import cpc_codes_text

    Patent = apps.get_model("patents", "Patent")
    batch = []
    for patent in Patent.objects.filter(origin="reference").only("id", "source_meta").iterator():
        text = cpc_codes_text((patent.source_meta or {}).get("cpc"))
        if text:
            patent.cpc_codes = text
            batch.append(patent)
        if len(batch) >= 1000:
            Patent.objects.bulk_update(batch, ["cpc_codes"])
            batch = []
    if batch:
        Patent.objects.bulk_update(batch, ["cpc_codes"])


class Migration(migrations.Migration):
    dependencies = [
        ("patents", "0004_ledger_timestamp"),
    ]

    operations = [
        migrations.AddField(
            model_name="patent",
            name="cpc_codes",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.RunPython(cpc_codes_fill, migrations.RunPython.noop),
    ]
