"""Errors: the spec's envelope for every code, bad names on every route, the safety nets."""

import datetime as dt
import json
from typing import Any

import jwt
import pytest
from pytest_django.fixtures import Settings

from registry import errors, selectors
from registry.models import BlobUpload, Repository
from registry.tokens import signing_key
from tests.registry.conftest import Api, Memory, sha256

SPEC_CODES = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 400,
    "TOOMANYREQUESTS": 429,
}


def envelope(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert set(body) == {"errors"}
    assert len(body["errors"]) == 1
    assert set(body["errors"][0]) == {"code", "message", "detail"}
    return dict(body["errors"][0])


@pytest.mark.parametrize("error", errors.ALL_ERRORS, ids=lambda e: e.code)
def test_every_spec_error_renders_the_envelope_with_its_status(
    error: type[errors.OCIError],
) -> None:
    response = error({"why": "test"}).response()

    assert response.status_code == SPEC_CODES[error.code]
    assert envelope(response) == {
        "code": error.code,
        "message": error.message,
        "detail": {"why": "test"},
    }


def test_the_table_holds_every_spec_code_once() -> None:
    assert sorted(e.code for e in errors.ALL_ERRORS) == sorted(SPEC_CODES)


def _request_for(code: str, api: Api) -> Any:
    """Make one real request that the API answers with ``code``."""
    digest = sha256(b"nothing")
    if code == "BLOB_UNKNOWN":
        api.call("POST", "/v2/alice/app/blobs/uploads/")
        return api.call("GET", f"/v2/alice/app/blobs/{digest}")
    if code == "BLOB_UPLOAD_UNKNOWN":
        api.call("POST", "/v2/alice/app/blobs/uploads/")
        return api.call("GET", "/v2/alice/app/blobs/uploads/unknown")
    if code == "DIGEST_INVALID":
        return api.call("GET", "/v2/alice/app/blobs/sha256:bad")
    if code == "MANIFEST_BLOB_UNKNOWN":
        manifest = {
            "schemaVersion": 2,
            "config": {"mediaType": "a/b", "digest": digest, "size": 1},
            "layers": [],
        }
        return api.manifest_push("alice/app", "v1", manifest)
    if code == "MANIFEST_INVALID":
        return api.call(
            "PUT",
            "/v2/alice/app/manifests/v1",
            b"{",
            content_type="application/vnd.oci.image.manifest.v1+json",
        )
    if code == "MANIFEST_UNKNOWN":
        api.call("POST", "/v2/alice/app/blobs/uploads/")
        return api.call("GET", "/v2/alice/app/manifests/v9")
    if code == "NAME_INVALID":
        return api.call("GET", "/v2/Alice/App/tags/list")
    if code == "NAME_UNKNOWN":
        return api.call("GET", "/v2/alice/missing/tags/list")
    if code == "SIZE_INVALID":
        location = api.call("POST", "/v2/alice/app/blobs/uploads/")["Location"]
        return api.call("PATCH", location, b"abc", headers={"Content-Range": "0-9"})
    if code == "UNAUTHORIZED":
        return api.call("GET", "/v2/alice/app/tags/list", token="")
    if code == "DENIED":
        return Api(api.client, None).call(
            "GET", "/v2/alice/app/tags/list", token=_forged_token_for_stranger(api)
        )
    if code == "UNSUPPORTED":
        return api.call("POST", "/v2/alice/app/blobs/uploads/", query={"digest-algorithm": "crc32"})
    raise AssertionError(code)


def _forged_token_for_stranger(api: Api) -> str:
    from django.contrib.auth.models import User

    stranger = User.objects.create_user("stranger", password="x")
    now = dt.datetime.now(dt.UTC)
    claims = {
        "iss": "quay-geo",
        "sub": "stranger",
        "aud": "testserver",
        "iat": now,
        "nbf": now,
        "exp": now + dt.timedelta(minutes=5),
        "jti": "t",
        "access": [],
        "uid": stranger.pk,
    }
    return jwt.encode(claims, signing_key(), algorithm="HS256")


@pytest.mark.parametrize(
    "code", sorted(set(SPEC_CODES) - {"BLOB_UPLOAD_INVALID", "TOOMANYREQUESTS"})
)
def test_each_spec_code_is_answered_by_a_real_request(api: Api, code: str) -> None:
    response = _request_for(code, api)

    assert response.status_code == SPEC_CODES[code]
    assert envelope(response)["code"] == code


def test_too_many_requests_carries_retry_after(api: Api, settings: Settings) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.QUAY_GEO_RATE_LIMIT_PER_MINUTE = 2
    api.token("repository:alice/app:pull,push,delete")  # the token endpoint is not limited

    answers = [api.call("GET", "/v2/alice/app/tags/list") for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [404, 404]
    assert answers[2].status_code == 429
    assert envelope(answers[2])["code"] == "TOOMANYREQUESTS"
    assert 1 <= int(answers[2]["Retry-After"]) <= 60


BAD_NAMES = [
    "Alice/app",
    "alice/..",
    "alice/%2e%2e",
    "alice/%2E%2E/app",
    "alice//app",
    "app",
    "alice/" + "a" * 250,
    "alice/app%0a",
    "alice/app%0d",
    "alice%0d%0a/app",
]
ROUTES = [
    ("GET", "/v2/{name}/tags/list"),
    ("GET", "/v2/{name}/manifests/latest"),
    ("HEAD", "/v2/{name}/manifests/latest"),
    ("PUT", "/v2/{name}/manifests/latest"),
    ("DELETE", "/v2/{name}/manifests/latest"),
    ("GET", "/v2/{name}/blobs/" + sha256(b"x")),
    ("HEAD", "/v2/{name}/blobs/" + sha256(b"x")),
    ("DELETE", "/v2/{name}/blobs/" + sha256(b"x")),
    ("POST", "/v2/{name}/blobs/uploads/"),
    ("PATCH", "/v2/{name}/blobs/uploads/some-uuid"),
    ("GET", "/v2/{name}/referrers/" + sha256(b"x")),
]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(("method", "route"), ROUTES, ids=[f"{m} {r}" for m, r in ROUTES])
def test_names_out_of_grammar_are_name_invalid_on_every_route(
    api: Api, memory: Memory, name: str, method: str, route: str
) -> None:
    response = api.call(method, route.format(name=name), b"{}", token="")

    assert response.status_code == 400
    if method != "HEAD":
        assert envelope(response)["code"] == "NAME_INVALID"
    assert not Repository.objects.exists()
    assert not BlobUpload.objects.exists()


def test_an_unknown_route_under_v2_is_a_json_404(api: Api) -> None:
    for path in ("/v2/alice/app/unknown", "/v2/alice", "/v2", "/v2/alice%0a", "/v2/%0d%0a/x"):
        response = api.call("GET", path)
        assert response.status_code == 404
        assert envelope(response)["code"] == "UNSUPPORTED"


def test_a_method_a_route_does_not_take_is_a_json_405(api: Api) -> None:
    response = api.call("POST", "/v2/alice/app/tags/list")

    assert response.status_code == 405
    assert "GET" in response["Allow"]
    assert envelope(response)["code"] == "UNSUPPORTED"


def test_an_unexpected_failure_still_answers_the_json_envelope(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(selectors, "repository_find", broken)
    monkeypatch.setattr("registry.views.listing.repository_get", lambda **kwargs: broken())

    response = api.call("GET", "/v2/alice/app/tags/list")

    assert response.status_code == 500
    assert envelope(response)["code"] == "UNKNOWN"
    assert "fire" not in response.content.decode()


def test_every_answer_names_the_api_version(api: Api) -> None:
    for response in (
        api.call("GET", "/v2/", token=api.token()),
        api.call("GET", "/v2/alice/x/tags/list"),
    ):
        assert response["Docker-Distribution-API-Version"] == "registry/2.0"


def test_the_root_answers_200_to_a_valid_token_and_challenges_others(api: Api) -> None:
    ok = api.call("GET", "/v2/", token=api.token())
    challenged = api.call("GET", "/v2/")

    assert (ok.status_code, ok.json()) == (200, {})
    assert challenged.status_code == 401
    assert challenged["WWW-Authenticate"].startswith('Bearer realm="http://testserver/v2/auth"')


def test_an_expired_or_forged_token_is_unauthorized(api: Api) -> None:
    now = dt.datetime.now(dt.UTC)
    claims = {
        "iss": "quay-geo",
        "sub": "alice",
        "aud": "testserver",
        "iat": now,
        "nbf": now,
        "exp": now + dt.timedelta(minutes=5),
        "jti": "t",
        "access": [{"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}],
    }
    forged = jwt.encode(claims, b"not the registry key" * 2, algorithm="HS256")
    expired = jwt.encode(
        {**claims, "exp": now - dt.timedelta(minutes=1)}, signing_key(), algorithm="HS256"
    )

    for token in (forged, expired, "not-a-jwt"):
        response = api.call("POST", "/v2/alice/app/blobs/uploads/", token=token)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert not BlobUpload.objects.exists()


def test_a_token_for_another_repository_is_refused_with_a_challenge_for_this_one(api: Api) -> None:
    other = api.token("repository:alice/other:pull,push")

    first = api.call("POST", "/v2/alice/app/blobs/uploads/", token=other)
    again = api.call("POST", "/v2/alice/app/blobs/uploads/", token=other)

    assert (first.status_code, envelope(first)["code"]) == (401, "UNAUTHORIZED")
    # The same token again (oras-py retries so, and refreshes its token only after a 403)
    assert (again.status_code, envelope(again)["code"]) == (403, "DENIED")
    for response in (first, again):
        assert response["WWW-Authenticate"] == (
            'Bearer realm="http://testserver/v2/auth",service="testserver",'
            'scope="repository:alice/app:pull,push",error="insufficient_scope"'
        )
    assert not BlobUpload.objects.exists()
