"""The database router and the replica's state, in process (the live pair: test_replica_live).

The in-process test run has no separate replica (an alias, if configured, mirrors the test
database), so these tests declare one with ``separate`` and set the monitor's findings by hand.
"""

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache

from quay_geo import replica
from quay_geo.replica import (
    PRIMARY,
    REPLICA,
    ReplicaRouter,
    primary_pinned,
    read_or_primary,
    replicas,
)

router = ReplicaRouter()


@pytest.fixture
def separate(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[None]:
    """A replica that is another database, found caught up just now, bound 5 s."""
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 5.0
    replicas.reset()
    cache.clear()
    monkeypatch.setattr(replicas, "separate", lambda: True)
    replicas.record(error="", caught_up_to=time.time())
    yield
    replicas.reset()
    cache.clear()


def read_db() -> str:
    return router.db_for_read(User)


def test_lsn_compares_as_the_number_it_spells() -> None:
    assert replica._lsn("0/3430FF0") == 0x3430FF0
    assert replica._lsn("16/B374D848") > replica._lsn("15/FFFFFFFF")


def test_writes_and_migrations_go_to_the_primary_even_while_reads_go_to_the_replica(
    separate: None,
) -> None:
    with replicas.replica_allowed(True):
        assert read_db() == REPLICA
        assert router.db_for_write(User) == PRIMARY
    assert router.allow_migrate(PRIMARY, "registry") is True
    assert router.allow_migrate(REPLICA, "registry") is False


def test_reads_go_to_the_replica_only_inside_an_admitted_context(separate: None) -> None:
    assert read_db() == PRIMARY  # tasks, commands, threads: the primary
    with replicas.replica_allowed(True):
        assert read_db() == REPLICA
        with primary_pinned():
            assert read_db() == PRIMARY
        assert read_db() == REPLICA
    assert read_db() == PRIMARY


def test_a_replica_down_lagging_or_unchecked_is_skipped(separate: None) -> None:
    with replicas.replica_allowed(True):
        replicas.mark_down("connection refused")
        assert (replicas.state(), read_db()) == ("down", PRIMARY)

        replicas.record(error="", caught_up_to=time.time() - 6)  # answers, 6 s behind
        assert (replicas.state(), read_db()) == ("lagging", PRIMARY)

        replicas.record(error="", caught_up_to=time.time() - 4)
        assert (replicas.state(), read_db()) == ("ok", REPLICA)

        replicas.reset()
        assert (replicas.state(), read_db()) == ("unchecked", PRIMARY)


def test_without_a_separate_replica_every_read_goes_to_the_primary() -> None:
    replicas.reset()
    replicas.record(error="", caught_up_to=time.time())
    try:
        with replicas.replica_allowed(True):
            assert read_db() == PRIMARY
        assert replicas.state() == "none"
    finally:
        replicas.reset()


def test_the_admission_does_not_leak_into_other_threads(separate: None) -> None:
    seen: list[str] = []
    inside = threading.Event()
    done = threading.Event()

    def other_request() -> None:
        inside.wait(5)
        seen.append(read_db())
        done.set()

    thread = threading.Thread(target=other_request)
    thread.start()
    with replicas.replica_allowed(True):
        inside.set()
        done.wait(5)
        assert read_db() == REPLICA
    thread.join(5)

    assert seen == [PRIMARY]


def test_a_client_is_pinned_until_the_replica_is_caught_up_to_its_write(separate: None) -> None:
    written_at = time.time()
    replicas.record(error="", caught_up_to=written_at - 0.5)
    replicas.write_record("user:7", at=written_at)

    assert replicas.client_pinned("user:7") is True
    assert replicas.client_pinned("user:8") is False  # wrote nothing
    assert replicas.client_pinned("ip:127.0.0.1") is False

    replicas.record(error="", caught_up_to=written_at)
    assert replicas.client_pinned("user:7") is False


def test_read_or_primary_reads_the_primary_again_on_a_replica_miss(separate: None) -> None:
    class Missing(Exception):
        pass

    rows = {PRIMARY: "row", REPLICA: None}
    asked: list[str] = []

    def lookup() -> str | None:
        asked.append(read_db())
        return rows[asked[-1]]

    def lookup_or_raise() -> str:
        found = lookup()
        if found is None:
            raise Missing
        return found

    with replicas.replica_allowed(True):
        assert read_or_primary(lookup) == "row"
        assert read_or_primary(lookup_or_raise, not_found=(Missing,)) == "row"
        rows[REPLICA] = "row"
        assert read_or_primary(lookup) == "row"
    assert asked == [REPLICA, PRIMARY, REPLICA, PRIMARY, REPLICA]

    asked.clear()
    rows[PRIMARY] = None
    assert read_or_primary(lookup) is None  # already on the primary: no second read
    assert asked == [PRIMARY]


def test_the_monitor_thread_stops_on_reset(separate: None, settings: Any) -> None:
    settings.DATABASE_REPLICA_CHECK_SECONDS = 0.05
    checks: list[float] = []
    replicas.check = lambda: checks.append(time.time())  # type: ignore[method-assign]
    try:
        replicas.monitor_ensure()
        replicas.monitor_ensure()  # one thread per process
        deadline = time.monotonic() + 5
        while len(checks) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        threads = [t for t in threading.enumerate() if t.name == "replica-monitor"]
        assert len(threads) == 1
        replicas.reset()
        assert not threads[0].is_alive()
        assert len(checks) >= 3
    finally:
        del replicas.check
