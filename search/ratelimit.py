"""Per-client rate limit for the API: a fixed window counter in the cache (Redis-free)."""

import time

from django.conf import settings
from django.core.cache import cache


def client_key(request) -> str:
    return request.META.get("REMOTE_ADDR", "unknown")


def rate_limit_check(request) -> int | None:
    """None when allowed, else the seconds to wait."""
    limit = settings.SEARCH_RATE_LIMIT
    if not limit:
        return None
    window = settings.SEARCH_RATE_WINDOW
    now = int(time.time())
    bucket = now // window
    key = f"rl:{client_key(request)}:{bucket}"
    cache.add(key, 0, timeout=window + 1)  # starts the window's counter if absent
    try:
        count = cache.incr(key)
    except ValueError:
        cache.set(key, 1, timeout=window + 1)
        count = 1
    if count > limit:
        return window - (now % window) or 1
    return None
