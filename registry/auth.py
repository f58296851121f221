"""Who is calling the registry, and whether their bearer token lets them do what they ask.

Callers authenticate with docker token authentication: a route answers 401 with a
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` challenge, the client fetches a JWT
from the token endpoint (``registry.token_views``) and retries with ``Authorization: Bearer``.
A token carries the scopes granted when it was issued (``registry.permissions`` decides them);
checking it needs no database access beyond loading its user, so that a disabled or demoted
user loses superuser rights at once. A removed membership keeps working until the token
expires (``QUAY_GEO_TOKEN_TTL`` seconds), as with every docker token server.

Other schemes, Basic included, are ignored on the API routes (the caller is anonymous), as
distribution does with token auth configured: Basic credentials only go to the token endpoint.

The rule for a route that needs actions the token does not grant (``access_require``):

* anonymous caller (no token, or an anonymous token) -> 401 ``UNAUTHORIZED`` with a challenge
  naming the scope, so that the client logs in or fetches a token for it;
* authenticated caller whose user *would* be granted every missing action now -> 401
  ``UNAUTHORIZED`` with the challenge (``error="insufficient_scope"``): the client fetches a
  fresh token for that scope, as distribution answers insufficient scopes;
* authenticated caller who could never get them -> 403 ``DENIED``. A repository that does not
  exist in a namespace the user cannot read is DENIED too, so existence never leaks.

An invalid, expired or forged token is 401 ``UNAUTHORIZED`` (``error="invalid_token"``) with a
message saying which; a token for another audience or issuer is invalid.

Settings: ``QUAY_GEO_REGISTRY_SERVICE`` (the service name, token audience; default: the host of
the request), plus those of ``registry.tokens``.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from quay_geo.proxies import client_address

from . import errors, permissions
from .accounts import user_active_get
from .models import Repository
from .tokens import TokenInvalid, token_verify

if TYPE_CHECKING:  # the registry's own routes never load DRF: a web worker saves its memory
    from rest_framework.request import Request

logger = logging.getLogger(__name__)

TOKEN_PATH = "/v2/auth"  # noqa: S105 - a URL path
_CACHE_ATTRIBUTE = "_quay_geo_identity"


@dataclass(frozen=True)
class Identity:
    """Who is calling, from a verified bearer token, or anonymous."""

    user: User | None = None
    scopes: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    is_superuser: bool = False

    def allows(self, repository: str, action: str) -> bool:
        """Return whether the token grants ``action`` (or ``*``) on ``repository``."""
        return (repository, action) in self.scopes or (repository, permissions.ALL) in self.scopes


ANONYMOUS = Identity()


def service_of(request: "HttpRequest | Request") -> str:
    """Return the service name: the token audience announced in challenges."""
    return str(getattr(settings, "QUAY_GEO_REGISTRY_SERVICE", "") or request.get_host())


def realm_of(request: "HttpRequest | Request") -> str:
    """Return the absolute URL of the token endpoint, as the client reached this registry."""
    return request.build_absolute_uri(TOKEN_PATH)


def challenge(
    request: "HttpRequest | Request",
    *,
    repository: str | None = None,
    actions: Iterable[str] = (),
    error: str | None = None,
) -> dict[str, str]:
    """Return the ``WWW-Authenticate`` header that sends a client to the token endpoint."""
    params = [("realm", realm_of(request)), ("service", service_of(request))]
    if repository is not None:
        params.append(("scope", f"repository:{repository}:{','.join(actions)}"))
    if error is not None:
        params.append(("error", error))
    quoted = ",".join(f'{name}="{_quote(value)}"' for name, value in params)
    return {"WWW-Authenticate": f"Bearer {quoted}"}


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _bearer_token(request: "HttpRequest | Request") -> str | None:
    """Return the bearer token sent, None if no Bearer header was sent."""
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


def identity_of(request: "HttpRequest | Request") -> Identity:
    """Return the caller's identity, verified once per request; raise Unauthorized if bad."""
    base = getattr(request, "_request", request)  # a DRF Request wraps the HttpRequest
    cached = getattr(base, _CACHE_ATTRIBUTE, None)
    if isinstance(cached, Identity):
        return cached
    identity = _identity_verify(request)
    setattr(base, _CACHE_ATTRIBUTE, identity)
    return identity


def _identity_verify(request: "HttpRequest | Request") -> Identity:
    token = _bearer_token(request)
    if token is None:
        return ANONYMOUS
    if not token:
        raise _invalid_token(request, "the Authorization header carries no bearer token")
    try:
        claims = token_verify(token=token, audience=service_of(request))
    except TokenInvalid as exc:
        raise _invalid_token(request, str(exc)) from exc
    user = None
    if claims.user_id is not None:
        user = user_active_get(user_id=claims.user_id)
        if user is None:
            raise _invalid_token(request, "the token's user no longer exists or is disabled")
    scopes = frozenset(
        (entry.name, action)
        for entry in claims.access
        if entry.type == "repository"
        for action in entry.actions
    )
    return Identity(user=user, scopes=scopes, is_superuser=user is not None and user.is_superuser)


def _invalid_token(request: "HttpRequest | Request", reason: str) -> errors.OCIError:
    logger.info("refused bearer token from %s: %s", client_address(request), reason)
    return errors.Unauthorized(
        message=f"authentication failed: {reason}",
        headers=challenge(request, error="invalid_token"),
    )


def access_require(
    request: "HttpRequest | Request", repository: str, actions: Iterable[str]
) -> Identity:
    """Return the caller's identity if their token grants ``actions`` on ``repository``.

    Raise Unauthorized (with a challenge naming the scope) or Denied, by the rule of the module
    docstring.
    """
    wanted = tuple(dict.fromkeys(actions))
    try:
        identity = identity_of(request)
    except errors.Unauthorized as exc:
        exc.headers.update(
            challenge(request, repository=repository, actions=wanted, error="invalid_token")
        )
        raise
    missing = [action for action in wanted if not identity.allows(repository, action)]
    if not missing:
        return identity
    detail = [{"Type": "repository", "Name": repository, "Action": action} for action in missing]
    error = "insufficient_scope" if _bearer_token(request) else None
    if identity.user is not None:
        allowed = permissions.actions_allowed(
            user=identity.user, repository=repository, actions=missing
        )
        if not allowed.issuperset(missing):
            raise errors.Denied(
                detail,
                message=f"access to {repository} denied: {', '.join(missing)} not allowed",
            )
    raise errors.Unauthorized(
        detail,
        message="authentication required" if error is None else "token lacks the scope required",
        headers=challenge(request, repository=repository, actions=wanted, error=error),
    )


def registry_root_require(request: "HttpRequest | Request") -> Identity:
    """Return the caller's identity if they sent a valid bearer token; raise Unauthorized if not."""
    identity = identity_of(request)
    if _bearer_token(request) is None:
        raise errors.Unauthorized(headers=challenge(request))
    return identity


def repositories_visible(identity: Identity) -> QuerySet[Repository]:
    """Return the repositories the caller may pull (for the catalog)."""
    return permissions.repositories_pullable(user=identity.user)
