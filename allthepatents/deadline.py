"""A deadline for each web request, below gunicorn's worker timeout.

gunicorn kills a sync worker that does not answer within its timeout: the visitor gets
gunicorn's bare "Internal Server Error", the worker's warm model and index are lost, and
its replacement warms up while requests queue. A request that runs past
WEB_REQUEST_DEADLINE_SECONDS is instead interrupted (SIGALRM, in the worker's main thread)
and answered with the site's own "took too long" page, and the worker lives on.

The alarm fires between Python bytecodes, so one long C call (a FAISS search, a matrix
product) finishes first; gunicorn's timeout is set well above the deadline for that
(``allthepatents/gunicorn_conf.py``). Threads other than the main one (runserver, gthread
workers) get no deadline: signals reach the main thread only.
"""

import logging
import signal
import threading
import time

from django.conf import settings
from django.shortcuts import render

from allthepatents.api import API_PREFIX, api_error

logger = logging.getLogger(__name__)


class RequestDeadlineExceeded(Exception):
    """Raised inside a request that ran past WEB_REQUEST_DEADLINE_SECONDS."""


def _on_alarm(signum, frame):
    raise RequestDeadlineExceeded


def deadline_response(request):
    """503 with a way forward: what may have made it slow and what to try."""
    seconds = settings.WEB_REQUEST_DEADLINE_SECONDS
    if request.path.startswith(API_PREFIX):
        response = api_error(
            f"the request ran past the {seconds:g} s limit; send a shorter text, ask for "
            "fewer elements or combinations, or retry in a minute",
            503,
        )
    else:
        response = render(request, "too_long.html", {"seconds": seconds}, status=503)
    response["Retry-After"] = "30"
    return response


class RequestDeadlineMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        seconds = settings.WEB_REQUEST_DEADLINE_SECONDS
        if (
            not seconds
            or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
        ):
            return self.get_response(request)
        # Nest inside any alarm already set (pytest-timeout uses one): keep the sooner.
        previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
        previous_remaining, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
        started = time.monotonic()
        if previous_remaining and previous_remaining < seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            signal.setitimer(signal.ITIMER_REAL, previous_remaining, previous_interval)
            return self.get_response(request)
        try:
            try:
                return self.get_response(request)
            except RequestDeadlineExceeded:
                # Raised outside the view (in a middleware or while streaming).
                return self._answer(request)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_remaining:
                left = previous_remaining - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), previous_interval)

    def process_exception(self, request, exception):
        if isinstance(exception, RequestDeadlineExceeded):
            return self._answer(request)
        return None

    def _answer(self, request):
        # Stop the alarm before rendering the answer, so that it cannot fire again.
        signal.setitimer(signal.ITIMER_REAL, 0)
        logger.warning(
            "request ran past the %s s deadline: %s %s",
            settings.WEB_REQUEST_DEADLINE_SECONDS,
            request.method,
            request.path,
        )
        return deadline_response(request)
