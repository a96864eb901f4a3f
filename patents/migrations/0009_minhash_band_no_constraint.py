import django.db.models.deletion
from django.db import migrations, models


def constraint_drop(apps, schema_editor):
    """Drops the bands' foreign key on PostgreSQL, where its deferred checks were a third of
    an import. SQLite keeps it: dropping it there copies the whole table, and SQLite's import
    meets its target with it."""
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    table = "patents_minhashband"
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    for name, info in constraints.items():
        if info["foreign_key"] and info["columns"] == ["patent_id"]:
            schema_editor.execute(
                f"ALTER TABLE {schema_editor.quote_name(table)} "
                f"DROP CONSTRAINT {schema_editor.quote_name(name)}"
            )


def constraint_add(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    schema_editor.execute(
        "ALTER TABLE patents_minhashband ADD CONSTRAINT minhashband_patent_fk "
        "FOREIGN KEY (patent_id) REFERENCES patents_patent (id) DEFERRABLE INITIALLY DEFERRED"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("patents", "0008_date_filter_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="minhashband",
                    name="patent",
                    field=models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="minhash_bands",
                        to="patents.patent",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(constraint_drop, constraint_add)],
        ),
    ]
