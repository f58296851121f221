"""Faults found by the audit and the scrub, reported, repaired to verified copies (issue 14).

Each fault: detected, reported (the audit run), repaired from a verified copy where one exists,
and never shown present when it is not.
"""

import io
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from replication.inventory import location_audit
from replication.models import AuditKind, AuditRun, Blob, Placement, PlacementState
from replication.scrub import location_scrub, slice_budget
from replication.selectors import location_engine
from storage_engines.errors import StorageUnavailable
from storage_engines.keys import content_key
from tests import servers

pytestmark = pytest.mark.django_db


def _state(blob: Blob, location: Any) -> Placement:
    return Placement.objects.get(blob=blob, location=location)


def _objects(location: Any) -> dict[str, bytes]:
    objects: dict[str, bytes] = location_engine(location).objects  # type: ignore[attr-defined]
    return objects


@pytest.fixture
def audited(django_capture_on_commit_callbacks: Any) -> Any:
    """Run an audit with its repair tasks (eager) executed."""

    def run(location: Any, **options: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return location_audit(location=location, **options)

    return run


def test_objects_deleted_out_of_band_are_found_lost_and_repaired(
    regions: Any, committed_blob: Any, audited: Any
) -> None:
    us, eu = regions
    blobs = [committed_blob(us) for _ in range(3)]
    for blob, _ in blobs[:2]:
        del _objects(eu)[content_key(blob.digest)]

    run = audited(eu)

    assert (run.objects_seen, run.lost, run.corrupt, run.repaired, run.orphans) == (1, 2, 0, 2, 0)
    assert run.finished_at is not None
    for blob, data in blobs:
        placement = _state(blob, eu)
        assert placement.state == PlacementState.PRESENT
        assert _objects(eu)[content_key(blob.digest)] == data
    assert _state(blobs[0][0], eu).lost_reason.startswith("not in the listing of eu_mem")


def test_one_listing_covers_both_algorithms_and_skips_keys_that_are_not_content(
    regions: Any, committed_blob: Any, audited: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us)
    engine = location_engine(eu)
    objects = _objects(eu)
    objects[content_key("sha512:" + "a" * 128)] = b"orphan"
    objects["sha1/ab/" + "b" * 40] = b"not content"
    objects["sha256x/cd/" + "c" * 64] = b"not content"
    del objects[content_key(blob.digest)]
    prefixes: list[str] = []
    listing = engine.list_objects

    def counted(prefix: str, **kwargs: Any) -> Any:
        prefixes.append(prefix)
        return listing(prefix, **kwargs)

    monkeypatch.setattr(engine, "list_objects", counted)

    run = audited(eu, repair=False)

    assert prefixes == ["sha"]
    assert (run.objects_seen, run.lost, run.orphans) == (1, 1, 1)
    assert _state(blob, eu).state == PlacementState.LOST


def test_a_listing_that_fails_midway_stops_the_audit_with_its_error_and_judges_nothing_unlisted(
    regions: Any, committed_blob: Any, audited: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    us, eu = regions
    for _ in range(5):
        committed_blob(us)
    engine = location_engine(eu)
    listing = engine.list_objects

    def failing(prefix: str, **kwargs: Any) -> Any:
        for index, item in enumerate(listing(prefix, **kwargs)):
            if index == 3:
                raise StorageUnavailable("the store went away mid-listing")
            yield item

    monkeypatch.setattr(engine, "list_objects", failing)

    run = audited(eu)

    assert run.error == "the store went away mid-listing"
    assert run.finished_at is not None
    assert run.lost == 0
    assert not Placement.objects.filter(location=eu).exclude(state=PlacementState.PRESENT).exists()


def test_a_whole_bucket_emptied_is_found_and_refilled(
    regions: Any, committed_blob: Any, audited: Any
) -> None:
    us, eu = regions
    blobs = [committed_blob(us) for _ in range(4)]
    _objects(eu).clear()

    report = audited(eu, repair=False)

    assert (report.lost, report.repaired) == (4, 0)
    assert not Placement.objects.filter(location=eu, state=PlacementState.PRESENT).exists()

    # The next audit with repairs queues those the report left (it finds nothing new)
    run = audited(eu)

    assert (run.lost, run.repaired) == (0, 4)
    for blob, data in blobs:
        assert _state(blob, eu).state == PlacementState.PRESENT
        assert _objects(eu)[content_key(blob.digest)] == data


def test_a_truncated_object_is_corrupt_and_repaired(
    regions: Any, committed_blob: Any, audited: Any
) -> None:
    us, eu = regions
    blob, data = committed_blob(us)
    _objects(eu)[content_key(blob.digest)] = data[:-10]

    run = audited(eu)

    assert (run.corrupt, run.repaired) == (1, 1)
    assert _state(blob, eu).state == PlacementState.PRESENT
    assert _objects(eu)[content_key(blob.digest)] == data
    assert "lists 4086 bytes, expected 4096" in _state(blob, eu).lost_reason


def test_one_flipped_byte_is_missed_by_a_listing_and_found_by_a_deep_audit(
    regions: Any, committed_blob: Any, audited: Any
) -> None:
    us, eu = regions
    blob, data = committed_blob(us)
    _objects(eu)[content_key(blob.digest)] = bytes([data[0] ^ 1]) + data[1:]

    shallow = audited(eu)
    deep = audited(eu, deep=True)

    assert shallow.corrupt == 0
    assert (deep.corrupt, deep.repaired, deep.bytes_read) == (1, 1, len(data))
    assert _objects(eu)[content_key(blob.digest)] == data
    assert _state(blob, eu).state == PlacementState.PRESENT


def test_a_bucket_restored_from_an_old_snapshot_brings_orphans_deleted_after_the_grace(
    regions: Any, committed_blob: Any, audited: Any
) -> None:
    us, eu = regions
    committed_blob(us)
    gone, _ = committed_blob(us)
    key = content_key(gone.digest)
    kept = dict(_objects(eu))
    gone.delete()  # garbage collected since the snapshot: rows and bytes
    _objects(eu).pop(key)
    _objects(eu).update(kept)  # the snapshot is restored: the deleted object is back
    engine = location_engine(eu)
    engine.modified[key] = timezone.now() - timedelta(days=3)  # type: ignore[attr-defined]
    fresh = content_key("sha256:" + "f" * 64)
    _objects(eu)[fresh] = b"uploaded a moment ago"
    engine.modified[fresh] = timezone.now()  # type: ignore[attr-defined]

    report = audited(eu, repair=False)
    run = audited(eu)

    assert (report.orphans, report.orphans_deleted) == (2, 0)
    assert (run.orphans, run.orphans_deleted) == (2, 1)
    assert key not in _objects(eu)
    assert fresh in _objects(eu)  # younger than QUAY_GEO_GC_GRACE_SECONDS


def test_the_last_good_copy_corrupted_is_unrecoverable_and_loud(
    regions: Any, committed_blob: Any, audited: Any, caplog: pytest.LogCaptureFixture
) -> None:
    us, eu = regions
    blob, data = committed_blob(us)
    rotten = bytes([data[0] ^ 1]) + data[1:]
    _objects(us)[content_key(blob.digest)] = rotten
    _objects(eu)[content_key(blob.digest)] = rotten

    with caplog.at_level(logging.ERROR):
        audited(us, deep=True)

    # us is corrupt; its repair read eu, found it corrupt too: no good copy is left
    assert _state(blob, us).state != PlacementState.PRESENT
    assert _state(blob, eu).state == PlacementState.CORRUPT
    assert Blob.objects.get(pk=blob.pk).unrecoverable_at is not None
    assert any(
        r.levelno == logging.ERROR and "unrecoverable" in r.getMessage() for r in caplog.records
    )


def test_auditlocation_prints_progress_and_json(regions: Any, committed_blob: Any) -> None:
    us, eu = regions
    blob, _ = committed_blob(us)
    del _objects(eu)[content_key(blob.digest)]

    text, as_json = io.StringIO(), io.StringIO()
    call_command("auditlocation", "eu_mem", "--no-repair", stdout=text)
    call_command("auditlocation", "us_mem", "--json", "--deep", stdout=as_json)

    assert "auditing eu_mem (memory)" in text.getvalue()
    assert "eu_mem: 0 objects, 0 verified, 1 lost, 0 corrupt, 0 repairs queued" in text.getvalue()
    result = json.loads(as_json.getvalue())
    assert (result["location"], result["objects_seen"], result["verified"]) == ("us_mem", 1, 1)


# --- scrub ----------------------------------------------------------------------------------------


def test_the_scrub_reads_the_least_recently_verified_copies_within_its_budget(
    regions: Any, committed_blob: Any, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = regions
    blobs = [committed_blob(us, size=1000) for _ in range(5)]
    old = timezone.now() - timedelta(days=10)
    for age, (blob, _) in enumerate(blobs):
        Placement.objects.filter(blob=blob, location=eu).update(
            verified_at=old + timedelta(hours=age)
        )
    blob, data = blobs[1]
    _objects(eu)[content_key(blob.digest)] = data[:500] + bytes([data[500] ^ 1]) + data[501:]

    with django_capture_on_commit_callbacks(execute=True):
        run = location_scrub(location=eu, budget=2500)

    assert run.kind == AuditKind.SCRUB
    assert (run.objects_seen, run.bytes_read, run.verified, run.corrupt) == (3, 3000, 2, 1)
    assert _state(blobs[3][0], eu).verified_at == old + timedelta(hours=3)  # not reached
    verified_at = _state(blobs[0][0], eu).verified_at
    assert verified_at is not None
    assert verified_at > old + timedelta(days=9)
    assert _state(blob, eu).state == PlacementState.PRESENT  # repaired
    assert _objects(eu)[content_key(blob.digest)] == data


@override_settings(QUAY_GEO_SCRUB_BYTES_PER_DAY=24_000, QUAY_GEO_SCRUB_SECONDS=3600)
def test_a_slice_reads_its_share_of_the_day_less_what_the_last_one_went_over(
    regions: Any, committed_blob: Any
) -> None:
    us, eu = regions
    for _ in range(3):
        committed_blob(us, size=1500)

    assert slice_budget(eu) == 1000
    first = location_scrub(location=eu)
    assert first.bytes_read == 1500
    assert slice_budget(eu) == 500


# --- a real S3 store ------------------------------------------------------------------------------


@pytest.mark.servers
def test_on_s3_the_audit_finds_deleted_truncated_and_orphaned_objects(
    db: Any, committed_blob: Any, audited: Any, settings: Any
) -> None:
    from replication.services import location_create, replication_enable

    servers.require("moto")
    settings.QUAY_DISTRIBUTED_STORAGE_PREFERENCE = "us_s3"
    buckets = {}
    for location_id, endpoint in (("us_s3", servers.S3_A), ("eu_s3", servers.S3_B)):
        buckets[location_id] = servers.new_s3_bucket(endpoint)
        location_create(
            location_id=location_id,
            kind="s3",
            options={
                "s3_bucket": buckets[location_id],
                "endpoint_url": endpoint,
                "s3_access_key": servers.S3_ACCESS_KEY,
                "s3_secret_key": servers.S3_SECRET_KEY,
                "addressing_style": "path",
                "storage_path": "registry",
            },
            replicate_by_default=True,
        )
    replication_enable(enabled=True)
    from replication.models import StorageLocation

    us, eu = StorageLocation.objects.order_by("rank")
    blobs = [committed_blob(us, size=2000) for _ in range(3)]
    s3 = servers.s3_client(servers.S3_B)
    bucket = buckets["eu_s3"]
    s3.delete_object(Bucket=bucket, Key="registry/" + content_key(blobs[0][0].digest))
    s3.put_object(
        Bucket=bucket, Key="registry/" + content_key(blobs[1][0].digest), Body=blobs[1][1][:7]
    )
    s3.put_object(Bucket=bucket, Key="registry/" + content_key("sha256:" + "e" * 64), Body=b"x")

    run = audited(eu)

    assert (run.objects_seen, run.lost, run.corrupt, run.repaired) == (3, 1, 1, 2)
    assert (run.orphans, run.orphans_deleted) == (1, 0)  # younger than the grace period
    for blob, data in blobs:
        assert _state(blob, eu).state == PlacementState.PRESENT
        body = s3.get_object(Bucket=bucket, Key="registry/" + content_key(blob.digest))["Body"]
        assert body.read() == data


def test_beat_audits_and_scrubs_every_location(regions: Any, settings: Any) -> None:
    from replication import tasks

    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"replication.audit_locations", "replication.scrub_locations"} <= schedule

    assert tasks.audit_locations() == 2
    assert tasks.scrub_locations() == 2
    for kind in (AuditKind.AUDIT, AuditKind.SCRUB):
        finished = AuditRun.objects.filter(kind=kind, finished_at__isnull=False)
        assert sorted(finished.values_list("location__location_id", flat=True)) == [
            "eu_mem",
            "us_mem",
        ]
