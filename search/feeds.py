"""The search alert feed: an Atom feed of new inventions matching a search, per query."""

import hashlib
import json
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import Http404, HttpResponse
from django.urls import reverse

from allthepatents.ratelimit import rate_limit_check
from patents.feeds import PatentFeed
from patents.models import Patent
from search.params import SearchParamError, SearchParams, search_params_parse
from search.requests import request_search_data, search_linkable_query
from search.selectors import search_patents


@dataclass(frozen=True)
class _Alert:
    """One request's alert: its parameters and the cache key of their results (the feed
    instance is shared by every request, so nothing of a request is kept on it)."""

    params: SearchParams
    cache_key: str
    ids: list | None  # the cached results, None on a miss
    query: str  # what asks for this search again (search_linkable_query)


class _AlertLimited(Exception):
    def __init__(self, wait: int):
        self.wait = wait


class SearchAlertFeed(PatentFeed):
    """Alerts without an account: newly published inventions that match a search above
    SEARCH_ALERT_MIN_SIMILARITY (cosine), newest first. Cached per query and filters for
    SEARCH_ALERT_CACHE_SECONDS, so a poll is a cache read; a miss is one search, and is
    charged to the client's search rate limit."""

    def __call__(self, request, *args, **kwargs):
        try:
            return super().__call__(request, *args, **kwargs)
        except _AlertLimited as exc:
            response = HttpResponse(
                f"Too many searches; try again in {exc.wait} s.\n",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
            response["Retry-After"] = str(exc.wait)
            return response

    def get_object(self, request):
        try:
            data = request_search_data(request)
            params = search_params_parse(data)
        except SearchParamError as exc:
            raise Http404(str(exc)) from None
        # Keyed by what the search is, not by the URL: extra parameters (?x=1, ?x=2, ...)
        # must not make every poll a new search.
        what = json.dumps([params.q, repr(params.filters)], ensure_ascii=False)
        key = "alert:" + hashlib.sha256(what.encode("utf-8", "replace")).hexdigest()
        try:
            ids = cache.get(key)
        except Exception:  # a dead cache: compute every time
            ids = None
        if ids is None:
            wait = rate_limit_check(request)
            if wait:
                raise _AlertLimited(wait)
        qid = request.GET.get("qid", "") if not request.GET.get("q") else ""
        query = search_linkable_query(params, data, qid=qid)
        return _Alert(params=params, cache_key=key, ids=ids, query=query)

    # Each search is a feed of its own: its id (Atom takes the link), the page it mirrors and
    # the address readers refresh it from (rel="self") carry the search; without it every
    # alert feed had one id and a self link to no search at all.
    def link(self, alert):
        return f"{reverse('search')}?{alert.query}"

    def feed_url(self, alert):
        return f"{reverse('search-feed')}?{alert.query}"

    def title(self, alert):
        return f"All the Patents: new inventions like “{alert.params.q[:80]}”"

    def subtitle(self, alert):
        return (
            "Generated inventions published as prior art that match this search "
            f"(similarity at least {settings.SEARCH_ALERT_MIN_SIMILARITY})."
        )

    def items(self, alert):
        ids = alert.ids
        if ids is None:
            result = search_patents(alert.params.q, filters=alert.params.filters, k=50)
            ids = [
                h.patent.pk
                for h in result.hits
                if h.dense_score is not None
                and h.dense_score >= settings.SEARCH_ALERT_MIN_SIMILARITY
            ]
            try:
                cache.set(alert.cache_key, ids, timeout=settings.SEARCH_ALERT_CACHE_SECONDS)
            except Exception:  # noqa: S110 (no cache: the next poll searches again)
                pass
        return list(
            Patent.objects.filter(pk__in=ids, status=Patent.Status.PUBLISHED).order_by(
                "-published_at"
            )[:30]
        )
