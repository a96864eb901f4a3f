from celery import shared_task
from django.db import OperationalError

from patents.ledger import ledger_timestamp_heads


@shared_task(
    name="patents.ledger_timestamp",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=300,
    time_limit=330,
)
def ledger_timestamp_task():
    """Stamps the heads that are due; a TSA that is down is tried again next time."""
    return ledger_timestamp_heads()
