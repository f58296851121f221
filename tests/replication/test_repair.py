"""A lost or corrupt copy is copied again from a verified one; with none left, it is said."""

import logging
from typing import Any

import pytest

from replication.models import Blob, Placement, PlacementState
from replication.repair import Damage, placements_damage
from replication.selectors import location_engine
from storage_engines.keys import content_key

pytestmark = pytest.mark.django_db


def _placement(blob: Blob, location: Any) -> Placement:
    return Placement.objects.get(blob=blob, location=location)


def test_a_lost_copy_is_repaired_from_a_verified_copy_and_verified_again(
    regions: Any, committed_blob: Any, django_capture_on_commit_callbacks: Any
) -> None:
    us, eu = regions
    blob, data = committed_blob(us)
    eu_engine = location_engine(eu)
    eu_engine.delete(content_key(blob.digest))
    before = _placement(blob, eu).verified_at
    assert before is not None

    with django_capture_on_commit_callbacks(execute=True):
        result = placements_damage(
            found=[Damage(_placement(blob, eu).pk, blob.digest, PlacementState.LOST, "test")]
        )

    repaired = _placement(blob, eu)
    assert result.repairs == [repaired.pk]
    assert repaired.state == PlacementState.PRESENT
    assert repaired.verified_at is not None
    assert repaired.verified_at > before
    assert repaired.lost_reason == "test"  # kept as history
    assert eu_engine.objects[content_key(blob.digest)] == data  # type: ignore[attr-defined]


def test_a_repair_whose_source_gives_wrong_bytes_marks_that_source_corrupt_and_says_unrecoverable(
    regions: Any,
    committed_blob: Any,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a blob whose eu copy is lost and whose us copy (the only source) has rotted
    us, eu = regions
    blob, data = committed_blob(us)
    location_engine(us).objects[content_key(blob.digest)] = b"x" + data[1:]  # type: ignore[attr-defined]

    # When the eu copy's repair runs
    with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
        placements_damage(
            found=[Damage(_placement(blob, eu).pk, blob.digest, PlacementState.LOST, "test")]
        )

    # Then the source is found corrupt, nothing is present, and the blob is unrecoverable
    assert _placement(blob, us).state == PlacementState.CORRUPT
    assert _placement(blob, eu).state != PlacementState.PRESENT
    assert Blob.objects.get(pk=blob.pk).unrecoverable_at is not None
    assert any("unrecoverable" in r.getMessage() for r in caplog.records)


def test_marking_a_copy_twice_changes_it_once(regions: Any, committed_blob: Any) -> None:
    us, eu = regions
    blob, _ = committed_blob(us)
    damage = Damage(_placement(blob, eu).pk, blob.digest, PlacementState.LOST, "first")

    first = placements_damage(found=[damage], repair=False)
    second = placements_damage(
        found=[Damage(damage.placement_id, blob.digest, PlacementState.CORRUPT, "second")],
        repair=False,
    )

    assert first.marked == [damage.placement_id]
    assert second.marked == []
    assert _placement(blob, eu).lost_reason == "first"
