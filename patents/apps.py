from django.apps import AppConfig


class PatentsConfig(AppConfig):
    name = "patents"
    verbose_name = "Patents"
