from django.apps import AppConfig


class StorageEnginesConfig(AppConfig):
    name = "storage_engines"
    verbose_name = "Storage engines"
