from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Search"

    def ready(self):
        from patents.services import publish_hook_register, withdraw_hook_register
        from search.services import on_publish, on_withdraw

        publish_hook_register(on_publish)
        withdraw_hook_register(on_withdraw)
