import os
from urllib.parse import urlsplit

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")

app = Celery("allthepatents")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    task_routes={
        "generation.*": {"queue": "generation"},
        "search.*": {"queue": "indexing"},
    },
    # The web must never hang on a dead broker: give up fast and let the caller say so.
    broker_connection_timeout=2,
    broker_connection_retry_on_startup=True,
    task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
    result_expires=3600,
    # Nothing reads a task's result, and a task that keeps one makes every send first
    # subscribe to the result backend, with retries of its own that BROKER_SEND_TIMEOUT
    # does not bound (19 s to refuse a job with Redis down).
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()


# The one task whose result is read: a round trip through broker, worker and backend.
@app.task(name="allthepatents.ping", ignore_result=False)
def ping(value=None):
    return {"pong": value}


# Set in worker processes (prefork children inherit it): there, tasks are sent through the
# app's own producer pool, never on an extra connection opened beside the worker's consumer.
IN_WORKER = False


@worker_init.connect
def _mark_worker(**kwargs):
    global IN_WORKER
    IN_WORKER = True


def task_send(task, *, args=(), countdown=None, timeout: float | None = None):
    """Publishes ``task`` (a task, or a task's registered name: a module that enqueues
    need not import the module that runs it) on a connection of its own whose every socket operation gives up
    after ``timeout`` seconds (BROKER_SEND_TIMEOUT). A broker that is down refuses at once;
    one that accepts connections but never answers (a hung Redis, a black-holed host) would
    otherwise hold the caller, a web worker, for as long as the kernel lets it. Raises
    whatever the transport raises; callers say what that means for their work.

    Inside a worker the broker is the one it consumes from, and the app's producer pool is
    what Celery itself uses for retries: publishing there keeps one kind of connection."""
    from django.conf import settings

    # Retries follow task_publish_retry_policy above (one quick retry).
    if isinstance(task, str):
        if task not in app.tasks:
            # Outside a worker nothing has imported the apps' tasks modules yet.
            app.loader.import_default_modules()
        task = app.tasks[task]
    publish = task.apply_async
    if IN_WORKER:
        return publish(args=args, countdown=countdown)
    timeout = settings.BROKER_SEND_TIMEOUT if timeout is None else timeout
    options = {}
    # Socket timeouts are the Redis transport's options; the SQLAlchemy transport (the
    # broker without Redis) hands its options to create_engine, which refuses them. A
    # database broker is local, and its driver's own timeouts apply.
    scheme = urlsplit(app.conf.broker_url or "").scheme
    if scheme.startswith("redis") or scheme == "sentinel":
        options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    with app.connection_for_write(transport_options=options, connect_timeout=timeout) as conn:
        return publish(args=args, countdown=countdown, connection=conn)
