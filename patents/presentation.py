"""Rendering helpers for invention pages: claim links, citations, Markdown, JSON-LD."""

import json
import re

from django.conf import settings
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from patents.models import Patent

CLAIM_LINK_RE = re.compile(r"\b(claims?\s+)(\d{1,4})\b", re.IGNORECASE)
_JSON_SCRIPT_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


def claim_html(text: str, *, numbers: set[int]) -> SafeString:
    """Escapes a claim and links "claim N" to claim N on the page when N exists."""
    escaped = str(escape(text))

    def link(match):
        number = int(match.group(2))
        if number not in numbers:
            return match.group(0)
        return f'{match.group(1)}<a href="#claim-{number}">{number}</a>'

    return mark_safe(CLAIM_LINK_RE.sub(link, escaped))  # noqa: S308 (escaped above)


def canonical_url(patent: Patent) -> str:
    return f"{settings.SITE_URL}{patent.get_absolute_url()}"


def citation_plain(patent: Patent) -> str:
    return (
        f"All the Patents, \u201c{patent.title}\u201d, {patent.public_id}, published "
        f"{patent.published_at:%Y-%m-%d %H:%M} UTC, {canonical_url(patent)} "
        f"(SHA-256 {patent.content_hash})."
    )


def _bibtex_escape(value: str) -> str:
    return re.sub(r"([{}\\%&$#_^~])", r"\\\1", value)


def citation_bibtex(patent: Patent) -> str:
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
    if patent.generator_model:
        data["creator"] = {"@type": "SoftwareApplication", "name": patent.generator_model}
    text = json.dumps(data, ensure_ascii=False).translate(_JSON_SCRIPT_ESCAPES)
    return mark_safe(f'<script type="application/ld+json">{text}</script>')  # noqa: S308
