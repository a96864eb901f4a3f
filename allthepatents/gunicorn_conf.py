"""gunicorn settings for `make run` (scripts/run.sh passes ``-c`` this file)."""

import logging
import threading
import time

from allthepatents.env import env_bool
from allthepatents.settings import WEB_WORKER_TIMEOUT

# Above the site's own request deadline (allthepatents/deadline.py): a slow request is
# answered with the site's page and the worker lives; this only catches a worker stuck in C.
timeout = WEB_WORKER_TIMEOUT

# The embedding model and the FAISS index load before a worker takes its first request
# (post_worker_init runs before the worker's accept loop), so no visitor pays for it:
# measured 4-8 s for the first search on a cold worker, 16 s for 6 concurrent ones.
# A misspelt value fails the start with the variable's name (it used to mean "on").
preload = env_bool("SEARCH_PRELOAD", True)


def _warm(pid: int) -> None:
    started = time.monotonic()
    try:
        from search.services import search_warm

        state = search_warm()
    except Exception as exc:  # a missing index or model must never stop the web worker
        state = f"failed: {exc}"
    logging.getLogger("gunicorn.error").info(
        "search warm-up in worker %s: %s (%.1f s)", pid, state, time.monotonic() - started
    )


def post_worker_init(worker):
    """Warm up beside the request loop, not before it: pages, feeds and /healthz answer at
    once, and only a search waits for what is still loading (the loaders hold a lock).
    Blocking here made the first request of a fresh start wait 33 s behind two warming
    workers, and a warm-up longer than the worker timeout got the worker killed."""
    from allthepatents.webworker import web_worker_register

    web_worker_register(worker.notify)  # long downloads beat for the worker (webworker.py)
    if not preload:
        return
    threading.Thread(target=_warm, args=(worker.pid,), name="search-warm-up", daemon=True).start()
