"""Shared givens of the auth tests: users, an organization, repositories, hand-made tokens."""

import datetime as dt
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from django.contrib.auth.models import User

from registry import accounts
from registry.models import Namespace, Repository, Role, Visibility
from registry.tokens import signing_key

SERVICE = "testserver"  # the host of Django's test client and RequestFactory


@dataclass
class World:
    alice: User  # owns namespace "alice"
    reader: User  # read in org "acme"
    writer: User  # write in org "acme"
    admin: User  # admin (creator) of org "acme"
    stranger: User  # nothing anywhere but their own namespace
    root: User  # superuser


def user_create(username: str, *, password: str = "", superuser: bool = False) -> User:
    """Create a user (and, by the signal, their namespace)."""
    user = User.objects.create_user(username, password=password or f"{username}-password")
    if superuser:
        User.objects.filter(pk=user.pk).update(is_superuser=True, is_staff=True)
        user.refresh_from_db()
    return user


def repository_create(full_name: str, *, visibility: Visibility = Visibility.PRIVATE) -> Repository:
    namespace, _, name = full_name.partition("/")
    return Repository.objects.create(
        namespace=Namespace.objects.get(name=namespace), name=name, visibility=visibility
    )


@pytest.fixture
def world(db: None, settings: Any) -> World:
    """Users, org ``acme`` with one member per role, and repositories public and private."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    given = World(
        alice=user_create("alice"),
        reader=user_create("reader"),
        writer=user_create("writer"),
        admin=user_create("admin"),
        stranger=user_create("stranger"),
        root=user_create("root", superuser=True),
    )
    accounts.organization_create(name="acme", owner=given.admin)
    accounts.organization_member_add(organization="acme", user=given.reader, role=Role.READ)
    accounts.organization_member_add(organization="acme", user=given.writer, role=Role.WRITE)
    repository_create("alice/private-app")
    repository_create("alice/public-app", visibility=Visibility.PUBLIC)
    repository_create("acme/tool")
    repository_create("acme/open", visibility=Visibility.PUBLIC)
    return given


def claims(
    *,
    user: User | None = None,
    access: dict[str, list[str]] | None = None,
    audience: str = SERVICE,
    issuer: str = "quay-geo",
    lifetime: dt.timedelta = dt.timedelta(minutes=5),
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Return the claims of a token, as the token endpoint would write them."""
    issued = now or dt.datetime.now(dt.UTC)
    result: dict[str, Any] = {
        "iss": issuer,
        "sub": user.username if user else "",
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": "test",
        "access": [
            {"type": "repository", "name": name, "actions": actions}
            for name, actions in (access or {}).items()
        ],
    }
    if user is not None:
        result["uid"] = user.pk
    return result


def token_make(key: bytes | None = None, algorithm: str = "HS256", **kwargs: Any) -> str:
    """Return a token signed with the registry's key (or ``key``) with ``claims(**kwargs)``."""
    return jwt.encode(claims(**kwargs), key or signing_key(), algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
