"""Validation of search parameters, shared by the page and the API."""

import datetime as dt
import re
from dataclasses import dataclass

from django.conf import settings

from patents.text import cpc_normalise
from patents.vocabulary import GENERATED, MODES, ORIGIN_ALL, ORIGINS


@dataclass(frozen=True)
class SearchFilters:
    # Dates: a generated invention's publication here; a reference patent's own publication
    # date (an undated one never passes a date filter) and, for filed_*, its filing date.
    before: dt.date | None = None  # strictly before this date (a priority date)
    after: dt.date | None = None  # on or after this date
    filed_before: dt.date | None = None
    filed_after: dt.date | None = None
    origin: str = GENERATED  # generated | reference | all
    generator: str = ""
    mode: str = ""
    cpc: tuple[str, ...] = ()  # CPC prefixes, any of which a reference's codes must start

    @property
    def narrows(self) -> bool:
        """Whether the filter keeps less than every published patent."""
        return self != SearchFilters(origin="all")


MAX_CPC_CODES = 10


class SearchParamError(ValueError):
    pass


@dataclass
class SearchParams:
    q: str
    k: int
    page: int
    filters: SearchFilters


def _int(raw, name, default, lo, hi):
    if raw in (None, ""):
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise SearchParamError(f"'{name}' must be a whole number") from None
    if not lo <= value <= hi:
        raise SearchParamError(f"'{name}' must be between {lo} and {hi}")
    return value


def _date(raw, name):
    if raw in (None, ""):
        return None
    try:
        value = dt.date.fromisoformat(str(raw).strip())
    except ValueError:
        raise SearchParamError(f"'{name}' must be a date as YYYY-MM-DD") from None
    if value.year < 1790:
        raise SearchParamError(f"'{name}' is before the first patent")
    return value


def search_params_parse(data, *, default_k: int = 10) -> SearchParams:
    raw_q = data.get("q", "")
    if raw_q is not None and not isinstance(raw_q, str | int | float):
        raise SearchParamError("'q' must be a string")
    q = str(raw_q or "")
    if "\x00" in q:
        raise SearchParamError("the query contains a NUL character")
    q = q.strip()
    if not q:
        raise SearchParamError("enter some words, a claim or a description to search for")
    if len(q) > settings.SEARCH_MAX_QUERY_CHARS:
        raise SearchParamError(
            f"the query is {len(q):,} characters; the limit is {settings.SEARCH_MAX_QUERY_CHARS:,}"
        )
    k = _int(data.get("k"), "k", default_k, 1, settings.SEARCH_MAX_K)
    page = _int(data.get("page"), "page", 1, 1, 1000)
    before, after = _date(data.get("before"), "before"), _date(data.get("after"), "after")
    if before and after and after >= before:
        raise SearchParamError("'after' must be earlier than 'before'")
    filed_before = _date(data.get("filed_before"), "filed_before")
    filed_after = _date(data.get("filed_after"), "filed_after")
    if filed_before and filed_after and filed_after >= filed_before:
        raise SearchParamError("'filed_after' must be earlier than 'filed_before'")
    origin = str(data.get("origin") or GENERATED)
    if origin not in (*ORIGINS, ORIGIN_ALL):
        raise SearchParamError("'origin' must be generated, reference or all")
    mode = str(data.get("mode") or "")
    if mode and mode not in MODES:
        raise SearchParamError("'mode' must be top-down or bottom-up")
    generator = str(data.get("generator") or "")[:300]
    cpc = []
    raw_codes = []
    for part in re.split(r"[,;]", str(data.get("cpc") or "")):
        # "A61B 5/02" is one code as printed; "H04L G06F" two.
        raw_codes += [part] if cpc_normalise(part) else part.split()
    raw_codes = [raw for raw in raw_codes if raw.strip()]
    if len(raw_codes) > MAX_CPC_CODES:
        # Refused rather than cut: the codes are alternatives, so a dropped one would hide
        # its patents from a search that asked for them.
        raise SearchParamError(
            f"'cpc' takes at most {MAX_CPC_CODES} codes or prefixes; {len(raw_codes)} were given"
        )
    for raw in raw_codes:
        code = cpc_normalise(raw)
        if not code:
            raise SearchParamError(
                f"'cpc' takes CPC codes or prefixes such as H04L or A61B5/02, not {raw[:40]!r}"
            )
        if re.fullmatch(r"[A-HY]\d{2}[A-Z]\d{1,4}", code):
            code += "/"  # main group A61B5 is A61B5/..., not A61B50/...
        cpc.append(code)
    return SearchParams(
        q=q,
        k=k,
        page=page,
        filters=SearchFilters(
            before=before,
            after=after,
            filed_before=filed_before,
            filed_after=filed_after,
            origin=origin,
            generator=generator,
            mode=mode,
            cpc=tuple(cpc),
        ),
    )
