from django.apps import AppConfig


class PatentsConfig(AppConfig):
    name = "patents"
    verbose_name = "Patents"

    def ready(self):
        from patents.dumps import dump_export_soon
        from patents.ledger import ledger_timestamp_soon
        from patents.services import publish_hook_register, withdraw_hook_register

        publish_hook_register(ledger_timestamp_soon)
        publish_hook_register(dump_export_soon)
        withdraw_hook_register(dump_export_soon)
