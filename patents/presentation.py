"""Rendering helpers for invention pages: claim links, citations, Markdown, JSON-LD."""

import json
import re

from django.conf import settings
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from patents.models import Patent

CLAIM_LINK_RE = re.compile(r"\b(claims?\s+)(\d{1,4})\b", re.IGNORECASE)
_JSON_SCRIPT_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


def claim_html(
    text: str, *, numbers: set[int] | dict[int, int], page: int | None = None
) -> SafeString:
    """Escapes a claim and links "claim N" to claim N when N exists. With ``numbers`` as
    {number: page of the claims list}, a claim on another page is linked there."""
    escaped = str(escape(text))

    def link(match):
        number = int(match.group(2))
        if number not in numbers:
            return match.group(0)
        where = ""
        if isinstance(numbers, dict) and page is not None and numbers[number] != page:
            where = f"?claims_page={numbers[number]}"
        return f'{match.group(1)}<a href="{where}#claim-{number}">{number}</a>'

    return mark_safe(CLAIM_LINK_RE.sub(link, escaped))  # noqa: S308 (escaped above)


def canonical_url(patent: Patent) -> str:
    return f"{settings.SITE_URL}{patent.get_absolute_url()}"


PATENT_NUMBER_RE = re.compile(r"^[A-Z]{2}[A-Z]?\d[\dA-Z]*$")


def reference_number(patent: Patent) -> str:
    """A reference patent's own number and kind, e.g. "US6859910 B2"."""
    kind = (patent.source_meta or {}).get("kind") or ""
    number = patent.source_id or patent.public_id
    return f"{number} {kind}".strip()


def official_url(patent: Patent) -> str:
    """The public record of a reference patent, when its id is a patent number."""
    number = patent.source_id or ""
    if patent.origin != Patent.Origin.REFERENCE or not PATENT_NUMBER_RE.match(number):
        return ""
    kind = (patent.source_meta or {}).get("kind") or ""
    return f"https://patents.google.com/patent/{number}{kind}/en"


def display_title(patent: Patent, *, words: int = 12) -> str:
    """A title that always says something: the title, else the opening words of the
    abstract or first claim, marked as such; a reference also by its number."""
    title = patent.title.strip()
    if not title:
        text = patent.abstract or ""
        if not text:
            first = patent.claims.order_by("number").first()
            text = first.text if first else ""
        opening = " ".join(text.split()[:words])
        title = f"[no title] {opening}…" if opening else "[no title, no abstract]"
    if patent.origin == Patent.Origin.REFERENCE:
        return f"{reference_number(patent)}: {title}"
    return title


def citation_plain(patent: Patent) -> str:
    if patent.origin == Patent.Origin.REFERENCE:
        return citation_reference(patent)
    return (
        f"All the Patents, \u201c{patent.title}\u201d, {patent.public_id}, published "
        f"{patent.published_at:%Y-%m-%d %H:%M} UTC, {canonical_url(patent)} "
        f"(SHA-256 {patent.content_hash})."
    )


def citation_reference(patent: Patent) -> str:
    """A reference patent is cited as the document it is, not as this site's."""
    parts = [reference_number(patent)]
    if patent.title:
        parts.append(f"\u201c{patent.title}\u201d")
    parts.append(
        f"published {patent.source_date:%Y-%m-%d}"
        if patent.source_date
        else "publication date unknown"
    )
    if patent.filing_date:
        parts.append(f"filed {patent.filing_date:%Y-%m-%d}")
    url = official_url(patent)
    return ", ".join(parts) + (f". {url}" if url else ".")


_BIBTEX_SPECIAL = {
    # BibTeX counts braces even when LaTeX-escaped (\{), so a field must hold none of its
    # own: an unbalanced one breaks the file, a closing one ends the field early (a title
    # could then add an author). The brace and backslash glyphs are written as commands.
    "{": r"\textbraceleft ",
    "}": r"\textbraceright ",
    "\\": r"\textbackslash ",
    "~": r"\textasciitilde ",
    "^": r"\textasciicircum ",
    **{c: "\\" + c for c in "%&$#_"},
}


def _bibtex_escape(value: str) -> str:
    """A field's text, safe inside ``{...}``: no braces of its own, LaTeX's special
    characters escaped, line breaks folded (they would end a field for some readers)."""
    value = " ".join(value.split())
    return "".join(_BIBTEX_SPECIAL.get(c, c) for c in value)


def citation_bibtex(patent: Patent) -> str:
    if patent.origin == Patent.Origin.REFERENCE:
        fields = [
            f"  number = {{{_bibtex_escape(reference_number(patent))}}}",
            f"  title = {{{_bibtex_escape(patent.title)}}}",
        ]
        if patent.source_date:
            fields.append(f"  year = {{{patent.source_date:%Y}}}")
            fields.append(f"  month = {{{patent.source_date:%m}}}")
        if patent.filing_date:
            fields.append(f"  filing_date = {{{patent.filing_date:%Y-%m-%d}}}")
        if official_url(patent):
            fields.append(f"  url = {{{official_url(patent)}}}")
        key = re.sub(r"[^A-Za-z0-9]", "", patent.source_id or patent.public_id)
        return f"@patent{{{key},\n" + ",\n".join(fields) + "\n}"
    return (
        f"@misc{{allthepatents-{patent.public_id},\n"
        f"  title = {{{_bibtex_escape(patent.title)}}},\n"
        f"  author = {{{{All the Patents}}}},\n"
        f"  year = {{{patent.published_at:%Y}}},\n"
        f"  month = {{{patent.published_at:%m}}},\n"
        f"  howpublished = {{\\url{{{canonical_url(patent)}}}}},\n"
        f"  note = {{Machine-generated invention published as prior art on "
        f"{patent.published_at:%Y-%m-%d %H:%M} UTC; SHA-256 {patent.content_hash}}}\n}}"
    )


def patent_markdown(patent: Patent) -> str:
    claims = "\n\n".join(f"{c.number}. {c.text}" for c in patent.claims.all())
    return (
        f"# Patent\n\n## Title\n{patent.title}\n\n## Abstract\n{patent.abstract}\n\n"
        f"## Claims\n\n{claims}\n\n---\nPublished {patent.published_at.isoformat()} at "
        f"{canonical_url(patent)}\nSHA-256: {patent.content_hash}\n"
    )


def patent_jsonld(patent: Patent) -> SafeString:
    data = {
        "@context": "https://schema.org",
        "@type": "CreativeWork",
        "name": patent.title,
        "headline": patent.title[:110],
        "abstract": patent.abstract,
        "url": canonical_url(patent),
        "datePublished": patent.published_at.isoformat(),
        "identifier": [
            {"@type": "PropertyValue", "propertyID": "public_id", "value": patent.public_id},
            {"@type": "PropertyValue", "propertyID": "sha256", "value": patent.content_hash},
        ],
        "publisher": {"@type": "Organization", "name": "All the Patents"},
        "isAccessibleForFree": True,
        "license": "https://creativecommons.org/publicdomain/zero/1.0/",
    }
    if patent.origin == Patent.Origin.REFERENCE:
        # The real document: its own number and date, not this site's import time.
        data.pop("publisher")
        data.pop("license")
        data["identifier"].insert(
            0,
            {
                "@type": "PropertyValue",
                "propertyID": "patent_number",
                "value": reference_number(patent),
            },
        )
        if patent.source_date:
            data["datePublished"] = patent.source_date.isoformat()
        else:
            data.pop("datePublished")
        if official_url(patent):
            data["sameAs"] = official_url(patent)
    if patent.generator_model:
        data["creator"] = {"@type": "SoftwareApplication", "name": patent.generator_model}
    text = json.dumps(data, ensure_ascii=False).translate(_JSON_SCRIPT_ESCAPES)
    return mark_safe(f'<script type="application/ld+json">{text}</script>')  # noqa: S308


def cpc_suggest(references, *, top: int = 3) -> list[tuple[str, int]]:
    """The CPC main groups most common among ``references`` (nearest first): (group, how
    many of them carry it). For a generated invention these are suggestions, not a
    classification anyone made; ties go to the group of the nearer reference."""
    counts: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    position = 0
    for ref in references:
        # In the reference's own order (its first code is usually its main one), once each.
        groups = dict.fromkeys(code.split("/")[0] for code in (ref.cpc_codes or "").split())
        for group in groups:
            counts[group] = counts.get(group, 0) + 1
            first_seen.setdefault(group, position)
            position += 1
    ranked = sorted(counts, key=lambda g: (-counts[g], first_seen[g]))
    return [(g, counts[g]) for g in ranked[:top]]
