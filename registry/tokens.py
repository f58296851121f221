"""Registry bearer tokens: HS256 JWTs in the docker token format, keyed from SECRET_KEY.

Every instance derives the same signing key from ``SECRET_KEY``, so a token issued by one
instance is accepted by all of them. Verification needs no database access.

Settings (read at call time):

* ``QUAY_GEO_TOKEN_TTL``: lifetime of an issued token in seconds (default 300).
* ``QUAY_GEO_TOKEN_ISSUER``: the ``iss`` claim issued and required (default ``"quay-geo"``).
"""

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth.models import User

from . import permissions

ALGORITHM = "HS256"
DEFAULT_TTL_SECONDS = 300
DEFAULT_ISSUER = "quay-geo"
# Instances' clocks may disagree by a few seconds; exp and nbf tolerate this much.
LEEWAY_SECONDS = 10
_KEY_LABEL = b"quay-geo registry bearer token v1"


class ScopeInvalid(ValueError):
    """A requested scope does not parse as ``type:name:actions``."""


class TokenInvalid(Exception):
    """The token cannot be trusted; the message says why, in words a client user understands."""


@dataclass(frozen=True)
class Access:
    """One entry of the docker ``access`` claim: actions granted on a named resource."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        """Return the JSON form of this entry."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}

    def scope(self) -> str:
        """Return the entry as a scope string (``type:name:action,action``)."""
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: dt.datetime


@dataclass(frozen=True)
class TokenClaims:
    """The verified content of a token."""

    user_id: int | None
    subject: str
    access: tuple[Access, ...]


def token_ttl() -> int:
    """Return the lifetime of new tokens in seconds."""
    return int(getattr(settings, "QUAY_GEO_TOKEN_TTL", DEFAULT_TTL_SECONDS))


def token_issuer() -> str:
    """Return the issuer name put in and required of every token."""
    return str(getattr(settings, "QUAY_GEO_TOKEN_ISSUER", DEFAULT_ISSUER))


def signing_key() -> bytes:
    """Return the HS256 key, derived from SECRET_KEY so that it is never the secret itself."""
    return hmac.new(settings.SECRET_KEY.encode(), _KEY_LABEL, hashlib.sha256).digest()


def token_issue(
    *,
    audience: str,
    user_id: int | None,
    subject: str,
    access: Iterable[Access],
    now: dt.datetime | None = None,
) -> IssuedToken:
    """Return a signed token granting ``access`` to ``subject`` (empty for anonymous)."""
    issued_at = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    ttl = token_ttl()
    claims: dict[str, Any] = {
        "iss": token_issuer(),
        "sub": subject,
        "aud": audience,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + dt.timedelta(seconds=ttl),
        "jti": secrets.token_urlsafe(16),
        "access": [entry.claim() for entry in access],
    }
    if user_id is not None:
        claims["uid"] = user_id
    token = jwt.encode(claims, signing_key(), algorithm=ALGORITHM)
    return IssuedToken(token=token, expires_in=ttl, issued_at=issued_at)


_JWT_ERRORS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token was issued for another service"),
    (jwt.InvalidIssuerError, "token issuer is not this registry"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidAlgorithmError, "token signing algorithm is not accepted"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim"),
)


def token_verify(*, token: str, audience: str) -> TokenClaims:
    """Return the claims of ``token``; raise TokenInvalid if it is forged, expired or not ours."""
    try:
        payload = jwt.decode(
            token,
            signing_key(),
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=token_issuer(),
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as exc:
        reason = next((text for kind, text in _JWT_ERRORS if isinstance(exc, kind)), None)
        raise TokenInvalid(reason or f"token is malformed ({exc})") from exc
    return TokenClaims(
        user_id=_user_id_claim(payload.get("uid")),
        subject=str(payload["sub"]),
        access=_access_claim(payload.get("access", [])),
    )


def _user_id_claim(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TokenInvalid("token has a malformed user claim")


def _access_claim(value: object) -> tuple[Access, ...]:
    if not isinstance(value, list):
        raise TokenInvalid("token has a malformed access claim")
    entries = []
    for item in value:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("type"), str)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("actions"), list)
            and all(isinstance(action, str) for action in item["actions"])
        ):
            raise TokenInvalid("token has a malformed access claim")
        entries.append(Access(item["type"], item["name"], tuple(item["actions"])))
    return tuple(entries)


# --- Granting -------------------------------------------------------------------------------------

CATALOG = Access("registry", "catalog", (permissions.ALL,))


def scope_parse(text: str) -> Access:
    """Return the access a scope string asks for; raise ScopeInvalid if it does not parse."""
    # The name may itself hold ':' (docker allows host:port in resource names): split the ends.
    kind, _, remainder = text.partition(":")
    name, _, actions = remainder.rpartition(":")
    if not kind or not name or not actions:
        raise ScopeInvalid(
            f"malformed scope {text!r}: expected <type>:<name>:<action>[,<action>...]"
        )
    return Access(
        kind, name, tuple(dict.fromkeys(action for action in actions.split(",") if action))
    )


def access_grant(*, user: User | None, requested: Iterable[Access]) -> list[Access]:
    """Return the part of ``requested`` that ``user`` (None: anonymous) is granted."""
    granted: dict[tuple[str, str], list[str]] = {}
    for entry in requested:
        if (entry.type, entry.name) == (CATALOG.type, CATALOG.name):
            actions: Iterable[str] = [
                action for action in entry.actions if action == permissions.ALL
            ]
        elif entry.type == "repository":
            allowed = permissions.actions_allowed(
                user=user, repository=entry.name, actions=entry.actions
            )
            actions = [action for action in entry.actions if action in allowed]
        else:
            continue
        merged = granted.setdefault((entry.type, entry.name), [])
        merged.extend(action for action in actions if action not in merged)
    return [
        Access(kind, name, tuple(actions)) for (kind, name), actions in granted.items() if actions
    ]


def token_grant(
    *, user: User | None, audience: str, scopes: Iterable[str]
) -> tuple[IssuedToken, list[Access]]:
    """Return a token with the scopes ``user`` may have; raise ScopeInvalid if one is malformed."""
    granted = access_grant(user=user, requested=[scope_parse(scope) for scope in scopes])
    issued = token_issue(
        audience=audience,
        user_id=user.pk if user is not None else None,
        subject=user.get_username() if user is not None else "",
        access=granted,
    )
    return issued, granted
