from django.db import migrations

from generation.registry import SEEDS, generators_seed

def seed(apps, schema_editor):
    generators_seed(apps.get_model("generation", "Generator"))


def unseed(apps, schema_editor):
    apps.get_model("generation", "Generator").objects.filter(
        name__in=[s["name"] for s in SEEDS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("generation", "0002_initial")]
    operations = [migrations.RunPython(seed, unseed)]
