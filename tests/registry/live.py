"""A real registry server on loopback for end-to-end tests: gunicorn on the test database.

Tests that talk to it use ``@pytest.mark.django_db(transaction=True)`` so that what they write is
committed and visible to the server's processes. The process itself comes from ``tests.live``.
"""

from collections.abc import Iterator
from typing import Any

import pytest

from tests import live


@pytest.fixture(scope="session")
def registry_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    """Start gunicorn (2 workers x 8 threads) on a free port; yield ``127.0.0.1:<port>``."""
    with django_db_blocker.unblock(), live.gunicorn(DATABASE_CONN_MAX_AGE="0") as url:
        yield url.removeprefix("http://")
