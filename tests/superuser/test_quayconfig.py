"""importquayconfig and exportquayconfig: Quay's config.yaml keys in and out, same validation."""

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from replication.models import AuditEntry, ReplicationSettings, StorageLocation
from replication.services import location_create
from replication.targets import LOCAL_REFUSED
from tests import servers
from tests.superuser.conftest import db_state

pytestmark = pytest.mark.django_db

QUAY_CONFIG = """
SERVER_HOSTNAME: quay.example.com
FEATURE_STORAGE_REPLICATION: true
FEATURE_PROXY_STORAGE: false
DISTRIBUTED_STORAGE_CONFIG:
  us_s3:
    - S3Storage
    - s3_bucket: quay-us
      storage_path: /datastorage/registry
      s3_access_key: AKIAUS
      s3_secret_key: us-secret
      host: s3.us.example.com
      port: 8443
      maximum_chunk_size_gb: 4
  eu_rgw:
    - RadosGWStorage
    - hostname: rgw.eu.example.com
      port: 7480
      is_secure: false
      access_key: EUKEY
      secret_key: eu-secret
      bucket_name: quay-eu
      storage_path: /registry
      maximum_chunk_size_mb: 100
      server_side_assembly: true
  ap_gcs:
    - GoogleCloudStorage
    - access_key: GOOGHMAC
      secret_key: gcs-secret
      bucket_name: quay-ap
      storage_path: /registry
      boto_timeout: 30
  sa_swift:
    - SwiftStorage
    - auth_url: https://keystone.sa.example.com/v3
      auth_version: 3
      swift_user: quay
      swift_password: swift-secret
      swift_container: quay-sa
      storage_path: /registry
      os_options:
        user_domain_name: Default
        project_name: quay
        project_domain_name: Default
      simple_path_concat: false
DISTRIBUTED_STORAGE_PREFERENCE:
  - eu_rgw
  - us_s3
DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS:
  - us_s3
  - eu_rgw
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_import_maps_every_driver_and_parameter(tmp_path: Path) -> None:
    output = run("importquayconfig", write(tmp_path, QUAY_CONFIG), "--no-probe")

    locations = {loc.location_id: loc for loc in StorageLocation.objects.all()}
    assert [loc.location_id for loc in StorageLocation.objects.order_by("rank")] == [
        "eu_rgw",
        "us_s3",
        "ap_gcs",
        "sa_swift",
    ]
    assert ReplicationSettings.load().storage_replication_enabled
    assert {loc for loc, row in locations.items() if row.replicate_by_default} == {
        "us_s3",
        "eu_rgw",
    }
    us = locations["us_s3"].engine_options()
    assert us["endpoint_url"] == "https://s3.us.example.com:8443"
    assert us["storage_path"] == "datastorage/registry"
    assert us["s3_secret_key"] == "us-secret"
    assert us["maximum_chunk_size_gb"] == 4
    eu = locations["eu_rgw"].engine_options()
    assert (eu["hostname"], eu["port"], eu["is_secure"], eu["maximum_chunk_size_gb"]) == (
        "rgw.eu.example.com",
        7480,
        False,
        1,
    )
    ap = locations["ap_gcs"].engine_options()
    assert (ap["access_key"], ap["secret_key"], ap["connect_timeout"]) == (
        "GOOGHMAC",
        "gcs-secret",
        30,
    )
    sa = locations["sa_swift"].engine_options()
    assert sa["auth_version"] == "3"
    assert sa["os_options"]["project_name"] == "quay"
    assert "server_side_assembly ignored" in output
    assert "simple_path_concat ignored" in output
    assert "SERVER_HOSTNAME" in output
    assert AuditEntry.objects.get().actor.startswith("importquayconfig")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            ("S3Storage", "AzureStorage"),
            "DISTRIBUTED_STORAGE_CONFIG.us_s3: storage driver 'AzureStorage'",
        ),
        (
            ("      boto_timeout: 30", "      cdn_domain: x"),
            "DISTRIBUTED_STORAGE_CONFIG.ap_gcs.cdn_domain: GoogleCloudStorage has no parameter",
        ),
        (
            ("  - eu_rgw\n  - us_s3", "  - eu_rgw\n  - nowhere"),
            "DISTRIBUTED_STORAGE_PREFERENCE: 'nowhere' is not defined",
        ),
        (
            ("  - us_s3\n  - eu_rgw", "  - us_s3\n  - gone"),
            "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: 'gone' is not defined",
        ),
    ],
)
def test_import_refuses_what_it_cannot_map_naming_the_key(
    tmp_path: Path, change: Any, key: str
) -> None:
    before = db_state()

    with pytest.raises(CommandError) as refused:
        run("importquayconfig", write(tmp_path, QUAY_CONFIG.replace(*change)), "--no-probe")

    assert key in str(refused.value)
    assert db_state() == before


def test_import_applies_the_panels_validation(tmp_path: Path) -> None:
    config = """
FEATURE_STORAGE_REPLICATION: true
DISTRIBUTED_STORAGE_CONFIG:
  local_us:
    - LocalStorage
    - storage_path: /datastorage/registry
  s3_eu:
    - S3Storage
    - storage_path: /x
"""
    before = db_state()

    with pytest.raises(CommandError) as refused:
        run("importquayconfig", write(tmp_path, config), "--no-probe")

    message = str(refused.value)
    assert f"DISTRIBUTED_STORAGE_CONFIG.local_us.kind: {LOCAL_REFUSED}" in message
    assert "DISTRIBUTED_STORAGE_CONFIG.s3_eu.s3_bucket: This field is required." in message
    assert db_state() == before


@pytest.mark.servers
def test_import_probes_every_engine_unless_told_not_to(tmp_path: Path) -> None:
    servers.require("moto")
    bucket = servers.new_s3_bucket()
    keys = "s3_access_key: testing, s3_secret_key: testing"
    good = f"""
DISTRIBUTED_STORAGE_CONFIG:
  good:
    - S3Storage
    - {{s3_bucket: {bucket}, endpoint_url: "{servers.S3_A}", {keys}}}
  bad:
    - S3Storage
    - {{s3_bucket: nope-{bucket}, endpoint_url: "{servers.S3_A}", {keys}}}
"""
    with pytest.raises(CommandError, match=r"DISTRIBUTED_STORAGE_CONFIG\.bad: Bucket not found"):
        run("importquayconfig", write(tmp_path, good))
    assert not StorageLocation.objects.exists()

    run("importquayconfig", write(tmp_path, good.replace("nope-", "")), "--dry-run")
    assert not StorageLocation.objects.exists()


def test_export_writes_the_same_keys_without_secrets(tmp_path: Path) -> None:
    run("importquayconfig", write(tmp_path, QUAY_CONFIG), "--no-probe")

    output = run("exportquayconfig")

    assert "us-secret" not in output
    assert "swift-secret" not in output
    data = yaml.safe_load(output)
    assert data["FEATURE_STORAGE_REPLICATION"] is True
    assert data["DISTRIBUTED_STORAGE_PREFERENCE"] == ["eu_rgw", "us_s3", "ap_gcs", "sa_swift"]
    assert data["DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS"] == ["eu_rgw", "us_s3"]
    driver, params = data["DISTRIBUTED_STORAGE_CONFIG"]["eu_rgw"]
    assert driver == "RadosGWStorage"
    assert params["maximum_chunk_size_mb"] == 1024
    assert "secret_key" not in params
    assert data["DISTRIBUTED_STORAGE_CONFIG"]["ap_gcs"][1]["boto_timeout"] == 30
    assert data["DISTRIBUTED_STORAGE_CONFIG"]["sa_swift"][1]["auth_version"] == 3


def test_export_with_secrets_round_trips_through_import(tmp_path: Path) -> None:
    run("importquayconfig", write(tmp_path, QUAY_CONFIG), "--no-probe")
    before = {loc.location_id: loc.engine_options() for loc in StorageLocation.objects.all()}

    exported = run("exportquayconfig", "--include-secrets")
    assert "us-secret" in exported
    StorageLocation.objects.all().delete()
    run("importquayconfig", write(tmp_path, exported), "--no-probe")

    after = {loc.location_id: loc.engine_options() for loc in StorageLocation.objects.all()}
    assert after == before


def test_import_without_secrets_keeps_the_stored_ones(tmp_path: Path) -> None:
    run("importquayconfig", write(tmp_path, QUAY_CONFIG), "--no-probe")
    exported = run("exportquayconfig")

    run("importquayconfig", write(tmp_path, exported), "--no-probe")

    assert (
        StorageLocation.objects.get(location_id="us_s3").engine_options()["s3_secret_key"]
        == "us-secret"
    )


def test_locations_missing_from_the_file_are_removed(tmp_path: Path) -> None:
    location_create(location_id="old", kind="memory", options={})

    run("importquayconfig", write(tmp_path, QUAY_CONFIG), "--no-probe")

    assert not StorageLocation.objects.filter(location_id="old").exists()


def test_proxy_storage_maps_to_serve_mode(tmp_path: Path) -> None:
    run(
        "importquayconfig",
        write(
            tmp_path,
            QUAY_CONFIG.replace("FEATURE_PROXY_STORAGE: false", "FEATURE_PROXY_STORAGE: true"),
        ),
        "--no-probe",
    )

    assert set(StorageLocation.objects.values_list("serve_mode", flat=True)) == {"proxy"}
    assert yaml.safe_load(run("exportquayconfig"))["FEATURE_PROXY_STORAGE"] is True


def test_export_refuses_the_test_only_memory_engine() -> None:
    location_create(location_id="mem", kind="memory", options={})

    with pytest.raises(CommandError, match="mem: Quay has no storage driver"):
        run("exportquayconfig")
