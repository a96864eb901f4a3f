"""The keyword index: an FTS5 table on SQLite, a tsvector table with a GIN index on
PostgreSQL. Both are fed the same fields (title, abstract, claims) by search.keyword."""

from django.db import migrations


def create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "sqlite":
            cursor.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5("
                "title, abstract, claims, tokenize='porter unicode61')"
            )
        elif vendor == "postgresql":
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS search_tsv ("
                "patent_id bigint PRIMARY KEY, tsv tsvector NOT NULL)"
            )
            cursor.execute(
                "CREATE INDEX IF NOT EXISTS search_tsv_gin ON search_tsv USING gin (tsv)"
            )


def drop(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS search_fts")
        cursor.execute("DROP TABLE IF EXISTS search_tsv")


class Migration(migrations.Migration):
    dependencies = [("search", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
