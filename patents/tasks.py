from celery import shared_task
from django.db import OperationalError

from patents.dumps import dump_export_daily
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


@shared_task(
    name="patents.dump_export_daily",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    # A dump of a million inventions takes minutes; the limit is for a stuck one.
    soft_time_limit=4 * 3600,
    time_limit=4 * 3600 + 60,
)
def dump_export_daily_task():
    """Writes today's dump into EXPORT_DIR unless it is there, and prunes old ones."""
    return dump_export_daily()
