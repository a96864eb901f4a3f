import os

from celery import Celery

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
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()


@app.task(name="allthepatents.ping")
def ping(value=None):
    return {"pong": value}
