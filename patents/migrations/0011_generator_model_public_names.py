"""Inventions published from a local model folder named it by the server's absolute path
(``/home/…/models/demo-generator``): a path inside the project becomes relative to it, any
other its folder's name, as ``generation.selectors.model_public_name`` names them now. The
name is provenance shown beside the text, outside the content hash and the ledger."""

from pathlib import Path

from django.conf import settings
from django.db import migrations


def public_name(name: str) -> str:
    # A copy of generation.selectors.model_public_name as it was when this was written.
    if not name.startswith(("/", "~")):
        return name
    path = Path(name).expanduser()
    try:
        return path.resolve().relative_to(Path(settings.BASE_DIR).resolve()).as_posix()
    except ValueError:
        return path.name


def generator_models_rename(apps, schema_editor):
    Patent = apps.get_model("patents", "Patent")
    for prefix in ("/", "~"):
        names = (
            Patent.objects.filter(generator_model__startswith=prefix)
            .order_by("generator_model")
            .values_list("generator_model", flat=True)
            .distinct()
        )
        for name in list(names):
            Patent.objects.filter(generator_model=name).update(generator_model=public_name(name))


class Migration(migrations.Migration):
    dependencies = [("patents", "0010_browse_order_indexes")]

    operations = [migrations.RunPython(generator_models_rename, migrations.RunPython.noop)]
