"""RADOS Gateway specifics on a real Ceph radosgw: enforced presigned URLs, multipart, errors."""

import hashlib
import io
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

from storage_engines.errors import AccessDenied, ContainerNotFound, InvalidOptions
from storage_engines.radosgw import RadosGWEngine
from storage_engines.registry import engine_create
from tests import servers

from .conftest import EngineUnderTest, random_bytes
from .test_contract import TrickleReader, key_of

MiB = 1024 * 1024

pytestmark = pytest.mark.servers

Factory = Callable[[str], EngineUnderTest]


def rgw_engine(**options: Any) -> RadosGWEngine:
    base = {
        "hostname": "127.0.0.1",
        "port": int(servers.RGW.rsplit(":", 1)[1]),
        "is_secure": False,
        "access_key": servers.RGW_ACCESS_KEY,
        "secret_key": servers.RGW_SECRET_KEY,
        "bucket_name": "absent-bucket",
    }
    engine = engine_create(kind="radosgw", location_id="rgw", options={**base, **options})
    assert isinstance(engine, RadosGWEngine)
    return engine


@pytest.fixture
def stored(make_engine: Factory) -> tuple[EngineUnderTest, str, bytes]:
    subject = make_engine("radosgw")
    data = random_bytes(MiB + 11)
    key = key_of(data)
    subject.engine.write(key, io.BytesIO(data), size=len(data))
    return subject, key, data


def tampered(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    signature = query["X-Amz-Signature"]
    query["X-Amz-Signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- presigned URLs: RGW checks signatures and expiry --------------------------------------------


def test_presigned_url_serves_the_object(stored: tuple[EngineUnderTest, str, bytes]) -> None:
    subject, key, data = stored

    url = subject.engine.direct_url(key, expires_in=60)

    assert url is not None
    assert url.startswith(servers.RGW + "/")  # path-style
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == data


def test_presigned_head_url_answers_the_size(stored: tuple[EngineUnderTest, str, bytes]) -> None:
    subject, key, data = stored

    url = subject.engine.direct_url(key, expires_in=60, method="HEAD")

    assert url is not None
    response = requests.head(url, timeout=30)
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(data)


def test_tampered_presigned_url_is_refused(stored: tuple[EngineUnderTest, str, bytes]) -> None:
    subject, key, _ = stored
    url = subject.engine.direct_url(key, expires_in=60)
    assert url is not None

    response = requests.get(tampered(url), timeout=30)

    assert response.status_code == 403


def test_expired_presigned_url_is_refused(stored: tuple[EngineUnderTest, str, bytes]) -> None:
    subject, key, _ = stored
    url = subject.engine.direct_url(key, expires_in=1)
    assert url is not None

    time.sleep(2)
    response = requests.get(url, timeout=30)

    assert response.status_code == 403


# --- multipart -----------------------------------------------------------------------------------


def test_session_multipart_completes_despite_the_empty_etag(make_engine: Factory) -> None:
    subject = make_engine("radosgw")
    data = random_bytes(21 * MiB + 3)
    key = key_of(data)
    engine = subject.engine
    state = engine.upload_begin(upload_id="rgwparts")

    for start in range(0, len(data), 7 * MiB):
        chunk = data[start : start + 7 * MiB]
        state = engine.upload_append(state, io.BytesIO(chunk), length=len(chunk))
    size = engine.upload_complete(state, key)

    assert size == len(data)
    assert len(state["parts"]) == 3  # 7 MiB each; the last 3 bytes go with the completion
    digest = hashlib.sha256()
    for chunk in engine.read(key):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert subject.list_keys() == [key]
    assert subject.open_sessions() == 0


def test_streamed_write_in_parts_reads_back(make_engine: Factory) -> None:
    subject = make_engine("radosgw")
    data = random_bytes(19 * MiB)

    written = subject.engine.write("big", TrickleReader(data, step=100_000), size=None)

    assert written == len(data)
    assert (
        b"".join(subject.engine.read("big", offset=9 * MiB, length=MiB)) == data[9 * MiB : 10 * MiB]
    )


def test_copy_between_two_buckets_of_one_gateway_is_server_side(make_engine: Factory) -> None:
    source, target = make_engine("radosgw"), make_engine("radosgw")
    data = random_bytes(6 * MiB)
    key = key_of(data)
    source.engine.write(key, io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key, target.engine)

    assert result.method == "server"
    assert b"".join(target.engine.read(key)) == data


# --- probes and errors ---------------------------------------------------------------------------


def test_probe_with_a_wrong_secret_key_is_access_denied() -> None:
    servers.require("rgw")
    bucket = servers.new_s3_bucket(servers.RGW, servers.RGW_ACCESS_KEY, servers.RGW_SECRET_KEY)
    engine = rgw_engine(bucket_name=bucket, secret_key="WRONG-rgw-secret")

    with pytest.raises(AccessDenied) as caught:
        engine.probe(timeout=5)

    assert "WRONG-rgw-secret" not in str(caught.value)
    assert "RGWSECRETKEY" not in str(caught.value)


def test_probe_of_a_missing_bucket_is_container_not_found() -> None:
    servers.require("rgw")

    with pytest.raises(ContainerNotFound) as caught:
        rgw_engine(bucket_name="no-such-rgw-bucket").probe(timeout=5)

    assert "no-such-rgw-bucket" in str(caught.value)


def test_probe_of_a_good_bucket_succeeds() -> None:
    servers.require("rgw")
    bucket = servers.new_s3_bucket(servers.RGW, servers.RGW_ACCESS_KEY, servers.RGW_SECRET_KEY)

    rgw_engine(bucket_name=bucket).probe(timeout=10)


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "endpoint"),
    [
        ({"hostname": "rgw.example.test"}, "https://rgw.example.test"),
        ({"hostname": "rgw.example.test", "port": 8443}, "https://rgw.example.test:8443"),
        ({"hostname": "10.0.0.5", "port": 7480, "is_secure": False}, "http://10.0.0.5:7480"),
        ({"hostname": "::1", "port": 7480, "is_secure": False}, "http://[::1]:7480"),
    ],
)
def test_endpoint_is_built_from_host_port_and_scheme(
    options: dict[str, Any], endpoint: str
) -> None:
    engine = engine_create(
        kind="radosgw",
        location_id="rgw",
        options={"access_key": "a", "secret_key": "s", "bucket_name": "b", **options},
    )

    assert isinstance(engine, RadosGWEngine)
    assert engine.endpoint() == endpoint
    assert engine.settings.addressing_style == "path"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"hostname": "https://rgw.example.test"}, "hostname"),
        ({"secret_key": ""}, "secret_key"),
        ({"port": 70000}, "port"),
        ({"part_size_mb": 5, "minimum_chunk_size_mb": 6}, "part_size_mb"),
        ({"s3_bucket": "s3-name"}, "s3_bucket"),
    ],
)
def test_invalid_options_name_the_field(options: dict[str, Any], field: str) -> None:
    base = {"hostname": "rgw", "access_key": "a", "secret_key": "s", "bucket_name": "b"}

    with pytest.raises(InvalidOptions) as caught:
        engine_create(kind="radosgw", location_id="rgw", options={**base, **options})

    assert field in caught.value.errors
