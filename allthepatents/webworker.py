"""What a response that streams for long needs from the web server's worker process.

gunicorn's sync worker tells its master it is alive between requests only; one response
that takes longer than WEB_WORKER_TIMEOUT to send (a dump of a million inventions, 0.65 GB,
to a visitor on a slow line) gets the worker killed and the download cut. A streaming
response calls ``web_worker_alive`` as it goes, which gunicorn's own heartbeat then is
(``allthepatents/gunicorn_conf.py`` registers it); elsewhere (runserver, tests) it does
nothing."""

from collections.abc import Callable

_notify: Callable[[], None] | None = None


def web_worker_register(notify: Callable[[], None]) -> None:
    global _notify
    _notify = notify


def web_worker_alive() -> None:
    if _notify is not None:
        _notify()
