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
