from django.db import migrations, models
from django.db.models import Count, Q


def mode_counts_fill(apps, schema_editor):
    """Jobs that ran before the field: their counts per mode, from their samples (what
    job_counters_refresh keeps from now on)."""
    GenerationJob = apps.get_model("generation", "GenerationJob")
    Sample = apps.get_model("generation", "Sample")
    counts: dict = {}
    rows = (
        Sample.objects.values("job_id", "mode")
        .annotate(generated=Count("id"), published=Count("id", filter=Q(verdict="published")))
        .order_by()
    )
    for row in rows.iterator():
        counts.setdefault(row["job_id"], {})[row["mode"]] = {
            "generated": row["generated"],
            "published": row["published"],
        }
    for job_id, modes in counts.items():
        GenerationJob.objects.filter(pk=job_id).update(mode_counts=modes)


class Migration(migrations.Migration):
    dependencies = [("generation", "0016_job_aim")]

    operations = [
        migrations.AddField(
            model_name="generationjob",
            name="mode_counts",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RunPython(mode_counts_fill, migrations.RunPython.noop),
    ]
