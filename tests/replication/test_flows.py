"""Replication flows on in-memory engines: targets, copies, verification, failures, reconcile."""

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from replication import copying
from replication.copying import backoff_seconds, blob_replicate, placement_claim
from replication.models import Blob, Placement, PlacementState, StorageLocation
from replication.reconcile import placements_reconcile
from replication.selectors import PreferenceError, location_engine, preference_of_instance
from replication.services import location_create, replication_enable
from replication.targets import LOCAL_REFUSED
from storage_engines.errors import AccessDenied, StorageUnavailable
from storage_engines.keys import content_key

pytestmark = pytest.mark.django_db

Regions = tuple[StorageLocation, StorageLocation]
MakeBlob = Callable[..., tuple[Blob, bytes]]


def placement(blob: Blob, location: StorageLocation) -> Placement:
    return Placement.objects.get(blob=blob, location=location)


def test_commit_replicates_to_every_default_location(
    regions: Regions, committed_blob: MakeBlob
) -> None:
    us, eu = regions

    blob, data = committed_blob(us)

    assert placement(blob, us).state == PlacementState.PRESENT
    eu_placement = placement(blob, eu)
    assert eu_placement.state == PlacementState.PRESENT
    assert eu_placement.verified_at is not None
    assert eu_placement.copy_method == "stream"
    assert b"".join(location_engine(eu).read(content_key(blob.digest))) == data


def test_commit_without_replication_creates_no_pending_work(
    db: Any, committed_blob: MakeBlob
) -> None:
    us = location_create(location_id="us_mem", kind="memory", options={}, replicate_by_default=True)
    location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)

    blob, _ = committed_blob(us)

    assert list(Placement.objects.filter(blob=blob).values_list("state", flat=True)) == ["present"]


@override_settings(QUAY_GEO_REPLICATION_VERIFY="readback")
def test_corrupted_target_bytes_never_become_present(
    regions: Regions, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    us, eu = regions
    target = location_engine(eu)
    real_write = target.write

    def corrupting_write(key: str, stream: Any, *, size: int | None = None, **_: Any) -> int:
        written = real_write(key, stream, size=size)
        real_write(key, io.BytesIO(b"X" * written), size=written)  # someone overwrote the bytes
        return written

    monkeypatch.setattr(target, "write", corrupting_write)

    blob, _ = committed_blob(us)

    eu_placement = placement(blob, eu)
    assert eu_placement.state == PlacementState.FAILED
    assert not eu_placement.error_permanent
    assert "differ" in eu_placement.last_error
    assert target.stat(content_key(blob.digest)) is None, "unverified bytes are removed"


def test_by_default_a_copy_is_not_read_back_but_a_short_target_is_refused(
    regions: Regions, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    us, eu = regions
    target = location_engine(eu)
    real_write, real_read = target.write, target.read
    reads: list[str] = []

    def counted_read(key: str, **kwargs: Any) -> Any:
        reads.append(key)
        return real_read(key, **kwargs)

    monkeypatch.setattr(target, "read", counted_read)

    blob, _ = committed_blob(us)
    assert placement(blob, eu).state == PlacementState.PRESENT
    assert reads == [], "the default verification does not read the copy back"

    def short_write(key: str, stream: Any, *, size: int | None = None, **_: Any) -> int:
        data = stream.read()
        return real_write(key, io.BytesIO(data[:-1]), size=len(data) - 1)

    monkeypatch.setattr(target, "write", short_write)
    short, _ = committed_blob(us)
    assert placement(short, eu).state == PlacementState.FAILED
    assert "expected" in placement(short, eu).last_error
    assert target.stat(content_key(short.digest)) is None


def test_transient_target_failure_retries_then_present(
    regions: Regions,
    committed_blob: MakeBlob,
    monkeypatch: pytest.MonkeyPatch,
    run_reconcile: Callable[[], dict[str, int]],
) -> None:
    us, eu = regions
    target = location_engine(eu)
    real_write = target.write
    outage = {"on": True}

    def flaky_write(key: str, stream: Any, *, size: int | None = None, **_: Any) -> int:
        if outage["on"]:
            raise StorageUnavailable("connection refused")
        return real_write(key, stream, size=size)

    monkeypatch.setattr(target, "write", flaky_write)
    blob, data = committed_blob(us, run_tasks=False)
    assert blob_replicate(placement_id=placement(blob, eu).pk).status == "retry"
    failed = placement(blob, eu)
    assert failed.state == PlacementState.FAILED
    assert failed.next_attempt_at is not None
    assert failed.attempts == 1

    outage["on"] = False
    Placement.objects.filter(pk=failed.pk).update(next_attempt_at=timezone.now())
    counts = run_reconcile()

    assert counts["retried"] == 1
    assert placement(blob, eu).state == PlacementState.PRESENT
    assert b"".join(target.read(content_key(blob.digest))) == data


@pytest.fixture
def run_reconcile(django_capture_on_commit_callbacks: Any) -> Callable[[], dict[str, int]]:
    def run() -> dict[str, int]:
        with django_capture_on_commit_callbacks(execute=True):
            return placements_reconcile()

    return run


def test_permanent_error_fails_with_reason_and_is_not_retried(
    regions: Regions, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    us, eu = regions

    def denied(*args: Any, **kwargs: Any) -> int:
        raise AccessDenied("credentials refused by eu")

    monkeypatch.setattr(location_engine(eu), "write", denied)

    blob, _ = committed_blob(us)

    failed = placement(blob, eu)
    assert failed.state == PlacementState.FAILED
    assert failed.error_permanent
    assert "credentials refused" in failed.last_error
    assert blob_replicate(placement_id=failed.pk).status == "skipped"


def test_no_source_anywhere_is_a_permanent_failure(
    regions: Regions, committed_blob: MakeBlob
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us, run_tasks=False)
    Placement.objects.filter(blob=blob, location=us).delete()

    outcome = blob_replicate(placement_id=placement(blob, eu).pk)

    assert outcome.status == "failed"
    assert placement(blob, eu).error_permanent
    assert "no location holds" in placement(blob, eu).last_error


def test_source_missing_bytes_falls_back_to_next_source(db: Any, committed_blob: MakeBlob) -> None:
    us = location_create(location_id="us_mem", kind="memory", options={})
    ap = location_create(location_id="ap_mem", kind="memory", options={})
    eu = location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)
    replication_enable(enabled=True)
    blob, data = committed_blob(us, run_tasks=False)
    location_engine(ap).write(content_key(blob.digest), io.BytesIO(data), size=len(data))
    Placement.objects.create(blob=blob, location=ap, state=PlacementState.PRESENT)
    location_engine(us).delete(content_key(blob.digest))  # us lost the bytes

    outcome = blob_replicate(placement_id=placement(blob, eu).pk)

    assert outcome.status == "present"


def test_claim_is_exclusive_and_expired_lease_is_reconciled(
    regions: Regions,
    committed_blob: MakeBlob,
    monkeypatch: pytest.MonkeyPatch,
    run_reconcile: Callable[[], dict[str, int]],
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us, run_tasks=False)
    pending = placement(blob, eu)

    assert placement_claim(pending.pk) is not None
    assert placement_claim(pending.pk) is None, "a live lease keeps other workers out"

    Placement.objects.filter(pk=pending.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    monkeypatch.setattr("replication.tasks.replicate_blob_send", lambda *a, **k: None)
    counts = run_reconcile()

    assert counts["expired"] == 1
    assert placement(blob, eu).state == PlacementState.PENDING


def test_lost_pending_task_is_re_enqueued(
    regions: Regions, committed_blob: MakeBlob, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us, run_tasks=False)  # the broker never got the message
    assert placement(blob, eu).state == PlacementState.PENDING

    with django_capture_on_commit_callbacks(execute=True):
        counts = placements_reconcile()

    assert counts["lost"] == 1
    assert placement(blob, eu).state == PlacementState.PRESENT


@pytest.mark.parametrize("attempts", [1, 3, 6, 30])
def test_backoff_grows_exponentially_with_jitter_and_a_ceiling(attempts: int) -> None:
    with override_settings(
        QUAY_GEO_REPLICATION_BACKOFF_BASE=5, QUAY_GEO_REPLICATION_BACKOFF_MAX=600
    ):
        delays = [backoff_seconds(attempts) for _ in range(50)]
    nominal = min(600, 5 * 2 ** (attempts - 1))
    assert all(nominal * 0.5 <= d <= nominal for d in delays)
    assert len(set(delays)) > 1, "jittered"


def test_preference_naming_an_unknown_location_is_an_error(regions: Regions) -> None:
    with (
        override_settings(QUAY_DISTRIBUTED_STORAGE_PREFERENCE="eu_mem, nowhere"),
        pytest.raises(PreferenceError, match="nowhere"),
    ):
        preference_of_instance()


def test_preference_puts_the_instance_locations_first(regions: Regions) -> None:
    with override_settings(QUAY_DISTRIBUTED_STORAGE_PREFERENCE="eu_mem"):
        assert [loc.location_id for loc in preference_of_instance()] == ["eu_mem", "us_mem"]


def test_local_storage_is_refused_while_replication_is_enabled(
    regions: Regions, tmp_path: Any
) -> None:
    with pytest.raises(ValidationError, match="locally mounted directory"):
        location_create(location_id="disk", kind="local", options={"storage_path": str(tmp_path)})
    assert LOCAL_REFUSED.startswith("Replication to a locally mounted directory is unsupported")


def test_replicationstatus_reports_counts_and_coverage(
    regions: Regions, committed_blob: MakeBlob
) -> None:
    us, _ = regions
    committed_blob(us)
    committed_blob(us, run_tasks=False)
    out = io.StringIO()

    call_command("replicationstatus", "--json", stdout=out)

    import json

    rows = {row["location_id"]: row for row in json.loads(out.getvalue())}
    assert rows["us_mem"]["present"] == 2
    assert rows["eu_mem"]["present"] == 1
    assert rows["eu_mem"]["pending"] == 1
    assert rows["eu_mem"]["coverage"] == pytest.approx(0.5)
    assert rows["eu_mem"]["oldest_pending_seconds"] is not None


def test_removelocation_refuses_while_it_holds_sole_copies(
    regions: Regions, committed_blob: MakeBlob
) -> None:
    us, eu = regions
    committed_blob(us, run_tasks=False)
    committed_blob(us, run_tasks=False)

    with pytest.raises(CommandError, match="only copy of 2 blob"):
        call_command("removelocation", "us_mem", stdout=io.StringIO())
    assert StorageLocation.objects.filter(location_id="us_mem").exists()

    out = io.StringIO()
    call_command("removelocation", "eu_mem", stdout=out)
    assert not StorageLocation.objects.filter(location_id="eu_mem").exists()
    assert not Placement.objects.filter(location=eu).exists()


def test_copying_module_reports_lease_lost(
    regions: Regions, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us, run_tasks=False)
    eu_placement = placement(blob, eu)
    real = copying.copy_verified

    def stolen(**kwargs: Any) -> Any:
        result = real(**kwargs)
        Placement.objects.filter(pk=eu_placement.pk).update(attempts=99)  # another worker took over
        return result

    monkeypatch.setattr(copying, "copy_verified", stolen)

    assert blob_replicate(placement_id=eu_placement.pk).status == "skipped"
    assert placement(blob, eu).state == PlacementState.COPYING


def test_start_up_check_names_an_unknown_preferred_location(regions: Regions) -> None:
    from replication.selectors import preference_check_at_start

    preference_check_at_start()  # us_mem exists
    with (
        override_settings(QUAY_DISTRIBUTED_STORAGE_PREFERENCE="eu_mem mars"),
        pytest.raises(PreferenceError, match="not configured: mars"),
    ):
        preference_check_at_start()


def test_start_up_check_refuses_replication_without_any_location(db: Any) -> None:
    from replication.models import ReplicationSettings
    from replication.selectors import preference_check_at_start

    ReplicationSettings.load()
    ReplicationSettings.objects.update(storage_replication_enabled=True)

    with (
        override_settings(QUAY_DISTRIBUTED_STORAGE_PREFERENCE=""),
        pytest.raises(PreferenceError, match="no storage location"),
    ):
        preference_check_at_start()
