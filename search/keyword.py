"""Keyword search behind one interface: SQLite FTS5 or PostgreSQL full-text search."""

from django.db import connection

from search.text import query_terms


def _claims_text(patent) -> str:
    return "\n".join(c.text for c in patent.claims.all())


def keyword_documents_write(patents) -> None:
    """Feeds title, abstract and claims of these patents to the keyword index."""
    rows = [(p.pk, p.title or "", p.abstract or "", _claims_text(p)) for p in patents]
    if not rows:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.executemany("DELETE FROM search_fts WHERE rowid = %s", [(r[0],) for r in rows])
            cursor.executemany(
                "INSERT INTO search_fts(rowid, title, abstract, claims) VALUES (%s, %s, %s, %s)",
                rows,
            )
        else:
            cursor.executemany(
                "INSERT INTO search_tsv (patent_id, tsv) VALUES (%s, "
                "setweight(to_tsvector('english', %s), 'A') || "
                "setweight(to_tsvector('english', %s), 'B') || "
                "setweight(to_tsvector('english', %s), 'C')) "
                "ON CONFLICT (patent_id) DO UPDATE SET tsv = EXCLUDED.tsv",
                rows,
            )


def keyword_documents_delete(patent_ids: list[int]) -> None:
    if not patent_ids:
        return
    with connection.cursor() as cursor:
        table, column = (
            ("search_fts", "rowid")
            if connection.vendor == "sqlite"
            else ("search_tsv", "patent_id")
        )
        cursor.executemany(f"DELETE FROM {table} WHERE {column} = %s", [(i,) for i in patent_ids])  # noqa: S608


def fts5_match_expression(terms: list[str]) -> str:
    # Every term quoted: FTS syntax in the query ("NEAR", "*", quotes) stays literal.
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def keyword_search(query: str, *, limit: int = 200, allowed=None) -> list[tuple[int, float]]:
    """(patent id, score) best first; OR semantics so that pasted claims still match.

    ``allowed``, a queryset of patents, filters inside the SQL (as a subquery), so that a
    narrow filter still gets ``limit`` matches when the corpus has them."""
    terms = query_terms(query)
    if not terms:
        return []
    restrict, restrict_params = "", []
    if allowed is not None:
        sub_sql, restrict_params = allowed.values("pk").query.sql_with_params()
        restrict = f" AND k.patent_id IN ({sub_sql})"
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT f.rowid, bm25(search_fts, 3.0, 2.0, 1.0) AS rank FROM search_fts f "  # noqa: S608 (Django-compiled subquery, parameters bound)
                "JOIN search_keyworddocument k ON k.patent_id = f.rowid "
                f"WHERE search_fts MATCH %s{restrict} ORDER BY rank, f.rowid LIMIT %s",
                [fts5_match_expression(terms), *restrict_params, limit],
            )
            return [(int(pk), -float(rank)) for pk, rank in cursor.fetchall()]
        cursor.execute(
            "SELECT s.patent_id, ts_rank_cd(s.tsv, q) AS rank "  # noqa: S608 (as above)
            "FROM search_tsv s JOIN search_keyworddocument k ON k.patent_id = s.patent_id, "
            f"to_tsquery('english', %s) q WHERE s.tsv @@ q{restrict} "
            "ORDER BY rank DESC, s.patent_id LIMIT %s",
            [" | ".join(_pg_lexeme(t) for t in terms), *restrict_params, limit],
        )
        return [(int(pk), float(rank)) for pk, rank in cursor.fetchall()]


def _pg_lexeme(term: str) -> str:
    # Quoted lexemes cannot inject tsquery operators.
    return "'" + term.replace("'", "''").replace("\\", "") + "'"
