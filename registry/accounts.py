"""Accounts: users' namespaces, organizations and their members, application tokens, visibility.

Application tokens let CI robots log in with ``username`` + token instead of a password. A token
is random, shown once at creation, and only its SHA-256 is stored.
"""

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from replication.regioncache import content_ttl, region_cache

from .logins import login_admit, login_failed, login_succeeded, password_verify
from .models import (
    AppToken,
    Namespace,
    NamespaceKind,
    NamespaceMember,
    Repository,
    Role,
    Visibility,
)
from .permissions import namespace_name_valid, public_key, repository_name_split, role_key

logger = logging.getLogger(__name__)

APP_TOKEN_PREFIX = "qgat_"  # noqa: S105 - a public marker, not a secret
#: ``last_used_at`` is written at most this often per token: a write on every token request
#: would cost a far region a round trip to the primary each time.
APP_TOKEN_USED_PRECISION = timedelta(minutes=1)
#: Keys of the verified-password cache are HMACs under this process's own random key, so the
#: cache never holds anything a password could be recovered or tested from elsewhere.
_CREDENTIALS_KEY = secrets.token_bytes(32)


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


def _user_key(user_id: int) -> str:
    return f"u:{user_id}"


def user_active_get(*, user_id: int) -> User | None:
    """Return the active user with this id, None if there is none or it is disabled.

    Found users are cached in the region cache (``QUAY_GEO_CACHE_SECONDS``): every registry
    request with a token asks this. A change of the user in this process is seen at once; in
    other processes within that lifetime.
    """
    cached = region_cache.get(_user_key(user_id))
    if cached is not None:
        return cached
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is not None:
        _user_remember(user)
    return user


def _user_remember(user: User) -> None:
    """Cache a user just read or verified, for ``user_active_get``."""
    region_cache.set(_user_key(user.pk), user, ttl=content_ttl())


def _user_saved(
    sender: type[User], instance: User, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    region_cache.delete([_user_key(instance.pk)])
    if created and not raw:
        user_namespace_ensure(user=instance)


def _user_deleted(sender: type[User], instance: User, **kwargs: Any) -> None:
    region_cache.delete([_user_key(instance.pk)])


def signals_connect() -> None:
    """Connect the signals that give every new user a namespace and keep the user cache true."""
    post_save.connect(_user_saved, sender=User, dispatch_uid="registry.accounts.user_namespace")
    post_delete.connect(_user_deleted, sender=User, dispatch_uid="registry.accounts.user_deleted")


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
    region_cache.delete([role_key(user_id=user.pk, namespace=organization)])
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
    hashes = list(
        AppToken.objects.filter(user=user, name=name).values_list("token_hash", flat=True)
    )
    deleted, _ = AppToken.objects.filter(user=user, name=name).delete()
    region_cache.delete([_app_token_key(token_hash) for token_hash in hashes])
    if not deleted:
        raise AccountError(f"{user.username} has no application token named {name!r}")
    logger.info("application token %s of %s revoked", name, user.username)


def _app_token_key(token_hash: str) -> str:
    return f"a:{token_hash}"


def app_token_user(*, username: str, secret: str) -> User | None:
    """Return the active user an application token belongs to, if ``username`` is theirs.

    A token found is remembered in the region cache (by its hash, as the database keeps it) for
    ``QUAY_GEO_CACHE_SECONDS``: robots log in for every pull, and a far region must not ask the
    primary each time. A revocation in this process ends it at once; elsewhere within that
    lifetime.
    """
    token_hash = _token_hash(secret)
    remembered = region_cache.get(_app_token_key(token_hash))
    if remembered is not None:
        user_id, owner = remembered
        if owner != username:  # a token hash is unique: it is nobody else's
            return None
        user = user_active_get(user_id=user_id)
        if user is not None and user.get_username() == username:
            return user
    token = (
        AppToken.objects.select_related("user")
        .filter(token_hash=token_hash, user__username=username, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > APP_TOKEN_USED_PRECISION:
        AppToken.objects.filter(pk=token.pk).update(last_used_at=now)
    region_cache.set(_app_token_key(token_hash), (token.user_id, username), ttl=content_ttl())
    _user_remember(token.user)
    return token.user


def credentials_check(*, username: str, password: str, client: str = "") -> User | None:
    """Return the active user these credentials (password or application token) belong to.

    Password logins are counted per user name and per ``client`` address (``registry.logins``);
    raise LoginRefused, before any hash, while they must wait. Application tokens are not
    throttled: they cannot be guessed, and a robot keeps working while its user's password is.
    """
    if not username or not password:
        return None
    if password.startswith(APP_TOKEN_PREFIX):
        user = app_token_user(username=username, secret=password)
        if user is not None:
            return user
    attempt = login_admit(username=username, client=client)
    secret = f"{username}\0{password}".encode()
    key = "c:" + hmac.new(_CREDENTIALS_KEY, secret, "sha256").hexdigest()
    user = _password_remembered(key)
    if user is None:
        user = password_verify(request=None, username=username, password=password)
        if user is None:
            login_failed(attempt)
            return None
        # A verified password is remembered in this process only (PBKDF2 costs most of a token
        # request): a password changed in another process stops working here within the lifetime.
        region_cache.set(key, (user.pk, user.password), ttl=content_ttl(), local_only=True)
        _user_remember(user)
    login_succeeded(attempt)
    return user


def _password_remembered(key: str) -> User | None:
    """Return the user whose password this process verified under ``key``, if still theirs."""
    remembered = region_cache.get(key)
    if remembered is None:
        return None
    user_id, password_hash = remembered
    user = user_active_get(user_id=user_id)
    # The user's stored hash is part of the fact: a changed password ends it at once.
    if user is not None and user.password == password_hash:
        return user
    return None


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
    region_cache.delete([public_key(namespace=namespace, name=name)])
    logger.info("repository %s is now %s", repository, visibility)
    return Repository.objects.select_related("namespace").get(namespace__name=namespace, name=name)
