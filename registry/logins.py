"""What a password guess costs: failed logins counted with backoff, and few hashes at once.

Every password login (the token endpoint, the JSON API's Basic auth, the panel's sign-in) goes
through here, as Quay counts failed logins:

* failures are counted per user name and per client address (``registry.counters``: the shared
  cache, else the database). After ``QUAY_GEO_LOGIN_FAILURES_PER_USER`` failures in a row (or
  ``..._PER_CLIENT`` from one address), further attempts are refused for
  ``QUAY_GEO_LOGIN_BACKOFF_SECONDS``, doubled with every further failure up to
  ``QUAY_GEO_LOGIN_BACKOFF_MAX_SECONDS``. A success clears the user's count (not the address's:
  one valid account must not buy an address more guesses at others);
* a refused attempt is answered before any password hash is computed;
* at most ``QUAY_GEO_PASSWORD_CHECKS_PER_PROCESS`` hashes run at once in a process; a login
  beyond them is refused at once (a PBKDF2 costs most of a second: queued, twenty of them
  would hold every worker thread).
"""

import hashlib
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.http import HttpRequest

from .counters import Hits, counters


class LoginRefused(Exception):
    """A login was refused before its password was checked; retry after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LoginThrottled(LoginRefused):
    """Too many failed logins for this user name or from this address."""


class PasswordChecksBusy(LoginRefused):
    """This process is already computing as many password hashes as it may."""


@dataclass(frozen=True)
class LoginAttempt:
    """The counters a login attempt is recorded under."""

    user_key: str
    client_key: str
    user_failures: int


def _user_key(username: str) -> str:
    # Hashed: any string can be sent as a user name, and none is stored as given.
    return "login:user:" + hashlib.sha256(username.encode(errors="replace")).hexdigest()


def _refused_until(hits: Hits | None, allowed: int) -> float:
    """Return until when a count of failures refuses logins (0: it does not)."""
    if hits is None or hits.count < allowed:
        return 0.0
    base = float(settings.QUAY_GEO_LOGIN_BACKOFF_SECONDS)
    ceiling = float(settings.QUAY_GEO_LOGIN_BACKOFF_MAX_SECONDS)
    exponent = min(hits.count - allowed, 62)
    return hits.last_at + min(ceiling, base * 2**exponent)


def login_admit(*, username: str, client: str, now: float | None = None) -> LoginAttempt:
    """Return the attempt to record; raise LoginThrottled if the user or address must wait."""
    now = time.time() if now is None else now
    user_key, client_key = _user_key(username), f"login:client:{client}"
    found = counters.read([user_key, client_key], now=now)
    until = max(
        _refused_until(found.get(user_key), int(settings.QUAY_GEO_LOGIN_FAILURES_PER_USER)),
        _refused_until(found.get(client_key), int(settings.QUAY_GEO_LOGIN_FAILURES_PER_CLIENT)),
    )
    if until > now:
        retry_after = max(1, math.ceil(until - now))
        raise LoginThrottled(
            f"too many failed logins; retry in {retry_after} s", retry_after=retry_after
        )
    user_hits = found.get(user_key)
    return LoginAttempt(user_key, client_key, user_hits.count if user_hits else 0)


def login_failed(attempt: LoginAttempt, *, now: float | None = None) -> None:
    """Count a failed login against its user name and its address."""
    forget = float(settings.QUAY_GEO_LOGIN_FORGET_SECONDS)
    now = time.time() if now is None else now
    for key in (attempt.user_key, attempt.client_key):
        counters.hit(key, ttl=forget, now=now)


def login_succeeded(attempt: LoginAttempt) -> None:
    """Clear the user's failed logins (a write only if there were some)."""
    if attempt.user_failures:
        counters.clear(attempt.user_key)


class PasswordChecks:
    """The password hashes a process may compute at once (a semaphore, sized at first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: threading.BoundedSemaphore | None = None

    def _semaphore(self) -> threading.BoundedSemaphore:
        with self._lock:
            if self._slots is None:
                size = max(1, int(settings.QUAY_GEO_PASSWORD_CHECKS_PER_PROCESS))
                self._slots = threading.BoundedSemaphore(size)
            return self._slots

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot while the block runs; raise PasswordChecksBusy if none is free."""
        slots = self._semaphore()
        if not slots.acquire(blocking=False):
            raise PasswordChecksBusy("too many logins at once; retry in 1 s", retry_after=1)
        try:
            yield
        finally:
            slots.release()

    def reset(self) -> None:
        """Size the semaphore again from the settings at next use."""
        with self._lock:
            self._slots = None


password_checks = PasswordChecks()


def password_verify(*, request: HttpRequest | None, username: str, password: str) -> User | None:
    """Return the active user the password belongs to, hashed in one of the process's slots."""
    with password_checks.slot():
        user = authenticate(request, username=username, password=password)
    return user if isinstance(user, User) else None


def password_login(
    *, request: HttpRequest | None, username: str, password: str, client: str
) -> User | None:
    """Return the user of a password login, counted; raise LoginRefused before any hash."""
    attempt = login_admit(username=username, client=client)
    user = password_verify(request=request, username=username, password=password)
    if user is None:
        login_failed(attempt)
    else:
        login_succeeded(attempt)
    return user
