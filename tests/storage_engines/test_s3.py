"""S3 engine specifics on real servers: copy paths, presigned URLs, sessions, errors, options."""

import hashlib
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from storage_engines import s3 as s3_module
from storage_engines.errors import (
    AccessDenied,
    ContainerNotFound,
    InvalidOptions,
    InvalidRange,
    StorageTimeout,
    StorageUnavailable,
)
from storage_engines.registry import engine_create
from storage_engines.s3 import S3Engine
from tests import servers
from tests.delayproxy import DelayProxy

from .conftest import EngineUnderTest, random_bytes
from .test_contract import key_of

MiB = 1024 * 1024

pytestmark = pytest.mark.servers

Factory = Callable[[str], EngineUnderTest]


def s3_engine(**options: Any) -> S3Engine:
    base = {
        "s3_bucket": "absent-bucket",
        "endpoint_url": servers.S3_A,
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
        "addressing_style": "path",
    }
    engine = engine_create(kind="s3", location_id="probe_me", options={**base, **options})
    assert isinstance(engine, S3Engine)
    return engine


def put(subject: EngineUnderTest, data: bytes) -> str:
    key = key_of(data)
    subject.engine.write(key, io.BytesIO(data), size=len(data))
    return key


def etag(subject: EngineUnderTest, key: str) -> str:
    client = servers.s3_client(subject.options["endpoint_url"])
    head = client.head_object(Bucket=subject.extra["bucket"], Key=f"registry/{key}")
    return str(head["ETag"])


# --- copies ------------------------------------------------------------------------------------


def test_copy_between_buckets_of_one_endpoint_is_server_side(make_engine: Factory) -> None:
    source, target = make_engine("s3"), make_engine("s3")
    data = random_bytes(3 * MiB + 5)
    key = put(source, data)

    result = source.engine.copy_to(key, target.engine)

    assert (result.method, result.size, result.sha256) == ("server", len(data), None)
    assert b"".join(target.engine.read(key)) == data


def test_copy_between_two_moto_servers_streams(make_engine: Factory) -> None:
    source, target = make_engine("s3"), make_engine("s3_b")
    data = random_bytes(12 * MiB + 1)
    key = put(source, data)

    result = source.engine.copy_to(key, target.engine)

    assert result.method == "stream"
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(target.engine.read(key)) == data


def test_a_whole_read_carries_the_md5_of_a_single_part_object_only(make_engine: Factory) -> None:
    subject = make_engine("s3")
    engine = subject.engine
    assert isinstance(engine, S3Engine)
    engine.part_size = 5 * MiB
    small, big = random_bytes(1000), random_bytes(11 * MiB)
    small_key, big_key = put(subject, small), put(subject, big)  # big: a multipart upload

    with engine.read(small_key) as stream:
        assert stream.md5 == hashlib.md5(small, usedforsecurity=False).hexdigest()
    with engine.read(small_key, offset=10) as stream:
        assert stream.md5 is None, "a range is not the object"
    with engine.read(big_key) as stream:
        assert stream.md5 is None, "a multipart ETag is not an MD5"
    assert "-" in etag(subject, big_key)


def test_copy_above_copy_part_size_uses_parallel_upload_part_copy(make_engine: Factory) -> None:
    source, target = make_engine("s3"), make_engine("s3")
    assert isinstance(target.engine, S3Engine)
    target.engine.copy_part_size = 5 * MiB
    data = random_bytes(12 * MiB)
    key = put(source, data)

    result = source.engine.copy_to(key, target.engine)

    assert result.method == "server"
    assert etag(target, key).endswith('-3"'), "three copied parts: 5 + 5 + 2 MiB"
    assert (
        hashlib.sha256(b"".join(target.engine.read(key))).digest() == hashlib.sha256(data).digest()
    )
    assert target.open_sessions() == 0


def test_copy_to_a_different_key_in_the_same_bucket_is_server_side(make_engine: Factory) -> None:
    subject = make_engine("s3")
    data = b"same bucket, other key"
    key = put(subject, data)

    result = subject.engine.copy_to(key, subject.engine, target_key="copies/one")

    assert result.method == "server"
    assert b"".join(subject.engine.read("copies/one")) == data


def test_copy_identity_ignores_default_ports_and_trailing_slashes() -> None:
    first = s3_engine(endpoint_url="https://s3.example.test/")
    second = s3_engine(endpoint_url="HTTPS://s3.example.test:443")
    other_key = s3_engine(endpoint_url="https://s3.example.test", s3_access_key="other")

    assert first.copy_identity() == second.copy_identity()
    assert first.copy_identity() != other_key.copy_identity()


# --- presigned URLs ------------------------------------------------------------------------------


def test_presigned_get_and_head_serve_the_object(make_engine: Factory) -> None:
    subject = make_engine("s3")
    data = random_bytes(MiB + 7)
    key = put(subject, data)

    get_url = subject.engine.direct_url(key, expires_in=60)
    head_url = subject.engine.direct_url(key, expires_in=60, method="HEAD")

    assert get_url is not None
    assert head_url is not None
    assert requests.get(get_url, timeout=30).content == data
    head = requests.head(head_url, timeout=30)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(data)
    assert subject.engine.direct_url(key, method="DELETE") is None


# --- sessions ------------------------------------------------------------------------------------


def test_session_below_one_part_opens_no_multipart_upload(make_engine: Factory) -> None:
    subject = make_engine("s3")
    data = random_bytes(MiB)
    state = subject.engine.upload_begin(upload_id="small")
    state = subject.engine.upload_append(state, io.BytesIO(data), length=len(data))

    assert subject.open_sessions() == 0
    assert "mpu" not in state
    subject.engine.upload_complete(state, key_of(data))

    assert b"".join(subject.engine.read(key_of(data))) == data
    assert subject.list_keys() == [key_of(data)]


def test_session_state_keeps_the_upload_id_and_part_etags(make_engine: Factory) -> None:
    subject = make_engine("s3")
    data = random_bytes(17 * MiB)
    state = subject.engine.upload_begin(upload_id="parts")

    state = subject.engine.upload_append(state, io.BytesIO(data), length=len(data))

    assert state["mpu"]
    assert len(state["parts"]) == 2  # two 8 MiB parts, 1 MiB staged as a tail
    assert json.loads(json.dumps(state)) == state
    assert subject.open_sessions() == 1
    subject.engine.upload_complete(state, key_of(data))
    assert subject.open_sessions() == 0


def test_abort_leaves_no_multipart_upload(make_engine: Factory) -> None:
    subject = make_engine("s3")
    data = random_bytes(11 * MiB)
    state = subject.engine.upload_begin(upload_id="dropped")
    state = subject.engine.upload_append(state, io.BytesIO(data), length=len(data))
    client = servers.s3_client(servers.S3_A)
    bucket = subject.extra["bucket"]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads")

    subject.engine.upload_abort(state)

    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert subject.list_keys() == []


class BrokenReader:
    """A source that fails after ``good`` bytes, as a dying source engine would."""

    def __init__(self, good: int) -> None:
        self._left = good

    def read(self, size: int = -1, /) -> bytes:
        if self._left <= 0:
            raise StorageUnavailable("source went away")
        size = min(self._left, MiB if size < 0 else size)
        self._left -= size
        return b"x" * size


def test_failed_streamed_write_keeps_the_error_and_leaves_nothing(make_engine: Factory) -> None:
    subject = make_engine("s3")

    with pytest.raises(StorageUnavailable, match="source went away"):
        subject.engine.write("broken", BrokenReader(20 * MiB), size=40 * MiB)

    assert subject.open_sessions() == 0
    assert subject.list_keys() == []


def test_abort_of_an_unknown_upload_id_is_not_an_error(make_engine: Factory) -> None:
    subject = make_engine("s3")
    state = subject.engine.upload_begin(upload_id="ghost")
    state["mpu"] = "no-such-upload-id"

    subject.engine.upload_abort(state)


# --- reads ---------------------------------------------------------------------------------------


def test_empty_object_reads_empty_with_any_length_and_refuses_offsets(make_engine: Factory) -> None:
    subject = make_engine("s3")
    subject.engine.write("empty", io.BytesIO(b""), size=0)

    assert b"".join(subject.engine.read("empty", length=5)) == b""
    assert b"".join(subject.engine.read("empty", length=0)) == b""
    with pytest.raises(InvalidRange):
        subject.engine.read("empty", offset=1)


def test_read_with_zero_length_checks_the_offset(make_engine: Factory) -> None:
    subject = make_engine("s3")
    key = put(subject, b"0123456789")

    assert b"".join(subject.engine.read(key, offset=9, length=0)) == b""
    with pytest.raises(InvalidRange):
        subject.engine.read(key, offset=10, length=0)
    with pytest.raises(InvalidRange):
        subject.engine.read(key, offset=-1)


# --- probes and errors ---------------------------------------------------------------------------


def test_probe_of_a_missing_bucket_raises_container_not_found() -> None:
    servers.require("s3_a")
    engine = s3_engine(s3_bucket="no-such-bucket-here", s3_secret_key="SECRET-must-not-leak")

    with pytest.raises(ContainerNotFound) as caught:
        engine.probe(timeout=5)

    assert "no-such-bucket-here" in str(caught.value)
    assert servers.S3_A in str(caught.value)
    assert "SECRET-must-not-leak" not in str(caught.value)


def test_read_from_a_missing_bucket_raises_container_not_found() -> None:
    servers.require("s3_a")

    with pytest.raises(ContainerNotFound):
        s3_engine(s3_bucket="no-such-bucket-here").read("sha256/ab/abc")


def test_probe_of_an_unreachable_endpoint_fails_fast_as_unavailable() -> None:
    engine = s3_engine(endpoint_url="http://127.0.0.1:9", s3_secret_key="SECRET-must-not-leak")
    started = time.monotonic()

    with pytest.raises(StorageUnavailable) as caught:
        engine.probe(timeout=5)

    assert time.monotonic() - started < 6
    assert "SECRET-must-not-leak" not in str(caught.value)


def test_wrong_secret_key_on_rgw_is_access_denied_without_the_secret() -> None:
    servers.require("rgw")
    bucket = servers.new_s3_bucket(servers.RGW, servers.RGW_ACCESS_KEY, servers.RGW_SECRET_KEY)
    engine = s3_engine(
        endpoint_url=servers.RGW,
        s3_bucket=bucket,
        s3_access_key=servers.RGW_ACCESS_KEY,
        s3_secret_key="WRONG-secret-never-shown",
    )

    with pytest.raises(AccessDenied) as caught:
        engine.probe(timeout=5)
    with pytest.raises(AccessDenied) as on_write:
        engine.write_small("k", io.BytesIO(b"x"), 1)

    for error in (caught.value, on_write.value):
        assert "WRONG-secret-never-shown" not in str(error)


def test_s3_engine_and_radosgw_engine_on_one_gateway_copy_server_side() -> None:
    servers.require("rgw")
    keys = (servers.RGW_ACCESS_KEY, servers.RGW_SECRET_KEY)
    source_bucket = servers.new_s3_bucket(servers.RGW, *keys)
    target_bucket = servers.new_s3_bucket(servers.RGW, *keys)
    source = s3_engine(
        endpoint_url=servers.RGW + "/",
        s3_bucket=source_bucket,
        s3_access_key=keys[0],
        s3_secret_key=keys[1],
    )
    target = engine_create(
        kind="radosgw",
        location_id="rgw",
        options={
            "hostname": "127.0.0.1",
            "port": int(servers.RGW.rsplit(":", 1)[1]),
            "is_secure": False,
            "access_key": keys[0],
            "secret_key": keys[1],
            "bucket_name": target_bucket,
        },
    )
    data = random_bytes(2 * MiB)
    source.write("blob", io.BytesIO(data), size=len(data))

    result = source.copy_to("blob", target)

    assert result.method == "server"
    assert b"".join(target.read("blob")) == data


def test_server_side_encryption_applies_to_every_write_path(make_engine: Factory) -> None:
    plain = make_engine("s3")
    engine = s3_engine(s3_bucket=plain.extra["bucket"], server_side_encryption=True)
    engine.copy_part_size = 5 * MiB
    client = servers.s3_client(servers.S3_A)
    data = random_bytes(11 * MiB)
    engine.write("streamed", io.BytesIO(data), size=len(data))
    engine.write_small("small", io.BytesIO(b"small"), 5)
    state = engine.upload_append(engine.upload_begin(upload_id="sse"), io.BytesIO(data))
    engine.upload_complete(state, "session")
    engine.copy_to("streamed", engine, target_key="copied")

    for key in ("streamed", "small", "session", "copied"):
        head = client.head_object(Bucket=plain.extra["bucket"], Key=key)
        assert head.get("ServerSideEncryption") == "AES256", key
    with engine.read("small") as stream:  # SSE-S3 keeps the ETag an MD5 (KMS would not)
        assert stream.md5 == hashlib.md5(b"small", usedforsecurity=False).hexdigest()


def test_etag_md5_is_trusted_only_where_s3_documents_it() -> None:
    from storage_engines.s3 import _etag_md5

    md5 = "0123456789abcdef0123456789abcdef"
    assert _etag_md5({"ETag": f'"{md5}"'}) == md5
    assert _etag_md5({"ETag": f'"{md5}"', "ServerSideEncryption": "AES256"}) == md5
    assert _etag_md5({"ETag": f'"{md5}"', "ServerSideEncryption": "aws:kms"}) is None
    assert _etag_md5({"ETag": f'"{md5}"', "SSECustomerAlgorithm": "AES256"}) is None
    assert _etag_md5({"ETag": f'"{md5}-3"'}) is None
    assert _etag_md5({}) is None


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"s3_access_key": "only-the-key"}, "s3_secret_key"),
        ({"s3_secret_key": "only-the-secret"}, "s3_access_key"),
        ({"aws_session_token": "token"}, "aws_session_token"),
        ({"part_size_mb": 6, "minimum_chunk_size_mb": 7}, "part_size_mb"),
        ({"minimum_chunk_size_mb": 4}, "minimum_chunk_size_mb"),
        ({"maximum_chunk_size_gb": 6}, "maximum_chunk_size_gb"),
        ({"addressing_style": "sideways"}, "addressing_style"),
        ({"s3_bucket": "a/b"}, "s3_bucket"),
        ({"endpoint_url": "not a url"}, "endpoint_url"),
        ({"storage_class": "GLACIER"}, "storage_class"),
    ],
)
def test_invalid_options_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidOptions) as caught:
        engine_create(kind="s3", location_id="x", options={"s3_bucket": "blobs", **options})

    assert field in caught.value.errors
    assert "only-the-secret" not in str(caught.value)


def test_defaults_give_the_default_credential_chain_and_sizes() -> None:
    engine = engine_create(kind="s3", location_id="x", options={"s3_bucket": "blobs"})

    assert isinstance(engine, S3Engine)
    assert (engine.min_part_size, engine.part_size) == (5 * MiB, 8 * MiB)
    assert engine.settings.access_key is None
    assert engine.settings.region == "us-east-1"
    assert engine.copy_identity() == ("aws:aws", None)


# --- deadlines ---------------------------------------------------------------------------------


@pytest.fixture
def hung_store(settings: Any) -> Any:
    """An S3 engine whose server accepts connections and never answers (a paused proxy)."""
    settings.QUAY_GEO_STORAGE_METADATA_TIMEOUT = 1.0
    settings.QUAY_GEO_STORAGE_READ_TIMEOUT = 7.0
    bucket = servers.new_s3_bucket(servers.S3_A)
    with DelayProxy(int(urlsplit(servers.S3_A).port or 0), handshake=False) as proxy:
        engine = s3_engine(s3_bucket=bucket, endpoint_url=f"http://{proxy.url_host}")
        engine.write_small("k", io.BytesIO(b"x" * 1000), 1000)
        yield engine, proxy


def test_a_metadata_call_to_a_hung_store_times_out_without_a_retry(hung_store: Any) -> None:
    engine, proxy = hung_store
    proxy.pause()
    before = proxy.snapshot()

    with pytest.raises(StorageTimeout):
        engine.stat("k")

    assert (proxy.snapshot() - before).connections == 1  # one try: the next location retries


def test_a_read_waits_the_metadata_timeout_for_its_answer_and_the_stream_timeout_after(
    hung_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = hung_store
    timeouts: list[float] = []
    real = s3_module._socket_timeout_set

    def recorded(body: Any, seconds: float) -> None:
        real(body, seconds)
        timeouts.append(body._raw_stream._fp.fp.raw._sock.gettimeout())

    answer = engine.quick.get_object(Bucket=engine.bucket, Key="k")
    monkeypatch.setattr(s3_module, "_socket_timeout_set", recorded)
    with engine.read("k") as stream:
        assert b"".join(stream) == b"x" * 1000

    assert answer["Body"]._raw_stream._fp.fp.raw._sock.gettimeout() == 1.0
    assert timeouts == [7.0]


def test_listed_timestamps_are_parsed_by_the_standard_library(make_engine: Factory) -> None:
    subject = make_engine("s3")
    key = put(subject, random_bytes(10))

    (listed,) = subject.engine.list_objects(key)

    assert listed.modified is not None
    assert listed.modified.tzinfo is UTC  # dateutil's parser, botocore's default, gives tzutc()
    assert abs((datetime.now(UTC) - listed.modified).total_seconds()) < 600


def test_timestamps_that_are_not_iso_8601_fall_back_to_botocore() -> None:
    expected = datetime(2026, 12, 4, 17, 31, 10, tzinfo=UTC)

    assert s3_module.timestamp_parse("2026-12-04T17:31:10.000Z") == expected
    assert s3_module.timestamp_parse("Fri, 04 Dec 2026 17:31:10 GMT") == expected
    assert s3_module.timestamp_parse("1796405470") == expected
