"""Search results as files an examiner attaches: CSV, RIS, BibTeX. Every field is text
from the database (generated or imported, so untrusted): CSV cells that a spreadsheet would
run as formulas are neutralised, and RIS/BibTeX lines cannot be broken by embedded newlines."""

import csv
import io
import re

from patents.models import Patent
from patents.presentation import citation_bibtex, reference_number


def export_row(patent: Patent, *, score: float, rank: int, request) -> dict:
    reference = patent.origin == Patent.Origin.REFERENCE
    return {
        "rank": rank,
        "score": round(score, 6),
        "origin": patent.origin,
        "id": reference_number(patent) if reference else patent.public_id,
        "public_id": patent.public_id,
        "title": patent.title,
        "abstract": patent.abstract,
        "published": (
            (patent.source_date.isoformat() if patent.source_date else "")
            if reference
            else patent.published_at.isoformat()
        ),
        "filed": patent.filing_date.isoformat() if patent.filing_date else "",
        "content_hash": patent.content_hash,
        "url": request.build_absolute_uri(patent.get_absolute_url()),
        "patent": patent,
    }


FIELDS = ["rank", "score", "origin", "id", "title", "published", "filed", "content_hash", "url"]


def csv_cell(value) -> str:
    text = str(value)
    # A leading =, +, - or @ makes a spreadsheet evaluate the cell (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    for row in rows:
        writer.writerow([csv_cell(row[f]) if isinstance(row[f], str) else row[f] for f in FIELDS])
    return out.getvalue()


def _line(value: str) -> str:
    return re.sub(r"\s+", " ", str(value)).strip()


def export_ris(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        lines += [
            "TY  - PAT" if row["origin"] == Patent.Origin.REFERENCE else "TY  - ELEC",
            f"TI  - {_line(row['title'])}",
            f"AB  - {_line(row['abstract'])}",
            f"ID  - {_line(row['id'])}",
        ]
        if row["published"]:
            lines.append(f"DA  - {row['published'][:10].replace('-', '/')}")
            lines.append(f"PY  - {row['published'][:4]}")
        if row["origin"] == Patent.Origin.GENERATED:
            lines.append("PB  - All the Patents")
        lines += [f"UR  - {row['url']}", f"N1  - SHA-256 {row['content_hash']}", "ER  - ", ""]
    return "\n".join(lines)


def export_bibtex(rows: list[dict]) -> str:
    return "\n\n".join(citation_bibtex(row["patent"]) for row in rows) + "\n"
