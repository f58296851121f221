"""Replication status tab: counts, throughput, backfills, failures and retries, instances."""

import hashlib
import io
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from quay_geo.replica import replica_status
from replication import heartbeat
from replication.backfill import backfill_start
from replication.models import (
    Blob,
    InstanceHeartbeat,
    Placement,
    PlacementState,
    StorageLocation,
)
from replication.selectors import location_engine
from replication.services import blob_commit, location_create, replication_enable
from storage_engines.keys import content_key
from superuser.selectors import status_overview

pytestmark = pytest.mark.django_db


def commit(location: StorageLocation, size: int = 1000, capture: Any = None) -> Blob:
    data = os.urandom(size)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location_engine(location).write(content_key(digest), io.BytesIO(data), size=size)
    with capture(execute=True):
        return blob_commit(digest=digest, size=size, sha256=digest[7:], location=location)


@pytest.fixture
def two_regions(db: Any) -> tuple[StorageLocation, StorageLocation]:
    us = location_create(location_id="us_mem", kind="memory", options={}, replicate_by_default=True)
    eu = location_create(location_id="eu_mem", kind="memory", options={})
    replication_enable(enabled=True)
    return us, eu


def failed_placement(blob: Blob, location: StorageLocation, reason: str) -> Placement:
    return Placement.objects.create(
        blob=blob,
        location=location,
        state=PlacementState.FAILED,
        last_error=reason,
        attempts=8,
        error_permanent=True,
    )


def test_status_shows_counts_bytes_coverage_and_throughput(
    admin_client: Any, two_regions: Any, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = two_regions
    StorageLocation.objects.filter(pk=eu.pk).update(replicate_by_default=True)
    blob = commit(us, 1000, django_capture_on_commit_callbacks)
    Placement.objects.update_or_create(
        blob=blob,
        location=eu,
        defaults={
            "state": PlacementState.PRESENT,
            "copy_method": "stream",
            "verified_at": timezone.now(),
        },
    )

    overview = status_overview()
    response = admin_client.get("/superuser/status/")

    rows = {row.status.location_id: row for row in overview.locations}
    assert rows["eu_mem"].copied_bytes == 1000
    assert rows["eu_mem"].throughput == pytest.approx(1000 / 300)
    assert rows["us_mem"].copied_bytes == 0  # the pushed copy is not replication throughput
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-location="eu_mem"' in html
    assert "100 %" in html
    assert "3\xa0bytes/s" in html


def test_old_copies_do_not_count_as_recent_throughput(
    two_regions: Any, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = two_regions
    blob = commit(us, 500, django_capture_on_commit_callbacks)
    Placement.objects.create(
        blob=blob,
        location=eu,
        state=PlacementState.PRESENT,
        copy_method="server",
        verified_at=timezone.now() - timedelta(minutes=6),
    )

    rows = {row.status.location_id: row for row in status_overview().locations}

    assert rows["eu_mem"].copied_bytes == 0


def test_failed_placements_show_their_reason_and_retry_one(
    admin_client: Any, two_regions: Any, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = two_regions
    blob = commit(us, 100, django_capture_on_commit_callbacks)
    placement = failed_placement(blob, eu, "Access denied by eu")

    page = admin_client.get("/superuser/status/").content.decode()
    assert "Access denied by eu" in page
    assert f'data-placement="{placement.pk}"' in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/superuser/status/retry/", {"placement": placement.pk})

    assert response.status_code == 302
    placement.refresh_from_db()
    assert placement.state == PlacementState.PRESENT  # the retried copy ran (eagerly) and worked


def test_retry_all_sends_every_failed_placement_back(
    admin_client: Any, two_regions: Any, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = two_regions
    for _ in range(3):
        failed_placement(commit(us, 100, django_capture_on_commit_callbacks), eu, "boom")

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/superuser/status/retry/", {"all": "1"})

    assert not Placement.objects.filter(state=PlacementState.FAILED).exists()
    assert Placement.objects.filter(location=eu, state=PlacementState.PRESENT).count() == 3


def test_backfill_progress_reaches_100_percent(
    admin_client: Any, two_regions: Any, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = two_regions
    for _ in range(3):
        commit(us, 2000, django_capture_on_commit_callbacks)
    StorageLocation.objects.filter(pk=eu.pk).update(replicate_by_default=True)

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/superuser/storage/sync/", {"location_id": "eu_mem"})
    fragment = admin_client.get("/superuser/status/fragment/")

    html = fragment.content.decode()
    assert fragment.status_code == 200
    assert "<html" not in html
    assert 'data-percent="100"' in html
    assert "3 of 3 copied" in html
    assert Placement.objects.filter(location=eu, state=PlacementState.PRESENT).count() == 3


def test_a_planned_backfill_shows_partial_progress(
    two_regions: Any, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = two_regions
    blobs = [commit(us, 10, django_capture_on_commit_callbacks) for _ in range(4)]
    StorageLocation.objects.filter(pk=eu.pk).update(replicate_by_default=True)
    run = backfill_start(location_id="eu_mem")
    Placement.objects.bulk_create(
        [
            Placement(blob=b, location=eu, backfill_run=run, state=PlacementState.PENDING)
            for b in blobs
        ]
    )
    Placement.objects.filter(blob=blobs[0], location=eu).update(state=PlacementState.PRESENT)
    run.planned, run.planned_at = 4, timezone.now()
    run.save()

    (row,) = status_overview().backfills

    assert row.progress.percent == 25.0
    assert not row.progress.done


def test_instances_matrix_shows_reachability_and_stale_instances(
    admin_client: Any, two_regions: Any
) -> None:
    now = timezone.now()
    InstanceHeartbeat.objects.create(
        instance_id="eu-host:1:web",
        host="eu-host",
        role="web",
        preference="eu_mem",
        reachable={
            "us_mem": {"ok": False, "error": "Cannot connect within 3 s: nope"},
            "eu_mem": {"ok": True},
        },
        seen_at=now,
    )
    InstanceHeartbeat.objects.create(
        instance_id="gone:2:worker", host="gone", role="worker", seen_at=now - timedelta(hours=1)
    )

    html = admin_client.get("/superuser/status/").content.decode()
    rows = status_overview().instances

    stale = {row.beat.host: row.stale for row in rows if row.beat.host in ("eu-host", "gone")}
    assert stale == {"eu-host": False, "gone": True}
    web = next(row for row in rows if row.beat.role == "web")
    assert [cell.ok for cell in web.cells] == [False, True]  # us_mem, eu_mem in preference order
    assert 'title="Cannot connect within 3 s: nope"' in html
    assert "✓" in html
    assert 'class="stale"' in html


def test_heartbeat_records_this_process_and_probes_every_location(
    db: Any, tmp_path: Path, settings: Any
) -> None:
    settings.QUAY_GEO_HEARTBEAT_SECONDS = 30
    location_create(location_id="us_mem", kind="memory", options={})
    location_create(location_id="eu_mem", kind="memory", options={})
    location_create(
        location_id="disk", kind="local", options={"storage_path": str(tmp_path / "absent")}
    )
    heartbeat._probe_state.reset()

    beat = heartbeat.heartbeat_record(role="worker", probe=True)

    assert beat.role == "worker"
    assert beat.instance_id == heartbeat.instance_id("worker")
    assert beat.reachable["us_mem"]["ok"] is True
    assert beat.reachable["disk"]["ok"] is False
    assert beat.reachable["disk"]["error"].startswith("Directory not found")
    assert beat.preference.split() == ["us_mem", "eu_mem", "disk"]


def test_heartbeat_probes_at_most_once_per_interval(
    two_regions: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.QUAY_GEO_HEARTBEAT_SECONDS = 30
    heartbeat._probe_state.reset()
    calls: list[int] = []
    real = heartbeat._reachability

    def counting(timeout: float) -> dict[str, Any]:
        calls.append(1)
        return real(timeout)

    monkeypatch.setattr(heartbeat, "_reachability", counting)

    heartbeat.heartbeat_record(role="web")
    second = heartbeat.heartbeat_record(role="web")

    assert len(calls) == 1
    assert second.reachable["us_mem"]["ok"] is True  # the last probe's outcome is kept
    assert InstanceHeartbeat.objects.filter(instance_id=heartbeat.instance_id("web")).count() == 1


def test_heartbeat_task_is_registered_under_its_name() -> None:
    from quay_geo.celery import app

    assert heartbeat.heartbeat_task.name == "replication.heartbeat"
    assert "replication.heartbeat" in app.tasks


def test_instances_show_their_replica_state_and_lag(admin_client: Any, two_regions: Any) -> None:
    now = timezone.now()
    InstanceHeartbeat.objects.create(
        instance_id="eu-host:1:web",
        host="eu-host",
        role="web",
        replica={
            "configured": True,
            "host": "pg-replica-eu",
            "port": "5432",
            "dbname": "quay",
            "state": "lagging",
            "lag_seconds": 7.24,
            "max_lag_seconds": 5.0,
            "error": "",
        },
        seen_at=now,
    )
    InstanceHeartbeat.objects.create(
        instance_id="us-host:2:web", host="us-host", role="web", seen_at=now
    )

    html = admin_client.get("/superuser/status/").content.decode()

    assert 'title="pg-replica-eu:5432/quay">lagging</span>' in html
    assert "lag 7.2 s of 5 s" in html
    assert 'title="no DATABASE_REPLICA_URL: every query goes to the primary">\u2013' in html


def test_heartbeat_records_the_replica_status_of_this_process(db: Any, settings: Any) -> None:
    settings.QUAY_GEO_HEARTBEAT_SECONDS = 30

    beat = heartbeat.heartbeat_record(role="web", probe=False)

    assert beat.replica == replica_status()
    assert beat.replica["state"] == "none"  # the test run has no replica apart from its database


@pytest.mark.parametrize("value", ["²", "٣", str(10**30), "-1", "x"])
def test_a_retry_of_a_placement_id_that_is_no_number_is_ignored_not_a_500(
    admin_client: Any, value: str
) -> None:
    response = admin_client.post("/superuser/status/retry/", {"placement": value})

    assert response.status_code == 302


def test_the_status_tab_audits_a_location_shows_the_result_and_an_unrecoverable_blob_in_red(
    admin_client: Any, two_regions: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from replication.models import AuditRun

    us, _ = two_regions
    blob = commit(us, 100, django_capture_on_commit_callbacks)
    location_engine(us).delete(content_key(blob.digest))

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/superuser/status/audit/", {"location_id": "us_mem"})
    page = admin_client.get("/superuser/status/").content.decode()

    assert response.status_code == 302
    run = AuditRun.objects.get(location=us)
    assert (run.lost, run.finished_at is not None) == (1, True)
    assert 'data-audit="us_mem"' in page
    assert 'id="unrecoverable"' in page  # the only copy is gone: said in red
    assert Blob.objects.get(pk=blob.pk).unrecoverable_at is not None
