from django.db import migrations, models
from django.db.models import Count, Q


def contributor_counts_fill(apps, schema_editor):
    """Jobs that ran before the field: their contributors' samples and published inventions,
    from their samples (what job_counters_refresh keeps from now on)."""
    GenerationJob = apps.get_model("generation", "GenerationJob")
    Sample = apps.get_model("generation", "Sample")
    counts: dict = {}
    rows = (
        Sample.objects.exclude(contributor_id=None)
        .values("job_id", "contributor_id")
        .annotate(samples=Count("id"), published=Count("id", filter=Q(verdict="published")))
        .order_by()
    )
    for row in rows.iterator():
        counts.setdefault(row["job_id"], {})[str(row["contributor_id"])] = {
            "samples": row["samples"],
            "published": row["published"],
        }
    for job_id, credits in counts.items():
        GenerationJob.objects.filter(pk=job_id).update(contributor_counts=credits)


class Migration(migrations.Migration):
    dependencies = [("generation", "0017_job_mode_counts")]

    operations = [
        migrations.AddField(
            model_name="generationjob",
            name="contributor_counts",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RunPython(contributor_counts_fill, migrations.RunPython.noop),
    ]
