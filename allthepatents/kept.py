"""Figures public pages show that read a row per day or per job (the ledger's daily heads,
the contributors' credits), which grow with the site's age: computed at most once per
PUBLIC_FIGURES_SECONDS in each web process, not for every visitor. A figure is at most that
old; the ledger's internals and the dumps compute their own, exact. (The counts of
inventions and references are the writes' tallies, read exact at every request.)"""

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from django.conf import settings

_lock = threading.Lock()
_kept: OrderedDict[tuple, tuple[float, object]] = OrderedDict()
# Keys carry a figure's arguments: bounded, so that a caller passing endless values (a
# crawler's filters) cannot grow a process without end.
KEPT_MAX = 256


def kept(fn: Callable, **kwargs):
    """``fn(**kwargs)``, or the value it returned less than PUBLIC_FIGURES_SECONDS ago in
    this process (a copy: callers may change what they get)."""
    seconds = settings.PUBLIC_FIGURES_SECONDS
    if not seconds:
        return fn(**kwargs)
    key = (fn.__module__, fn.__qualname__, tuple(sorted(kwargs.items())))
    with _lock:
        hit = _kept.get(key)
    if hit is None or time.monotonic() - hit[0] >= seconds:
        hit = (time.monotonic(), fn(**kwargs))
        with _lock:
            _kept[key] = hit
            _kept.move_to_end(key)
            while len(_kept) > KEPT_MAX:
                _kept.popitem(last=False)
    return copy.deepcopy(hit[1])


def kept_clear() -> None:
    with _lock:
        _kept.clear()
