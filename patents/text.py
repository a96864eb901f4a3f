"""Pure text helpers shared by the importer, the generation parser and the pages."""

import hashlib
import json
import re
import unicodedata

CLAIM_NUMBER_RE = re.compile(r"^\s*(\d{1,4})\s*[.)]\s*")
# "of claim 3", "according to claim 12", "as claimed in claim 2", "claim 1 or 2" -> first.
CLAIM_REF_RE = re.compile(r"\bclaims?\s+(\d{1,4})\b", re.IGNORECASE)


def claim_split_number(text: str) -> tuple[int | None, str]:
    """``"3. The device of claim 1"`` -> ``(3, "The device of claim 1")``."""
    match = CLAIM_NUMBER_RE.match(text)
    if not match:
        return None, text.strip()
    return int(match.group(1)), text[match.end() :].strip()


# What is left of a claim that is no claim: "(canceled)" after its number or range ("1-3.
# (canceled)", "7.-9. (Cancelled)", "<b>1</b>-<b>18</b>. (canceled)" once tags are gone), and
# the heading some sources file as claim 1 ("What is claimed is:").
_PLACEHOLDER_RE = re.compile(
    r"^[\s\d.,:;)(–—-]*(?:to\s*\d+[.\s]*)?[(\[]?\s*(?:canceled|cancelled|deleted)\s*[)\]]?\s*\.?$"
    r"|^(?:what\s+(?:is|are)\s+claimed(?:\s+is)?|what\s+(?:i|we)\s+claim(?:\s+is)?"
    r"|(?:i|we)\s+claim|claims?|the\s+invention\s+claimed\s+is)\s*[:.]?$",
    re.IGNORECASE,
)


def claim_is_placeholder(text: str) -> bool:
    """A canceled claim's remains or a claims heading: nothing claimed. Kept out of a
    patent's claims, so that its "first claim" is one (search_eval's query, the page, the
    claim index); the claims after it keep their numbers, which dependent claims cite."""
    return bool(_PLACEHOLDER_RE.match(text.strip()))


def claims_texts(claims) -> list[str]:
    """A record's claims as texts, numbers cut off, canceled-claim placeholders and empty
    ones dropped: what trainers learn from and backtests score."""
    return [
        text
        for text in (claim_split_number(c)[1] for c in claims or [])
        if text and not claim_is_placeholder(text)
    ]


def claim_find_dependency(text: str) -> int | None:
    """The claim a claim refers to, if any (its first reference)."""
    match = CLAIM_REF_RE.search(text)
    return int(match.group(1)) if match else None


def _clean(value: str) -> str:
    return unicodedata.normalize("NFC", value or "").strip()


def content_canonical(*, title: str, abstract: str, claims: list[dict]) -> str:
    """Canonical serialisation hashed into ``content_hash``.

    Fields are NFC-normalised and stripped at the ends, so copying text through editors or
    terminals that add trailing newlines does not change the fingerprint.
    """
    payload = {
        "title": _clean(title),
        "abstract": _clean(abstract),
        "claims": [
            {
                "number": int(c["number"]),
                "text": _clean(c["text"]),
                "depends_on": c.get("depends_on"),
            }
            for c in sorted(claims, key=lambda c: int(c["number"]))
        ],
    }
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_hash(*, title: str, abstract: str, claims: list[dict]) -> str:
    canonical = content_canonical(title=title, abstract=abstract, claims=claims)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_CPC_PREFIX = re.compile(r"^[A-HY](\d{2}([A-Z](\d{1,4}(/\d{0,6})?)?)?)?$")


def cpc_normalise(code: str) -> str:
    """A CPC code (or prefix) as stored and filtered: upper case, no spaces ("h04l 9/32"
    becomes "H04L9/32"); empty when it is not one."""
    compact = re.sub(r"\s+", "", str(code)).upper()
    return compact if _CPC_PREFIX.match(compact) else ""


def cpc_codes_text(codes) -> str:
    """The stored form of a patent's CPC codes: " CODE CODE " (see Patent.cpc_codes)."""
    seen = []
    for code in codes or []:
        norm = cpc_normalise(code)
        if norm and norm not in seen:
            seen.append(norm)
    return f" {' '.join(seen)} " if seen else ""


def cpc_subclasses(cpc_codes: str) -> set[str]:
    """The CPC subclasses ("H04M") of a patent's stored codes (Patent.cpc_codes): the areas
    examiners' searches are counted in, and the reference patents too."""
    return {code[:4].upper() for code in cpc_codes.split() if len(code) >= 4}


# C0 control characters other than tab, line feed and carriage return: PostgreSQL refuses
# NUL in text, XML (the Atom feed, dumps read by XML tools) refuses them all, and no patent
# text needs one. Model output and imported records pass through here before storage.
# Lone surrogates too: no encoder, database or page can carry one (an imported record with
# one ended the import in a traceback and lost the good records of its batch).
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def control_chars_strip(text: str) -> tuple[str, int]:
    """``text`` without C0 control characters (tab and newlines stay) or lone surrogates,
    and how many went."""
    cleaned, removed = _CONTROL_CHARS.subn("", text)
    return cleaned, removed


# What XML 1.0 allows in text: tab, newlines and everything from space up, except the
# surrogates and U+FFFE/U+FFFF (a title holding one made the Atom feeds malformed).
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text_clean(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry."""
    return _XML_INVALID.sub("", text)
