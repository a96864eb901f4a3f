"""Query text handling shared by keyword search, snippets and highlighting."""

import re

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
MAX_TERMS = 64
STOPWORDS = frozenset(
    """a an and are as at be by for from has have in is it its of on or said such that the
    their then there these this to was were wherein which with claim claims comprising
    comprises one more least further""".split()
)


def query_terms(query: str, *, limit: int = MAX_TERMS) -> list[str]:
    """Distinct lower-case words worth matching, in order of first appearance."""
    seen: dict[str, None] = {}
    for word in WORD_RE.findall(query.lower()):
        if len(word) < 2 or word in STOPWORDS or word.isdigit() or len(word) > 40:
            continue
        seen.setdefault(word, None)
        if len(seen) >= limit:
            break
    return list(seen)


def snippet(text: str, terms: list[str], *, width: int = 240) -> str:
    """A window of ``text`` around the first query term found."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    lower = text.lower()
    positions = [p for p in (lower.find(t) for t in terms) if p >= 0]
    start = max(0, min(positions) - width // 4) if positions else 0
    if start:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 40 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def highlight(text: str, terms: list[str]) -> SafeString:
    """Escapes ``text`` and wraps whole-word matches of ``terms`` in <mark>."""
    if not terms:
        return escape(text)
    pattern = re.compile(
        r"\b(" + "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)) + r")",
        re.IGNORECASE,
    )
    out, last = [], 0
    for match in pattern.finditer(text):
        out.append(escape(text[last : match.start()]))
        out.append(f"<mark>{escape(match.group(0))}</mark>")
        last = match.end()
    out.append(escape(text[last:]))
    return mark_safe("".join(out))  # noqa: S308 (every piece is escaped above)


def snippet_words(text: str, width: int) -> str:
    """``text`` cut to at most about ``width`` characters at a word boundary."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width)
    return text[: cut if cut > width // 2 else width].rstrip(",;: ") + "…"


_ELEMENT_SPLIT = re.compile(r"(?<=[;:])\s+|\s+(?=wherein\b)", re.IGNORECASE)


def query_chunks(text: str, *, max_words: int) -> list[str]:
    """A long claim cut at its element boundaries (";", ":", "wherein") into pieces of at
    most about ``max_words`` words; the encoder reads only its first 256 word pieces, so a
    long claim's later elements would otherwise be ignored. A short text is one piece."""
    words = text.split()
    if max_words <= 0 or len(words) <= max_words:
        return [text]
    chunks, current = [], []
    for part in _ELEMENT_SPLIT.split(text):
        part_words = part.split()
        if current and len(current) + len(part_words) > max_words:
            chunks.append(" ".join(current))
            current = []
        while len(part_words) > max_words:  # one huge element: plain word windows
            chunks.append(" ".join(part_words[:max_words]))
            part_words = part_words[max_words:]
        current.extend(part_words)
    if current:
        chunks.append(" ".join(current))
    return chunks
