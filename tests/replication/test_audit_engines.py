"""The audit on every engine kind that replicates, against the real servers: objects deleted out
of band, truncated, and left unreferenced are found, reported and repaired (issue 14).

The S3 case, with its path prefix, is ``test_audit_scrub.test_on_s3_...``; local disk cannot be
replicated to (replication refuses it) and the in-memory engine is the unit tests' own.
"""

import io
import os
from pathlib import Path
from typing import Any

import pytest

from replication.inventory import location_audit
from replication.models import Placement, PlacementState
from replication.selectors import location_engine
from replication.services import location_create
from storage_engines.keys import content_key
from tests.storage_engines.conftest import FACTORIES

pytestmark = [pytest.mark.django_db, pytest.mark.servers]


@pytest.mark.parametrize("kind", ["radosgw", "gcs", "swift"])
def test_the_audit_finds_deleted_truncated_and_orphaned_objects_and_repairs_them(
    kind: str,
    regions: Any,
    committed_blob: Any,
    django_capture_on_commit_callbacks: Any,
    tmp_path: Path,
) -> None:
    us, _ = regions
    options = FACTORIES[kind](tmp_path).options
    far = location_create(
        location_id=f"far_{kind}", kind=kind, options=options, replicate_by_default=True
    )
    blobs = [committed_blob(us, size=3000 + i) for i in range(3)]
    assert Placement.objects.filter(location=far, state=PlacementState.PRESENT).count() == 3
    engine = location_engine(far)
    (lost, _), (truncated, data), _ = blobs
    engine.delete(content_key(lost.digest))
    engine.write_small(content_key(truncated.digest), io.BytesIO(data[:7]), 7)
    orphan = content_key("sha256:" + os.urandom(32).hex())
    engine.write_small(orphan, io.BytesIO(b"x"), 1)

    with django_capture_on_commit_callbacks(execute=True):
        run = location_audit(location=far)

    assert (run.objects_seen, run.lost, run.corrupt, run.repaired) == (3, 1, 1, 2)
    assert (run.orphans, run.orphans_deleted) == (1, 0)  # younger than the grace period
    assert engine.stat(orphan) is not None
    for blob, body in blobs:
        placement = Placement.objects.get(blob=blob, location=far)
        assert placement.state == PlacementState.PRESENT
        assert b"".join(engine.read(content_key(blob.digest))) == body
    assert Placement.objects.get(blob=lost, location=far).lost_reason.startswith(
        f"not in the listing of far_{kind}"
    )
