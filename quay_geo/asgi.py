"""ASGI entry point (blob uploads should use the WSGI server: ASGI buffers request bodies)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quay_geo.settings")
application = get_asgi_application()
