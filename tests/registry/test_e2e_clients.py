"""End to end: real clients (skopeo, oras-py, requests) against gunicorn, blobs on moto S3."""

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oras.client
import pytest
import requests
from django.contrib.auth.models import User

from registry import accounts
from registry.models import Visibility
from replication.models import ReplicationSettings, StorageLocation
from replication.services import location_create
from tests import servers
from tests.registry.conftest import PASSWORD
from tests.registry.images import (
    MiB,
    layer_digests,
    layout_descriptor,
    oci_image_build,
    oci_index_build,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]

SKOPEO_CACHES = [
    Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb"),
    Path.home() / ".local/share/containers/cache/blob-info-cache-v1.boltdb",
]


def _location_on_moto(*, serve_mode: str) -> tuple[StorageLocation, str]:
    servers.require("moto")
    bucket = servers.new_s3_bucket(servers.S3_A, prefix="reg")
    location = location_create(
        location_id="s3_e2e",
        kind="s3",
        options={
            "s3_bucket": bucket,
            "endpoint_url": servers.S3_A,
            "s3_region": "us-east-1",
            "s3_access_key": servers.S3_ACCESS_KEY,
            "s3_secret_key": servers.S3_SECRET_KEY,
            "storage_path": "registry",
            "addressing_style": "path",
        },
        serve_mode=serve_mode,
    )
    # The server keeps its configuration per version, and the database is emptied between
    # tests: a version never seen before makes it reload.
    ReplicationSettings.objects.filter(pk=1).update(config_version=time.time_ns() // 1000)
    return location, bucket


@pytest.fixture
def moto_bucket() -> str:
    """A redirecting S3 location on moto, as the only location; returns its bucket."""
    return _location_on_moto(serve_mode="redirect")[1]


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout with a 3-layer image ``v1`` (2, 3 and 4 MiB of random data)."""
    path = tmp_path_factory.mktemp("oci") / "layout"
    oci_image_build(path, "v1", [2 * MiB, 3 * MiB, 4 * MiB])
    return path


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run skopeo with an empty blob-info cache (so that every blob really moves)."""
    for cache in SKOPEO_CACHES:
        cache.unlink(missing_ok=True)
    result = subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {result.stderr}")
    return result


def bucket_keys(bucket: str) -> list[str]:
    client = servers.s3_client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def open_multipart_uploads(bucket: str) -> int:
    return len(servers.s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def token(host: str, scope: str, user: str = "alice", password: str = PASSWORD) -> str:
    response = requests.get(
        f"http://{host}/v2/auth",
        params={"service": host, "scope": scope},
        auth=(user, password),
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["token"])


def test_skopeo_copies_a_multi_layer_image_up_and_back(
    registry_server: str, moto_bucket: str, alice: User, layout: Path, tmp_path: Path
) -> None:
    creds = f"alice:{PASSWORD}"
    target = f"docker://{registry_server}/alice/app:v1"

    skopeo("copy", "--dest-creds", creds, "--dest-tls-verify=false", f"oci:{layout}:v1", target)
    skopeo(
        "copy", "--src-creds", creds, "--src-tls-verify=false", target, f"oci:{tmp_path / 'out'}:v1"
    )

    pushed = layout_descriptor(layout, "v1")["digest"]
    pulled = layout_descriptor(tmp_path / "out", "v1")["digest"]
    assert pulled == pushed
    assert layer_digests(tmp_path / "out", "v1") == layer_digests(layout, "v1")
    expected = sorted(
        f"registry/sha256/{d.split(':')[1][:2]}/{d.split(':')[1]}"
        for d in layer_digests(layout, "v1")
    )
    assert bucket_keys(moto_bucket) == expected  # no staging object left behind
    assert open_multipart_uploads(moto_bucket) == 0


def test_skopeo_copies_a_multi_architecture_index_with_all(
    registry_server: str, moto_bucket: str, alice: User, tmp_path: Path
) -> None:
    layout = tmp_path / "multi"
    oci_image_build(layout, "amd64", [MiB, MiB // 2])
    oci_image_build(layout, "arm64", [MiB], architecture="arm64")
    index_digest = oci_index_build(layout, "multi", {"amd64": "amd64", "arm64": "arm64"})
    creds = f"alice:{PASSWORD}"
    target = f"docker://{registry_server}/alice/multi:v1"

    skopeo(
        "copy",
        "--all",
        "--dest-creds",
        creds,
        "--dest-tls-verify=false",
        f"oci:{layout}:multi",
        target,
    )
    skopeo(
        "copy",
        "--all",
        "--src-creds",
        creds,
        "--src-tls-verify=false",
        target,
        f"oci:{tmp_path / 'out'}:multi",
    )

    assert layout_descriptor(tmp_path / "out", "multi")["digest"] == index_digest
    for architecture in ("amd64", "arm64"):
        child = layout_descriptor(layout, architecture)["digest"]
        assert (tmp_path / "out" / "blobs" / "sha256" / child.split(":")[1]).exists()
        for digest in layer_digests(layout, architecture):
            assert (tmp_path / "out" / "blobs" / "sha256" / digest.split(":")[1]).exists()


@pytest.fixture
def oras_workdir(tmp_path: Path) -> Iterator[Path]:
    """oras-py wants the files it pushes under the current directory."""
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "monolithic"])
def test_oras_pushes_and_pulls_an_artifact(
    registry_server: str, moto_bucket: str, alice: User, oras_workdir: Path, chunked: bool
) -> None:
    (oras_workdir / "notes.txt").write_text("hello oras\n")
    big = os.urandom(11 * MiB + 123)
    (oras_workdir / "big.bin").write_bytes(big)
    client = oras.client.OrasClient(hostname=registry_server, insecure=True)
    client.login(
        username="alice",
        password=PASSWORD,
        hostname=registry_server,
        config_path=str(oras_workdir / "docker-config.json"),
    )
    target = f"{registry_server}/alice/artifact:v1"

    pushed = client.push(
        files=["notes.txt", "big.bin"],
        target=target,
        do_chunked=chunked,
        chunk_size=5 * MiB,
        manifest_annotations={"org.example.kind": "test"},
    )
    files = client.pull(target=target, outdir=str(oras_workdir / "out"))

    assert pushed.status_code == 201
    assert sorted(Path(f).name for f in files) == ["big.bin", "notes.txt"]
    assert (oras_workdir / "out" / "big.bin").read_bytes() == big
    assert (oras_workdir / "out" / "notes.txt").read_text() == "hello oras\n"
    assert client.get_manifest(target)["annotations"]["org.example.kind"] == "test"
    assert open_multipart_uploads(moto_bucket) == 0


def test_skopeo_login_with_an_application_token_then_push(
    registry_server: str, moto_bucket: str, alice: User, layout: Path, tmp_path: Path
) -> None:
    _, secret = accounts.app_token_create(user=alice, name="ci")
    authfile = tmp_path / "auth.json"

    login = skopeo(
        "login",
        "--tls-verify=false",
        "--authfile",
        str(authfile),
        "-u",
        "alice",
        "-p",
        secret,
        registry_server,
    )
    skopeo(
        "copy",
        "--authfile",
        str(authfile),
        "--dest-tls-verify=false",
        f"oci:{layout}:v1",
        f"docker://{registry_server}/alice/ci:v1",
    )

    assert "Login Succeeded" in login.stdout
    assert registry_server in json.loads(authfile.read_text())["auths"]


def test_anonymous_pull_of_a_public_repository_and_refusal_of_a_private_one(
    registry_server: str, moto_bucket: str, alice: User, layout: Path, tmp_path: Path
) -> None:
    creds = f"alice:{PASSWORD}"
    for name in ("alice/open", "alice/closed"):
        skopeo(
            "copy",
            "--dest-creds",
            creds,
            "--dest-tls-verify=false",
            f"oci:{layout}:v1",
            f"docker://{registry_server}/{name}:v1",
        )
    accounts.repository_visibility_set(repository="alice/open", visibility=Visibility.PUBLIC)

    public = skopeo(
        "copy",
        "--src-no-creds",
        "--src-tls-verify=false",
        f"docker://{registry_server}/alice/open:v1",
        f"oci:{tmp_path / 'public'}:v1",
    )
    private = skopeo(
        "copy",
        "--src-no-creds",
        "--src-tls-verify=false",
        f"docker://{registry_server}/alice/closed:v1",
        f"oci:{tmp_path / 'private'}:v1",
        check=False,
    )

    assert public.returncode == 0
    assert (
        layout_descriptor(tmp_path / "public", "v1")["digest"]
        == layout_descriptor(layout, "v1")["digest"]
    )
    assert private.returncode != 0
    assert "unauthorized" in private.stderr.lower() or "denied" in private.stderr.lower()


def _blob_push(host: str, bearer: dict[str, str], data: Any, digest: str) -> requests.Response:
    started = requests.post(
        f"http://{host}/v2/alice/raw/blobs/uploads/", headers=bearer, timeout=30
    )
    assert started.status_code == 202, started.text
    location = f"http://{host}{started.headers['Location']}"
    patched = requests.patch(
        location,
        data=data,
        headers={**bearer, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert patched.status_code == 202, patched.text
    return requests.put(
        f"http://{host}{patched.headers['Location']}",
        params={"digest": digest},
        headers=bearer,
        timeout=60,
    )


def test_a_chunked_transfer_patch_streams_without_content_length_and_get_redirects_to_moto(
    registry_server: str, moto_bucket: str, alice: User
) -> None:
    data = os.urandom(7 * MiB + 17)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    bearer = {"Authorization": f"Bearer {token(registry_server, 'repository:alice/raw:pull,push')}"}

    def pieces() -> Iterator[bytes]:  # a generator body: requests sends it chunked
        for start in range(0, len(data), 1_000_000):
            yield data[start : start + 1_000_000]

    done = _blob_push(registry_server, bearer, pieces(), digest)
    redirect = requests.get(
        f"http://{registry_server}/v2/alice/raw/blobs/{digest}",
        headers=bearer,
        allow_redirects=False,
        timeout=30,
    )
    direct = requests.get(redirect.headers["Location"], timeout=60)  # no Authorization at all
    followed = requests.get(
        f"http://{registry_server}/v2/alice/raw/blobs/{digest}", headers=bearer, timeout=60
    )

    assert done.status_code == 201, done.text
    assert redirect.status_code == 307
    assert redirect.headers["Location"].startswith(servers.S3_A)
    assert redirect.headers["Docker-Content-Digest"] == digest
    assert direct.content == data
    assert followed.content == data


def test_proxy_mode_streams_blobs_with_ranges(registry_server: str, alice: User) -> None:
    _location_on_moto(serve_mode="proxy")
    data = os.urandom(3 * MiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    bearer = {"Authorization": f"Bearer {token(registry_server, 'repository:alice/raw:pull,push')}"}
    assert _blob_push(registry_server, bearer, data, digest).status_code == 201

    whole = requests.get(
        f"http://{registry_server}/v2/alice/raw/blobs/{digest}", headers=bearer, timeout=60
    )
    part = requests.get(
        f"http://{registry_server}/v2/alice/raw/blobs/{digest}",
        headers={**bearer, "Range": "bytes=1000-1999"},
        timeout=60,
    )
    invalid = requests.get(
        f"http://{registry_server}/v2/alice/raw/blobs/{digest}",
        headers={**bearer, "Range": "bytes=500-0"},
        timeout=60,
    )
    head = requests.head(
        f"http://{registry_server}/v2/alice/raw/blobs/{digest}", headers=bearer, timeout=30
    )

    assert whole.status_code == 200
    assert whole.content == data
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert part.content == data[1000:2000]
    assert (invalid.status_code, invalid.headers["Content-Range"]) == (416, f"bytes */{len(data)}")
    assert invalid.content == b""
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.content == b""


def test_zero_byte_and_sha512_blobs_round_trip_through_s3(
    registry_server: str, moto_bucket: str, alice: User
) -> None:
    bearer = {"Authorization": f"Bearer {token(registry_server, 'repository:alice/raw:pull,push')}"}
    data = os.urandom(6 * MiB + 1)
    sha512 = "sha512:" + hashlib.sha512(data).hexdigest()
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()
    base = f"http://{registry_server}/v2/alice/raw/blobs"

    created_empty = requests.post(
        f"{base}/uploads/", params={"digest": empty}, headers=bearer, timeout=30
    )
    created_sha512 = requests.post(
        f"{base}/uploads/", params={"digest": sha512}, data=data, headers=bearer, timeout=60
    )
    got_empty = requests.get(f"{base}/{empty}", headers=bearer, timeout=30)
    got_sha512 = requests.get(f"{base}/{sha512}", headers=bearer, timeout=60)

    assert (created_empty.status_code, created_sha512.status_code) == (201, 201)
    assert (got_empty.status_code, got_empty.content) == (200, b"")
    assert got_sha512.content == data
    assert f"registry/sha512/{sha512[7:9]}/{sha512[7:]}" in bucket_keys(moto_bucket)
    assert open_multipart_uploads(moto_bucket) == 0


def test_local_disk_blobs_are_served_whole_and_by_range_through_gunicorn(
    registry_server: str, alice: User, tmp_path: Path
) -> None:
    # A local location: the registry hands the open file to gunicorn (sendfile), positioned at
    # the first byte of the range; every byte and the length must still be right.
    location_create(location_id="local_e2e", kind="local", options={"storage_path": str(tmp_path)})
    ReplicationSettings.objects.filter(pk=1).update(config_version=time.time_ns() // 1000)
    data = os.urandom(5 * MiB + 123)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    bearer = {"Authorization": f"Bearer {token(registry_server, 'repository:alice/raw:pull,push')}"}
    assert _blob_push(registry_server, bearer, data, digest).status_code == 201
    url = f"http://{registry_server}/v2/alice/raw/blobs/{digest}"

    whole = requests.get(url, headers=bearer, timeout=60)
    middle = requests.get(url, headers={**bearer, "Range": "bytes=1048577-3145727"}, timeout=60)
    tail = requests.get(url, headers={**bearer, "Range": "bytes=-100"}, timeout=60)

    assert whole.status_code == 200
    assert whole.headers["Content-Length"] == str(len(data))
    assert whole.content == data
    assert middle.status_code == 206
    assert middle.content == data[1048577:3145728]
    assert tail.status_code == 206
    assert tail.content == data[-100:]


README = Path(__file__).resolve().parents[2] / "README.md"
README_PASSWORD = "readme-secret-42"  # no space: the README's --dest-creds is not quoted


def readme_commands() -> dict[str, list[str]]:
    """Return the shell commands of the README's "Push and pull" block, by program."""
    section = README.read_text().split("## Push and pull", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    commands: dict[str, list[str]] = {}
    for command in block.replace("\\\n", " ").splitlines():
        command = command.split("  #", 1)[0].strip()
        if command and not command.startswith("#"):
            program = Path(command.split()[0]).name
            commands.setdefault(program, []).append(command)
    return commands


def test_the_readme_skopeo_and_oras_commands_work_as_written(
    registry_server: str, moto_bucket: str, tmp_path: Path
) -> None:
    User.objects.create_user("admin", password=README_PASSWORD)
    commands = readme_commands()
    assert [len(commands.get(p, [])) for p in ("skopeo", "python")] == [2, 2]
    env = {**os.environ, "HOME": str(tmp_path)}  # oras-py's login writes ~/.docker/config.json

    def run(command: str) -> str:
        for written, actual in [
            ("127.0.0.1:8000", registry_server),  # both regions are this one server
            ("127.0.0.1:8001", registry_server),
            ("PASSWORD", README_PASSWORD),
            ("var/", f"{tmp_path}/"),
        ]:
            command = command.replace(written, actual)
        for cache in SKOPEO_CACHES:
            cache.unlink(missing_ok=True)
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=README.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    demo, oras_push = commands["python"]
    run(demo)
    push, pull = commands["skopeo"]
    run(push)
    run(pull)
    pushed = run(oras_push)

    index = json.loads((tmp_path / "pulled" / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "v1"
    ]
    assert "201" in pushed
    bearer = token(registry_server, "repository:admin/notes:pull", "admin", README_PASSWORD)
    notes = requests.get(
        f"http://{registry_server}/v2/admin/notes/manifests/v1",
        headers={
            "Authorization": f"Bearer {bearer}",
            "Accept": "application/vnd.oci.image.manifest.v1+json",
        },
        timeout=30,
    )
    assert notes.status_code == 200
    assert notes.json()["layers"][0]["annotations"]["org.opencontainers.image.title"] == "README.md"
