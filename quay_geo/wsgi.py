"""WSGI entry point: the registry serves blob bodies as streams under a WSGI server."""

import os

from django.core.wsgi import get_wsgi_application

from quay_geo.memory import malloc_tune

malloc_tune()  # before the workers fork and allocate part buffers
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quay_geo.settings")
application = get_wsgi_application()

# A preference naming a location that does not exist stops the process here, with the ID in
# the message, rather than failing every upload later.
from replication.selectors import preference_check_at_start  # noqa: E402

preference_check_at_start()
