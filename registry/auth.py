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
  fresh token for that scope, as distribution answers insufficient scopes and as the docker
  token specification (and the OCI conformance suite) expects;
* the same token sent again for the same scope within ``SCOPE_REFUSAL_SECONDS`` -> 403
  ``DENIED`` with the same challenge (RFC 6750's answer to ``insufficient_scope``). A client
  that follows the docker token specification never repeats a refused token; oras-py does: it
  resends its token after a 401 and fetches a new one only after a 403. The refusal is kept in
  the region cache: in the process only, unless it is shared, which is enough for a retry on
  the same connection;
* authenticated caller who could never get them -> 403 ``DENIED``. A repository that does not
  exist in a namespace the user cannot read is DENIED too, so existence never leaks.

An invalid, expired or forged token is 401 ``UNAUTHORIZED`` (``error="invalid_token"``) with a
message saying which; a token for another audience or issuer is invalid.

Settings: ``QUAY_GEO_REGISTRY_SERVICE`` (the service name, token audience; default: the host of
the request), plus those of ``registry.tokens``.
"""

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from quay_geo.proxies import client_address
from replication.regioncache import region_cache

from . import errors, permissions
from .accounts import user_active_get
from .models import Repository
from .tokens import TokenInvalid, token_verify

if TYPE_CHECKING:  # the registry's own routes never load DRF: a web worker saves its memory
    from rest_framework.request import Request

logger = logging.getLogger(__name__)

TOKEN_PATH = "/v2/auth"  # noqa: S105 - a URL path
_CACHE_ATTRIBUTE = "_quay_geo_identity"
#: How long a refused token is remembered (module docstring): a client's immediate retry.
SCOPE_REFUSAL_SECONDS = 60


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


#: Scopes a challenge names: (repository, actions) pairs, in order.
Scopes = Sequence[tuple[str, Sequence[str]]]


def challenge(
    request: "HttpRequest | Request", *, scopes: Scopes = (), error: str | None = None
) -> dict[str, str]:
    """Return the ``WWW-Authenticate`` header that sends a client to the token endpoint.

    Several scopes go space-separated in the one ``scope`` parameter, as distribution writes
    them (``scope="repository:a/b:pull,push repository:c/d:pull"``).
    """
    params = [("realm", realm_of(request)), ("service", service_of(request))]
    if scopes:
        params.append(("scope", _scope_text(scopes)))
    if error is not None:
        params.append(("error", error))
    quoted = ",".join(f'{name}="{_quote(value)}"' for name, value in params)
    return {"WWW-Authenticate": f"Bearer {quoted}"}


def _scope_text(scopes: Scopes) -> str:
    return " ".join(f"repository:{name}:{','.join(actions)}" for name, actions in scopes)


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
    request: "HttpRequest | Request",
    repository: str,
    actions: Iterable[str],
    *,
    optional: Scopes = (),
) -> Identity:
    """Return the caller's identity if their token grants ``actions`` on ``repository``.

    Raise Unauthorized (with a challenge naming the scope) or Denied, by the rule of the module
    docstring. ``optional`` scopes are those the route uses when granted and does without
    otherwise (the source of a mount): every challenge names them too, and a token lacking one
    that its user would be granted now is refused as for a missing scope, so that the client
    fetches a token with all of them; one the user would not be granted is done without.
    """
    wanted = tuple(dict.fromkeys(actions))
    scopes = [(repository, wanted)]
    scopes += [(name, tuple(acts)) for name, acts in optional if name != repository]
    try:
        identity = identity_of(request)
    except errors.Unauthorized as exc:
        exc.headers.update(challenge(request, scopes=scopes, error="invalid_token"))
        raise
    missing = {
        name: [action for action in acts if not identity.allows(name, action)]
        for name, acts in scopes
    }
    if not missing[repository]:
        if identity.user is None:
            return identity  # an anonymous caller does without optional scopes
        missing = {
            name: acts
            for name, acts in missing.items()
            if acts
            and permissions.actions_allowed(
                user=identity.user, repository=name, actions=acts
            ).issuperset(acts)
        }
        if not missing:
            return identity
    detail = [
        {"Type": "repository", "Name": name, "Action": action}
        for name, acts in missing.items()
        for action in acts
    ]
    needed = missing.get(repository, [])
    if identity.user is not None and needed:
        allowed = permissions.actions_allowed(
            user=identity.user, repository=repository, actions=needed
        )
        if not allowed.issuperset(needed):
            raise errors.Denied(
                [{"Type": "repository", "Name": repository, "Action": a} for a in needed],
                message=f"access to {repository} denied: {', '.join(needed)} not allowed",
            )
    token = _bearer_token(request)
    error = "insufficient_scope" if token else None
    headers = challenge(request, scopes=scopes, error=error)
    if token and _refused_before(token, scope=_scope_text(scopes)):
        raise errors.Denied(
            detail, message="token lacks the scope required; fetch a new one", headers=headers
        )
    raise errors.Unauthorized(
        detail,
        message="authentication required" if error is None else "token lacks the scope required",
        headers=headers,
    )


def _refused_before(token: str, *, scope: str) -> bool:
    """Return whether ``token`` was refused this scope recently; remember that it now was."""
    fingerprint = hashlib.sha256(token.encode()).hexdigest()[:32]
    key = f"scope-refused:{fingerprint}:{scope}"
    if region_cache.get(key):
        return True
    region_cache.set(key, True, ttl=SCOPE_REFUSAL_SECONDS)
    return False


def registry_root_require(request: "HttpRequest | Request") -> Identity:
    """Return the caller's identity if they sent a valid bearer token; raise Unauthorized if not."""
    identity = identity_of(request)
    if _bearer_token(request) is None:
        raise errors.Unauthorized(headers=challenge(request))
    return identity


def repositories_visible(identity: Identity) -> QuerySet[Repository]:
    """Return the repositories the caller may pull (for the catalog)."""
    return permissions.repositories_pullable(user=identity.user)
