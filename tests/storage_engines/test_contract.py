"""The storage contract, written once and run against every engine on its real server."""

import hashlib
import io
import itertools
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest
import requests

from storage_engines.errors import InvalidRange, ObjectNotFound
from storage_engines.keys import content_key

from .conftest import KINDS, EngineUnderTest, random_bytes

MiB = 1024 * 1024


class TrickleReader:
    """A request-body-like reader that returns at most ``step`` bytes per call and has no seek."""

    def __init__(self, data: bytes, step: int = 64 * 1024) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def read(self, size: int = -1, /) -> bytes:
        size = self._step if size is None or size < 0 else min(size, self._step)
        chunk = bytes(self._data[self._pos : self._pos + size])
        self._pos += len(chunk)
        return chunk


def key_of(data: bytes) -> str:
    return content_key("sha256:" + hashlib.sha256(data).hexdigest())


def read_all(stream: Iterable[bytes]) -> bytes:
    return b"".join(stream)


def sha256_streamed(subject: EngineUnderTest, key: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with subject.engine.read(key) as stream:
        for chunk in stream:
            assert len(chunk) <= 8 * MiB, "a read chunk must stay small"
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# --- whole objects ---


def test_write_64_mib_from_stream_reads_back_identical(subject: EngineUnderTest) -> None:
    data = random_bytes(64 * MiB)
    key = key_of(data)

    written = subject.engine.write(key, TrickleReader(data, step=1 * MiB), size=len(data))

    assert written == len(data)
    assert subject.engine.stat(key) is not None
    assert subject.engine.stat(key).size == len(data)  # type: ignore[union-attr]
    assert sha256_streamed(subject, key) == (hashlib.sha256(data).hexdigest(), len(data))
    assert subject.list_keys() == [key], "no staging object may stay behind"


def test_write_without_declared_size_works(subject: EngineUnderTest) -> None:
    data = random_bytes(3 * MiB + 17)
    key = key_of(data)

    subject.engine.write(key, TrickleReader(data), size=None)

    assert read_all(subject.engine.read(key)) == data


def test_zero_byte_object_round_trips(subject: EngineUnderTest) -> None:
    key = key_of(b"")

    assert subject.engine.write(key, io.BytesIO(b""), size=0) == 0

    assert subject.engine.stat(key).size == 0  # type: ignore[union-attr]
    assert read_all(subject.engine.read(key)) == b""


def test_missing_object_stat_none_read_raises_delete_is_quiet(subject: EngineUnderTest) -> None:
    key = key_of(b"never written")

    assert subject.engine.stat(key) is None
    with pytest.raises(ObjectNotFound):
        read_all(subject.engine.read(key))
    subject.engine.delete(key)  # no error


def test_delete_removes_object(subject: EngineUnderTest) -> None:
    data = b"to be deleted"
    key = key_of(data)
    subject.engine.write(key, io.BytesIO(data), size=len(data))

    subject.engine.delete(key)

    assert subject.engine.stat(key) is None
    assert subject.list_keys() == []


# --- ranges ---


@pytest.fixture
def ranged(subject: EngineUnderTest) -> tuple[EngineUnderTest, str, bytes]:
    data = random_bytes(1 * MiB + 123)
    key = key_of(data)
    subject.engine.write(key, io.BytesIO(data), size=len(data))
    return subject, key, data


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 10, slice(0, 10)),  # start
        (1000, 5000, slice(1000, 6000)),  # middle
        (MiB + 100, None, slice(MiB + 100, None)),  # suffix
        (MiB, 10 * MiB, slice(MiB, None)),  # length past the end is clamped
        (MiB + 122, 1, slice(MiB + 122, MiB + 123)),  # last byte
    ],
)
def test_range_read_returns_exact_bytes(
    ranged: tuple[EngineUnderTest, str, bytes], offset: int, length: int | None, expected: slice
) -> None:
    subject, key, data = ranged

    with subject.engine.read(key, offset=offset, length=length) as stream:
        got = read_all(stream)

    assert got == data[expected]


def test_range_starting_past_the_end_is_invalid(ranged: tuple[EngineUnderTest, str, bytes]) -> None:
    subject, key, data = ranged

    with pytest.raises(InvalidRange):
        read_all(subject.engine.read(key, offset=len(data) + 5, length=10))


# --- chunked sessions ---


def test_session_one_big_chunk(subject: EngineUnderTest) -> None:
    data = random_bytes(20 * MiB + 5)
    key = key_of(data)
    engine = subject.engine

    state = engine.upload_begin(upload_id="bigchunk", expected_size=None)
    state = engine.upload_append(state, TrickleReader(data, step=MiB), length=len(data))
    size = engine.upload_complete(state, key)

    assert size == len(data)
    assert sha256_streamed(subject, key) == (hashlib.sha256(data).hexdigest(), len(data))
    assert subject.list_keys() == [key]
    assert subject.open_sessions() == 0


def test_session_many_chunks_smaller_than_a_part(subject: EngineUnderTest) -> None:
    data = random_bytes(12 * MiB + 7)
    key = key_of(data)
    engine = subject.engine
    step = 300 * 1024 + 1  # never aligned with a part boundary

    state = engine.upload_begin(upload_id="smallchunks")
    for start in range(0, len(data), step):
        chunk = data[start : start + step]
        state = engine.upload_append(state, io.BytesIO(chunk), length=len(chunk))
        assert engine.upload_size(state) == start + len(chunk)
    engine.upload_complete(state, key)

    assert read_all(engine.read(key)) == data
    assert subject.list_keys() == [key], "staged tails must be cleaned up"
    assert subject.open_sessions() == 0


def test_session_resumed_by_another_instance_from_stored_state(subject: EngineUnderTest) -> None:
    data = random_bytes(9 * MiB + 333)
    key = key_of(data)
    first, cut = subject.engine, 5 * MiB + 1

    state = first.upload_begin(upload_id="resumed")
    state = first.upload_append(state, io.BytesIO(data[:cut]), length=cut)
    stored = json.dumps(state)  # what the registry keeps in its database

    other = subject.remake()
    resumed = json.loads(stored)
    resumed = other.upload_append(resumed, io.BytesIO(data[cut:]), length=len(data) - cut)
    other.upload_complete(resumed, key)

    assert read_all(other.read(key)) == data


def test_session_of_zero_bytes_completes(subject: EngineUnderTest) -> None:
    key = key_of(b"")
    state = subject.engine.upload_begin(upload_id="empty")

    subject.engine.upload_complete(state, key)

    assert subject.engine.stat(key).size == 0  # type: ignore[union-attr]


def test_session_abort_leaves_nothing_behind(subject: EngineUnderTest) -> None:
    data = random_bytes(10 * MiB + 99)
    key = key_of(data)
    engine = subject.engine
    state = engine.upload_begin(upload_id="aborted")
    state = engine.upload_append(state, io.BytesIO(data), length=len(data))

    engine.upload_abort(state)
    engine.upload_abort(state)  # twice is harmless

    assert engine.stat(key) is None
    assert subject.list_keys() == []
    assert subject.open_sessions() == 0


# --- copies ---

SERVER_SIDE = {("s3", "s3"), ("radosgw", "radosgw"), ("gcs", "gcs"), ("swift", "swift")}


@pytest.mark.parametrize(("source_kind", "target_kind"), list(itertools.product(KINDS, KINDS)))
def test_copy_between_every_pair_of_kinds(
    make_engine: Callable[[str], EngineUnderTest], source_kind: str, target_kind: str
) -> None:
    source, target = make_engine(source_kind), make_engine(target_kind)
    data = random_bytes(9 * MiB + 1)
    key = key_of(data)
    source.engine.write(key, io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key, target.engine)

    expected = "server" if (source_kind, target_kind) in SERVER_SIDE else "stream"
    assert result.method == expected
    assert result.size == len(data)
    if expected == "stream":
        assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert sha256_streamed(target, key) == (hashlib.sha256(data).hexdigest(), len(data))


def test_copy_across_two_s3_regions_streams(make_engine: Callable[[str], EngineUnderTest]) -> None:
    source, target = make_engine("s3"), make_engine("s3_b")
    data = random_bytes(6 * MiB)
    key = key_of(data)
    source.engine.write(key, io.BytesIO(data), size=len(data))

    result = source.engine.copy_to(key, target.engine)

    assert result.method == "stream"
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert read_all(target.engine.read(key)) == data


def test_copy_of_missing_object_raises_not_found(
    make_engine: Callable[[str], EngineUnderTest],
) -> None:
    source, target = make_engine("memory"), make_engine("memory")

    with pytest.raises(ObjectNotFound):
        source.engine.copy_to(key_of(b"absent"), target.engine)


@pytest.mark.parametrize("kind", KINDS)
def test_copy_with_a_known_size_asks_no_stat_and_a_missing_object_is_not_found(
    make_engine: Callable[[str], EngineUnderTest], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = make_engine(kind), make_engine(kind)  # server-side where the kind has it
    data = random_bytes(3 * MiB)
    key = key_of(data)
    source.engine.write(key, io.BytesIO(data), size=len(data))
    stats: list[str] = []
    real_stat = source.engine.stat

    def counted_stat(k: str) -> object:
        stats.append(k)
        return real_stat(k)

    monkeypatch.setattr(source.engine, "stat", counted_stat)

    result = source.engine.copy_to(key, target.engine, size=len(data))

    assert stats == []
    assert result.size == len(data)
    assert sha256_streamed(target, key) == (hashlib.sha256(data).hexdigest(), len(data))
    with pytest.raises(ObjectNotFound):
        source.engine.copy_to(key_of(b"absent"), target.engine, size=10)


# --- direct URLs and probes ---

URL_KINDS = {"s3", "radosgw", "swift"}


def test_direct_url_serves_the_bytes_to_a_plain_http_client(subject: EngineUnderTest) -> None:
    data = random_bytes(2 * MiB + 3)
    key = key_of(data)
    subject.engine.write(key, io.BytesIO(data), size=len(data))

    url = subject.engine.direct_url(key, expires_in=120)

    if subject.kind not in URL_KINDS:
        # memory and local have none; gcs signs only with a service-account key (test_gcs.py)
        assert url is None
        return
    assert url is not None
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == data


def test_probe_succeeds_and_leaves_nothing(subject: EngineUnderTest) -> None:
    subject.engine.probe(timeout=10)

    assert subject.list_keys() == []


# --- listings (the audit's view of a store) ---


def _listing_fill(subject: EngineUnderTest) -> dict[str, int]:
    """Write five small content objects, one staging object and one object outside the prefix."""
    written: dict[str, int] = {}
    for size in (0, 1, 17, 300, 4096):
        data = random_bytes(size)
        key = key_of(data + b"listing")  # a content key whose name is not that of its bytes
        subject.engine.write(key, io.BytesIO(data), size=size)
        written[key] = size
    subject.engine.write("_uploads/x1/tail-1", io.BytesIO(b"staged"), size=6)
    return written


def test_listing_yields_every_object_under_the_prefix_with_its_size_in_key_order(
    subject: EngineUnderTest,
) -> None:
    written = _listing_fill(subject)

    before = datetime.now(UTC) - timedelta(minutes=5)
    listed = list(subject.engine.list_objects("sha256/"))

    assert [(item.key, item.size) for item in listed] == sorted(written.items())
    # The audit deletes orphans by age: every store says when an object was written.
    assert all(item.modified is not None and item.modified > before for item in listed)


def test_listing_pages_and_resumes_after_a_key(subject: EngineUnderTest) -> None:
    written = _listing_fill(subject)
    subject.engine.list_page_size = 2  # five objects: three pages
    keys = sorted(written)

    everything = [item.key for item in subject.engine.list_objects("sha256/")]
    after = [item.key for item in subject.engine.list_objects("sha256/", start_after=keys[1])]

    assert everything == keys
    assert after == keys[2:]


def test_listing_an_empty_prefix_yields_nothing(subject: EngineUnderTest) -> None:
    _listing_fill(subject)

    assert list(subject.engine.list_objects("sha512/")) == []


def test_listing_gives_the_whole_size_of_an_object_written_in_parts(
    subject: EngineUnderTest,
) -> None:
    engine = subject.engine
    engine.part_size = engine.min_part_size if engine.min_part_size > 1 else 64 * 1024
    data = random_bytes(2 * engine.part_size + 5)
    key = key_of(data)
    state = engine.upload_begin(upload_id="listparts")
    state = engine.upload_append(state, io.BytesIO(data))
    engine.upload_complete(state, key)

    assert [(item.key, item.size) for item in engine.list_objects("sha256/")] == [(key, len(data))]
