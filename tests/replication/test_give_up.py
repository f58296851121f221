"""Transient failures end: past the give-up ceiling a placement stays failed until re-armed."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from replication import heartbeat
from replication.copying import blob_replicate, placement_claim
from replication.models import Blob, HostProbe, Placement, PlacementState, StorageLocation
from replication.reconcile import placements_reconcile
from replication.selectors import location_engine
from replication.services import placement_prioritize, placement_retry, placements_rearm
from storage_engines.errors import StorageUnavailable

pytestmark = pytest.mark.django_db

Regions = tuple[StorageLocation, StorageLocation]
MakeBlob = Callable[..., tuple[Blob, bytes]]


@pytest.fixture
def eu_down(regions: Regions, monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Make every write to eu_mem fail transiently while ``outage["on"]``."""
    target = location_engine(regions[1])
    real_write = target.write
    outage = {"on": True}

    def flaky_write(key: str, stream: Any, *, size: int | None = None, **_: Any) -> int:
        if outage["on"]:
            raise StorageUnavailable("connection refused")
        return real_write(key, stream, size=size)

    monkeypatch.setattr(target, "write", flaky_write)
    return outage


def _fail_until_given_up(placement: Placement, reconcile: Callable[[], dict[str, int]]) -> int:
    """Let the reconciler retry the failing placement until nothing retries it; return rounds."""
    for rounds in range(1, 10):
        Placement.objects.filter(pk=placement.pk, next_attempt_at__isnull=False).update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )
        if not reconcile()["retried"]:
            return rounds
    raise AssertionError("the reconciler still retries after 9 rounds")


@override_settings(QUAY_GEO_REPLICATION_MAX_ATTEMPTS=2, QUAY_GEO_REPLICATION_GIVE_UP_ATTEMPTS=4)
def test_transient_failures_past_the_ceiling_stay_failed_with_a_reason(
    regions: Regions,
    committed_blob: MakeBlob,
    eu_down: dict[str, bool],
    django_capture_on_commit_callbacks: Any,
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us, run_tasks=False)
    row = Placement.objects.get(blob=blob, location=eu)

    def reconcile() -> dict[str, int]:
        with django_capture_on_commit_callbacks(execute=True):
            return placements_reconcile()

    assert blob_replicate(placement_id=row.pk).status == "retry"
    _fail_until_given_up(row, reconcile)

    row.refresh_from_db()
    assert row.state == PlacementState.FAILED
    assert row.attempts == 4
    assert row.given_up_at is not None
    assert row.error_permanent
    assert row.next_attempt_at is None
    assert row.last_error.startswith("gave up after 4 attempts: connection refused")
    assert placement_claim(row.pk) is None, "a stray message does not claim it"
    assert not placement_prioritize(blob=blob, location=eu), "nor does a pull"


@override_settings(QUAY_GEO_REPLICATION_GIVE_UP_ATTEMPTS=1)
def test_an_operator_retry_re_arms_a_placement_that_gave_up(
    regions: Regions,
    committed_blob: MakeBlob,
    eu_down: dict[str, bool],
    django_capture_on_commit_callbacks: Any,
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us, run_tasks=False)
    row = Placement.objects.get(blob=blob, location=eu)
    assert blob_replicate(placement_id=row.pk).status == "failed"
    eu_down["on"] = False

    with django_capture_on_commit_callbacks(execute=True):
        assert placement_retry(placement_ids=[row.pk]) == 1

    row.refresh_from_db()
    assert row.state == PlacementState.PRESENT
    assert row.given_up_at is None
    assert not row.error_permanent


@override_settings(QUAY_GEO_REPLICATION_GIVE_UP_ATTEMPTS=1)
def test_a_permanent_failure_is_not_re_armed_by_a_healthy_store(
    regions: Regions, committed_blob: MakeBlob, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us, run_tasks=False)
    row = Placement.objects.get(blob=blob, location=eu)
    Placement.objects.filter(pk=row.pk).update(
        state=PlacementState.FAILED, error_permanent=True, last_error="access denied"
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert placements_rearm(location_ids=["eu_mem"]) == 0

    assert Placement.objects.get(pk=row.pk).state == PlacementState.FAILED


@override_settings(QUAY_GEO_REPLICATION_GIVE_UP_ATTEMPTS=1, QUAY_GEO_HEARTBEAT_SECONDS=30)
def test_a_probe_that_succeeds_after_a_failed_one_re_arms_given_up_placements_once(
    regions: Regions,
    committed_blob: MakeBlob,
    eu_down: dict[str, bool],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us, run_tasks=False)
    row = Placement.objects.get(blob=blob, location=eu)
    assert blob_replicate(placement_id=row.pk).status == "failed"
    probe_ok = {"eu_mem": False}

    def probes(jobs: dict[str, Any], *, timeout: float) -> dict[str, str | None]:
        return {lid: None if probe_ok.get(lid, True) else "Cannot connect" for lid in jobs}

    monkeypatch.setattr(heartbeat, "probes_run", probes)

    def beat() -> None:
        HostProbe.objects.update(claimed_at=timezone.now() - timedelta(days=1))
        with django_capture_on_commit_callbacks(execute=True):
            heartbeat.heartbeat_record(role="worker")

    beat()  # eu fails its probe: nothing changes
    assert Placement.objects.get(pk=row.pk).given_up_at is not None
    beat()  # still failing
    assert Placement.objects.get(pk=row.pk).given_up_at is not None

    probe_ok["eu_mem"] = True
    beat()  # eu answers again, the store still refuses writes: re-armed, fails, gives up again
    row.refresh_from_db()
    assert row.attempts == 1, "re-armed with a fresh budget, tried once"
    assert row.given_up_at is not None

    beat()  # healthy after healthy: no new re-arm
    assert Placement.objects.get(pk=row.pk).given_up_at == row.given_up_at

    eu_down["on"] = False
    probe_ok["eu_mem"] = False
    beat()
    probe_ok["eu_mem"] = True
    beat()
    assert Placement.objects.get(pk=row.pk).state == PlacementState.PRESENT
