"""gunicorn settings every launch shares (scripts/run.sh, the Dockerfile, tests/live.py).

Used as ``gunicorn -c python:quay_geo.gunicorn_config``; options on the command line win.
"""

import os

# The proxies whose X-Forwarded-Proto (and -For) gunicorn honours: the same list Django trusts
# (QUAY_GEO_TRUSTED_PROXIES, quay_geo/proxies.py). gunicorn's own default trusts 127.0.0.1, so
# any local process could claim https; empty trusts no one.
forwarded_allow_ips = os.environ.get("QUAY_GEO_TRUSTED_PROXIES", "")
