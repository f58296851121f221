"""Coverage and counts count only copies verified present; lost and corrupt ones are shown."""

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from replication.models import AuditKind, AuditRun, Blob, Placement, PlacementState
from replication.status import replication_status

pytestmark = pytest.mark.django_db


def _damage(blob: Blob, location: Any, state: str) -> None:
    Placement.objects.filter(blob=blob, location=location).update(
        state=state, lost_reason="test", lost_at=timezone.now()
    )


def test_lost_and_corrupt_copies_lower_coverage_and_are_counted(
    regions: Any, committed_blob: Any
) -> None:
    us, eu = regions
    lost, _ = committed_blob(us)
    corrupt, _ = committed_blob(us)
    good, _ = committed_blob(us)
    _damage(lost, eu, PlacementState.LOST)
    _damage(corrupt, eu, PlacementState.CORRUPT)

    by_id = {row.location_id: row for row in replication_status()}

    assert by_id["eu_mem"].present == 1
    assert (by_id["eu_mem"].lost, by_id["eu_mem"].corrupt) == (1, 1)
    assert by_id["eu_mem"].coverage == pytest.approx(1 / 3)
    assert by_id["us_mem"].coverage == 1.0
    assert by_id["eu_mem"].bytes_present == good.size


def test_replicationstatus_and_metrics_show_damage_and_the_last_audit(
    client: Client, regions: Any, committed_blob: Any
) -> None:
    us, eu = regions
    blob, _ = committed_blob(us)
    _damage(blob, eu, PlacementState.LOST)
    Blob.objects.filter(pk=blob.pk).update(unrecoverable_at=timezone.now())
    AuditRun.objects.create(
        location=eu, kind=AuditKind.AUDIT, finished_at=timezone.now(), objects_seen=7, lost=1
    )

    out = io.StringIO()
    call_command("replicationstatus", stdout=out)
    as_json = io.StringIO()
    call_command("replicationstatus", "--json", stdout=as_json)
    text = client.get("/metrics").content.decode()

    assert "eu_mem               last audit: " in out.getvalue()
    assert "7 objects" in out.getvalue()
    assert "1 lost" in out.getvalue()
    assert "UNRECOVERABLE blobs (no good copy left): 1" in out.getvalue()
    eu_row = next(row for row in json.loads(as_json.getvalue()) if row["location_id"] == "eu_mem")
    assert (eu_row["present"], eu_row["lost"], eu_row["coverage"]) == (0, 1, 0.0)
    assert eu_row["last_audit"]["objects_seen"] == 7
    assert 'quay_geo_placements{location="eu_mem",state="lost"} 1' in text
    assert 'quay_geo_coverage_ratio{location="eu_mem"} 0' in text
    assert "quay_geo_unrecoverable_blobs 1" in text
    assert 'quay_geo_last_audit_objects{location="eu_mem",what="objects_seen"} 7' in text


def test_metrics_and_replicationstatus_show_scrub_progress_with_every_digit(
    client: Client, regions: Any, committed_blob: Any
) -> None:
    us, _ = regions
    blob, _ = committed_blob(us)
    oldest = datetime(2026, 11, 30, 12, 34, 56, 250000, tzinfo=UTC)
    Placement.objects.filter(blob=blob, location=us).update(verified_at=oldest)
    AuditRun.objects.create(
        location=us,
        kind=AuditKind.SCRUB,
        finished_at=timezone.now(),
        objects_seen=3,
        bytes_read=1_234_567_891,
        verified=3,
    )
    AuditRun.objects.create(
        location=us, kind=AuditKind.AUDIT, finished_at=timezone.now(), orphans=2, orphans_deleted=1
    )

    text = client.get("/metrics").content.decode()
    out = io.StringIO()
    call_command("replicationstatus", stdout=out)

    assert 'quay_geo_oldest_verification_timestamp_seconds{location="us_mem"} 1796042096.25' in text
    assert 'quay_geo_last_scrub_objects{location="us_mem",what="bytes_read"} 1234567891' in text
    assert 'quay_geo_last_scrub_objects{location="us_mem",what="verified"} 3' in text
    assert 'quay_geo_last_audit_objects{location="us_mem",what="orphans_deleted"} 1' in text
    assert "us_mem               oldest verification: 2026-11-30 12:34:56 UTC" in out.getvalue()
