"""The PostgreSQL backend pings a reused connection only when it has been idle for a while."""

from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from quay_geo.postgresql import base

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the backend is PostgreSQL's; CI runs on it"
)


def _request_cycle(*, then_query: bool) -> list[str]:
    """Run what Django does around one request; return the statements the request sent."""
    connection.close_if_unusable_or_obsolete()  # request_started
    with CaptureQueriesContext(connection) as captured:
        if then_query:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 42")
    connection.close_if_unusable_or_obsolete()  # request_finished
    return [query["sql"] for query in captured.captured_queries]


def _pings_counted(wrapper: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    original = wrapper.is_usable

    def counted() -> bool:
        pings.append(1)
        return bool(original())

    monkeypatch.setattr(wrapper, "is_usable", counted)
    return pings


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_just_served_a_request_is_not_pinged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrapper = connections["default"]
    assert isinstance(wrapper, base.DatabaseWrapper)
    wrapper.ensure_connection()
    monkeypatch.setattr(wrapper, "health_check_enabled", True)
    pings = _pings_counted(wrapper, monkeypatch)
    _request_cycle(then_query=True)  # proves the connection
    pings.clear()

    _request_cycle(then_query=True)

    assert pings == [], "a connection proven a moment ago costs no SELECT 1"


@pytest.mark.django_db(transaction=True)
def test_a_connection_idle_for_longer_than_the_bound_is_pinged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrapper = connections["default"]
    wrapper.ensure_connection()
    monkeypatch.setattr(wrapper, "health_check_enabled", True)
    pings = _pings_counted(wrapper, monkeypatch)
    _request_cycle(then_query=True)
    assert isinstance(wrapper, base.DatabaseWrapper)
    monkeypatch.setattr(wrapper, "_proven_at", wrapper._proven_at - base.HEALTH_CHECK_AFTER)

    _request_cycle(then_query=True)

    assert pings == [1]
