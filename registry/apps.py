from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "OCI registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import accounts

        accounts.signals_connect()
