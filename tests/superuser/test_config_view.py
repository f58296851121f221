"""Configuration tab, "Registry Storage": every rule of a save, through Django's test client."""

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from replication import config as config_service
from replication.config import probes
from replication.models import (
    AuditEntry,
    BackfillRun,
    Blob,
    Placement,
    PlacementState,
    ReplicationSettings,
    StorageLocation,
)
from replication.services import config_version_bump, location_create
from replication.targets import LOCAL_REFUSED
from storage_engines.registry import CONFIGURABLE_KINDS, engine_class
from tests import servers
from tests.superuser.conftest import db_state

pytestmark = pytest.mark.django_db

UNREACHABLE = "http://127.0.0.1:9"


def s3_options(bucket: str, endpoint: str = servers.S3_A, **extra: Any) -> dict[str, Any]:
    return {
        "s3_bucket": bucket,
        "endpoint_url": endpoint,
        "s3_access_key": servers.S3_ACCESS_KEY,
        "s3_secret_key": servers.S3_SECRET_KEY,
        "addressing_style": "path",
        **extra,
    }


def present_blob(location: StorageLocation, seed: bytes = b"x") -> Blob:
    sha = hashlib.sha256(seed).hexdigest()
    blob = Blob.objects.create(digest=f"sha256:{sha}", size=len(seed), sha256=sha)
    Placement.objects.create(blob=blob, location=location, state=PlacementState.PRESENT)
    return blob


def text(response: Any) -> str:
    return response.content.decode()


# --- rendering -------------------------------------------------------------------------------


def test_every_card_renders_every_option_of_every_engine(storage_page: Any, tmp_path: Path) -> None:
    location_create(location_id="disk", kind="local", options={"storage_path": str(tmp_path)})

    page = storage_page()

    for kind in CONFIGURABLE_KINDS:
        for name in engine_class(kind).options_form.base_fields:
            assert f'name="form-0-{kind}-{name}"' in text(page.response), (kind, name)
    assert page.data["form-0-location_id"] == "disk"
    assert page.data["form-0-kind"] == "local"
    assert page.data["form-0-local-storage_path"] == str(tmp_path)
    for label in (
        "Amazon S3",
        "Ceph RADOS Gateway",
        "Google Cloud Storage",
        "OpenStack Swift",
        "Local Storage",
    ):
        assert f">{label}</option>" in text(page.response)
    assert "Enable Storage Replication" in text(page.response)
    assert "Replicate to storage engine by default" in text(page.response)


def test_stored_secrets_are_never_rendered_and_show_a_hint(storage_page: Any) -> None:
    location_create(
        location_id="us_s3",
        kind="s3",
        options=s3_options("b-1", s3_secret_key="TOP-SECRET-VALUE"),
    )

    page = storage_page()

    assert "TOP-SECRET-VALUE" not in text(page.response)
    assert page.data["form-0-s3-s3_secret_key"] == ""
    assert "stored — leave blank to keep" in text(page.response)


# --- saving ----------------------------------------------------------------------------------


@pytest.mark.servers
def test_valid_save_stores_bumps_version_and_audits_with_secrets_masked(
    storage_page: Any, admin_user: Any
) -> None:
    servers.require("moto")
    bucket = servers.new_s3_bucket()
    version = ReplicationSettings.load().config_version
    page = storage_page().replication(True)
    page.add("us_s3", "s3", default=True, **s3_options(bucket, s3_secret_key="SEKRIT-123"))

    response = page.save()

    assert response.status_code == 302
    location = StorageLocation.objects.get(location_id="us_s3")
    assert location.engine_options()["s3_secret_key"] == "SEKRIT-123"
    assert "SEKRIT-123" not in json.dumps(location.secrets)
    settings = ReplicationSettings.load()
    assert settings.storage_replication_enabled
    assert settings.config_version > version
    assert settings.updated_by == admin_user
    entry = AuditEntry.objects.get(action="storage_config_save")
    assert entry.actor == admin_user.username
    assert "SEKRIT-123" not in json.dumps(entry.changes)
    assert entry.changes["added"]["us_s3"]["options"]["s3_secret_key"] == config_service.SECRET_MASK
    assert entry.changes["replication_enabled"] == [False, True]
    page = storage_page()
    assert "Storage configuration saved" in text(page.response)
    assert "Sync existing images now" in text(page.response)


@pytest.mark.servers
def test_blank_secret_keeps_the_stored_one_and_clear_removes_it(storage_page: Any) -> None:
    servers.require("moto")
    bucket = servers.new_s3_bucket()
    location_create(location_id="us_s3", kind="s3", options=s3_options(bucket))
    page = storage_page()
    page.set(0, s3_region="eu-west-1")

    assert page.save().status_code == 302

    location = StorageLocation.objects.get(location_id="us_s3")
    assert location.engine_options()["s3_secret_key"] == servers.S3_SECRET_KEY
    assert location.options["s3_region"] == "eu-west-1"

    page = storage_page()
    page.data["form-0-s3-aws_session_token"] = "tok"
    assert page.save().status_code == 302
    assert "aws_session_token" in StorageLocation.objects.get().secrets
    page = storage_page()
    page.data["form-0-s3-aws_session_token__clear"] = "on"
    assert page.save().status_code == 302
    assert "aws_session_token" not in StorageLocation.objects.get().secrets


def test_required_fields_and_types_are_shown_per_card_and_nothing_is_saved(
    storage_page: Any, tmp_path: Path
) -> None:
    location_create(location_id="disk", kind="local", options={"storage_path": str(tmp_path)})
    before = db_state()
    page = storage_page()
    page.add("new_s3", "s3", s3_bucket="", part_size_mb="many", endpoint_url=UNREACHABLE)
    page.add("new_swift", "swift", auth_url="not a url", swift_user="u", swift_container="c")

    response = page.save()

    assert response.status_code == 200
    assert db_state() == before
    html = text(response)
    assert "Nothing was saved" in html
    assert html.count("This field is required.") >= 2  # s3_bucket, swift_password
    assert "Enter a whole number." in html
    assert "Give an http:// or https:// URL." in html
    form = response.context["cards"]
    s3_card = next(card for card in form if card["location_id"].value() == "new_s3")
    assert "s3_bucket" in s3_card.engine_group("s3").form.errors
    assert "part_size_mb" in s3_card.engine_group("s3").form.errors
    swift_card = next(card for card in form if card["location_id"].value() == "new_swift")
    assert "swift_password" in swift_card.engine_group("swift").form.errors


def test_location_id_pattern_and_uniqueness(storage_page: Any, tmp_path: Path) -> None:
    location_create(location_id="disk", kind="local", options={"storage_path": str(tmp_path)})
    before = db_state()
    page = storage_page()
    page.add("bad id!", "local", storage_path=str(tmp_path))
    page.add("disk", "local", storage_path=str(tmp_path))

    response = page.save()

    assert db_state() == before
    cards = response.context["cards"]
    assert "letters, digits" in " ".join(cards[1].errors["location_id"])
    assert cards[2].errors["location_id"] == ["Location ID must be unique."]


def test_local_storage_is_refused_while_replication_is_enabled(
    storage_page: Any, tmp_path: Path
) -> None:
    before = db_state()
    page = storage_page().replication(True)
    page.add("disk", "local", default=True, storage_path=str(tmp_path))

    response = page.save()

    assert db_state() == before
    assert response.context["cards"][0].errors["kind"] == [LOCAL_REFUSED]
    assert LOCAL_REFUSED in text(response)


def test_replication_without_default_location_saves_with_a_warning(storage_page: Any) -> None:
    location_create(location_id="mem", kind="memory", options={})
    page = storage_page().replication(True)

    response = page.save()

    assert response.status_code == 302
    assert ReplicationSettings.load().storage_replication_enabled
    assert "nothing will replicate" in text(storage_page().response)


def test_invalid_form_keeps_what_was_typed_except_secrets(storage_page: Any) -> None:
    page = storage_page()
    page.add(
        "us_s3",
        "s3",
        s3_bucket="typed-bucket",
        endpoint_url=UNREACHABLE,
        s3_access_key="typed-access",
        s3_secret_key="typed-secret-value",
        connect_timeout=1,
    )
    page.data["form-0-s3-part_size_mb"] = "1"  # below the minimum

    response = page.save()

    html = text(response)
    assert 'value="typed-bucket"' in html
    assert 'value="typed-access"' in html
    assert "typed-secret-value" not in html
    assert not StorageLocation.objects.exists()


# --- live probes ---------------------------------------------------------------------------------


@pytest.mark.servers
def test_probe_failures_are_told_apart_on_their_cards(storage_page: Any, tmp_path: Path) -> None:
    servers.require("moto")
    servers.require("swift")
    container = servers.new_swift_container()
    before = db_state()
    page = storage_page()
    page.add("unreachable", "s3", **s3_options("some-bucket", UNREACHABLE, connect_timeout=1))
    page.add("no_bucket", "s3", **s3_options("missing-" + servers.unique_name()))
    page.add(
        "wrong_key",
        "swift",
        auth_url=servers.SWIFT_AUTH,
        auth_version="1",
        swift_user=servers.SWIFT_USER,
        swift_password="wrong-key",
        swift_container=container,
    )
    page.add("no_dir", "local", storage_path=str(tmp_path / "missing"))

    response = page.save()

    assert db_state() == before
    errors = {
        card["location_id"].value(): card.non_field_errors() for card in response.context["cards"]
    }
    assert errors["unreachable"][0].startswith("Cannot connect within 5 s")
    assert errors["no_bucket"][0].startswith("Bucket not found")
    assert errors["wrong_key"][0].startswith("Access denied")
    assert errors["no_dir"][0].startswith("Directory not found")
    assert "wrong-key" not in text(response)


def test_engines_are_probed_in_parallel(
    monkeypatch: pytest.MonkeyPatch, storage_page: Any, tmp_path: Path
) -> None:
    # Each probe waits until the other one has started: run one after the other they would
    # both time out at the barrier.
    barrier = threading.Barrier(2, timeout=4)
    threads: set[str] = set()

    def probe(
        *, kind: str, location_id: str, options: dict[str, Any], timeout: float
    ) -> str | None:
        threads.add(threading.current_thread().name)
        barrier.wait()
        return None

    monkeypatch.setattr(probes, "probe_engine", probe)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    page = storage_page()
    page.add("a", "local", storage_path=str(tmp_path / "a"))
    page.add("b", "local", storage_path=str(tmp_path / "b"))

    assert page.save().status_code == 302
    assert len(threads) == 2


# --- removing, renaming, ordering ---------------------------------------------------------


def test_removing_a_location_with_the_only_copy_of_blobs_is_refused_with_the_count(
    storage_page: Any,
) -> None:
    only = location_create(location_id="only", kind="memory", options={})
    location_create(location_id="other", kind="memory", options={})
    present_blob(only, b"one")
    present_blob(only, b"two")
    before = db_state()
    page = storage_page()
    page.card(page.index_of("only"), DELETE=True)

    response = page.save()

    assert db_state() == before
    card = next(c for c in response.context["cards"] if c["location_id"].value() == "only")
    assert "holds the only copy of 2 blob(s)" in card.non_field_errors()[0]


def test_removing_a_location_whose_blobs_exist_elsewhere(storage_page: Any) -> None:
    gone = location_create(location_id="gone", kind="memory", options={})
    kept = location_create(location_id="kept", kind="memory", options={})
    blob = present_blob(gone, b"both")
    Placement.objects.create(blob=blob, location=kept, state=PlacementState.PRESENT)
    page = storage_page()
    page.card(page.index_of("gone"), DELETE=True)

    assert page.save().status_code == 302

    assert list(StorageLocation.objects.values_list("location_id", flat=True)) == ["kept"]
    assert AuditEntry.objects.get(actor="admin").changes["removed"] == ["gone"]


def test_rename_keeps_the_row_and_its_placements(storage_page: Any) -> None:
    location = location_create(location_id="old_name", kind="memory", options={})
    blob = present_blob(location)
    page = storage_page()
    page.card(0, location_id="new_name")

    assert page.save().status_code == 302

    renamed = StorageLocation.objects.get(location_id="new_name")
    assert renamed.pk == location.pk
    assert Placement.objects.get(blob=blob).location_id == location.pk
    assert AuditEntry.objects.get(actor="admin").changes["renamed"] == {"old_name": "new_name"}


def test_two_locations_can_swap_ids(storage_page: Any) -> None:
    a = location_create(location_id="a", kind="memory", options={})
    b = location_create(location_id="b", kind="memory", options={})
    page = storage_page()
    page.card(0, location_id="b")
    page.card(1, location_id="a")

    assert page.save().status_code == 302

    assert StorageLocation.objects.get(location_id="b").pk == a.pk
    assert StorageLocation.objects.get(location_id="a").pk == b.pk


def test_order_field_sets_the_preference_order(storage_page: Any) -> None:
    location_create(location_id="first", kind="memory", options={})
    location_create(location_id="second", kind="memory", options={})
    page = storage_page()
    page.card(0, ORDER=2)
    page.card(1, ORDER=1)

    assert page.save().status_code == 302

    assert list(StorageLocation.objects.values_list("location_id", flat=True)) == [
        "second",
        "first",
    ]
    assert AuditEntry.objects.get(actor="admin").changes["order"] == ["second", "first"]


def test_add_storage_engine_without_javascript_adds_an_empty_card(storage_page: Any) -> None:
    location_create(location_id="mem", kind="memory", options={})
    page = storage_page()
    data = dict(page.data, add_card="1")

    response = page.client.post("/superuser/", data)

    assert response.status_code == 200
    assert len(response.context["cards"]) == 2
    assert StorageLocation.objects.count() == 1


def test_a_save_based_on_an_old_version_is_refused(storage_page: Any) -> None:
    location_create(location_id="mem", kind="memory", options={})
    page = storage_page()
    config_version_bump()  # someone else saved meanwhile
    before = db_state()
    page.card(0, location_id="renamed")

    response = page.save()

    assert db_state() == before
    assert "changed since this page was loaded" in text(response)


# --- targets and backfill -----------------------------------------------------------------


def test_default_change_bumps_targets_version_and_offers_a_sync(
    storage_page: Any, django_capture_on_commit_callbacks: Any
) -> None:
    source = location_create(location_id="src", kind="memory", options={})
    location_create(location_id="dst", kind="memory", options={})
    present_blob(source, b"existing")
    targets = ReplicationSettings.load().targets_version
    page = storage_page().replication(True)
    page.card(page.index_of("dst"), replicate_by_default=True)

    assert page.save().status_code == 302

    assert ReplicationSettings.load().targets_version > targets
    offer = storage_page()
    assert 'name="location_id" value="dst"' in text(offer.response)
    assert "Sync existing images now" in text(offer.response)
    with django_capture_on_commit_callbacks(execute=True):
        response = offer.client.post("/superuser/storage/sync/", {"location_id": "dst"})
    assert response.status_code == 302
    assert response["Location"] == "/superuser/status/"
    run = BackfillRun.objects.get()
    assert run.location is not None
    assert run.location.location_id == "dst"


def test_unchanged_defaults_keep_the_targets_version(storage_page: Any) -> None:
    location_create(location_id="mem", kind="memory", options={})
    targets = ReplicationSettings.load().targets_version
    page = storage_page()
    page.card(0, serve_mode="proxy")

    assert page.save().status_code == 302

    assert ReplicationSettings.load().targets_version == targets
    assert StorageLocation.objects.get().serve_mode == "proxy"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("form-TOTAL_FORMS", "x"),
        ("form-TOTAL_FORMS", "²"),
        ("form-TOTAL_FORMS", str(10**30)),
        ("form-0-location_pk", "²"),
        ("form-0-location_pk", str(10**30)),
        ("config_version", str(10**30)),
    ],
)
@pytest.mark.parametrize("add_card", [False, True], ids=["save", "add-card"])
def test_out_of_range_and_non_ascii_numbers_are_form_errors_not_500s(
    storage_page: Any, field: str, value: str, add_card: bool
) -> None:
    location_create(location_id="mem", kind="memory", options={})
    page = storage_page()
    before = db_state()
    data = dict(page.data, **{field: value})
    if add_card:
        data["add_card"] = "1"

    response = page.client.post("/superuser/", data)

    assert response.status_code == 200
    assert db_state() == before
    assert len(response.context["cards"]) <= 2
    if not add_card:  # adding a card only re-renders what was typed
        assert 'role="alert"' in text(response) or 'class="alert error"' in text(response)
        assert 'role="alert"' not in text(page.client.get("/superuser/"))
