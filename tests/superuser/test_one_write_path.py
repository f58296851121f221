"""One validated write path for locations: probe, then store and bump, or nothing at all."""

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from replication.config import service
from replication.models import AuditEntry, ReplicationSettings, StorageLocation
from replication.services import location_create
from tests.superuser.conftest import db_state

pytestmark = pytest.mark.django_db

UNREACHABLE = "http://127.0.0.1:9"


def _s3_options(endpoint: str) -> list[str]:
    options = {
        "s3_bucket": "far-bucket",
        "endpoint_url": endpoint,
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
        "addressing_style": "path",
        "connect_timeout": "1",
    }
    return [arg for name, value in options.items() for arg in ("--option", f"{name}={value}")]


def test_addlocation_whose_probe_fails_stores_nothing_and_bumps_no_version() -> None:
    location_create(location_id="near", kind="memory", options={})
    before = db_state()

    with pytest.raises(CommandError, match=r"far: Cannot connect within 5 s"):
        call_command("addlocation", "far", "--kind", "s3", *_s3_options(UNREACHABLE))

    assert db_state() == before


def test_addlocation_stores_probes_bumps_once_and_audits() -> None:
    version = ReplicationSettings.load().config_version
    out = io.StringIO()

    call_command("addlocation", "mem", "--kind", "memory", "--default", stdout=out)

    assert out.getvalue().startswith("added location mem (")
    assert StorageLocation.objects.get(location_id="mem").replicate_by_default
    assert ReplicationSettings.load().config_version == version + 1
    assert AuditEntry.objects.get().actor.startswith("addlocation")


def test_addlocation_of_an_existing_id_is_refused_or_left_with_if_missing() -> None:
    location_create(location_id="mem", kind="memory", options={})
    before = db_state()

    with pytest.raises(CommandError, match="Location mem already exists"):
        call_command("addlocation", "mem", "--kind", "memory")
    call_command("addlocation", "mem", "--kind", "memory", "--if-missing", stdout=io.StringIO())

    assert db_state() == before


def _via_addlocation(client: Client, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="new: Cannot connect within 5 s"):
        call_command(
            "addlocation", "new", "--kind", "local", "--option", f"storage_path={tmp_path}"
        )


def _via_importquayconfig(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "DISTRIBUTED_STORAGE_CONFIG:\n"
        "  old: [LocalStorage, {storage_path: " + str(tmp_path) + "}]\n"
        "  new: [LocalStorage, {storage_path: " + str(tmp_path) + "}]\n"
    )
    with pytest.raises(CommandError, match="new: Cannot connect within 5 s"):
        call_command("importquayconfig", str(path), stdout=io.StringIO())


def _via_api(client: Client, tmp_path: Path) -> None:
    body = client.get("/api/v1/superuser/config/").json()
    body["locations"].append(
        {"location_id": "new", "kind": "local", "options": {"storage_path": str(tmp_path)}}
    )
    response = client.put(
        "/api/v1/superuser/config/", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400


def _via_panel(client: Client, tmp_path: Path) -> None:
    from tests.superuser.conftest import StoragePage

    page = StoragePage(client)
    page.add("new", "local", storage_path=str(tmp_path))
    assert page.save().status_code == 200


@pytest.mark.parametrize(
    "path",
    [_via_addlocation, _via_importquayconfig, _via_api, _via_panel],
    ids=lambda f: f.__name__,
)
def test_every_path_probes_through_the_one_service_and_a_failure_stores_nothing(
    path: Callable[[Client, Path], None],
    admin_client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    location_create(location_id="old", kind="local", options={"storage_path": str(tmp_path)})
    probed: list[str] = []

    def failing(jobs: dict[Any, tuple[str, str, dict[str, Any]]], **_: Any) -> dict[Any, str]:
        probed.extend(location_id for _, location_id, _ in jobs.values())
        return dict.fromkeys(jobs, "Cannot connect within 5 s: refused")

    monkeypatch.setattr(service, "probes_run", failing)
    before = db_state()

    path(admin_client, tmp_path)

    assert "new" in probed
    assert db_state() == before
