"""Swift-specific behaviour on the real single-node Swift: COPY, TempURLs, SLO segments, errors."""

import concurrent.futures
import hashlib
import http.client
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from storage_engines import swift as swift_module
from storage_engines.base import StorageEngine
from storage_engines.errors import (
    AccessDenied,
    ContainerNotFound,
    InvalidOptions,
    StorageMisconfigured,
    StorageUnavailable,
)
from storage_engines.registry import engine_create
from storage_engines.streams import CHUNK
from storage_engines.swift import SwiftEngine
from tests import servers

from .conftest import EngineUnderTest, random_bytes
from .test_contract import key_of

MiB = 1024 * 1024


@pytest.fixture
def swift_subject(make_engine: Callable[[str], EngineUnderTest]) -> EngineUnderTest:
    return make_engine("swift")


def engine_of(subject: EngineUnderTest) -> SwiftEngine:
    assert isinstance(subject.engine, SwiftEngine)
    return subject.engine


def read_bytes(
    engine: StorageEngine, key: str, offset: int = 0, length: int | None = None
) -> bytes:
    with engine.read(key, offset=offset, length=length) as stream:
        return b"".join(stream)


def container_names(container: str) -> list[str]:
    """Return every object name in the container, segments and manifests included."""
    _, listing = servers.swift_connection().get_container(container, full_listing=True)
    return sorted(o["name"] for o in listing)


def swift_options(container: str, **overrides: Any) -> dict[str, Any]:
    options = {
        "auth_url": servers.SWIFT_AUTH,
        "auth_version": "1",
        "swift_user": servers.SWIFT_USER,
        "swift_password": servers.SWIFT_KEY,
        "swift_container": container,
        "storage_path": "registry",
    }
    return {**options, **overrides}


class FailingReader:
    """A reader that serves ``data`` and then fails, as a dropped client connection does."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._data.read(size)
        if not chunk:
            raise ConnectionResetError("client went away")
        return chunk


# --- copies ---------------------------------------------------------------------------------------


def test_copy_between_containers_of_one_account_is_a_server_side_copy_under_target_path(
    make_engine: Callable[[str], EngineUnderTest],
) -> None:
    source = make_engine("swift")
    container = servers.new_swift_container()
    target = engine_create(
        kind="swift",
        location_id="swift_other",
        options=swift_options(container, storage_path="other"),
    )
    data = random_bytes(3 * MiB + 5)
    key = key_of(data)
    source.engine.write(key, io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key, target)

    assert result.method == "server"
    assert result.size == len(data)
    assert container_names(container) == [f"other/{key}"], "the target's own storage_path"
    assert read_bytes(target, key) == data


def test_copy_of_a_segmented_object_joins_it_into_a_plain_object(
    make_engine: Callable[[str], EngineUnderTest],
) -> None:
    source, target = make_engine("swift"), make_engine("swift")
    engine_of(source).part_size = 1 * MiB
    data = random_bytes(3 * MiB + 1)
    key = key_of(data)
    engine_of(source).write(key, io.BytesIO(data), size=None)

    result = source.engine.copy_to(key, target.engine)

    assert result.method == "server"
    assert container_names(target.extra["container"]) == [f"registry/{key}"]
    target.engine.delete(key)
    assert read_bytes(source.engine, key) == data, "the source keeps its segments"


def test_copy_above_the_single_object_limit_streams_into_segments(
    make_engine: Callable[[str], EngineUnderTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(swift_module, "MAX_OBJECT", 2 * MiB)
    source, target = make_engine("swift"), make_engine("swift")
    engine_of(target).part_size = 1 * MiB
    data = random_bytes(3 * MiB + 7)
    key = key_of(data)
    source.engine.write(key, io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key, target.engine)

    assert result.method == "stream"
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert read_bytes(target.engine, key) == data
    assert len(container_names(target.extra["container"])) == 5, "a manifest and 4 segments"


def test_copy_between_two_accounts_streams(make_engine: Callable[[str], EngineUnderTest]) -> None:
    source = make_engine("swift")
    container = servers.new_swift_container(user=servers.SWIFT_USER_2, key=servers.SWIFT_KEY_2)
    target = engine_create(
        kind="swift",
        location_id="swift_account_2",
        options=swift_options(
            container, swift_user=servers.SWIFT_USER_2, swift_password=servers.SWIFT_KEY_2
        ),
    )
    data = random_bytes(2 * MiB + 9)
    key = key_of(data)
    source.engine.write(key, io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key, target)

    assert result.method == "stream"
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(read_bytes(target, key)).hexdigest() == result.sha256


def test_one_engine_serves_many_threads_at_once(swift_subject: EngineUnderTest) -> None:
    engine = swift_subject.engine
    blobs = [random_bytes(256 * 1024 + n) for n in range(16)]

    def round_trip(data: bytes) -> bytes:
        engine.write(key_of(data), io.BytesIO(data), size=len(data))
        return read_bytes(engine, key_of(data))

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        echoed = list(pool.map(round_trip, blobs))

    assert echoed == blobs


# --- temporary URLs -------------------------------------------------------------------------------


@pytest.fixture
def temp_url_subject(swift_subject: EngineUnderTest) -> tuple[SwiftEngine, str, bytes]:
    secret = "swift-test-container-key"
    conn = servers.swift_connection()
    conn.post_container(
        swift_subject.extra["container"], headers={"X-Container-Meta-Temp-URL-Key": secret}
    )
    engine = engine_create(
        kind="swift",
        location_id="swift_temp_url",
        options={**swift_subject.options, "temp_url_key": secret},
    )
    data = random_bytes(1 * MiB + 11)
    key = key_of(data)
    engine.write(key, io.BytesIO(data), size=len(data))
    assert isinstance(engine, SwiftEngine)
    return engine, key, data


def test_temp_url_serves_the_bytes_without_a_token(
    temp_url_subject: tuple[SwiftEngine, str, bytes],
) -> None:
    engine, key, data = temp_url_subject

    response = requests.get(engine.direct_url(key, expires_in=60) or "", timeout=30)

    assert response.status_code == 200
    assert response.content == data


def test_tampered_temp_url_is_refused(temp_url_subject: tuple[SwiftEngine, str, bytes]) -> None:
    engine, key, _ = temp_url_subject
    url = engine.direct_url(key, expires_in=60) or ""

    tampered = url.replace("temp_url_sig=", "temp_url_sig=0")

    assert requests.get(tampered, timeout=30).status_code == 401


def test_expired_temp_url_is_refused(temp_url_subject: tuple[SwiftEngine, str, bytes]) -> None:
    engine, key, _ = temp_url_subject
    url = engine.direct_url(key, expires_in=1) or ""

    time.sleep(2)

    assert requests.get(url, timeout=30).status_code == 401


def test_no_temp_url_without_a_key(swift_subject: EngineUnderTest) -> None:
    engine = engine_create(
        kind="swift",
        location_id="swift_no_key",
        options={k: v for k, v in swift_subject.options.items() if k != "temp_url_key"},
    )

    assert engine.direct_url(key_of(b"x")) is None


# --- segments and manifests -----------------------------------------------------------------------


def test_session_of_several_parts_is_an_slo_whose_delete_removes_its_segments(
    swift_subject: EngineUnderTest,
) -> None:
    engine = engine_of(swift_subject)
    engine.part_size = 1 * MiB
    data = random_bytes(4 * MiB + 100)
    key = key_of(data)

    state = engine.upload_begin(upload_id="slo")
    state = engine.upload_append(state, io.BytesIO(data), length=len(data))
    engine.upload_complete(state, key)

    names = container_names(swift_subject.extra["container"])
    assert f"registry/{key}" in names
    assert len([n for n in names if n.startswith("registry/_segments/slo/seg-")]) == 5
    assert read_bytes(engine, key) == data
    assert read_bytes(engine, key, offset=MiB - 3, length=MiB + 6) == data[MiB - 3 : 2 * MiB + 3]
    engine.delete(key)
    assert container_names(swift_subject.extra["container"]) == []


def test_session_beyond_the_manifest_limit_nests_manifests(swift_subject: EngineUnderTest) -> None:
    engine = engine_of(swift_subject)
    engine.part_size = 1 * MiB
    engine.manifest_segments_max = 4
    data = random_bytes(5 * MiB + 1)  # 6 segments: two sub-manifests of 4 and 2
    key = key_of(data)

    engine.write(key, io.BytesIO(data), size=None)

    names = container_names(swift_subject.extra["container"])
    assert len([n for n in names if "/manifest-" in n]) == 2
    assert read_bytes(engine, key) == data
    engine.delete(key)
    assert container_names(swift_subject.extra["container"]) == []


def test_a_failed_append_aborts_the_session_and_its_segments(
    swift_subject: EngineUnderTest,
) -> None:
    engine = engine_of(swift_subject)
    engine.part_size = 1 * MiB
    state = engine.upload_begin(upload_id="dropped")
    state = engine.upload_append(state, io.BytesIO(random_bytes(2 * MiB)), length=2 * MiB)
    assert len(container_names(swift_subject.extra["container"])) == 2

    with pytest.raises(ConnectionResetError):
        engine.upload_append(state, FailingReader(random_bytes(3 * MiB)))

    # segments written before and during the failed append are gone, recorded or not
    assert container_names(swift_subject.extra["container"]) == []
    engine.upload_abort(state)  # the caller's abort with its stored state stays harmless
    assert container_names(swift_subject.extra["container"]) == []


def test_overwriting_an_slo_removes_the_old_segments(swift_subject: EngineUnderTest) -> None:
    engine = engine_of(swift_subject)
    engine.part_size = 1 * MiB
    key = "manifests/overwritten"  # not a content key: its next object may be any size
    engine.write(key, io.BytesIO(random_bytes(3 * MiB)), size=None)

    engine.write(key, io.BytesIO(b"small now"), size=9)

    assert container_names(swift_subject.extra["container"]) == [f"registry/{key}"]
    assert read_bytes(engine, key) == b"small now"


def test_a_content_key_up_to_one_part_is_put_without_a_head_and_checked_by_md5(
    swift_subject: EngineUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_of(swift_subject)
    engine.part_size = 1 * MiB
    heads: list[str] = []
    real_head = engine._head

    def counted_head(name: str) -> Any:
        heads.append(name)
        return real_head(name)

    monkeypatch.setattr(engine, "_head", counted_head)
    small, big = random_bytes(MiB), random_bytes(MiB + 1)

    assert engine.write(key_of(small), io.BytesIO(small), size=len(small)) == len(small)
    assert heads == [], "one part or less: no SLO can be at a content key"
    assert engine.write(key_of(big), io.BytesIO(big), size=len(big)) == len(big)
    assert heads == [f"registry/{key_of(big)}"], "above a part it may replace an SLO"

    # An MD5 from the source is sent for Swift to check: right, the object lands; wrong, the
    # PUT is refused as transient and nothing is left.
    md5 = hashlib.md5(small, usedforsecurity=False).hexdigest()
    other = random_bytes(1000)
    with pytest.raises(StorageUnavailable, match="other bytes than the source's MD5"):
        engine.write(key_of(other), io.BytesIO(other), size=len(other), md5=md5)
    assert engine.stat(key_of(other)) is None
    engine.delete(key_of(small))
    assert engine.write(key_of(small), io.BytesIO(small), size=len(small), md5=md5) == len(small)
    assert read_bytes(engine, key_of(small)) == small


def test_a_body_goes_out_in_blocks_of_a_chunk(
    swift_subject: EngineUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not in urllib3's 16 KiB blocks: those cost twice the time on a big PUT."""
    engine = engine_of(swift_subject)
    sends: list[int] = []
    real_send = http.client.HTTPConnection.send

    def counted_send(self: http.client.HTTPConnection, data: Any) -> None:
        sends.append(len(data))
        real_send(self, data)

    monkeypatch.setattr(http.client.HTTPConnection, "send", counted_send)
    data = random_bytes(3 * CHUNK)

    assert engine.write(key_of(data), io.BytesIO(data), size=len(data)) == len(data)

    assert sends.count(CHUNK) == 3, sends
    assert read_bytes(engine, key_of(data)) == data


def test_a_stream_shorter_than_its_size_fails_at_once(swift_subject: EngineUnderTest) -> None:
    engine = engine_of(swift_subject)
    data = random_bytes(1000)
    started = time.monotonic()

    with pytest.raises(StorageUnavailable, match="ended after 1000 of 2000"):
        engine.write(key_of(data), io.BytesIO(data), size=2000)

    assert time.monotonic() - started < 10, "Swift was not left waiting for the missing bytes"
    assert engine.stat(key_of(data)) is None


def test_write_above_the_single_object_limit_uses_segments(
    swift_subject: EngineUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(swift_module, "MAX_OBJECT", 2 * MiB)
    engine = engine_of(swift_subject)
    engine.part_size = 1 * MiB
    data = random_bytes(3 * MiB + 3)
    key = key_of(data)

    assert engine.write(key, io.BytesIO(data), size=len(data)) == len(data)

    assert len(container_names(swift_subject.extra["container"])) == 5
    assert read_bytes(engine, key) == data


# --- probes and errors ----------------------------------------------------------------------------


def test_probe_with_a_wrong_key_is_access_denied_without_the_key(
    swift_subject: EngineUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="swiftclient")
    engine = engine_create(
        kind="swift",
        location_id="swift_bad_key",
        options={**swift_subject.options, "swift_password": "not-the-key"},
    )

    with pytest.raises(AccessDenied, match="refused the credentials of user test:tester") as caught:
        engine.probe(timeout=10)

    assert "not-the-key" not in str(caught.value)
    assert "not-the-key" not in caplog.text


def test_failed_requests_are_logged_without_a_token_prefix(
    swift_subject: EngineUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="swiftclient")
    _, token = servers.swift_connection().get_auth()

    swift_subject.engine.stat(key_of(b"missing"))  # a 404, logged at INFO

    assert "X-Auth-Token: ..." in caplog.text
    assert token[7:16] not in caplog.text  # tempauth tokens start with AUTH_tk


def test_probe_of_a_missing_container_names_it(swift_subject: EngineUnderTest) -> None:
    engine = engine_create(
        kind="swift",
        location_id="swift_no_container",
        options={**swift_subject.options, "swift_container": "no-such-container"},
    )

    with pytest.raises(ContainerNotFound, match="container no-such-container not found"):
        engine.probe(timeout=10)


def test_probe_of_an_unreachable_endpoint_fails_within_its_timeout() -> None:
    engine = engine_create(
        kind="swift",
        location_id="swift_down",
        options=swift_options("c", auth_url="http://127.0.0.1:9/auth/v1.0"),
    )
    started = time.monotonic()

    with pytest.raises(StorageUnavailable):
        engine.probe(timeout=5)

    assert time.monotonic() - started < 6


def test_keystone_auth_without_keystoneclient_is_misconfigured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(swift_module.swift, "ksclient_v3", None)
    engine = engine_create(
        kind="swift",
        location_id="swift_v3",
        options=swift_options(
            "c",
            auth_version="3",
            os_options={
                "user_domain_name": "Default",
                "project_name": "demo",
                "project_domain_name": "Default",
            },
        ),
    )

    with pytest.raises(StorageMisconfigured, match="needs python-keystoneclient"):
        engine.probe(timeout=5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"auth_version": "3", "os_options": {"project_id": "p"}}, "user_domain_name"),
        ({"auth_version": "3", "os_options": {"user_domain_name": "Default"}}, "project_name"),
        (
            {"auth_version": "3", "os_options": {"user_domain_id": "d", "project_name": "p"}},
            "project_domain_name",
        ),
        ({"auth_version": "2", "swift_user": "tester"}, "tenant_name"),
        ({"os_options": {"tenant_id": "t", "password": "x"}}, "Unknown key(s): password"),
        ({"storage_path": "a b"}, "storage_path"),
        ({"auth_url": "keystone:5000"}, "auth_url"),
    ],
)
def test_invalid_options_name_the_problem(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptions, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine_create(
            kind="swift", location_id="swift_bad", options=swift_options("c", **overrides)
        )


def test_valid_v3_options_are_accepted_with_defaults() -> None:
    engine = engine_create(
        kind="swift",
        location_id="swift_v3_ok",
        options=swift_options(
            "c",
            auth_version="3",
            storage_path="/datastorage/registry/",
            os_options={"user_domain_name": "Default", "tenant_id": "abc"},
        ),
    )

    assert isinstance(engine, SwiftEngine)
    assert engine.prefix == "datastorage/registry"
    assert engine.part_size == 8 * MiB
    assert engine.options["temp_url_digest"] == "sha256"
