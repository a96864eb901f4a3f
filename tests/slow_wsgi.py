"""The site's WSGI app with a search that never ends: what a search stuck behind a busy
CPU or a huge claim looks like to gunicorn, made reproducible (tests/test_site_limits.py)."""

import time

import search.views  # noqa: E402
from allthepatents.wsgi import application  # noqa: F401  (sets Django up)


def _stuck(*args, **kwargs):
    while True:
        time.sleep(0.05)


search.views.search_patents = _stuck
