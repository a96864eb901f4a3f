"""Streaming reader of USPTO full-text files, into the importer's record format.

Formats: grant and application XML of 2005 onward (``us-patent-grant`` and
``us-patent-application``, v4.x DTDs), the 2001-2004 grant XML (``PATDOC``, ST.32 v2.5,
also what the older SGML converts to), and the 2001-2004 application publications
(``patent-application-publication``, v1.x). Weekly archives are zips holding one file of
many concatenated XML documents; they are read one document at a time, so a multi-GB week
never sits in memory whole.
"""

import datetime as dt
import html.entities
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from defusedxml import ElementTree as SafeET

from patents.text import claim_is_placeholder, claim_split_number

DOCTYPE_RE = re.compile(r"<!DOCTYPE[^\[>]*(\[.*?\])?\s*>", re.DOTALL)
COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
ENTITY_RE = re.compile(r"&([A-Za-z][A-Za-z0-9.]*);")
XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}
SPACE_RE = re.compile(r"\s+")


class DocumentError(ValueError):
    pass


def _entity(match: re.Match) -> str:
    name = match.group(1)
    if name in XML_ENTITIES:
        return match.group(0)
    char = html.entities.html5.get(name + ";") or html.entities.html5.get(name)
    if char:
        return char.replace("&", "&amp;").replace("<", "&lt;")
    return {"plus": "+", "emsp": " ", "ensp": " "}.get(name, f"[{name}]")


def _text(el) -> str:
    return SPACE_RE.sub(" ", "".join(el.itertext())).strip() if el is not None else ""


def _first(root, *paths):
    for path in paths:
        el = root.find(path)
        if el is not None:
            return el
    return None


def _date(raw: str) -> str:
    raw = (raw or "").strip()
    if len(raw) == 8 and raw.isdigit():
        try:
            return dt.date(int(raw[:4]), int(raw[4:6]), max(1, int(raw[6:8]))).isoformat()
        except ValueError:
            return ""
    return ""


def _claim_no(ref: str | None) -> int | None:
    digits = re.sub(r"\D", "", ref or "")
    return int(digits) if digits else None


def _claims(claim_elements, ref_tag: str, ref_attr: str) -> list[dict]:
    claims = []
    for position, el in enumerate(claim_elements, start=1):
        text = _text(el)
        number, text = claim_split_number(text)
        number = number or _claim_no(el.get("num")) or position
        ref = el.find(f".//{ref_tag}")
        depends_on = _claim_no(ref.get(ref_attr)) if ref is not None else None
        if text and not claim_is_placeholder(text):
            claims.append({"number": number, "text": text, "depends_on": depends_on})
    return claims


def _modern(root) -> dict:
    biblio = _first(root, "us-bibliographic-data-grant", "us-bibliographic-data-application")
    if biblio is None:
        raise DocumentError("no bibliographic data")
    pub = biblio.find("publication-reference/document-id")
    app = biblio.find("application-reference/document-id")
    cpc = []
    for c in biblio.iter("classification-cpc"):
        parts = [c.findtext(t, "") for t in ("section", "class", "subclass")]
        cpc.append(f"{''.join(parts)} {c.findtext('main-group', '')}/{c.findtext('subgroup', '')}")
    ipc = []
    for c in biblio.iter("classification-ipcr"):
        parts = [c.findtext(t, "") for t in ("section", "class", "subclass")]
        ipc.append(f"{''.join(parts)} {c.findtext('main-group', '')}/{c.findtext('subgroup', '')}")
    citations = []
    for d in biblio.findall(".//patcit/document-id"):
        citations.append(
            f"{d.findtext('country', '')}{d.findtext('doc-number', '')}{d.findtext('kind', '')}"
        )
    claims_el = root.find("claims")
    return {
        "number": pub.findtext("doc-number", "") if pub is not None else "",
        "kind": pub.findtext("kind", "") if pub is not None else "",
        "date": _date(pub.findtext("date", "")) if pub is not None else "",
        "filing_date": _date(app.findtext("date", "")) if app is not None else "",
        "title": _text(biblio.find("invention-title")),
        "abstract": _text(root.find("abstract")),
        "claims": _claims(
            claims_el.findall("claim") if claims_el is not None else [], "claim-ref", "idref"
        ),
        "cpc": list(dict.fromkeys(cpc)),
        "ipc": list(dict.fromkeys(ipc)),
        "citations": citations,
    }


def _patdoc(root) -> dict:
    """ST.32 v2.5 grants (2001-2004): B-codes, PDAT text nodes."""

    def pdat(path):
        return _text(root.find(path))

    ipc = [_text(e) for e in root.findall(".//B510/B511")]
    ipc += [_text(e) for e in root.findall(".//B510/B512")]
    citations = [_text(e.find("DNUM")) for e in root.findall(".//B560//PCIT/DOC")]
    return {
        "number": pdat(".//B110/DNUM"),
        "kind": pdat(".//B130"),
        "date": _date(pdat(".//B140/DATE")),
        "filing_date": _date(pdat(".//B220/DATE")),
        "title": pdat(".//B540/STEXT"),
        "abstract": _text(root.find(".//SDOAB")),
        "claims": _claims(root.findall(".//SDOCL/CL/CLM"), "CLREF", "ID"),
        "cpc": [],
        "ipc": [i for i in ipc if i],
        "citations": [f"US{c}" for c in citations if c],
    }


def _pap(root) -> dict:
    """Application publications of 2001-2004 (pap v1.x)."""
    biblio = root.find("subdoc-bibliographic-information")
    if biblio is None:
        raise DocumentError("no bibliographic information")
    ipc = [_text(e) for e in biblio.findall(".//classification-ipc//ipc")]
    return {
        "number": biblio.findtext("document-id/doc-number", ""),
        "kind": biblio.findtext("document-id/kind-code", ""),
        "date": _date(biblio.findtext("document-id/document-date", "")),
        "filing_date": _date(biblio.findtext("domestic-filing-data/filing-date", "")),
        "title": _text(biblio.find(".//title-of-invention")),
        "abstract": _text(root.find("subdoc-abstract")),
        "claims": _claims(
            root.findall("subdoc-claims/claim"), "dependent-claim-reference", "depends_on"
        ),
        "cpc": [],
        "ipc": [i for i in ipc if i],
        "citations": [],
    }


def uspto_document_parse(xml_text: str) -> dict:
    """One XML document -> a record in the importer's format (see reference_record_parse)."""
    cleaned = COMMENT_RE.sub("", xml_text)
    cleaned = DOCTYPE_RE.sub("", cleaned, count=1)
    cleaned = re.sub(r"<\?xml[^>]*\?>", "", cleaned, count=1)
    cleaned = ENTITY_RE.sub(_entity, cleaned)
    try:
        root = SafeET.fromstring(cleaned.strip())
    except Exception as exc:  # ParseError and defusedxml's refusals
        raise DocumentError(f"not well-formed XML: {exc}") from exc
    if root.tag in ("us-patent-grant", "us-patent-application"):
        data = _modern(root)
    elif root.tag == "PATDOC":
        data = _patdoc(root)
    elif root.tag == "patent-application-publication":
        data = _pap(root)
    else:
        raise DocumentError(f"unknown document type <{root.tag}>")
    number = data["number"].strip()
    if not number:
        raise DocumentError("no publication number")
    is_application = root.tag in ("us-patent-application", "patent-application-publication")
    if is_application:
        source_id = f"US{number}{data['kind']}"
    else:
        # Grants as the shared JSON Lines name them: no leading zeros, no kind ("US9358892").
        prefix = re.match(r"[A-Z]*", number).group(0)
        source_id = f"US{prefix}{number[len(prefix) :].lstrip('0')}"
    return {
        "id": source_id,
        "kind": data["kind"],
        "title": data["title"],
        "abstract": data["abstract"],
        "claims": data["claims"],
        "date": data["date"],
        "filing_date": data["filing_date"],
        "cpc": data["cpc"],
        "ipc": data["ipc"],
        "citations": data["citations"],
        "claims_complete": bool(data["claims"]),
        "source": "uspto-" + root.tag,
    }


def _split_documents(stream: io.TextIOBase) -> Iterator[tuple[int, str]]:
    """Concatenated XML documents, split on their declarations, one at a time."""
    buf: list[str] = []
    start_line = 1
    for line_no, line in enumerate(stream, start=1):
        if line.lstrip().startswith("<?xml") and any(s.strip() for s in buf):
            yield start_line, "".join(buf)
            buf, start_line = [], line_no
        buf.append(line)
    if any(s.strip() for s in buf):
        yield start_line, "".join(buf)


def uspto_documents(path: Path) -> Iterator[tuple[str, str]]:
    """(location, xml text) for each document in a .xml/.sgml file or a weekly .zip."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.lower().endswith((".xml", ".sgml", ".sgm")):
                    continue
                with archive.open(member) as raw:
                    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
                    for line_no, text in _split_documents(stream):
                        yield f"{member}:{line_no}", text
        return
    with open(path, encoding="utf-8", errors="replace") as stream:
        for line_no, text in _split_documents(stream):
            yield f"line {line_no}", text


def is_uspto_path(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".xml", ".sgml", ".sgm", ".zip"))
