from django.apps import AppConfig


class ReplicationConfig(AppConfig):
    name = "replication"
    verbose_name = "Storage replication"
    default_auto_field = "django.db.models.BigAutoField"
