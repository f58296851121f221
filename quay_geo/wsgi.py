"""WSGI entry point: the registry serves blob bodies as streams under a WSGI server."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quay_geo.settings")
application = get_wsgi_application()
