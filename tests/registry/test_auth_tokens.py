"""registry.tokens: what a token carries, and every way a token is refused."""

import datetime as dt
import hashlib
import hmac
from typing import Any

import jwt
import pytest
from django.conf import settings as django_settings
from pytest_django.fixtures import Settings as SettingsWrapper

from registry.tokens import (
    Access,
    ScopeInvalid,
    TokenInvalid,
    scope_parse,
    signing_key,
    token_issue,
    token_verify,
)
from tests.registry.auth_fixtures import SERVICE, claims, token_make


def test_issued_token_verifies_with_its_user_and_access() -> None:
    access = [Access("repository", "alice/app", ("pull", "push"))]
    issued = token_issue(audience=SERVICE, user_id=7, subject="alice", access=access)

    verified = token_verify(token=issued.token, audience=SERVICE)

    assert verified.user_id == 7
    assert verified.subject == "alice"
    assert verified.access == tuple(access)
    assert issued.expires_in == 300


def test_issued_token_follows_the_docker_claims_format() -> None:
    issued = token_issue(
        audience=SERVICE,
        user_id=None,
        subject="",
        access=[Access("repository", "acme/tool", ("pull",))],
    )

    payload = jwt.decode(issued.token, options={"verify_signature": False})

    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"
    assert payload["access"] == [{"type": "repository", "name": "acme/tool", "actions": ["pull"]}]
    assert payload["aud"] == SERVICE
    assert payload["iss"] == "quay-geo"
    assert payload["exp"] - payload["iat"] == 300
    assert "uid" not in payload


def test_token_ttl_follows_the_setting(settings: SettingsWrapper) -> None:
    settings.QUAY_GEO_TOKEN_TTL = 42

    issued = token_issue(audience=SERVICE, user_id=None, subject="", access=[])

    payload = jwt.decode(issued.token, options={"verify_signature": False})
    assert issued.expires_in == 42
    assert payload["exp"] - payload["nbf"] == 42


def test_signing_key_is_derived_from_the_secret_key_not_the_key_itself() -> None:
    key = signing_key()

    assert key != django_settings.SECRET_KEY.encode()
    assert len(key) == 32
    assert (
        key
        == hmac.new(
            django_settings.SECRET_KEY.encode(),
            b"quay-geo registry bearer token v1",
            hashlib.sha256,
        ).digest()
    )


def test_another_secret_key_gives_another_signing_key(settings: SettingsWrapper) -> None:
    before = signing_key()
    settings.SECRET_KEY = "another-deployment"

    assert signing_key() != before


@pytest.mark.parametrize(
    ("token_kwargs", "reason"),
    [
        ({"lifetime": dt.timedelta(seconds=-60)}, "token expired"),
        ({"audience": "other.example"}, "token was issued for another service"),
        ({"issuer": "someone-else"}, "token issuer is not this registry"),
        ({"key": b"k" * 32}, "token signature is invalid"),
        (
            {"now": dt.timedelta(minutes=2)},  # from the moment the test runs
            "token not yet valid",
        ),
        ({"algorithm": "HS512", "key": b"k" * 64}, "token signing algorithm is not accepted"),
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "forged", "not-yet-valid", "alg-hs512"],
)
def test_untrusted_token_is_refused_with_its_reason(
    token_kwargs: dict[str, Any], reason: str
) -> None:
    if isinstance(token_kwargs.get("now"), dt.timedelta):
        # not computed at collection time: a long test run would make it expire meanwhile
        token_kwargs = {**token_kwargs, "now": dt.datetime.now(dt.UTC) + token_kwargs["now"]}
    token = token_make(**token_kwargs)

    with pytest.raises(TokenInvalid, match=reason):
        token_verify(token=token, audience=SERVICE)


def test_token_within_clock_leeway_is_accepted() -> None:
    token = token_make(lifetime=dt.timedelta(seconds=-5))

    assert token_verify(token=token, audience=SERVICE).user_id is None


def test_unsigned_token_is_refused() -> None:
    token = jwt.encode(claims(), key="", algorithm="none")

    with pytest.raises(TokenInvalid, match="algorithm is not accepted"):
        token_verify(token=token, audience=SERVICE)


def test_token_without_expiry_is_refused() -> None:
    payload = claims()
    del payload["exp"]
    token = jwt.encode(payload, signing_key(), algorithm="HS256")

    with pytest.raises(TokenInvalid, match="lacks a required claim"):
        token_verify(token=token, audience=SERVICE)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_garbage_is_refused_as_malformed(garbage: str) -> None:
    with pytest.raises(TokenInvalid, match="malformed"):
        token_verify(token=garbage, audience=SERVICE)


@pytest.mark.parametrize(
    "access",
    [
        {"type": "repository"},
        [{"type": "repository", "name": "a/b", "actions": "pull"}],
        [{"type": "repository", "name": 3, "actions": ["pull"]}],
    ],
)
def test_signed_token_with_malformed_access_claim_is_refused(access: object) -> None:
    payload = claims()
    payload["access"] = access
    token = jwt.encode(payload, signing_key(), algorithm="HS256")

    with pytest.raises(TokenInvalid, match="malformed access claim"):
        token_verify(token=token, audience=SERVICE)


def test_signed_token_with_non_integer_user_is_refused() -> None:
    payload = claims()
    payload["uid"] = "1"
    token = jwt.encode(payload, signing_key(), algorithm="HS256")

    with pytest.raises(TokenInvalid, match="malformed user claim"):
        token_verify(token=token, audience=SERVICE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository:alice/app:pull", Access("repository", "alice/app", ("pull",))),
        ("repository:alice/app:pull,push", Access("repository", "alice/app", ("pull", "push"))),
        (
            "repository:alice/app:push,pull,push",
            Access("repository", "alice/app", ("push", "pull")),
        ),
        ("registry:catalog:*", Access("registry", "catalog", ("*",))),
        (
            "repository:localhost:5000/alice/app:pull",
            Access("repository", "localhost:5000/alice/app", ("pull",)),
        ),
    ],
)
def test_scope_parses_into_access(text: str, expected: Access) -> None:
    assert scope_parse(text) == expected


@pytest.mark.parametrize("text", ["repository", "repository:alice/app", "repository::pull", ":a:b"])
def test_malformed_scope_is_refused(text: str) -> None:
    with pytest.raises(ScopeInvalid, match="malformed scope"):
        scope_parse(text)
