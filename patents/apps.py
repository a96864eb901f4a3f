from django.apps import AppConfig


class PatentsConfig(AppConfig):
    name = "patents"
    verbose_name = "Patents"

    def ready(self):
        from patents.ledger import ledger_timestamp_soon
        from patents.services import publish_hook_register

        publish_hook_register(ledger_timestamp_soon)
