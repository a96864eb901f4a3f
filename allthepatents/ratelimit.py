"""Per-client rate limit for searches (page and API): a fixed-window counter in the cache.

When the cache (Redis) is unreachable the limit falls back to a counter in this process,
with a log line, instead of failing the request: searches keep answering, still limited.
"""

import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache

from allthepatents.client import client_address

logger = logging.getLogger(__name__)

_local_lock = threading.Lock()
_local: dict[str, int] = {}
_last_warning = 0.0


def _count_shared(key: str, window: int, cost: int = 1) -> int:
    if _file_cache():
        # The file cache's incr is a read and a write: two processes counting at once lose
        # a count (121 answers against a limit of 120). Redis's INCR is atomic.
        from filelock import FileLock

        lock = settings.DATA_DIR / "cache" / "ratelimit.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock)):
            return _count_shared_unlocked(key, window, cost)
    return _count_shared_unlocked(key, window, cost)


def _count_shared_unlocked(key: str, window: int, cost: int = 1) -> int:
    cache.add(key, 0, timeout=window + 1)  # starts the window's counter if absent
    try:
        return cache.incr(key, cost)
    except ValueError:  # expired between add and incr
        cache.set(key, cost, timeout=window + 1)
        return cost


def _file_cache() -> bool:
    return settings.CACHES["default"]["BACKEND"].endswith("FileBasedCache")


def _count_local(key: str, cost: int = 1) -> int:
    with _local_lock:
        bucket = key.rsplit(":", 1)[-1]
        for stale in [k for k in _local if not k.endswith(":" + bucket)]:
            del _local[stale]
        _local[key] = _local.get(key, 0) + cost
        return _local[key]


def rate_limit_check(
    request,
    *,
    scope: str = "search",
    limit: int | None = None,
    window: int | None = None,
    client: str | None = None,
    cost: int = 1,
) -> int | None:
    """None when allowed, else the seconds to wait. ``limit`` requests per ``window``
    seconds per client (the search settings unless given); ``client`` counts by another
    key than the request's address (a contributor's token, say); ``cost``: how many
    requests this one counts as (a search with element charts does several's work)."""
    global _last_warning
    limit = settings.SEARCH_RATE_LIMIT if limit is None else limit
    if not limit:
        return None
    window = window or settings.SEARCH_RATE_WINDOW
    now = int(time.time())
    key = f"rl:{scope}:{client or client_address(request)}:{now // window}"
    try:
        count = _count_shared(key, window, cost)
    except Exception as exc:  # redis.ConnectionError, timeouts: any cache backend's own
        if time.monotonic() - _last_warning > 60:
            _last_warning = time.monotonic()
            logger.warning("rate limit cache unavailable (%s): limiting per process", exc)
        count = _count_local(key, cost)
    if count > limit:
        return window - (now % window) or 1
    return None
