from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Search"

    def ready(self):
        from patents.selectors import patent_neighbours_finder_register
        from patents.services import publish_hook_register, withdraw_hook_register
        from search.selectors import patents_similar
        from search.services import on_publish, on_withdraw

        publish_hook_register(on_publish)
        withdraw_hook_register(on_withdraw)
        patent_neighbours_finder_register(patents_similar)

        from celery.signals import worker_ready

        worker_ready.connect(_index_catch_up, weak=False, dispatch_uid="search-index-catch-up")


def _index_catch_up(sender=None, **kwargs):
    """A documents-first index (`make demo`) gets its claims from the first worker."""
    import logging

    from django.db import close_old_connections

    from search.services import search_index_catch_up

    try:
        if search_index_catch_up():
            logging.getLogger(__name__).info("queued the claims a documents-first index left")
    except Exception:
        logging.getLogger(__name__).exception("index catch-up failed")
    finally:
        close_old_connections()
