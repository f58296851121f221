"""Batched replication: one read for the batch, two statements per placement, one lease thread."""

import io
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from replication import copying
from replication.copying import LeaseKeeper, copy_verified, placement_claim
from replication.models import Blob, Placement, PlacementState, StorageLocation
from replication.selectors import config_current, location_engine
from replication.tasks import replicate_batch
from storage_engines.base import StorageEngine
from storage_engines.errors import StorageUnavailable
from storage_engines.keys import content_key

Regions = tuple[StorageLocation, StorageLocation]
MakeBlob = Callable[..., tuple[Blob, bytes]]


def eu_placements(blobs: list[Blob], eu: StorageLocation) -> list[int]:
    return [Placement.objects.get(blob=blob, location=eu).pk for blob in blobs]


def pending_copies(
    regions: Regions, committed_blob: MakeBlob, count: int
) -> tuple[list[Blob], list[int]]:
    """Commit ``count`` blobs in us without running their tasks; return them and their eu ids."""
    us, eu = regions
    blobs = [committed_blob(us, run_tasks=False)[0] for _ in range(count)]
    return blobs, eu_placements(blobs, eu)


def after_batch_read(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], object]) -> None:
    """Make ``meanwhile`` happen between a batch's read and its first claim."""
    real_read = copying.batch_read

    def read_then(placement_ids: list[int], lease: LeaseKeeper) -> copying.BatchContext:
        batch = real_read(placement_ids, lease)
        meanwhile()
        return batch

    monkeypatch.setattr("replication.tasks.batch_read", read_then)


@pytest.mark.django_db
def test_a_batch_costs_two_statements_per_placement(
    regions: Regions, committed_blob: MakeBlob
) -> None:
    blobs, ids = pending_copies(regions, committed_blob, 5)
    config_current()  # a worker has read the configuration within QUAY_GEO_CONFIG_CHECK_SECONDS

    with CaptureQueriesContext(connection) as queries:
        counts = replicate_batch(ids)

    assert counts == {"present": 5}
    for blob in blobs:
        assert b"".join(location_engine(regions[1]).read(content_key(blob.digest)))
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    # The batch's read: its rows, their present copies (the configuration is trusted for a few
    # seconds). Then per placement the claim and the result, both UPDATEs (the copy itself asks
    # the database nothing).
    assert statements[:2] == ["SELECT", "SELECT"], statements
    assert statements[2:] == ["UPDATE"] * 10, statements


@pytest.mark.django_db
def test_a_placement_taken_after_the_batch_read_is_skipped(
    regions: Regions, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ids = pending_copies(regions, committed_blob, 3)
    after_batch_read(monkeypatch, lambda: placement_claim(ids[1]))  # another worker takes it

    assert replicate_batch(ids) == {"present": 2, "skipped": 1}
    taken = Placement.objects.get(pk=ids[1])
    assert taken.state == PlacementState.COPYING
    assert taken.attempts == 1


@pytest.mark.django_db
def test_a_placement_that_moved_after_the_batch_read_is_claimed_from_the_database(
    regions: Regions, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ids = pending_copies(regions, committed_blob, 2)
    # An earlier attempt failed meanwhile: still claimable, but not the row the batch read.
    after_batch_read(
        monkeypatch,
        lambda: Placement.objects.filter(pk=ids[0]).update(state=PlacementState.FAILED, attempts=3),
    )

    assert replicate_batch(ids) == {"present": 2}
    moved = Placement.objects.get(pk=ids[0])
    assert moved.state == PlacementState.PRESENT
    assert moved.attempts == 4


@pytest.mark.django_db
def test_a_source_gone_since_the_batch_read_fails_the_placement_as_transient(
    regions: Regions, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us, run_tasks=False)
    ids = eu_placements([blob], eu)
    monkeypatch.setattr("replication.tasks.replicate_blob_send", lambda *a, **k: None)
    after_batch_read(monkeypatch, lambda: location_engine(us).delete(content_key(blob.digest)))

    assert replicate_batch(ids) == {"retry": 1}
    failed = Placement.objects.get(pk=ids[0])
    assert failed.state == PlacementState.FAILED
    assert not failed.error_permanent


def leases(*ids: int) -> dict[int, datetime]:
    found = Placement.objects.filter(pk__in=ids).values_list("pk", "lease_expires_at")
    return {pk: expires for pk, expires in found if expires is not None}


@pytest.mark.django_db(transaction=True)
def test_the_lease_keeper_renews_only_the_placement_it_holds(
    regions: Regions, committed_blob: MakeBlob
) -> None:
    us, eu = regions
    blobs = [committed_blob(us, run_tasks=False)[0] for _ in range(2)]
    first, second = eu_placements(blobs, eu)
    # Outside a test transaction the commit ran its tasks at once: make both pending again.
    Placement.objects.filter(pk__in=[first, second]).update(state=PlacementState.PENDING)
    with override_settings(QUAY_GEO_REPLICATION_LEASE_SECONDS=3):  # renewed every second
        claimed = [placement_claim(first), placement_claim(second)]
        assert claimed[0] is not None
        assert claimed[1] is not None
        before = leases(first, second)
        with LeaseKeeper() as keeper, keeper.holding(first, claimed[0][1]):
            time.sleep(2.5)
    after = leases(first, second)
    assert after[first] > before[first] + timedelta(seconds=0.5), "the held lease was renewed"
    assert after[second] == before[second], "a placement not held keeps its lease"


@pytest.mark.django_db
def test_a_server_side_copy_asks_the_target_nothing_unless_read_back_is_on(
    regions: Regions, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    us, eu = regions
    blob, data = committed_blob(us, run_tasks=False)
    source, target = location_engine(us), location_engine(eu)
    key = content_key(blob.digest)
    stats: list[str] = []
    real_stat = target.stat

    def server_side(engine: StorageEngine, k: str, target_key: str, size: int) -> bool:
        target.write_small(target_key, engine.read(k), size)  # type: ignore[arg-type]
        return True

    def counted_stat(k: str) -> Any:
        stats.append(k)
        return real_stat(k)

    monkeypatch.setattr(target, "_server_side_copy_from", server_side)
    monkeypatch.setattr(target, "stat", counted_stat)

    result = copy_verified(
        source=source, target=target, key=key, size=len(data), sha256=blob.sha256
    )
    assert result.method == "server"
    assert stats == []

    with override_settings(QUAY_GEO_REPLICATION_VERIFY="readback"):
        copy_verified(source=source, target=target, key=key, size=len(data), sha256=blob.sha256)
    assert stats == [key]

    target.delete(key)
    target.write_small(key, io.BytesIO(data[:-1]), len(data) - 1)  # the store kept fewer bytes
    monkeypatch.setattr(target, "_server_side_copy_from", lambda *a: True)
    with (
        override_settings(QUAY_GEO_REPLICATION_VERIFY="readback"),
        pytest.raises(copying.VerificationFailed, match="expected"),
    ):
        copy_verified(source=source, target=target, key=key, size=len(data), sha256=blob.sha256)


@pytest.mark.django_db(transaction=True)
def test_engines_warm_builds_every_configured_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from replication.selectors import engines_warm
    from replication.services import location_create

    location_create(location_id="us_mem", kind="memory", options={}, replicate_by_default=True)
    location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)
    warmed: list[str] = []

    def warm(self: StorageEngine) -> None:
        warmed.append(self.location_id)
        if self.location_id == "us_mem":
            raise RuntimeError("cannot build")  # logged; the next engine is still built

    monkeypatch.setattr(StorageEngine, "warm", warm)

    engines_warm()

    assert sorted(warmed) == ["eu_mem", "us_mem"]


@pytest.mark.django_db
def test_a_retry_hashes_itself_instead_of_trusting_the_source_md5_again(
    regions: Regions, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    us, eu = regions
    source, target = location_engine(us), location_engine(eu)
    real_read, real_write = source.read, target.write
    given: list[str | None] = []

    def read_with_a_lying_etag(key: str, **kwargs: Any) -> Any:
        stream = real_read(key, **kwargs)
        stream.md5 = "0" * 32  # a store whose ETags look like MD5s but are not
        return stream

    def checking_write(key: str, stream: Any, *, size: Any = None, md5: Any = None) -> int:
        given.append(md5)
        if md5 is not None:  # what Swift does: the body does not match the MD5 sent
            raise StorageUnavailable("Swift received other bytes than the source's MD5 describes")
        return real_write(key, stream, size=size)

    monkeypatch.setattr(source, "read", read_with_a_lying_etag)
    monkeypatch.setattr(target, "write", checking_write)
    monkeypatch.setattr("replication.tasks.replicate_blob_send", lambda *a, **k: None)
    blob, data = committed_blob(us, run_tasks=False)
    placement_id = eu_placements([blob], eu)[0]

    assert replicate_batch([placement_id]) == {"retry": 1}
    Placement.objects.filter(pk=placement_id).update(next_attempt_at=None)
    assert replicate_batch([placement_id]) == {"present": 1}

    assert given == ["0" * 32, None]
    assert b"".join(target.read(content_key(blob.digest))) == data
