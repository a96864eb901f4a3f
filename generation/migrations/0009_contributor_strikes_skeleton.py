from django.db import migrations, models


def skeletons_fill(apps, schema_editor):
    """Existing names get their skeleton; a second name with the same one (made before
    skeletons were checked) keeps its own, marked with its id."""
    from generation.names import name_skeleton

    Contributor = apps.get_model("generation", "Contributor")
    seen = set()
    for row in Contributor.objects.order_by("pk"):
        skeleton = name_skeleton(row.name) or f"#{row.pk}"
        if skeleton in seen:
            skeleton = f"{skeleton}#{row.pk}"
        seen.add(skeleton)
        Contributor.objects.filter(pk=row.pk).update(name_skeleton=skeleton)


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0008_alter_generationjob_attempts"),
    ]

    operations = [
        migrations.AddField(
            model_name="contributor",
            name="name_skeleton",
            field=models.CharField(max_length=200, null=True),
        ),
        migrations.RunPython(skeletons_fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="contributor",
            name="name_skeleton",
            field=models.CharField(max_length=200, unique=True),
        ),
        migrations.AddField(
            model_name="contributor",
            name="strikes",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Units refused in a row; CONTRIBUTOR_MAX_STRIKES suspends the token.",
            ),
        ),
        migrations.AddField(
            model_name="contributor",
            name="suspended_reason",
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddField(
            model_name="contributor",
            name="last_lease_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
