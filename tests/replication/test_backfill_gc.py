"""Backfill, namespace targets, garbage collection and location removal."""

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from registry.models import Manifest, ManifestBlob, Namespace, Repository
from replication.gc import garbage_collect
from replication.models import Blob, Placement, PlacementState, StorageLocation, Tombstone
from replication.reconcile import placements_reconcile
from replication.selectors import location_engine
from replication.services import (
    location_create,
    namespace_targets_set,
    placements_ensure,
    replication_enable,
)
from storage_engines.keys import content_key

pytestmark = pytest.mark.django_db

MakeBlob = Callable[..., tuple[Blob, bytes]]


@pytest.fixture
def us_only(db: Any) -> StorageLocation:
    us = location_create(location_id="us_mem", kind="memory", options={}, replicate_by_default=True)
    replication_enable(enabled=True)
    return us


def reference(blob: Blob, namespace: str = "acme") -> Manifest:
    ns, _ = Namespace.objects.get_or_create(name=namespace, defaults={"kind": "org"})
    repo, _ = Repository.objects.get_or_create(namespace=ns, name="app")
    manifest = Manifest.objects.create(
        repository=repo,
        digest=f"sha256:{blob.pk:064x}",
        media_type="application/vnd.oci.image.manifest.v1+json",
        content=b"{}",
        size=2,
    )
    ManifestBlob.objects.create(manifest=manifest, blob=blob)
    return manifest


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_backfill_brings_existing_blobs_to_a_new_default_location(
    us_only: StorageLocation, committed_blob: MakeBlob, django_capture_on_commit_callbacks: Any
) -> None:
    blobs = [committed_blob(us_only)[0] for _ in range(30)]
    eu = location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)

    dry = run("backfillreplication", "--dry-run", "--batch-size", "7")
    assert "eu_mem: 30 placements missing" in dry
    assert not Placement.objects.filter(location=eu).exists(), "a dry run writes nothing"

    with django_capture_on_commit_callbacks(execute=True):
        first = run("backfillreplication", "--batch-size", "7")
    assert "30 placements created" in first
    assert Placement.objects.filter(location=eu, state=PlacementState.PRESENT).count() == 30
    for blob in blobs:
        assert location_engine(eu).stat(content_key(blob.digest)) is not None

    second = run("backfillreplication")
    assert "0 placements created" in second


def test_backfill_marks_what_it_creates_and_sends_one_message_per_batch(
    us_only: StorageLocation,
    committed_blob: MakeBlob,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blobs = [committed_blob(us_only)[0] for _ in range(120)]
    eu = location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)
    # A push made this placement already: the backfill must neither count nor send it again.
    earlier = Placement.objects.create(blob=blobs[5], location=eu, state=PlacementState.PENDING)
    sent: list[tuple[list[int], str]] = []
    monkeypatch.setattr(
        "replication.tasks.replicate_batch_send",
        lambda ids, location_id, producer=None: sent.append((list(ids), location_id)),
    )

    with django_capture_on_commit_callbacks(execute=True):
        out = run("backfillreplication", "--batch-size", "100")

    assert "119 placements created" in out
    created = Placement.objects.filter(location=eu).exclude(pk=earlier.pk)
    assert created.count() == 119
    assert not created.filter(enqueued_at__isnull=True).exists()
    # Pages of 100 and 19: each spread over up to 16 messages (BATCH_SPREAD).
    assert [len(ids) for ids, _ in sent] == [7] * 14 + [2] + [2] * 9 + [1]
    assert {location for _, location in sent} == {"eu_mem"}
    assert sorted(pk for ids, _ in sent for pk in ids) == sorted(
        created.values_list("pk", flat=True)
    )
    earlier.refresh_from_db()
    assert earlier.enqueued_at is None
    assert earlier.backfill_run is None


def test_backfill_leaves_what_the_broker_refused_unmarked_for_the_reconciler(
    us_only: StorageLocation,
    committed_blob: MakeBlob,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(80):
        committed_blob(us_only)
    eu = location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)
    calls = []

    def flaky(ids: list[int], location_id: str, producer: Any = None) -> None:
        calls.append(ids)
        if len(calls) > 1:
            raise ConnectionError("broker down")

    monkeypatch.setattr("replication.tasks.replicate_batch_send", flaky)
    with django_capture_on_commit_callbacks(execute=True):
        run("backfillreplication", "--batch-size", "30")

    placements = Placement.objects.filter(location=eu)
    assert placements.count() == 80, "the rows stay: the reconciler sends them later"
    assert set(placements.filter(enqueued_at__isnull=False).values_list("pk", flat=True)) == set(
        calls[0]
    )


def test_batch_messages_are_bounded_by_count_and_by_bytes_and_spread() -> None:
    from replication.services import BATCH_BYTES, BATCH_SIZE, BATCH_SIZE_SIZED, _batches

    many = list(range(1, 4001))
    assert [len(c) for c in _batches(many, None)] == [BATCH_SIZE] * 80
    assert [len(c) for c in _batches(many, dict.fromkeys(many, 1))] == [BATCH_SIZE_SIZED] * 20
    big = dict.fromkeys(many[:5], BATCH_BYTES // 2)
    assert [len(c) for c in _batches(many[:5], big)] == [1] * 5  # fewer than 16: one each
    few = list(range(1, 203))  # bench case 2: 202 blobs -> 16 messages of 13, the last 7
    assert [len(c) for c in _batches(few, dict.fromkeys(few, 4 << 20))] == [13] * 15 + [7]
    mixed = dict.fromkeys(many[:1000], 1 << 20)  # 63 placements reach 63 MiB: count rules
    assert {len(c) for c in _batches(many[:1000], mixed)} == {63, 55}


def test_backfill_refuses_when_replication_is_disabled(db: Any) -> None:
    location_create(location_id="us_mem", kind="memory", options={}, replicate_by_default=True)

    with pytest.raises(CommandError, match="disabled"):
        run("backfillreplication")


def test_backfill_rejects_an_unknown_location(us_only: StorageLocation) -> None:
    with pytest.raises(CommandError, match="no storage location 'mars'"):
        run("backfillreplication", "--location", "mars")


def test_namespace_target_reaches_only_that_namespaces_blobs(
    us_only: StorageLocation, committed_blob: MakeBlob, django_capture_on_commit_callbacks: Any
) -> None:
    ap = location_create(location_id="ap_mem", kind="memory", options={})
    ours, theirs = committed_blob(us_only)[0], committed_blob(us_only)[0]
    reference(ours, "acme")
    reference(theirs, "other")
    namespace_targets_set(namespace=Namespace.objects.get(name="acme"), location_ids=["ap_mem"])

    with django_capture_on_commit_callbacks(execute=True):
        counts = placements_reconcile()

    assert counts["planned"] == 1
    assert Placement.objects.get(blob=ours, location=ap).state == PlacementState.PRESENT
    assert not Placement.objects.filter(blob=theirs, location=ap).exists()


def test_manifest_push_rechecks_targets_of_its_blobs(
    us_only: StorageLocation, committed_blob: MakeBlob, django_capture_on_commit_callbacks: Any
) -> None:
    ap = location_create(location_id="ap_mem", kind="memory", options={})
    namespace = Namespace.objects.create(name="acme", kind="org")
    namespace_targets_set(namespace=namespace, location_ids=["ap_mem"])
    blob, _ = committed_blob(us_only)  # pushed before any manifest names it
    assert not Placement.objects.filter(blob=blob, location=ap).exists()
    reference(blob, "acme")

    with django_capture_on_commit_callbacks(execute=True):
        placements_ensure(blob_ids=[blob.pk])

    assert Placement.objects.get(blob=blob, location=ap).state == PlacementState.PRESENT


def test_garbage_collection_deletes_rows_then_bytes_everywhere(
    db: Any, committed_blob: MakeBlob
) -> None:
    us = location_create(location_id="us_mem", kind="memory", options={}, replicate_by_default=True)
    eu = location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)
    replication_enable(enabled=True)
    orphan, _ = committed_blob(us)
    kept, _ = committed_blob(us)
    reference(kept)
    fresh, _ = committed_blob(us)
    Blob.objects.filter(pk__in=[orphan.pk, kept.pk]).update(
        created_at=timezone.now() - timedelta(days=2)
    )

    result = garbage_collect()

    assert result["blobs"] == 1
    assert not Blob.objects.filter(pk=orphan.pk).exists()
    assert Blob.objects.filter(pk__in=[kept.pk, fresh.pk]).count() == 2, "referenced or young"
    assert result["bytes_deleted"] == 2
    for location in (us, eu):
        assert location_engine(location).stat(content_key(orphan.digest)) is None
        assert location_engine(location).stat(content_key(kept.digest)) is not None
    assert not Tombstone.objects.exists()


def test_garbage_collection_retries_failed_byte_deletes(
    us_only: StorageLocation, committed_blob: MakeBlob, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage_engines.errors import StorageUnavailable

    orphan, _ = committed_blob(us_only)
    Blob.objects.filter(pk=orphan.pk).update(created_at=timezone.now() - timedelta(days=2))
    engine = location_engine(us_only)
    real_delete = engine.delete

    def down(key: str) -> None:
        raise StorageUnavailable("endpoint down")

    monkeypatch.setattr(engine, "delete", down)
    assert garbage_collect()["bytes_failing"] == 1
    tombstone = Tombstone.objects.get()
    assert tombstone.attempts == 1
    assert tombstone.next_attempt_at is not None

    monkeypatch.setattr(engine, "delete", real_delete)
    Tombstone.objects.update(next_attempt_at=timezone.now())
    assert garbage_collect()["bytes_deleted"] == 1
    assert engine.stat(content_key(orphan.digest)) is None


@pytest.mark.django_db(transaction=True)
def test_removelocation_replicate_first_copies_sole_copies_then_removes(
    committed_blob: MakeBlob,
) -> None:
    us = location_create(location_id="us_mem", kind="memory", options={})
    eu = location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)
    blob, data = committed_blob(us)

    out = run("removelocation", "us_mem", "--replicate-first", "--timeout", "30")

    assert "replicated 1 blobs" in out
    assert not StorageLocation.objects.filter(location_id="us_mem").exists()
    assert Placement.objects.get(blob=blob, location=eu).state == PlacementState.PRESENT
    assert b"".join(location_engine(eu).read(content_key(blob.digest))) == data


def test_batch_messages_go_out_heaviest_first(
    us_only: StorageLocation,
    committed_blob: MakeBlob,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = [1000] * 40
    sizes[30] = 64 * 1024  # a big blob late in blob order
    blobs = [committed_blob(us_only, size=size)[0] for size in sizes]
    location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)
    sent: list[list[int]] = []
    monkeypatch.setattr(
        "replication.tasks.replicate_batch_send",
        lambda ids, location_id, producer=None: sent.append(list(ids)),
    )

    with django_capture_on_commit_callbacks(execute=True):
        run("backfillreplication")

    big = Placement.objects.get(blob=blobs[30], location__location_id="eu_mem").pk
    assert big in sent[0], "the message with the big blob is copied first"
    rest = [pk for ids in sent[1:] for pk in ids]
    assert rest == sorted(rest), "the others keep blob order"
    assert len(sent) == 14, "40 placements in messages of up to 3 (BATCH_SPREAD)"
