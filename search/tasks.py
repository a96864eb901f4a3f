from celery import shared_task
from django.db import OperationalError

from search.services import search_index_update, search_index_update_started


@shared_task(
    name="search.update_index",
    autoretry_for=(OperationalError, TimeoutError),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=3600,
    time_limit=3700,
)
def search_index_update_task():
    """Indexes everything pending; many enqueued calls collapse into one batch of work."""
    search_index_update_started()
    result = search_index_update()
    return {k: result[k] for k in ("added", "count", "rebuilt")}
