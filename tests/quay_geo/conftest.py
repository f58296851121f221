"""The private PostgreSQL primary and streaming standby of the replica tests (tests/pgpair.py)."""

from collections.abc import Iterator

import pytest

from tests import live
from tests.pgpair import PgPair, pg_pair


@pytest.fixture(scope="session")
def pgpair() -> Iterator[PgPair]:
    """A primary and its hot standby on free ports; the standby logs every statement it runs."""
    with pg_pair(live.log_dir() / "pgpair", standby_log_statements=True) as pair:
        yield pair
