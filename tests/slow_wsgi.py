"""The site's WSGI app with a search that never ends and a warm-up of a minute: what a
search stuck behind a busy CPU or a huge claim, and a warm-up on a loaded machine, look
like to gunicorn, made reproducible (tests/test_site_limits.py)."""

import time

# isort: off
from allthepatents.wsgi import application  # noqa: F401  (sets Django up first)
import search.requests
import search.selectors
import search.services
# isort: on


def _stuck(*args, **kwargs):
    while True:
        time.sleep(0.05)


def _slow_warm_up():
    time.sleep(60)
    return "slept"


search.selectors.search_patents = _stuck
search.requests.search_patents = _stuck
search.services.search_warm = _slow_warm_up
