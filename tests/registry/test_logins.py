"""Password guessing costs: failed logins counted per user and address, refused with backoff.

The token endpoint here; the JSON API and the panel in tests/superuser/test_login_throttle.py,
the concurrent-login cap against gunicorn in tests/registry/test_logins_live.py.
"""

import base64
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from registry import accounts, logins
from tests.registry.auth_fixtures import World, world

__all__ = ["world"]

URL = "/v2/auth"


class Clock:
    """The time ``registry.logins`` reads; tests move it instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(logins, "time", fake)
    return fake


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The user names whose password was checked (hashed), in order."""
    checked: list[str] = []
    real = logins.authenticate

    def counted(request: Any = None, **credentials: Any) -> Any:
        checked.append(credentials["username"])
        return real(request, **credentials)

    monkeypatch.setattr(logins, "authenticate", counted)
    return checked


def login(client: Client, username: str, password: str, address: str = "192.0.2.1") -> Any:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return client.get(URL, headers={"Authorization": f"Basic {encoded}"}, REMOTE_ADDR=address)


def test_after_five_wrong_passwords_the_user_is_refused_429_before_any_hash(
    client: Client, world: World, clock: Clock, hashes: list[str]
) -> None:
    answers = [login(client, "alice", "wrong").status_code for _ in range(5)]
    assert answers == [401] * 5

    refused = login(client, "alice", "alice-password")  # even the right password

    assert refused.status_code == 429
    assert refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert refused["Retry-After"] == "1"
    assert len(hashes) == 5  # the sixth attempt computed no hash


def test_the_refusal_doubles_with_each_further_failure_and_a_success_clears_it(
    client: Client, world: World, clock: Clock, settings: Any
) -> None:
    settings.QUAY_GEO_LOGIN_BACKOFF_SECONDS = 10.0
    for _ in range(5):
        login(client, "alice", "wrong")
    assert login(client, "alice", "wrong")["Retry-After"] == "10"

    clock.now += 11
    assert login(client, "alice", "wrong").status_code == 401  # the sixth failure
    assert login(client, "alice", "wrong")["Retry-After"] == "20"
    clock.now += 21
    assert login(client, "alice", "wrong").status_code == 401
    assert login(client, "alice", "wrong")["Retry-After"] == "40"

    clock.now += 41
    assert login(client, "alice", "alice-password").status_code == 200
    assert login(client, "alice", "wrong").status_code == 401  # counting starts again


def test_the_refusal_has_a_ceiling_and_failures_are_forgotten_after_a_while(
    client: Client, world: World, clock: Clock, settings: Any
) -> None:
    settings.QUAY_GEO_LOGIN_BACKOFF_MAX_SECONDS = 30.0
    settings.QUAY_GEO_LOGIN_FORGET_SECONDS = 100.0
    for _ in range(9):
        login(client, "alice", "wrong")
        clock.now += 31
    assert login(client, "alice", "wrong").status_code == 401
    assert login(client, "alice", "wrong")["Retry-After"] == "30"  # not 2**5 s

    clock.now += 101
    assert [login(client, "alice", "wrong").status_code for _ in range(5)] == [401] * 5


def test_one_address_guessing_many_users_is_refused_and_other_addresses_are_not(
    client: Client, world: World, clock: Clock, settings: Any
) -> None:
    settings.QUAY_GEO_LOGIN_FAILURES_PER_CLIENT = 8
    for number in range(8):
        assert login(client, f"user{number}", "guess", "198.51.100.9").status_code == 401

    assert login(client, "alice", "alice-password", "198.51.100.9").status_code == 429
    assert login(client, "alice", "alice-password", "198.51.100.10").status_code == 200


def test_a_success_does_not_clear_the_address_count(
    client: Client, world: World, clock: Clock, settings: Any
) -> None:
    settings.QUAY_GEO_LOGIN_FAILURES_PER_CLIENT = 4
    for number in range(3):
        login(client, f"user{number}", "guess")
    assert login(client, "alice", "alice-password").status_code == 200

    assert login(client, "user9", "guess").status_code == 401  # the fourth failure
    assert login(client, "reader", "reader-password").status_code == 429


def test_the_password_grant_is_counted_too(client: Client, world: World, clock: Clock) -> None:
    form = {"grant_type": "password", "username": "alice", "password": "wrong"}
    answers = [client.post(URL, form).status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]


def test_an_application_token_logs_in_while_its_user_is_refused(
    client: Client, world: World, clock: Clock
) -> None:
    _, secret = accounts.app_token_create(user=world.alice, name="ci")
    for _ in range(6):
        login(client, "alice", "wrong")
    assert login(client, "alice", "alice-password").status_code == 429

    assert login(client, "alice", secret).status_code == 200


def test_a_remembered_password_is_still_refused_while_the_user_is(
    client: Client, world: World, clock: Clock, settings: Any, hashes: list[str]
) -> None:
    settings.QUAY_GEO_CACHE_SECONDS = 300.0
    assert login(client, "alice", "alice-password").status_code == 200
    for _ in range(5):
        login(client, "alice", "wrong")  # a wrong password is never answered from the cache

    assert login(client, "alice", "alice-password").status_code == 429
    assert hashes == ["alice"] * 6


def test_beyond_the_password_checks_of_a_process_a_login_is_refused_at_once(
    client: Client, world: World, settings: Any
) -> None:
    settings.QUAY_GEO_PASSWORD_CHECKS_PER_PROCESS = 1
    logins.password_checks.reset()
    try:
        with logins.password_checks.slot():  # another thread is hashing
            busy = login(client, "alice", "alice-password")
        assert busy.status_code == 429
        assert busy["Retry-After"] == "1"
        assert login(client, "alice", "alice-password").status_code == 200
    finally:
        logins.password_checks.reset()


def test_a_user_name_is_counted_hashed_never_as_given(world: World, clock: Clock) -> None:
    from registry.models import Counter

    attempt = logins.login_admit(username="alice\nadmin", client="192.0.2.1")
    logins.login_failed(attempt)

    names = set(Counter.objects.values_list("name", flat=True))
    assert names == {attempt.user_key, "login:client:192.0.2.1"}
    assert "alice" not in attempt.user_key
    assert User.objects.filter(username="alice").exists()
