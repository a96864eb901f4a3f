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


@shared_task(
    name="search.embed_shard",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 100,
)
def embedding_shard_task(shard_id: int):
    """Embeds one shard of a sharded build (search.shards). Acknowledged late (the app's
    default): a worker killed mid-shard leaves the message for another one."""
    from search.shards import embedding_shard_embed

    return embedding_shard_embed(shard_id=shard_id)


@shared_task(
    name="search.merge_shards",
    autoretry_for=(OperationalError, TimeoutError),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=3600,
    time_limit=3700,
)
def embedding_shards_merge_task():
    from search.shards import embedding_shards_merge

    return embedding_shards_merge()
