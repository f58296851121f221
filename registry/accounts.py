"""Accounts: users' namespaces, organizations and their members, application tokens, visibility.

Application tokens let CI robots log in with ``username`` + token instead of a password. A token
is random, shown once at creation, and only its SHA-256 is stored.
"""

import hashlib
import logging
import secrets
from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models.signals import post_save
from django.utils import timezone

from .models import (
    AppToken,
    Namespace,
    NamespaceKind,
    NamespaceMember,
    Repository,
    Role,
    Visibility,
)
from .permissions import namespace_name_valid, repository_name_split

logger = logging.getLogger(__name__)

APP_TOKEN_PREFIX = "qgat_"  # noqa: S105 - a public marker, not a secret


class AccountError(Exception):
    """An account operation was refused; the message says why."""


# --- Users ----------------------------------------------------------------------------------------


def user_by_username(username: str) -> User:
    """Return the user named ``username``; raise AccountError if there is none."""
    user = User.objects.filter(username=username).first()
    if user is None:
        raise AccountError(f"no user named {username!r}")
    return user


def user_namespace_ensure(*, user: User) -> Namespace | None:
    """Return the user's namespace, created as the lowercased username if that is free and valid."""
    existing = Namespace.objects.filter(owner=user).first()
    if existing is not None:
        return existing
    name = user.username.lower()
    if not namespace_name_valid(name):
        logger.info("user %s gets no namespace: %r is not a valid namespace name", user.pk, name)
        return None
    try:
        with transaction.atomic():
            return Namespace.objects.create(name=name, kind=NamespaceKind.USER, owner=user)
    except IntegrityError:
        logger.warning("user %s gets no namespace: %r is already taken", user.pk, name)
        return None


def _user_saved(
    sender: type[User], instance: User, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    if created and not raw:
        user_namespace_ensure(user=instance)


def signals_connect() -> None:
    """Connect the signal that gives every new user a namespace."""
    post_save.connect(_user_saved, sender=User, dispatch_uid="registry.accounts.user_namespace")


# --- Organizations --------------------------------------------------------------------------------


def organization_create(*, name: str, owner: User) -> Namespace:
    """Create an organization with ``owner`` as its admin; raise AccountError if refused."""
    if not namespace_name_valid(name):
        raise AccountError(
            f"{name!r} is not a valid namespace name: use lowercase letters and digits, "
            "separated by '.', '_', '__' or '-'"
        )
    try:
        with transaction.atomic():
            organization = Namespace.objects.create(name=name, kind=NamespaceKind.ORGANIZATION)
            NamespaceMember.objects.create(namespace=organization, user=owner, role=Role.ADMIN)
    except IntegrityError as exc:
        raise AccountError(f"namespace {name!r} already exists") from exc
    logger.info("organization %s created, admin %s", name, owner.username)
    return organization


def organization_member_add(*, organization: str, user: User, role: Role) -> NamespaceMember:
    """Give ``user`` the ``role`` in an organization (replacing any role they had)."""
    namespace = Namespace.objects.filter(name=organization, kind=NamespaceKind.ORGANIZATION).first()
    if namespace is None:
        raise AccountError(f"no organization named {organization!r}")
    member, _ = NamespaceMember.objects.update_or_create(
        namespace=namespace, user=user, defaults={"role": role}
    )
    logger.info("organization %s: %s is now %s", organization, user.username, role)
    return member


# --- Application tokens ---------------------------------------------------------------------------


def _token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def app_token_create(*, user: User, name: str) -> tuple[AppToken, str]:
    """Create an application token; return it with its secret, which is never available again."""
    if not name.strip():
        raise AccountError("an application token needs a name")
    if AppToken.objects.filter(user=user, name=name).exists():
        raise AccountError(f"{user.username} already has an application token named {name!r}")
    secret = APP_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = AppToken.objects.create(user=user, name=name, token_hash=_token_hash(secret))
    logger.info("application token %s created for %s", name, user.username)
    return token, secret


def app_token_revoke(*, user: User, name: str) -> None:
    """Delete the user's application token named ``name``; raise AccountError if there is none."""
    deleted, _ = AppToken.objects.filter(user=user, name=name).delete()
    if not deleted:
        raise AccountError(f"{user.username} has no application token named {name!r}")
    logger.info("application token %s of %s revoked", name, user.username)


def app_token_user(*, username: str, secret: str) -> User | None:
    """Return the active user an application token belongs to, if ``username`` is theirs."""
    token = (
        AppToken.objects.select_related("user")
        .filter(token_hash=_token_hash(secret), user__username=username, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    AppToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


def credentials_check(*, username: str, password: str) -> User | None:
    """Return the active user these credentials (password or application token) belong to."""
    if not username or not password:
        return None
    if password.startswith(APP_TOKEN_PREFIX):
        user = app_token_user(username=username, secret=password)
        if user is not None:
            return user
    user = authenticate(username=username, password=password)
    return user if isinstance(user, User) else None


# --- Repositories ---------------------------------------------------------------------------------


def repository_visibility_set(*, repository: str, visibility: Visibility) -> Repository:
    """Make an existing repository public or private; raise AccountError if it does not exist."""
    parts = repository_name_split(repository)
    if parts is None:
        raise AccountError(f"{repository!r} is not a valid repository name (<namespace>/<name>)")
    namespace, name = parts
    found = Repository.objects.filter(namespace__name=namespace, name=name).update(
        visibility=visibility
    )
    if not found:
        raise AccountError(f"no repository named {repository!r}")
    logger.info("repository %s is now %s", repository, visibility)
    return Repository.objects.select_related("namespace").get(namespace__name=namespace, name=name)
