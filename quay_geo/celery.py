"""The Celery application shared by web and worker processes."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quay_geo.settings")

app = Celery("quay_geo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
