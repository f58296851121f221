"""registry.auth: identities from bearer tokens, and the 401/403 rule of access_require."""

import base64
import datetime as dt
import json
import time

import pytest
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.test import RequestFactory
from pytest_django import DjangoAssertNumQueries
from pytest_django.fixtures import Settings
from rest_framework.request import Request

from registry import errors
from registry.auth import (
    ANONYMOUS,
    SCOPE_REFUSAL_SECONDS,
    access_require,
    identity_of,
    registry_root_require,
    repositories_visible,
)
from registry.models import NamespaceMember
from replication.regioncache import region_cache
from tests.registry.auth_fixtures import World, bearer, token_make, world

__all__ = ["world"]

REALM = "http://testserver/v2/auth"


def request_with(headers: dict[str, str] | None = None, path: str = "/v2/") -> HttpRequest:
    return RequestFactory().get(path, headers=headers)


def challenge_of(exc: pytest.ExceptionInfo[errors.OCIError]) -> str:
    return exc.value.headers["WWW-Authenticate"]


# --- identity_of ----------------------------------------------------------------------------------


def test_no_authorization_header_is_anonymous(db: None) -> None:
    assert identity_of(request_with()) == ANONYMOUS


def test_basic_credentials_on_api_routes_are_ignored(world: World) -> None:
    basic = base64.b64encode(b"alice:alice-password").decode()

    identity = identity_of(request_with({"Authorization": f"Basic {basic}"}))

    assert identity.user is None
    assert identity.scopes == frozenset()


def test_valid_token_gives_its_user_and_scopes(world: World) -> None:
    token = token_make(user=world.alice, access={"alice/app": ["pull", "push"]})

    identity = identity_of(request_with(bearer(token)))

    assert identity.user == world.alice
    assert identity.scopes == {("alice/app", "pull"), ("alice/app", "push")}
    assert identity.is_superuser is False


def test_superuser_flag_comes_from_the_database_not_the_token(world: World) -> None:
    token = token_make(user=world.root)
    assert identity_of(request_with(bearer(token))).is_superuser is True
    world.root.is_superuser = False
    world.root.save()  # a change made in this process is seen at once

    assert identity_of(request_with(bearer(token))).is_superuser is False


def test_a_user_changed_elsewhere_is_seen_when_the_cached_user_expires(
    world: World, settings: Settings
) -> None:
    token = token_make(user=world.root)
    assert identity_of(request_with(bearer(token))).is_superuser is True
    User.objects.filter(pk=world.root.pk).update(is_superuser=False)  # another process's change

    assert identity_of(request_with(bearer(token))).is_superuser is True, "cached"
    settings.QUAY_GEO_CACHE_SECONDS = 0  # the lifetime ends
    region_cache.reset()
    assert identity_of(request_with(bearer(token))).is_superuser is False


def test_identity_is_verified_once_per_request(
    world: World, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    request = request_with(bearer(token_make(user=world.alice)))

    with django_assert_num_queries(1):
        first = identity_of(request)
        second = identity_of(request)

    assert first is second


def test_identity_of_a_drf_request_is_cached_on_the_wrapped_request(world: World) -> None:
    request = request_with(bearer(token_make(user=world.alice)))

    identity = identity_of(Request(request))

    assert identity.user == world.alice
    assert identity_of(request) is identity


def test_anonymous_token_needs_no_database(
    db: None, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    with django_assert_num_queries(0):
        identity = identity_of(request_with(bearer(token_make(access={"a/b": ["pull"]}))))

    assert identity.user is None
    assert identity.scopes == {("a/b", "pull")}


@pytest.mark.parametrize(
    ("token_kwargs", "reason"),
    [
        ({"lifetime": dt.timedelta(minutes=-1)}, "token expired"),
        ({"key": b"x" * 32}, "token signature is invalid"),
        ({"audience": "registry.elsewhere"}, "token was issued for another service"),
    ],
    ids=["expired", "forged", "wrong-audience"],
)
def test_bad_token_is_unauthorized_with_a_clear_message(
    world: World, token_kwargs: dict[str, object], reason: str
) -> None:
    token = token_make(user=world.alice, access={"alice/app": ["pull"]}, **token_kwargs)  # type: ignore[arg-type]

    with pytest.raises(errors.Unauthorized) as exc:
        identity_of(request_with(bearer(token)))

    assert exc.value.text == f"authentication failed: {reason}"
    assert challenge_of(exc) == (
        f'Bearer realm="{REALM}",service="testserver",error="invalid_token"'
    )


def test_empty_bearer_is_unauthorized(db: None) -> None:
    with pytest.raises(errors.Unauthorized, match="no bearer token"):
        identity_of(request_with({"Authorization": "Bearer "}))


def test_token_of_a_disabled_user_is_unauthorized(world: World) -> None:
    token = token_make(user=world.alice, access={"alice/app": ["pull"]})
    User.objects.filter(pk=world.alice.pk).update(is_active=False)

    with pytest.raises(errors.Unauthorized, match="no longer exists or is disabled"):
        identity_of(request_with(bearer(token)))


def test_token_of_a_deleted_user_is_unauthorized(world: World) -> None:
    token = token_make(user=world.stranger)
    world.stranger.delete()

    with pytest.raises(errors.Unauthorized, match="no longer exists or is disabled"):
        identity_of(request_with(bearer(token)))


def test_service_setting_is_the_audience(world: World, settings: Settings) -> None:
    settings.QUAY_GEO_REGISTRY_SERVICE = "registry.example.com"
    ours = token_make(user=world.alice, audience="registry.example.com")
    host_audience = token_make(user=world.alice)

    assert identity_of(request_with(bearer(ours))).user == world.alice
    with pytest.raises(errors.Unauthorized, match="another service"):
        identity_of(request_with(bearer(host_audience)))


def test_realm_follows_the_forwarded_scheme_only_when_configured(
    db: None, settings: Settings
) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "Host": "localhost"}
    with pytest.raises(errors.Unauthorized) as plain:
        registry_root_require(request_with(forwarded))
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    with pytest.raises(errors.Unauthorized) as behind_proxy:
        registry_root_require(request_with(forwarded))

    assert challenge_of(plain) == 'Bearer realm="http://localhost/v2/auth",service="localhost"'
    assert challenge_of(behind_proxy).startswith('Bearer realm="https://localhost/v2/auth",')


# --- registry_root_require -----------------------------------------------------------------------


def test_registry_root_challenges_anonymous_callers_without_scope(db: None) -> None:
    with pytest.raises(errors.Unauthorized) as exc:
        registry_root_require(request_with())

    assert exc.value.status == 401
    assert challenge_of(exc) == f'Bearer realm="{REALM}",service="testserver"'


def test_registry_root_accepts_any_valid_token(world: World) -> None:
    assert registry_root_require(request_with(bearer(token_make()))).user is None
    assert (
        registry_root_require(request_with(bearer(token_make(user=world.alice)))).user
        == world.alice
    )


def test_registry_root_refuses_an_expired_token(world: World) -> None:
    token = token_make(user=world.alice, lifetime=dt.timedelta(hours=-1))

    with pytest.raises(errors.Unauthorized, match="token expired"):
        registry_root_require(request_with(bearer(token)))


# --- access_require -------------------------------------------------------------------------------


def test_token_with_the_scope_is_let_through(world: World) -> None:
    token = token_make(user=world.alice, access={"alice/app": ["pull", "push"]})

    identity = access_require(request_with(bearer(token)), "alice/app", ["pull", "push"])

    assert identity.user == world.alice


def test_star_action_grants_every_action(world: World) -> None:
    token = token_make(user=world.writer, access={"acme/tool": ["*"]})

    assert access_require(request_with(bearer(token)), "acme/tool", ["pull", "push", "delete"])


def test_anonymous_without_token_gets_a_challenge_with_the_scope(world: World) -> None:
    with pytest.raises(errors.Unauthorized) as exc:
        access_require(request_with(), "alice/public-app", ["pull"])

    assert challenge_of(exc) == (
        f'Bearer realm="{REALM}",service="testserver",scope="repository:alice/public-app:pull"'
    )
    assert exc.value.detail == [
        {"Type": "repository", "Name": "alice/public-app", "Action": "pull"}
    ]


def test_anonymous_token_lacking_push_gets_a_challenge(world: World) -> None:
    token = token_make(access={"alice/public-app": ["pull"]})

    with pytest.raises(errors.Unauthorized) as exc:
        access_require(request_with(bearer(token)), "alice/public-app", ["pull", "push"])

    assert challenge_of(exc).endswith(
        'scope="repository:alice/public-app:pull,push",error="insufficient_scope"'
    )


def test_anonymous_token_with_public_pull_is_let_through(world: World) -> None:
    token = token_make(access={"alice/public-app": ["pull"]})

    assert access_require(request_with(bearer(token)), "alice/public-app", ["pull"]).user is None


def test_token_for_another_repository_asks_for_a_new_token_when_it_would_be_granted(
    world: World,
) -> None:
    token = token_make(user=world.alice, access={"alice/a": ["pull", "push"]})

    with pytest.raises(errors.Unauthorized) as exc:
        access_require(request_with(bearer(token)), "alice/b", ["pull", "push"])

    assert exc.value.status == 401
    assert challenge_of(exc) == (
        f'Bearer realm="{REALM}",service="testserver",'
        'scope="repository:alice/b:pull,push",error="insufficient_scope"'
    )


def test_the_same_token_refused_again_for_the_same_scope_is_denied_with_the_challenge(
    world: World,
) -> None:
    token = token_make(user=world.alice, access={"alice/a": ["pull"]})
    fresh = token_make(user=world.alice, access={"alice/a": ["pull"]}, lifetime=dt.timedelta(60))

    with pytest.raises(errors.Unauthorized) as first:
        access_require(request_with(bearer(token)), "alice/a", ["pull", "push"])
    with pytest.raises(errors.Denied) as again:
        access_require(request_with(bearer(token)), "alice/a", ["pull", "push"])
    with pytest.raises(errors.Unauthorized) as other_scope:
        access_require(request_with(bearer(token)), "alice/a", ["delete"])
    with pytest.raises(errors.Unauthorized) as other_token:
        access_require(request_with(bearer(fresh)), "alice/a", ["pull", "push"])

    assert again.value.status == 403
    assert challenge_of(again) == challenge_of(first) == challenge_of(other_token)
    assert challenge_of(other_scope).endswith(
        'scope="repository:alice/a:delete",error="insufficient_scope"'
    )


def test_a_refused_token_is_forgotten_after_a_minute(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = token_make(user=world.alice, access={"alice/a": ["pull"]})
    with pytest.raises(errors.Unauthorized):
        access_require(request_with(bearer(token)), "alice/a", ["push"])
    later = time.monotonic() + SCOPE_REFUSAL_SECONDS + 1
    monkeypatch.setattr("replication.regioncache.time.monotonic", lambda: later)

    with pytest.raises(errors.Unauthorized):
        access_require(request_with(bearer(token)), "alice/a", ["push"])


def test_token_for_another_repository_is_denied_when_it_never_would_be_granted(
    world: World,
) -> None:
    token = token_make(user=world.stranger, access={"stranger/a": ["pull", "push"]})

    with pytest.raises(errors.Denied) as exc:
        access_require(request_with(bearer(token)), "alice/private-app", ["pull"])

    assert exc.value.status == 403
    assert "WWW-Authenticate" not in exc.value.headers
    assert exc.value.detail == [
        {"Type": "repository", "Name": "alice/private-app", "Action": "pull"}
    ]


def test_push_to_another_namespace_is_denied(world: World) -> None:
    token = token_make(user=world.alice, access={"acme/tool": []})

    with pytest.raises(errors.Denied):
        access_require(request_with(bearer(token)), "acme/tool", ["pull", "push"])


def test_push_to_a_namespace_that_does_not_exist_is_denied(world: World) -> None:
    token = token_make(user=world.alice)

    with pytest.raises(errors.Denied):
        access_require(request_with(bearer(token)), "ghost/app", ["pull", "push"])


def test_reader_may_pull_but_push_is_denied(world: World) -> None:
    token = token_make(user=world.reader, access={"acme/tool": ["pull"]})
    request = request_with(bearer(token))

    assert access_require(request, "acme/tool", ["pull"]).user == world.reader
    with pytest.raises(errors.Denied, match="push not allowed"):
        access_require(request, "acme/tool", ["pull", "push"])


def test_mount_needs_pull_on_the_source_in_the_same_token(world: World) -> None:
    token = token_make(
        user=world.writer, access={"acme/tool": ["pull", "push"], "alice/private-app": []}
    )
    request = request_with(bearer(token))

    assert access_require(request, "acme/tool", ["pull", "push"])
    with pytest.raises(errors.Denied):
        access_require(request, "alice/private-app", ["pull"])


MOUNT_SCOPES = 'scope="repository:acme/tool:pull,push repository:alice/public-app:pull"'


def test_a_challenge_names_the_optional_scopes_too(world: World) -> None:
    with pytest.raises(errors.Unauthorized) as exc:
        access_require(
            request_with(), "acme/tool", ["pull", "push"], optional=[("alice/public-app", ["pull"])]
        )

    assert challenge_of(exc) == f'Bearer realm="{REALM}",service="testserver",{MOUNT_SCOPES}'


def test_a_token_lacking_an_optional_scope_its_user_would_get_is_sent_for_a_new_one(
    world: World,
) -> None:
    token = token_make(user=world.writer, access={"acme/tool": ["pull", "push"]})

    with pytest.raises(errors.Unauthorized) as exc:
        access_require(
            request_with(bearer(token)),
            "acme/tool",
            ["pull", "push"],
            optional=[("alice/public-app", ["pull"])],
        )

    assert challenge_of(exc).endswith(f'{MOUNT_SCOPES},error="insufficient_scope"')
    assert exc.value.detail == [
        {"Type": "repository", "Name": "alice/public-app", "Action": "pull"}
    ]


def test_an_optional_scope_the_user_would_not_get_is_done_without(world: World) -> None:
    token = token_make(user=world.writer, access={"acme/tool": ["pull", "push"]})
    request = request_with(bearer(token))

    identity = access_require(
        request, "acme/tool", ["pull", "push"], optional=[("alice/private-app", ["pull"])]
    )

    assert identity.user == world.writer
    assert not identity.allows("alice/private-app", "pull")


def test_a_token_with_every_scope_mounts_with_no_question(world: World) -> None:
    token = token_make(
        user=world.writer, access={"acme/tool": ["pull", "push"], "alice/public-app": ["pull"]}
    )

    identity = access_require(
        request_with(bearer(token)),
        "acme/tool",
        ["pull", "push"],
        optional=[("alice/public-app", ["pull"])],
    )

    assert identity.allows("alice/public-app", "pull")


def test_superuser_token_lacking_the_scope_is_sent_for_a_new_one(world: World) -> None:
    token = token_make(user=world.root)

    with pytest.raises(errors.Unauthorized, match="lacks the scope"):
        access_require(request_with(bearer(token)), "acme/tool", ["delete"])


def test_token_grants_stay_valid_until_expiry_even_after_demotion(world: World) -> None:
    token = token_make(user=world.writer, access={"acme/tool": ["pull", "push"]})
    NamespaceMember.objects.filter(user=world.writer).delete()

    assert access_require(request_with(bearer(token)), "acme/tool", ["push"]).user == world.writer


def test_bad_token_on_a_repository_route_names_the_scope(world: World) -> None:
    token = token_make(user=world.alice, lifetime=dt.timedelta(minutes=-1))

    with pytest.raises(errors.Unauthorized) as exc:
        access_require(request_with(bearer(token)), "alice/app", ["pull"])

    assert challenge_of(exc).endswith('scope="repository:alice/app:pull",error="invalid_token"')


def test_error_response_is_the_spec_envelope_with_the_challenge(world: World) -> None:
    with pytest.raises(errors.Unauthorized) as exc:
        access_require(request_with(), "alice/public-app", ["pull"])

    response = exc.value.response()

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer realm="')
    assert json.loads(response.content)["errors"][0]["code"] == "UNAUTHORIZED"


# --- repositories_visible -------------------------------------------------------------------------


def test_visible_repositories_follow_the_identity(world: World) -> None:
    def visible(token: str | None) -> set[str]:
        identity = identity_of(request_with(bearer(token) if token else None))
        return {repository.full_name for repository in repositories_visible(identity)}

    public = {"alice/public-app", "acme/open"}
    assert visible(None) == public
    assert visible(token_make(user=world.alice)) == public | {"alice/private-app"}
    assert visible(token_make(user=world.root)) == public | {"alice/private-app", "acme/tool"}
