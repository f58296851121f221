"""The token endpoint (GET/POST /v2/auth): credentials in, a token with the granted scopes out."""

import base64
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from django.contrib.auth.models import User
from django.test import Client

from registry import accounts
from registry.tokens import token_verify
from tests.registry.auth_fixtures import SERVICE, World, world

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

__all__ = ["world"]

URL = "/v2/auth"


def basic(username: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def access_of(response: "Response") -> dict[str, list[str]]:
    """Return the granted access of the token in a token response, after verifying it."""
    body = response.json()
    claims = token_verify(token=body["token"], audience=SERVICE)
    return {f"{entry.type}:{entry.name}": list(entry.actions) for entry in claims.access}


def get_token(client: Client, *scopes: str, headers: dict[str, str] | None = None) -> "Response":
    params: dict[str, Any] = {"service": SERVICE}
    if scopes:
        params["scope"] = list(scopes)
    return client.get(URL, params, headers=headers)


def assert_bad_credentials(response: "Response") -> None:
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="quay-geo"'
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_password_login_gives_a_token_with_the_docker_response_fields(
    client: Client, world: World
) -> None:
    response = get_token(
        client, "repository:alice/private-app:pull,push", headers=basic("alice", "alice-password")
    )

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")
    assert body["scope"] == "repository:alice/private-app:pull,push"
    payload = jwt.decode(body["token"], options={"verify_signature": False})
    assert payload["sub"] == "alice"
    assert payload["uid"] == world.alice.pk
    assert payload["access"] == [
        {"type": "repository", "name": "alice/private-app", "actions": ["pull", "push"]}
    ]


def test_login_without_scope_gives_a_token_without_access(client: Client, world: World) -> None:
    response = get_token(client, headers=basic("alice", "alice-password"))

    assert response.status_code == 200
    assert access_of(response) == {}


def test_wrong_password_is_unauthorized_with_a_basic_challenge(
    client: Client, world: World
) -> None:
    assert_bad_credentials(get_token(client, headers=basic("alice", "wrong")))


def test_unknown_user_is_unauthorized(client: Client, world: World) -> None:
    assert_bad_credentials(get_token(client, headers=basic("nobody", "alice-password")))


def test_disabled_user_is_unauthorized(client: Client, world: World) -> None:
    User.objects.filter(pk=world.alice.pk).update(is_active=False)

    assert_bad_credentials(get_token(client, headers=basic("alice", "alice-password")))


@pytest.mark.parametrize(
    "header", ["Basic !!!notbase64", "Basic " + base64.b64encode(b"\xff\xfe").decode()]
)
def test_malformed_basic_header_is_unauthorized(client: Client, world: World, header: str) -> None:
    assert_bad_credentials(get_token(client, headers={"Authorization": header}))


def test_app_token_logs_in_as_its_user(client: Client, world: World) -> None:
    _, secret = accounts.app_token_create(user=world.writer, name="ci")

    response = get_token(client, "repository:acme/tool:pull,push", headers=basic("writer", secret))

    assert response.status_code == 200
    assert access_of(response) == {"repository:acme/tool": ["pull", "push"]}


def test_app_token_with_another_username_is_unauthorized(client: Client, world: World) -> None:
    _, secret = accounts.app_token_create(user=world.writer, name="ci")

    assert_bad_credentials(get_token(client, headers=basic("alice", secret)))


def test_revoked_app_token_is_unauthorized(client: Client, world: World) -> None:
    _, secret = accounts.app_token_create(user=world.writer, name="ci")
    accounts.app_token_revoke(user=world.writer, name="ci")

    assert_bad_credentials(get_token(client, headers=basic("writer", secret)))


def test_scopes_not_allowed_are_left_out_silently(client: Client, world: World) -> None:
    response = get_token(
        client,
        "repository:acme/tool:pull,push,delete",
        "repository:alice/private-app:pull",
        "repository:acme/open:pull,push",
        headers=basic("reader", "reader-password"),
    )

    assert response.status_code == 200
    assert access_of(response) == {
        "repository:acme/tool": ["pull"],
        "repository:acme/open": ["pull"],
    }


def test_anonymous_gets_public_pulls_only(client: Client, world: World) -> None:
    response = get_token(
        client, "repository:alice/public-app:pull,push", "repository:alice/private-app:pull"
    )

    assert response.status_code == 200
    assert access_of(response) == {"repository:alice/public-app": ["pull"]}
    assert jwt.decode(response.json()["token"], options={"verify_signature": False})["sub"] == ""


def test_mount_scopes_are_granted_together(client: Client, world: World) -> None:
    response = get_token(
        client,
        "repository:acme/tool:pull,push repository:alice/public-app:pull",
        headers=basic("writer", "writer-password"),
    )

    assert access_of(response) == {
        "repository:acme/tool": ["pull", "push"],
        "repository:alice/public-app": ["pull"],
    }


def test_repeated_scopes_for_one_repository_are_merged(client: Client, world: World) -> None:
    response = get_token(
        client,
        "repository:alice/private-app:pull",
        "repository:alice/private-app:push,pull",
        headers=basic("alice", "alice-password"),
    )

    assert access_of(response) == {"repository:alice/private-app": ["pull", "push"]}


def test_catalog_scope_is_accepted(client: Client, world: World) -> None:
    response = get_token(client, "registry:catalog:*", headers=basic("alice", "alice-password"))

    assert access_of(response) == {"registry:catalog": ["*"]}


def test_unknown_scope_types_are_left_out(client: Client, world: World) -> None:
    response = get_token(
        client, "repository(plugin):alice/app:pull", headers=basic("alice", "alice-password")
    )

    assert response.status_code == 200
    assert access_of(response) == {}


def test_malformed_scope_is_a_bad_request(client: Client, world: World) -> None:
    response = get_token(client, "repository:alice", headers=basic("alice", "alice-password"))

    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == "UNSUPPORTED"
    assert "malformed scope" in error["message"]


def test_token_for_another_service_is_a_bad_request(client: Client, world: World) -> None:
    response = client.get(
        URL, {"service": "registry.elsewhere"}, headers=basic("alice", "alice-password")
    )

    assert response.status_code == 400
    assert "registry.elsewhere" in response.json()["errors"][0]["message"]


def test_offline_token_and_client_id_are_ignored(client: Client, world: World) -> None:
    response = client.get(
        URL,
        {"service": SERVICE, "offline_token": "true", "client_id": "docker"},
        headers=basic("alice", "alice-password"),
    )

    assert response.status_code == 200
    assert "refresh_token" not in response.json()


def test_password_grant_post_gives_an_access_token(world: World) -> None:
    client = Client(enforce_csrf_checks=True)

    response = client.post(
        URL,
        {
            "grant_type": "password",
            "username": "alice",
            "password": "alice-password",
            "service": SERVICE,
            "scope": "repository:alice/private-app:pull repository:acme/tool:pull",
            "client_id": "podman",
        },
    )

    assert response.status_code == 200
    assert access_of(response) == {"repository:alice/private-app": ["pull"]}
    body = response.json()
    assert body["access_token"]
    assert body["scope"] == "repository:alice/private-app:pull"


def test_password_grant_with_a_wrong_password_is_unauthorized(client: Client, world: World) -> None:
    response = client.post(URL, {"grant_type": "password", "username": "alice", "password": "nope"})

    assert_bad_credentials(response)


def test_other_grant_types_are_refused(client: Client, world: World) -> None:
    response = client.post(URL, {"grant_type": "refresh_token", "refresh_token": "x"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_other_methods_are_not_allowed(client: Client, db: None) -> None:
    assert client.put(URL).status_code == 405


def test_more_scopes_than_the_limit_are_refused_before_the_password_is_checked(
    client: Client, world: World, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.QUAY_GEO_TOKEN_MAX_SCOPES = 3
    checked: list[str] = []
    monkeypatch.setattr(
        "registry.token_views.credentials_check",
        lambda *, username, password, **_: checked.append(username),
    )
    scopes = [f"repository:alice/app{i}:pull" for i in range(4)]

    refused = get_token(client, *scopes, headers=basic("alice", "alice-password"))

    assert refused.status_code == 400
    error = refused.json()["errors"][0]
    assert error["code"] == "UNSUPPORTED"
    assert error["detail"] == {"scopes": 4, "limit": 3}
    assert checked == []


def test_the_scope_limit_counts_distinct_scopes_and_the_default_is_32(
    client: Client, world: World
) -> None:
    at_limit = [f"repository:alice/app{i}:pull" for i in range(32)]
    space_separated = " ".join(at_limit + at_limit)

    accepted = get_token(client, space_separated, headers=basic("alice", "alice-password"))
    refused = get_token(
        client,
        *at_limit,
        "repository:alice/one-more:pull",
        headers=basic("alice", "alice-password"),
    )

    assert accepted.status_code == 200
    assert refused.status_code == 400
