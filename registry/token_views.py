"""The token endpoint of docker token authentication: Basic credentials in, a signed JWT out.

A request may name at most ``QUAY_GEO_TOKEN_MAX_SCOPES`` distinct scopes (read at call time):
each costs queries and bytes of token, and 2,000 of them took 12.7 s and made a 183 KB token.
Password guesses are counted (``registry.logins``): one refused is ``429 TOOMANYREQUESTS`` with
``Retry-After``, answered before any password hash.
"""

import base64
import binascii
import logging

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from quay_geo.proxies import client_address

from . import errors
from .accounts import credentials_check
from .auth import service_of
from .logins import LoginRefused
from .tokens import IssuedToken, ScopeInvalid, token_grant

logger = logging.getLogger(__name__)

BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="quay-geo"'}
DEFAULT_MAX_SCOPES = 32


@csrf_exempt
@require_http_methods(["GET", "POST"])
def token(request: HttpRequest) -> HttpResponse:
    """Issue a token: GET with Basic credentials (none: anonymous), or POST as a password grant."""
    params = request.POST if request.method == "POST" else request.GET
    user: User | None
    try:
        _service_check(request, params.get("service"))
        scopes = _scopes_of(params.getlist("scope"))
        if request.method == "POST":
            if params.get("grant_type") != "password":
                raise errors.Unsupported(
                    message="unsupported grant_type: only 'password' is offered"
                )
            user = _user_of(params.get("username", ""), params.get("password", ""), request)
        else:
            user = _basic_user(request)
        issued, granted = token_grant(user=user, audience=service_of(request), scopes=scopes)
    except ScopeInvalid as exc:
        return errors.Unsupported(message=str(exc)).response()
    except errors.OCIError as exc:
        return exc.response()
    return _token_response(issued, scope=" ".join(entry.scope() for entry in granted))


def _service_check(request: HttpRequest, service: str | None) -> None:
    ours = service_of(request)
    if service and service != ours:
        raise errors.Unsupported(
            message=f"token requested for service {service!r}; this registry is {ours!r}"
        )


def _scopes_of(values: list[str]) -> list[str]:
    """Return the distinct scopes asked for; raise Unsupported if more than the limit."""
    scopes = list(dict.fromkeys(scope for value in values for scope in value.split()))
    limit = int(getattr(settings, "QUAY_GEO_TOKEN_MAX_SCOPES", DEFAULT_MAX_SCOPES))
    if len(scopes) > limit:
        raise errors.Unsupported(
            {"scopes": len(scopes), "limit": limit},
            message=f"too many scopes: {len(scopes)} asked, at most {limit} per token request",
        )
    return scopes


def _basic_user(request: HttpRequest) -> User | None:
    """Return the user of the Basic credentials sent, None if none were sent."""
    scheme, _, encoded = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise errors.Unauthorized(
            message="malformed Basic credentials", headers=BASIC_CHALLENGE
        ) from exc
    username, _, password = decoded.partition(":")
    return _user_of(username, password, request)


def _user_of(username: str, password: str, request: HttpRequest) -> User:
    try:
        user = credentials_check(
            username=username, password=password, client=client_address(request)
        )
    except LoginRefused as exc:
        logger.info(
            "token refused: login of %r from %s: %s", username, client_address(request), exc
        )
        raise errors.TooManyRequests(
            message=str(exc), headers={"Retry-After": str(exc.retry_after)}
        ) from exc
    if user is None:
        logger.info(
            "token refused: bad credentials for %r from %s",
            username,
            client_address(request),
        )
        raise errors.Unauthorized(
            message="invalid username, password or application token", headers=BASIC_CHALLENGE
        )
    return user


def _token_response(issued: IssuedToken, *, scope: str) -> JsonResponse:
    body = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at.isoformat().replace("+00:00", "Z"),
        "scope": scope,
    }
    response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response
