"""Replication with real parts: the test database, Redis as broker, real Celery workers, S3
servers on loopback. Faults are injected while copies run."""

import hashlib
import io
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from replication import selectors
from replication.models import Blob, Placement, PlacementState, StorageLocation
from replication.reconcile import placements_reconcile
from replication.selectors import location_engine
from replication.services import blob_commit, location_create, replication_enable
from storage_engines.keys import content_key
from tests import live, servers

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _broker() -> Iterator[None]:
    servers.require("s3_a")
    servers.require("s3_b")
    live.use_test_broker()
    selectors.cache_clear()
    yield
    selectors.cache_clear()


def s3_location(location_id: str, endpoint: str, default: bool = True) -> StorageLocation:
    bucket = servers.new_s3_bucket(endpoint, "testing", "testing")
    return location_create(
        location_id=location_id,
        kind="s3",
        options={
            "s3_bucket": bucket,
            "endpoint_url": endpoint,
            "s3_access_key": "testing",
            "s3_secret_key": "testing",
            "addressing_style": "path",
            "connect_timeout": 2,
        },
        replicate_by_default=default,
    )


def push_blob(location: StorageLocation, data: bytes) -> Blob:
    """Write bytes into a location and commit them as a registry upload would."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location_engine(location).write(content_key(digest), io.BytesIO(data), size=len(data))
    return blob_commit(digest=digest, size=len(data), sha256=digest[7:], location=location)


def state_of(blob: Blob, location: StorageLocation) -> str:
    return Placement.objects.get(blob=blob, location=location).state


def wait_present(blobs: list[Blob], location: StorageLocation, timeout: float = 90) -> None:
    live.wait_until(
        lambda: (
            Placement.objects.filter(
                blob__in=blobs, location=location, state=PlacementState.PRESENT
            ).count()
            == len(blobs)
        ),
        timeout,
        message=f"not every blob became present in {location}",
    )


@pytest.fixture
def two_regions() -> tuple[StorageLocation, StorageLocation]:
    us = s3_location("us_s3", servers.S3_A)
    eu = s3_location("eu_s3", servers.S3_B)
    replication_enable(enabled=True)
    return us, eu


def test_worker_replicates_a_push_to_every_default_location(
    two_regions: tuple[StorageLocation, StorageLocation],
) -> None:
    us, eu = two_regions
    with live.celery_worker(preference="us_s3"):
        blobs = [push_blob(us, os.urandom(1 * MiB + i)) for i in range(5)]
        wait_present(blobs, eu)

    for blob in blobs:
        placement = Placement.objects.get(blob=blob, location=eu)
        assert placement.verified_at is not None
        assert placement.copy_method == "stream"  # two separate S3 servers: no server-side copy
        digest = hashlib.sha256(b"".join(location_engine(eu).read(content_key(blob.digest))))
        assert digest.hexdigest() == blob.sha256


def test_target_down_during_replication_retries_then_present(two_regions: Any) -> None:
    us, _ = two_regions
    moto_b_port = int(servers.S3_B.rsplit(":", 1)[1])
    outage = live.TcpProxy(moto_b_port)  # region ap's store, reached through a cuttable link
    outage.start()
    ap = s3_location("ap_s3", outage.url)
    outage.stop()  # region ap goes away before the copies start
    with live.celery_worker(
        preference="us_s3",
        QUAY_GEO_REPLICATION_BACKOFF_BASE="1",
        QUAY_GEO_REPLICATION_BACKOFF_MAX="2",
    ):
        blob = push_blob(us, os.urandom(2 * MiB))
        live.wait_until(
            lambda: Placement.objects.get(blob=blob, location=ap).attempts >= 2,
            60,
            message="the copy into the unreachable region was not retried",
        )
        refused = Placement.objects.get(blob=blob, location=ap)
        assert refused.state != PlacementState.PRESENT
        assert not refused.error_permanent

        outage.start()  # the region is back

        def reconciled() -> bool:  # what beat does, until the copy is through
            Placement.objects.filter(blob=blob, location=ap, state=PlacementState.FAILED).update(
                next_attempt_at=timezone.now()
            )
            placements_reconcile()
            return state_of(blob, ap) == PlacementState.PRESENT

        live.wait_until(reconciled, 60, interval=1, message="never present in ap_s3")
    held = hashlib.sha256(b"".join(location_engine(ap).read(content_key(blob.digest))))
    outage.stop()
    assert held.hexdigest() == blob.sha256
    assert Placement.objects.get(blob=blob, location=ap).verified_at is not None


def test_killed_worker_copy_is_finished_by_another_after_the_lease(two_regions: Any) -> None:
    us, eu = two_regions
    lease_env = "4"
    blob = push_blob(us, os.urandom(256 * MiB))
    placement = Placement.objects.get(blob=blob, location=eu)
    with live.celery_worker(
        preference="us_s3", QUAY_GEO_REPLICATION_LEASE_SECONDS=lease_env
    ) as first:
        live.wait_until(
            lambda: state_of(blob, eu) == PlacementState.COPYING, 60, message="copy never started"
        )
        time.sleep(0.5)
        live.stop(first, signal.SIGKILL)
    assert state_of(blob, eu) == PlacementState.COPYING, "killed in the middle of the copy"

    with (
        override_settings(QUAY_GEO_REPLICATION_LEASE_SECONDS=4),
        live.celery_worker(preference="us_s3", QUAY_GEO_REPLICATION_LEASE_SECONDS=lease_env),
    ):
        live.wait_until(
            lambda: (
                (Placement.objects.get(pk=placement.pk).lease_expires_at or timezone.now())
                < timezone.now()
            ),
            30,
            message="the dead worker's lease never expired",
        )
        assert placements_reconcile()["expired"] == 1
        wait_present([blob], eu, timeout=120)

    copied = hashlib.sha256()
    for chunk in location_engine(eu).read(content_key(blob.digest)):
        copied.update(chunk)
    assert copied.hexdigest() == blob.sha256
    assert Placement.objects.get(pk=placement.pk).attempts == 2


def test_dropped_broker_message_is_recovered_by_the_reconciler(two_regions: Any) -> None:
    us, eu = two_regions
    with live.celery_worker(preference="us_s3", queues="nobody"):
        blob = push_blob(us, os.urandom(64 * 1024))  # its task goes to a queue nobody serves
    import redis

    redis.Redis.from_url(live.broker_url()).flushdb()  # the message is lost for good
    assert state_of(blob, eu) == PlacementState.PENDING

    with override_settings(QUAY_GEO_RECONCILE_LOST_AFTER=0), live.celery_worker(preference="us_s3"):
        counts = placements_reconcile()
        wait_present([blob], eu)

    assert counts["lost"] == 1


def test_backfill_of_2000_blobs_to_a_new_default_location() -> None:
    us = s3_location("us_s3", servers.S3_A)
    replication_enable(enabled=True)
    s3 = boto3.client(
        "s3",
        endpoint_url=servers.S3_A,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = location_engine(us).options["s3_bucket"]
    rows = []
    for i in range(2000):
        data = f"blob {i} {os.urandom(8).hex()}".encode()
        digest = hashlib.sha256(data).hexdigest()
        s3.put_object(Bucket=bucket, Key=content_key(f"sha256:{digest}"), Body=data)
        rows.append(Blob(digest=f"sha256:{digest}", size=len(data), sha256=digest))
    Blob.objects.bulk_create(rows)
    Placement.objects.bulk_create(
        [
            Placement(blob=blob, location=us, state=PlacementState.PRESENT)
            for blob in Blob.objects.all()
        ]
    )
    eu = s3_location("eu_s3", servers.S3_B)

    dry = io.StringIO()
    call_command("backfillreplication", "--dry-run", stdout=dry)
    assert "eu_s3: 2000 placements missing" in dry.getvalue()
    assert not Placement.objects.filter(location=eu).exists()

    out = io.StringIO()
    with live.celery_worker(preference="us_s3", concurrency=8):
        call_command("backfillreplication", "--wait", "--timeout", "300", stdout=out)
    assert "2000 placements created" in out.getvalue()
    assert "2000 present, 0 failed of 2000" in out.getvalue()
    assert Placement.objects.filter(location=eu, state=PlacementState.PRESENT).count() == 2000
    listed = sum(
        page.get("KeyCount", 0)
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, PaginationConfig={"PageSize": 1000}
        )
    )
    assert listed == 2000

    again = io.StringIO()
    call_command("backfillreplication", stdout=again)
    assert "0 placements created" in again.getvalue()


def test_corrupted_source_bytes_never_become_present_anywhere(two_regions: Any) -> None:
    us, eu = two_regions
    data = os.urandom(3 * MiB)
    with live.celery_worker(preference="us_s3", queues="nobody"):
        blob = push_blob(us, data)
    # bit rot in region us after the commit: the stored bytes no longer match the digest
    location_engine(us).write(
        content_key(blob.digest), io.BytesIO(b"rotten" + data[6:]), size=len(data)
    )
    Placement.objects.filter(blob=blob, location=eu).update(enqueued_at=None)

    with (
        override_settings(QUAY_GEO_RECONCILE_LOST_AFTER=0),
        live.celery_worker(preference="us_s3", QUAY_GEO_REPLICATION_MAX_ATTEMPTS="1"),
    ):
        placements_reconcile()
        live.wait_until(
            lambda: (
                Placement.objects.get(blob=blob, location=eu).attempts >= 1
                and state_of(blob, eu) == PlacementState.FAILED
            ),
            60,
            message="the corrupted copy was not refused",
        )

    refused = Placement.objects.get(blob=blob, location=eu)
    assert "SHA-256" in refused.last_error
    assert location_engine(eu).stat(content_key(blob.digest)) is None, "nothing left in eu"
