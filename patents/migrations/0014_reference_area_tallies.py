from collections import Counter

from django.db import migrations, models


def reference_area_tallies_fill(apps, schema_editor):
    """The areas of the references imported before the table (what the imports keep from
    now on), counted as patents.selectors.reference_areas_counted counts them."""
    from patents.text import cpc_subclasses

    Patent = apps.get_model("patents", "Patent")
    ReferenceAreaTally = apps.get_model("patents", "ReferenceAreaTally")
    counts = Counter()
    rows = (
        Patent.objects.filter(origin="reference", status="published")
        .exclude(cpc_codes="")
        .values_list("cpc_codes", flat=True)
    )
    for codes in rows.iterator(chunk_size=5000):
        counts.update(cpc_subclasses(codes))
    ReferenceAreaTally.objects.bulk_create(
        ReferenceAreaTally(cpc=cpc, count=n) for cpc, n in sorted(counts.items())
    )


class Migration(migrations.Migration):
    dependencies = [("patents", "0013_patent_tallies")]

    operations = [
        migrations.CreateModel(
            name="ReferenceAreaTally",
            fields=[
                ("cpc", models.CharField(max_length=4, primary_key=True, serialize=False)),
                ("count", models.BigIntegerField(default=0)),
            ],
            options={"ordering": ["cpc"]},
        ),
        migrations.RunPython(reference_area_tallies_fill, migrations.RunPython.noop),
    ]
