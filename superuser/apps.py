from django.apps import AppConfig


class SuperuserConfig(AppConfig):
    name = "superuser"
    verbose_name = "Superuser panel"
