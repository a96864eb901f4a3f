"""The publication ledger as a JSON feed (/api/ledger): a mirror starts from a dump and
follows the chain from the dump's head, entry by entry, each with its invention."""

from django.conf import settings
from django.views.decorators.csrf import csrf_exempt

from allthepatents.api import (
    ApiParamError,
    api_error,
    api_methods,
    api_next_url,
    api_page_params,
    json_safe_response,
)
from allthepatents.ratelimit import rate_limit_check
from patents.models import LedgerEntry
from patents.selectors import ledger_entries_page
from patents.serializers import ledger_entry_serialize, patent_serialize

# A page of 1,000 entries with their inventions: about 0.6 MB of JSON from the demo
# generator's records.
LEDGER_PAGE_MAX = 1000


@csrf_exempt
@api_methods("GET")
def api_ledger(request):
    """The ledger's entries after the entry id ``after``, in the chain's order: each entry as
    its hash covers it (checkable as verify_dump.py checks a dump's ledger) with its id and,
    on a publication entry, ``invention``, the record as the dumps hold it (null once
    withdrawn: the withdrawal is an entry further on)."""
    try:
        after, limit = api_page_params(request, maximum=LEDGER_PAGE_MAX)
    except ApiParamError as exc:
        return api_error(str(exc), 400)
    # Counted by the entries asked for: a page of 1,000 is a thousand small ones' work.
    limited, window = settings.LEDGER_API_RATE_LIMIT, settings.LEDGER_API_RATE_WINDOW
    wait = rate_limit_check(request, scope="ledger", limit=limited, window=window, cost=limit)
    if wait:
        return api_error(
            f"more than {limited} entries asked for in {window} s; slow down",
            429,
            Retry_After=str(wait),
        )
    entries, inventions, following = ledger_entries_page(after=after, limit=limit)
    rows = []
    for entry in entries:
        row = {"id": entry.pk, **ledger_entry_serialize(entry)}
        if entry.kind == LedgerEntry.Kind.PUBLISH:
            invention = inventions.get(entry.patent_id)
            row["invention"] = patent_serialize(invention) if invention else None
        rows.append(row)
    return json_safe_response(
        {"entries": rows, "next": api_next_url("api-ledger", after=following, limit=limit)}
    )
