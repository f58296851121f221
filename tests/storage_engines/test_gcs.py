"""GCS engine behaviour beyond the contract: rewrite copies, signed URLs, sessions, failures.

Everything runs against the real gcp-storage-emulator on 127.0.0.1:9023 and :9024 (two
"regions" from one process). The HMAC path runs against moto, a stand-in for GCS's XML API,
which the emulator does not serve.
"""

import hashlib
import http.server
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from storage_engines.errors import (
    AccessDenied,
    ContainerNotFound,
    InvalidOptions,
    StorageError,
    StorageUnavailable,
)
from storage_engines.gcs import GCSEngine
from storage_engines.keys import content_key
from storage_engines.registry import engine_create
from tests import servers

from .conftest import EngineUnderTest, make_gcs, random_bytes

MiB = 1024 * 1024
KiB = 1024


def key_of(data: bytes) -> str:
    return content_key("sha256:" + hashlib.sha256(data).hexdigest())


DEAD_TOKEN_URI = "http://127.0.0.1:9/token"


def service_account_json(token_uri: str = DEAD_TOKEN_URI) -> str:
    """Return a throw-away service-account key file, generated locally."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": servers.GCS_PROJECT,
        "private_key_id": "1",
        "private_key": pem,
        "client_email": "registry@test-project.iam.gserviceaccount.com",
        "token_uri": token_uri,
    }
    return json.dumps(info)


class TokenEndpoint(http.server.BaseHTTPRequestHandler):
    """An OAuth token endpoint answering every POST with ``server.answer``."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.hits += 1  # type: ignore[attr-defined]
        status, body = self.server.answer  # type: ignore[attr-defined]
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def token_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    server.answer = (200, {"access_token": "t0k3n", "expires_in": 3600, "token_type": "Bearer"})  # type: ignore[attr-defined]
    server.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def gcs_options(bucket: str, endpoint: str = servers.GCS, **extra: Any) -> dict[str, Any]:
    return {"bucket_name": bucket, "api_endpoint": endpoint, "storage_path": "registry", **extra}


def service_account_engine(bucket: str, token_server: http.server.ThreadingHTTPServer) -> Any:
    token_uri = f"http://127.0.0.1:{token_server.server_address[1]}/token"
    options = gcs_options(bucket, service_account_json=service_account_json(token_uri))
    return engine_create(kind="gcs", location_id="gcs_sa", options=options)


# --- copies ---------------------------------------------------------------------------------------


def test_copy_between_buckets_of_one_emulator_is_a_rewrite(tmp_path: Path) -> None:
    source, target = make_gcs(tmp_path), make_gcs(tmp_path)
    data = random_bytes(9 * MiB + 1)
    key = key_of(data)
    source.engine.write(key, io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key, target.engine)

    assert (result.method, result.size) == ("server", len(data))
    assert b"".join(target.engine.read(key)) == data
    assert target.list_keys() == [key]


def test_copy_between_two_emulators_streams_and_hashes(tmp_path: Path) -> None:
    servers.require("gcs_b")
    source, target = make_gcs(tmp_path, servers.GCS), make_gcs(tmp_path, servers.GCS_B)
    data = random_bytes(10 * MiB + 7)
    key = key_of(data)
    source.engine.write(key, io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key, target.engine)

    assert result.method == "stream"
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(b"".join(target.engine.read(key))).hexdigest() == result.sha256
    assert servers.gcs_client(servers.GCS_B).bucket(source.extra["bucket"]).exists() is False


def test_copy_between_different_identities_streams(
    tmp_path: Path, token_server: http.server.ThreadingHTTPServer
) -> None:
    source = make_gcs(tmp_path)
    target = service_account_engine(servers.new_gcs_bucket(), token_server)
    data = random_bytes(1 * MiB)
    source.engine.write(key_of(data), io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key_of(data), target)

    assert result.method == "stream"
    assert b"".join(target.read(key_of(data))) == data


# --- credentials ----------------------------------------------------------------------------------


def test_service_account_engine_sends_its_token_and_round_trips(
    tmp_path: Path, token_server: http.server.ThreadingHTTPServer
) -> None:
    engine = service_account_engine(servers.new_gcs_bucket(), token_server)
    data = random_bytes(3 * MiB + 5)

    engine.write(key_of(data), io.BytesIO(data))

    assert b"".join(engine.read(key_of(data), offset=7, length=100)) == data[7:107]
    engine.probe(timeout=10)
    assert token_server.hits == 1, "one token, fetched once and reused"  # type: ignore[attr-defined]


def test_refused_service_account_raises_access_denied(
    token_server: http.server.ThreadingHTTPServer,
) -> None:
    token_server.answer = (400, {"error": "invalid_grant", "error_description": "bad key"})  # type: ignore[attr-defined]
    engine = service_account_engine(servers.new_gcs_bucket(), token_server)

    with pytest.raises(AccessDenied) as caught:
        engine.stat("sha256/ab/anything")

    assert "PRIVATE KEY" not in str(caught.value)


def test_signed_url_from_a_service_account_key_serves_the_bytes(tmp_path: Path) -> None:
    writer = make_gcs(tmp_path)
    data = random_bytes(2 * MiB + 3)
    key = key_of(data)
    writer.engine.write(key, io.BytesIO(data), size=len(data))
    options = {**writer.options, "anonymous": False, "service_account_json": service_account_json()}
    signer = engine_create(kind="gcs", location_id="gcs_signer", options=options)

    url = signer.direct_url(key, expires_in=120)

    assert url is not None
    assert url.startswith(f"{servers.GCS}/{writer.extra['bucket']}/registry/sha256/")
    assert "X-Goog-Signature=" in url
    # The emulator checks neither signature nor expiry: only the URL's shape and bytes are tested.
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == data


def test_emulator_host_variable_does_not_redirect_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    subject = make_gcs(tmp_path)
    data = random_bytes(300 * KiB)

    subject.engine.write(key_of(data), io.BytesIO(data), size=len(data))

    assert subject.engine.stat(key_of(data)).size == len(data)  # type: ignore[union-attr]


# --- chunked sessions -----------------------------------------------------------------------------


def test_session_continues_from_json_state_in_a_new_instance(tmp_path: Path) -> None:
    subject = make_gcs(tmp_path)
    data = random_bytes(3 * MiB + 100 * KiB + 11)
    key, cut = key_of(data), 1 * MiB + 3
    options = {**subject.options, "chunk_size_mb": 1}
    first = engine_create(kind="gcs", location_id="gcs_test", options=options)

    state = first.upload_begin(upload_id="resume-me")
    state = first.upload_append(state, io.BytesIO(data[:cut]))
    stored = json.dumps(state)

    assert json.loads(stored)["session_url"], "the GCS session URL travels in the state"
    other = engine_create(kind="gcs", location_id="gcs_test", options=options)
    resumed = other.upload_append(json.loads(stored), io.BytesIO(data[cut:]))
    assert other.upload_complete(resumed, key) == len(data)
    assert b"".join(other.read(key)) == data
    assert subject.list_keys() == [key], "the staging object and tails are gone"


def test_session_smaller_than_a_part_opens_no_gcs_session(tmp_path: Path) -> None:
    subject = make_gcs(tmp_path)
    data = random_bytes(100 * KiB)

    state = subject.engine.upload_begin(upload_id="tiny")
    state = subject.engine.upload_append(state, io.BytesIO(data))
    subject.engine.upload_complete(state, key_of(data))

    assert state["session_url"] is None
    assert b"".join(subject.engine.read(key_of(data))) == data
    assert subject.list_keys() == [key_of(data)]


@pytest.mark.parametrize("declared", [True, False])
def test_write_of_whole_parts_finishes_its_session(tmp_path: Path, declared: bool) -> None:
    subject = make_gcs(tmp_path)
    options = {**subject.options, "chunk_size_mb": 1}
    engine = engine_create(kind="gcs", location_id="gcs_test", options=options)
    data = random_bytes(2 * MiB)

    written = engine.write(key_of(data), io.BytesIO(data), size=len(data) if declared else None)

    assert written == len(data)
    assert b"".join(engine.read(key_of(data))) == data
    assert subject.list_keys() == [key_of(data)]


@pytest.mark.parametrize("size", [1 * MiB, 9 * MiB], ids=["media", "resumable"])
def test_write_of_a_stream_shorter_than_declared_fails_and_leaves_nothing(
    tmp_path: Path, size: int
) -> None:
    subject = make_gcs(tmp_path)
    data = random_bytes(size)

    with pytest.raises(StorageError, match="were declared"):
        subject.engine.write(key_of(data), io.BytesIO(data), size=len(data) + 1)

    assert subject.list_keys() == []


def test_chunk_size_sets_the_part_size() -> None:
    engine = engine_create(
        kind="gcs",
        location_id="g",
        options={"bucket_name": "b", "chunk_size_mb": 2, "anonymous": True},
    )

    assert (engine.part_size, engine.min_part_size, engine.part_multiple) == (
        2 * MiB,
        256 * KiB,
        256 * KiB,
    )


# --- probes and options ---------------------------------------------------------------------------


def test_probe_of_a_missing_bucket_raises_container_not_found() -> None:
    servers.require("gcs")
    options = gcs_options("no-such-bucket-for-quay-geo", anonymous=True)
    engine = engine_create(kind="gcs", location_id="gcs_missing", options=options)

    with pytest.raises(ContainerNotFound):
        engine.probe(timeout=10)


def test_probe_of_an_unreachable_endpoint_fails_fast() -> None:
    options = gcs_options("any", "http://127.0.0.1:9", anonymous=True, connect_timeout=2)
    engine = engine_create(kind="gcs", location_id="gcs_down", options=options)
    started = time.monotonic()

    with pytest.raises(StorageUnavailable):
        engine.probe(timeout=5)

    assert time.monotonic() - started < 5.5


@pytest.mark.parametrize(
    "key_file",
    [
        "not json at all",
        json.dumps({"type": "authorized_user", "client_id": "x"}),
        json.dumps({"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----xyz"}),
    ],
)
def test_invalid_service_account_json_is_refused(key_file: str) -> None:
    options = {"bucket_name": "b", "service_account_json": key_file}

    with pytest.raises(InvalidOptions) as caught:
        engine_create(kind="gcs", location_id="g", options=options)

    assert set(caught.value.errors) == {"service_account_json"}
    assert "PRIVATE KEY" not in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [
        {"access_key": "GOOG1EXAMPLE"},
        {"access_key": "GOOG1EXAMPLE", "secret_key": "s3cr3t", "anonymous": True},
        {"service_account_json": "KEY FILE", "anonymous": True},
        {"service_account_json": "KEY FILE", "access_key": "GOOG1EXAMPLE", "secret_key": "s3cr3t"},
        {"anonymous": True, "chunk_size_mb": 0},
    ],
)
def test_conflicting_or_incomplete_options_are_refused(options: dict[str, Any]) -> None:
    if options.get("service_account_json"):
        options = {**options, "service_account_json": service_account_json()}

    with pytest.raises(InvalidOptions) as caught:
        engine_create(kind="gcs", location_id="g", options={"bucket_name": "b", **options})

    assert "s3cr3t" not in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)


# --- HMAC keys: the XML API through the S3 engine -------------------------------------------------


@pytest.fixture
def hmac_engine() -> Callable[[], GCSEngine]:
    servers.require("s3_a")
    bucket = servers.new_s3_bucket(servers.S3_A)

    def build() -> GCSEngine:
        options = {
            "bucket_name": bucket,
            "storage_path": "registry",
            "access_key": servers.S3_ACCESS_KEY,
            "secret_key": servers.S3_SECRET_KEY,
            "api_endpoint": servers.S3_A,  # moto stands in for storage.googleapis.com's XML API
        }
        engine = engine_create(kind="gcs", location_id="gcs_hmac", options=options)
        assert isinstance(engine, GCSEngine)
        return engine

    return build


def test_hmac_keys_store_through_the_s3_engine(hmac_engine: Callable[[], GCSEngine]) -> None:
    engine = hmac_engine()
    data = random_bytes(6 * MiB + 1)
    key = key_of(data)

    state = engine.upload_begin(upload_id="hmac")
    state = engine.upload_append(state, io.BytesIO(data))
    engine.upload_complete(state, key)

    assert engine.interop is not None
    assert engine.interop.stat(key).size == len(data)  # type: ignore[union-attr]
    assert b"".join(engine.read(key, offset=5, length=10)) == data[5:15]
    assert engine.direct_url(key) is not None
    result = engine.copy_to(key, hmac_engine(), target_key=key_of(b"copy"))
    assert result.method == "server"
    engine.probe(timeout=10)


def test_hmac_engine_does_not_rewrite_from_a_json_api_engine(
    tmp_path: Path, hmac_engine: Callable[[], GCSEngine]
) -> None:
    source: EngineUnderTest = make_gcs(tmp_path)
    data = random_bytes(512 * KiB)
    source.engine.write(key_of(data), io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key_of(data), hmac_engine())

    assert result.method == "stream"


@pytest.mark.parametrize("no_308", [False, True])
def test_the_test_emulator_answers_an_unfinished_chunk_as_gcs_does(no_308: bool) -> None:
    """scripts/gcs_emulator.py: 308 by default; 200 + override header for ``X-GUploader-No-308``.

    rclone (Go) asks for the second form; case 2 of the benchmarks copies through it.
    """
    bucket = servers.new_gcs_bucket(servers.GCS)
    start = requests.post(
        f"{servers.GCS}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "resumable", "name": "chunked"},
        json={},
        timeout=10,
    )
    start.raise_for_status()
    session = start.headers["Location"]
    asked = {"X-GUploader-No-308": "yes"} if no_308 else {}

    def chunk(content_range: str, body: bytes) -> requests.Response:
        headers = {"Content-Range": content_range, **asked}
        return requests.put(session, data=body, headers=headers, timeout=10)

    first = chunk("bytes 0-3/*", b"abcd")
    assert (first.status_code, first.headers["Range"]) == (200 if no_308 else 308, "bytes=0-3")
    assert first.headers.get("X-Http-Status-Code-Override") == ("308" if no_308 else None)
    last = chunk("bytes 4-5/6", b"ef")
    assert last.status_code == 200
    assert "X-Http-Status-Code-Override" not in last.headers
    assert last.json()["size"] == "6"
