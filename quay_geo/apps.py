from django.apps import AppConfig


class QuayGeoConfig(AppConfig):
    name = "quay_geo"
    verbose_name = "quay-geo"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
