"""Audits and repairs with real parts: pushes through gunicorn, a real Celery worker, region eu's
store a private moto that is restarted empty or restored from an old snapshot (issue 14)."""

import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from replication import selectors
from replication.gc import garbage_collect
from replication.models import Blob, Placement, PlacementState, StorageLocation
from replication.services import location_create, replication_enable
from storage_engines.keys import content_key
from tests import live, servers
from tests.integration.test_georeplication_e2e import PASSWORD, Client

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _broker() -> Iterator[None]:
    servers.require("s3_a")
    live.use_test_broker()
    selectors.cache_clear()
    yield
    selectors.cache_clear()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def s3_location(location_id: str, endpoint: str, bucket: str) -> StorageLocation:
    options = {
        "s3_bucket": bucket,
        "endpoint_url": endpoint,
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
        "addressing_style": "path",
        "connect_timeout": 2,
    }
    return location_create(
        location_id=location_id, kind="s3", options=options, replicate_by_default=True
    )


def two_regions(eu_endpoint: str) -> tuple[StorageLocation, StorageLocation, str]:
    """us_s3 on the shared moto, eu_s3 on ``eu_endpoint``; return both and eu's bucket."""
    eu_bucket = servers.new_s3_bucket(eu_endpoint)
    us = s3_location("us_s3", servers.S3_A, servers.new_s3_bucket(servers.S3_A))
    eu = s3_location("eu_s3", eu_endpoint, eu_bucket)
    replication_enable(enabled=True)
    get_user_model().objects.create_user(username="geo", password=PASSWORD)
    return us, eu, eu_bucket


def present_in(location: StorageLocation) -> int:
    return Placement.objects.filter(location=location, state=PlacementState.PRESENT).count()


def wait_present(location: StorageLocation, count: int, timeout: float = 120) -> None:
    live.wait_until(
        lambda: present_in(location) == count,
        timeout,
        message=f"not {count} present copies in {location}: "
        + str(list(Placement.objects.filter(location=location).values("state", "last_error"))),
    )


def keys_in(client: Any, bucket: str) -> dict[str, bytes]:
    """Return every content object of ``bucket``, key (without prefix) to bytes."""
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listed
        if item["Key"].startswith("sha256/")
    }


def audit(location_id: str, *args: str) -> dict[str, Any]:
    out = io.StringIO()
    call_command("auditlocation", location_id, "--json", *args, stdout=out)
    return dict(json.loads(out.getvalue().splitlines()[-1]))


def status_present(location_id: str) -> int:
    out = io.StringIO()
    call_command("replicationstatus", "--json", stdout=out)
    (row,) = [row for row in json.loads(out.getvalue()) if row["location_id"] == location_id]
    return int(row["present"])


def test_a_store_restarted_empty_is_found_lost_repaired_and_never_reported_present_meanwhile() -> (
    None
):
    layers = [os.urandom(1 * MiB + i) for i in range(3)]
    with live.moto_server() as (eu_endpoint, eu_moto):
        _, eu, eu_bucket = two_regions(eu_endpoint)
        with live.gunicorn(preference="us_s3", workers=1) as us_url:
            client = Client(us_url)
            client.login("repository:geo/app:push,pull")
            client.push_image("geo/app", "v1", layers)
        blobs = Blob.objects.count()  # the layers and the config
        assert blobs == 4
        with live.celery_worker(preference="us_s3"):
            wait_present(eu, blobs)
        port = int(eu_endpoint.rsplit(":", 1)[1])

        live.stop(eu_moto)  # region eu's store restarts empty; the operator recreates the bucket
    with live.moto_server(port) as (same_endpoint, _):
        s3_client(same_endpoint).create_bucket(Bucket=eu_bucket)
        assert status_present("eu_s3") == blobs  # the lie the audit is there to end

        started = timezone.now()
        found = audit("eu_s3")
        assert (found["objects_seen"], found["lost"], found["repaired"]) == (0, blobs, blobs)
        assert status_present("eu_s3") == 0
        lost = Placement.objects.filter(location=eu, state=PlacementState.LOST)
        assert lost.count() == blobs
        assert all(p.lost_at is not None and p.lost_reason for p in lost)

        client = s3_client(same_endpoint)
        with live.celery_worker(preference="us_s3"):
            deadline = time.monotonic() + 120
            while (reported := status_present("eu_s3")) < blobs and time.monotonic() < deadline:
                count = len(keys_in(client, eu_bucket))  # listed after the status: only grows
                assert reported <= count, f"{reported} reported present, {count} objects held"
                time.sleep(0.2)
            assert reported == blobs, "the worker did not repair every lost copy in time"

        held = keys_in(client, eu_bucket)
        for blob in Blob.objects.all():
            assert hashlib.sha256(held[content_key(blob.digest)]).hexdigest() == blob.sha256
            placement = Placement.objects.get(blob=blob, location=eu)
            assert placement.verified_at is not None
            assert placement.verified_at > started
        again = audit("eu_s3")
        assert (again["objects_seen"], again["lost"], again["corrupt"]) == (blobs, 0, 0)


def test_a_bucket_restored_from_an_old_snapshot_brings_back_orphans_deleted_after_the_grace() -> (
    None
):
    layer, dropped = os.urandom(1 * MiB), os.urandom(512 * 1024)
    with live.moto_server() as (eu_endpoint, _):
        _, eu, eu_bucket = two_regions(eu_endpoint)
        with (
            live.gunicorn(preference="us_s3", workers=1) as us_url,
            live.celery_worker(preference="us_s3"),
        ):
            client = Client(us_url)
            client.login("repository:geo/app:push,pull")
            client.push_image("geo/app", "v1", [layer])
            dropped_digest = client.push_blob("geo/app", dropped)  # no manifest refers to it
            wait_present(eu, 3)
        eu_client = s3_client(eu_endpoint)
        snapshot = keys_in(eu_client, eu_bucket)
        assert len(snapshot) == 3

        with override_settings(QUAY_GEO_GC_GRACE_SECONDS=0):
            garbage_collect()  # the unreferenced blob: rows first, then its bytes everywhere
        dropped_key = content_key(dropped_digest)
        assert not Blob.objects.filter(digest=dropped_digest).exists()
        assert dropped_key not in keys_in(eu_client, eu_bucket)

        for key, body in snapshot.items():  # the operator restores last week's snapshot
            eu_client.put_object(Bucket=eu_bucket, Key=key, Body=body)

        within = audit("eu_s3")
        assert (within["orphans"], within["orphans_deleted"], within["lost"]) == (1, 0, 0)
        assert dropped_key in keys_in(eu_client, eu_bucket), "deleted within the grace period"

        time.sleep(1.5)
        with override_settings(QUAY_GEO_GC_GRACE_SECONDS=1):
            after = audit("eu_s3")
        assert (after["orphans"], after["orphans_deleted"], after["lost"]) == (1, 1, 0)
        held = keys_in(eu_client, eu_bucket)
        assert set(held) == set(snapshot) - {dropped_key}
        assert present_in(eu) == 2


def test_a_push_of_an_unrecoverable_blob_sends_its_failed_repairs_back_to_work() -> None:
    data = os.urandom(1 * MiB)
    with live.moto_server() as (eu_endpoint, _):
        us, eu, eu_bucket = two_regions(eu_endpoint)
        with (
            live.gunicorn(preference="us_s3", workers=1) as us_url,
            live.celery_worker(preference="us_s3"),
        ):
            client = Client(us_url)
            client.login("repository:geo/app:push,pull")
            digest = client.push_blob("geo/app", data)
            wait_present(eu, 1)
            blob = Blob.objects.get(digest=digest)
            key = content_key(digest)
            us_bucket = selectors.location_engine(us).bucket  # type: ignore[attr-defined]
            s3_client(servers.S3_A).delete_object(Bucket=us_bucket, Key=key)
            s3_client(eu_endpoint).delete_object(Bucket=eu_bucket, Key=key)

            assert audit("us_s3", "--no-repair")["lost"] == 1
            assert audit("eu_s3", "--no-repair")["lost"] == 1
            blob.refresh_from_db()
            assert blob.unrecoverable_at is not None
            for location_id in ("us_s3", "eu_s3"):
                assert audit(location_id)["repaired"] == 1  # queued, with no source anywhere
            live.wait_until(
                lambda: (
                    Placement.objects.filter(
                        blob=blob, state=PlacementState.FAILED, lost_at__isnull=False
                    ).count()
                    == 2
                ),
                60,
                message="the repairs did not fail for want of a source: "
                + str(list(Placement.objects.values("state", "last_error"))),
            )
            assert (
                "no location holds a present copy"
                in Placement.objects.get(blob=blob, location=eu).last_error
            )

            assert client.push_blob("geo/app", data) == digest  # someone pushes it again
            wait_present(eu, 1)

        blob.refresh_from_db()
        assert blob.unrecoverable_at is None
        held = keys_in(s3_client(eu_endpoint), eu_bucket)[key]
        assert hashlib.sha256(held).hexdigest() == blob.sha256
        assert present_in(us) == 1
