"""Worker start-up: one torch thread, and re-dispatch of jobs and checks left behind."""

import logging
import os
import threading

from celery.signals import worker_process_init, worker_ready

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _one_thread(**kwargs):
    # Two threads on two cores collapse under any other load; scale with processes.
    from django.conf import settings

    os.environ.setdefault("OMP_NUM_THREADS", str(settings.TORCH_THREADS))
    try:
        import torch

        torch.set_num_threads(settings.TORCH_THREADS)
    except ImportError:  # pragma: no cover
        pass


HEARTBEAT_SECONDS = 10


def heartbeat_dir():
    from django.conf import settings

    return settings.DATA_DIR / "workers"


@worker_ready.connect
def _heartbeat(sender=None, **kwargs):
    """Touches DATA_DIR/workers/<name> while the worker lives: /healthz reads it where the
    broker cannot broadcast a ping (the embedded SQLite broker)."""
    import time

    name = getattr(sender, "hostname", None) or f"worker-{os.getpid()}"
    path = heartbeat_dir() / name.replace("/", "_")
    path.parent.mkdir(parents=True, exist_ok=True)

    def beat():
        while True:
            path.touch()
            time.sleep(HEARTBEAT_SECONDS)

    threading.Thread(target=beat, daemon=True).start()


@worker_ready.connect
def _recover_jobs(sender=None, **kwargs):
    """Runs in the worker's main thread before it consumes: a side thread publishing beside
    the consumer's event loop could leave the worker holding tasks it never ran."""
    from django.db import close_old_connections

    from generation.contributions import contributions_requeue
    from generation.services import jobs_recover

    try:
        ids = jobs_recover()
        if ids:
            logger.info("re-dispatched jobs %s", ids)
        # A worker killed in the middle of a check left its submission pending.
        pending = contributions_requeue()
        if pending:
            logger.info("re-queued the checks of contributions %s", pending)
    except Exception:
        logger.exception("job recovery failed")
    finally:
        close_old_connections()
