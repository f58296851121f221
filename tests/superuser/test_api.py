"""The /api/v1/superuser/ JSON API: same service as the panel, superusers only, OpenAPI schema."""

import base64
import json
from typing import Any

import pytest
from django.test import Client

from registry.models import Namespace
from replication.models import (
    AuditEntry,
    BackfillRun,
    Blob,
    NamespaceReplication,
    Placement,
    PlacementState,
    ReplicationSettings,
    StorageLocation,
)
from replication.services import location_create, replication_enable
from replication.targets import LOCAL_REFUSED
from tests.superuser.conftest import db_state

pytestmark = pytest.mark.django_db

API = "/api/v1/superuser"


def put(client: Client, url: str, body: Any, **extra: Any) -> Any:
    return client.put(url, json.dumps(body), content_type="application/json", **extra)


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def stored(db: Any) -> StorageLocation:
    return location_create(
        location_id="us_mem",
        kind="memory",
        options={"max_object_size": 10},
        replicate_by_default=True,
    )


def test_anonymous_is_refused_and_told_to_authenticate(client: Client) -> None:
    response = client.get(f"{API}/config/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")


def test_non_superusers_get_403(client: Client, django_user_model: Any) -> None:
    django_user_model.objects.create_user("bob", password="bob-pass-123")

    assert client.get(f"{API}/config/", headers=basic("bob", "bob-pass-123")).status_code == 403


def test_basic_auth_of_a_superuser_reads_the_configuration(
    client: Client, admin_user: Any, stored: Any
) -> None:
    response = client.get(f"{API}/config/", headers=basic("admin", "password"))

    assert response.status_code == 200
    body = response.json()
    assert body["locations"] == [
        {
            "id": stored.pk,
            "location_id": "us_mem",
            "kind": "memory",
            "options": {"max_object_size": 10},
            "replicate_by_default": True,
            "serve_mode": "redirect",
            "secrets_stored": [],
        }
    ]
    assert body["config_version"] == ReplicationSettings.load().config_version


def test_session_writes_need_the_csrf_token(admin_user: Any, stored: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    response = put(client, f"{API}/config/", {"storage_replication_enabled": True, "locations": []})

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_put_saves_through_the_same_service(admin_client: Client, stored: Any) -> None:
    location_create(location_id="eu_mem", kind="memory", options={})
    body = admin_client.get(f"{API}/config/").json()
    body["storage_replication_enabled"] = True
    body["locations"][0]["location_id"] = "us_renamed"
    body["locations"][1]["replicate_by_default"] = True
    body["locations"].reverse()

    response = put(admin_client, f"{API}/config/", body)

    assert response.status_code == 200, response.json()
    result = response.json()
    assert result["saved"] is True
    assert sorted(result["new_default_locations"]) == ["eu_mem", "us_renamed"]
    assert [loc["location_id"] for loc in result["config"]["locations"]] == ["eu_mem", "us_renamed"]
    assert StorageLocation.objects.get(location_id="us_renamed").pk == stored.pk
    assert AuditEntry.objects.exclude(actor="location_create").get().actor == "admin"


def test_invalid_put_answers_400_per_location_and_saves_nothing(
    admin_client: Client, stored: Any, tmp_path: Any
) -> None:
    before = db_state()
    body = {
        "storage_replication_enabled": True,
        "locations": [
            {"id": stored.pk, "location_id": "us_mem", "kind": "memory"},
            {"location_id": "disk", "kind": "local", "options": {"storage_path": str(tmp_path)}},
            {"location_id": "bad id", "kind": "s3", "options": {"nonsense": 1}},
        ],
    }

    response = put(admin_client, f"{API}/config/?probe=false", body)

    assert response.status_code == 400
    assert db_state() == before
    errors = {item["location_id"]: item["errors"] for item in response.json()["locations"]}
    assert errors["disk"]["kind"] == [LOCAL_REFUSED]
    assert "location_id" in errors["bad id"]
    assert errors["bad id"]["nonsense"] == ["Unknown option."]


def test_secrets_are_never_returned(admin_client: Client) -> None:
    location_create(
        location_id="sw",
        kind="swift",
        options={
            "auth_url": "http://127.0.0.1:9/auth/v1.0",
            "auth_version": "1",
            "swift_user": "u",
            "swift_password": "PASSWORD-XYZ",
            "swift_container": "c",
        },
    )

    response = admin_client.get(f"{API}/config/")

    assert "PASSWORD-XYZ" not in response.content.decode()
    assert response.json()["locations"][0]["secrets_stored"] == ["swift_password"]


def test_namespace_targets_read_and_replace(admin_client: Client, stored: Any) -> None:
    replication_enable(enabled=True)
    location_create(location_id="eu_mem", kind="memory", options={})
    Namespace.objects.create(name="acme")
    Namespace.objects.create(name="other")

    listed = admin_client.get(f"{API}/namespaces/?q=acm").json()
    replaced = put(admin_client, f"{API}/namespaces/acme/targets/", {"locations": ["eu_mem"]})
    unknown = put(admin_client, f"{API}/namespaces/acme/targets/", {"locations": ["nowhere"]})

    assert listed["count"] == 1
    assert listed["results"] == [{"name": "acme", "kind": "user", "locations": []}]
    assert replaced.status_code == 200
    assert replaced.json()["locations"] == ["eu_mem"]
    assert NamespaceReplication.objects.get().location.location_id == "eu_mem"
    assert unknown.status_code == 400
    assert admin_client.get(f"{API}/namespaces/missing/targets/").status_code == 404


def test_status_retry_and_backfill(
    admin_client: Client, stored: Any, django_capture_on_commit_callbacks: Any
) -> None:
    replication_enable(enabled=True)
    eu = location_create(location_id="eu_mem", kind="memory", options={})
    blob = Blob.objects.create(digest="sha256:" + "a" * 64, size=3, sha256="a" * 64)
    failed = Placement.objects.create(
        blob=blob, location=eu, state=PlacementState.FAILED, last_error="Access denied"
    )

    status = admin_client.get(f"{API}/status/").json()
    assert status["failed_total"] == 1
    assert status["failed"][0]["last_error"] == "Access denied"
    assert {row["location_id"] for row in status["locations"]} == {"us_mem", "eu_mem"}

    retried = admin_client.post(
        f"{API}/placements/retry/", {"ids": [failed.pk]}, content_type="application/json"
    )
    assert retried.json() == {"retried": 1}
    assert (
        admin_client.post(
            f"{API}/placements/retry/", {}, content_type="application/json"
        ).status_code
        == 400
    )

    with django_capture_on_commit_callbacks(execute=True):
        started = admin_client.post(
            f"{API}/backfills/", {"location_id": "us_mem"}, content_type="application/json"
        )
    assert started.status_code == 202
    run = BackfillRun.objects.get()
    progress = admin_client.get(f"{API}/backfills/{run.pk}/").json()
    assert progress["done"] is True
    assert progress["percent"] == 100.0
    refused = admin_client.post(
        f"{API}/backfills/", {"location_id": "eu_mem"}, content_type="application/json"
    )
    assert refused.status_code == 400  # not a target of any blob


def test_openapi_schema_describes_the_api(admin_client: Client, client: Client) -> None:
    response = admin_client.get(f"{API}/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert f"{API}/config/" in schema["paths"]
    assert {"get", "put"} <= set(schema["paths"][f"{API}/config/"])
    assert f"{API}/backfills/{{id}}/" in schema["paths"]
    assert client.get(f"{API}/schema/").status_code in (401, 403)
