"""Health checks for load balancers, Prometheus metrics, and settings checks."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.core.checks import run_checks
from django.test import Client, override_settings

from quay_geo import views
from replication import selectors
from replication.models import Placement, PlacementState
from replication.services import location_create, replication_enable
from tests.rediscache import redis_cache

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _caches() -> Iterator[None]:
    selectors.cache_clear()
    cache.delete(views.ENDTOEND_CACHE_KEY)
    yield
    selectors.cache_clear()
    cache.delete(views.ENDTOEND_CACHE_KEY)


@pytest.fixture
def two_memory_locations(db: Any) -> None:
    location_create(location_id="us_mem", kind="memory", options={}, replicate_by_default=True)
    location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)
    replication_enable(enabled=True)


@override_settings(QUAY_DISTRIBUTED_STORAGE_PREFERENCE="eu_mem")
def test_health_instance_checks_database_broker_and_preferred_storage(
    client: Client, two_memory_locations: None
) -> None:
    response = client.get("/health/instance")

    body = response.json()
    assert response.status_code == 200, body
    assert body["database"] == {"ok": True}
    assert body["broker"]["ok"] is True
    assert list(body["storage"]) == ["eu_mem"]


@override_settings(QUAY_DISTRIBUTED_STORAGE_PREFERENCE="nowhere")
def test_health_instance_fails_on_an_unknown_preferred_location(
    client: Client, two_memory_locations: None
) -> None:
    response = client.get("/health/instance")

    assert response.status_code == 503
    assert "nowhere" in response.json()["storage"]["configuration"]["error"]


@pytest.fixture
def one_location_gone(two_memory_locations: None, tmp_path: Any) -> str:
    replication_enable(enabled=False)
    path = str(tmp_path / "no")
    location_create(location_id="gone", kind="local", options={"storage_path": path})
    return path


def test_health_endtoend_probes_every_location_and_reports_the_failing_one_to_a_superuser(
    admin_client: Client, one_location_gone: str
) -> None:
    response = admin_client.get("/health/endtoend")

    body = response.json()
    assert response.status_code == 503
    assert body["storage"]["us_mem"] == {"ok": True}
    assert body["storage"]["eu_mem"] == {"ok": True}
    assert body["storage"]["gone"]["ok"] is False
    assert "does not exist" in body["storage"]["gone"]["error"]


def test_health_endtoend_tells_anonymous_callers_only_ok_or_not(
    client: Client, one_location_gone: str
) -> None:
    response = client.get("/health/endtoend")

    assert response.status_code == 503
    assert response.json() == {"status": "fail"}
    assert one_location_gone not in response.content.decode()


@override_settings(QUAY_GEO_METRICS_TOKEN="s3cret")
def test_health_endtoend_gives_details_to_the_metrics_token_only(
    client: Client, one_location_gone: str
) -> None:
    wrong = client.get("/health/endtoend", HTTP_AUTHORIZATION="Bearer guess")
    right = client.get("/health/endtoend", HTTP_AUTHORIZATION="Bearer s3cret")

    assert wrong.json() == {"status": "fail"}
    assert right.json()["storage"]["gone"]["ok"] is False


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many locations each end-to-end probe round covered."""
    rounds: list[int] = []
    real = views._probe_all

    def counted(locations: list[Any]) -> dict[str, dict[str, Any]]:
        rounds.append(len(locations))
        return real(locations)

    monkeypatch.setattr(views, "_probe_all", counted)
    return rounds


def test_health_endtoend_probes_at_most_once_per_lifetime(
    client: Client, admin_client: Client, two_memory_locations: None, probes: list[int]
) -> None:
    answers = [client.get("/health/endtoend").status_code for _ in range(5)]
    details = admin_client.get("/health/endtoend").json()

    assert answers == [200] * 5
    assert list(details["storage"]) == ["us_mem", "eu_mem"]
    assert probes == [2]


@override_settings(QUAY_GEO_HEALTH_CACHE_SECONDS=0)
def test_health_endtoend_probes_every_time_with_a_lifetime_of_zero(
    client: Client, two_memory_locations: None, probes: list[int]
) -> None:
    for _ in range(3):
        client.get("/health/endtoend")

    assert probes == [2, 2, 2]


def test_health_endtoend_keeps_its_answer_in_the_shared_cache_when_one_is_configured(
    client: Client, two_memory_locations: None
) -> None:
    with redis_cache() as shared:
        client.get("/health/endtoend")
        lifetime = shared.client.ttl(shared.key(views.ENDTOEND_CACHE_KEY))
    assert 0 < lifetime <= 30


def test_metrics_expose_placement_states_per_location(
    client: Client, two_memory_locations: None
) -> None:
    from replication.models import Blob, StorageLocation

    blob = Blob.objects.create(digest="sha256:" + "a" * 64, size=10, sha256="a" * 64)
    us, eu = StorageLocation.objects.order_by("rank")
    Placement.objects.create(blob=blob, location=us, state=PlacementState.PRESENT)
    Placement.objects.create(
        blob=blob, location=eu, state=PlacementState.FAILED, error_permanent=True
    )

    text = client.get("/metrics").content.decode()

    assert 'quay_geo_placements{location="us_mem",state="present"} 1' in text
    assert 'quay_geo_placements{location="eu_mem",state="failed"} 1' in text
    assert 'quay_geo_failed_placements{location="eu_mem",reason="permanent"} 1' in text
    assert 'quay_geo_bytes_present{location="us_mem"} 10' in text
    assert 'quay_geo_coverage_ratio{location="eu_mem"} 0' in text


@override_settings(QUAY_GEO_METRICS_TOKEN="s3cret")
def test_metrics_can_require_a_token(client: Client) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"SECRET_KEY": ""}, "quay_geo.E001"),
        ({"QUAY_DISTRIBUTED_STORAGE_PREFERENCE": "us_s3 bad/id"}, "quay_geo.E002"),
        ({"CELERY_BROKER_URL": "kafka://localhost"}, "quay_geo.E003"),
        ({"QUAY_GEO_MANIFEST_URLS_DENY": "(unclosed"}, "quay_geo.E005"),
        ({"QUAY_GEO_TRUSTED_PROXIES": ["10.0.0.1/24"]}, "quay_geo.E006"),
        ({"QUAY_GEO_LOGIN_BACKOFF_MAX_SECONDS": 7200.0}, "quay_geo.E007"),
    ],
)
def test_misconfiguration_is_caught_by_a_system_check_with_its_own_id(
    overrides: dict[str, str], check_id: str
) -> None:
    with override_settings(**overrides):
        ids = [message.id for message in run_checks()]
    assert check_id in ids


def test_metrics_count_given_up_placements_apart_from_permanent_ones(
    client: Client, two_memory_locations: None
) -> None:
    from django.utils import timezone

    from replication.models import Blob, StorageLocation

    blob = Blob.objects.create(digest="sha256:" + "b" * 64, size=10, sha256="b" * 64)
    _, eu = StorageLocation.objects.order_by("rank")
    Placement.objects.create(
        blob=blob,
        location=eu,
        state=PlacementState.FAILED,
        error_permanent=True,
        given_up_at=timezone.now(),
    )

    text = client.get("/metrics").content.decode()

    assert 'quay_geo_failed_placements{location="eu_mem",reason="given_up"} 1' in text
    assert 'quay_geo_failed_placements{location="eu_mem",reason="permanent"} 0' in text
