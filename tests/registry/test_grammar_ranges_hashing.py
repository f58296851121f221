"""Unit tests: the name/tag/digest grammar, byte ranges, the hashing plan and the rate limiter."""

import hashlib
import io
import os

import pytest
from django.core.cache import cache
from pytest_django.fixtures import Settings as SettingsWrapper

from registry import errors
from registry.hashing import (
    HashingBody,
    RequestHashing,
    UploadHash,
    digests_known,
    request_hashing,
    stream_digests,
)
from registry.models import HashMode
from registry.names import (
    algorithm_check,
    digest_parse,
    name_check,
    tag_check,
    tag_valid,
)
from registry.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    content_range_parse,
    range_parse,
    upload_range,
)
from registry.ratelimit import rate_check

SHA256_HEX = hashlib.sha256(b"x").hexdigest()
SHA512_HEX = hashlib.sha512(b"x").hexdigest()


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["alice/app", "a/b/c", "my-org/app.v2", "a__b/c_d", "ns/x--y", "0/9", "a/" + "b" * 253]
)
def test_names_in_grammar_are_accepted(name: str) -> None:
    assert name_check(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "Alice/app",
        "alice/../app",
        "alice/..",
        "../etc",
        "alice//app",
        "alice/app/",
        "/alice/app",
        "alice/-app",
        "alice/app-",
        "alice/a___b",
        "alice/a..b",
        "alice/%2e%2e",
        "alice/app:tag",
        "a/" + "b" * 254,
    ],
)
def test_names_out_of_grammar_are_name_invalid(name: str) -> None:
    with pytest.raises(errors.NameInvalid):
        name_check(name)


def test_a_single_component_name_explains_that_a_namespace_is_needed() -> None:
    with pytest.raises(errors.NameInvalid) as exc:
        name_check("app")

    assert "namespace" in exc.value.text


@pytest.mark.parametrize("tag", ["latest", "v1.0", "_x", "A-b_c.D", "a" * 128])
def test_tags_in_grammar_are_accepted(tag: str) -> None:
    assert tag_valid(tag)
    assert tag_check(tag) == tag


@pytest.mark.parametrize("tag", [".hidden", "-x", "a" * 129, "a/b", "a:b", "", "tag!"])
def test_tags_out_of_grammar_are_manifest_invalid(tag: str) -> None:
    assert not tag_valid(tag)
    with pytest.raises(errors.ManifestInvalid):
        tag_check(tag)


def test_sha256_and_sha512_digests_parse() -> None:
    assert str(digest_parse(f"sha256:{SHA256_HEX}")) == f"sha256:{SHA256_HEX}"
    assert digest_parse(f"sha512:{SHA512_HEX}").algorithm == "sha512"


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:totallywrong",
        f"sha256:{SHA256_HEX[:-1]}",
        f"sha256:{SHA256_HEX.upper()}",
        f"sha512:{SHA256_HEX}",
        f"md5:{hashlib.md5(b'x').hexdigest()}",  # noqa: S324 - a digest we must refuse
        f"blake3:{SHA256_HEX}",
        SHA256_HEX,
        "sha256:",
        ":abc",
        "SHA256:" + SHA256_HEX,
    ],
)
def test_other_algorithms_and_malformed_digests_are_digest_invalid(digest: str) -> None:
    with pytest.raises(errors.DigestInvalid):
        digest_parse(digest)


def test_digest_algorithm_parameter_other_than_sha256_or_sha512_is_unsupported() -> None:
    assert algorithm_check("sha512") == "sha512"
    with pytest.raises(errors.Unsupported):
        algorithm_check("md5")


# --- ranges --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", ByteRange(0, 9, 100)),
        ("bytes=10-", ByteRange(10, 99, 100)),
        ("bytes=-10", ByteRange(90, 99, 100)),
        ("bytes=90-500", ByteRange(90, 99, 100)),
        ("bytes=-500", ByteRange(0, 99, 100)),
        ("bytes=99-99", ByteRange(99, 99, 100)),
        ("BYTES=0-9", ByteRange(0, 9, 100)),
        ("bytes=0-9,", ByteRange(0, 9, 100)),
        ("bytes=0-" + "9" * 5000, ByteRange(0, 99, 100)),
        ("bytes=-" + "9" * 5000, ByteRange(0, 99, 100)),
    ],
)
def test_ranges_are_resolved_and_clamped(header: str, expected: ByteRange) -> None:
    assert range_parse(header, 100) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "items=0-9",
        "items=9-2",
        "bytes=0-1,5-6",
        "bytes=0-1,200-",
        "bytes=-",
        "bytes=a-b",
        "bytes=",
        "bytes=,",
        "bytes=0-9;x",
        "bytes=\u0663-",
    ],
)
def test_other_units_bad_syntax_and_multiple_ranges_are_ignored(header: str | None) -> None:
    assert range_parse(header, 100) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=200-300", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
        ("bytes=" + "9" * 5000 + "-", 100),
        ("bytes=200-300,100-", 100),
    ],
)
def test_ranges_selecting_nothing_are_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        range_parse(header, size)

    assert exc.value.size == size


@pytest.mark.parametrize("header", ["bytes=500-0", "bytes=9-2", "bytes=1-0", "bytes=0-1,9-2"])
def test_a_range_whose_last_byte_precedes_its_first_is_rejected(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        range_parse(header, 1000)

    assert exc.value.size == 1000


def test_content_range_of_a_partial_answer() -> None:
    assert ByteRange(5, 9, 100).content_range() == "bytes 5-9/100"
    assert ByteRange(5, 9, 100).length == 5


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0-9", (0, 9)),
        ("10-19", (10, 19)),
        ("bytes 0-9/100", (0, 9)),
        ("bytes=5-6", (5, 6)),
        ("0-9/*", (0, 9)),
    ],
)
def test_upload_content_ranges_parse(header: str, expected: tuple[int, int]) -> None:
    assert content_range_parse(header) == expected


@pytest.mark.parametrize("header", ["", "0-", "-9", "a-b", "0-9-10", "bytes */100"])
def test_malformed_upload_content_ranges_do_not_parse(header: str) -> None:
    assert content_range_parse(header) is None


def test_upload_range_strings_have_no_bytes_prefix() -> None:
    assert upload_range(0) == "0-0"
    assert upload_range(1) == "0-0"
    assert upload_range(42) == "0-41"


# --- hashing -------------------------------------------------------------------------------------


def _fed(plan: RequestHashing, data: bytes) -> None:
    body = HashingBody(io.BytesIO(data), plan)
    while body.read(7):
        pass


def test_a_streamed_first_request_hashes_with_hashlib_and_stores_the_finished_digest() -> None:
    data = os.urandom(5000)
    plan = request_hashing(UploadHash(), size=0, algorithm="sha256", chunked=False)
    _fed(plan, data)

    stored = plan.result()

    assert stored.mode == HashMode.FINAL
    assert stored.sha256_state is None
    assert digests_known(stored, "sha256") == (hashlib.sha256(data).hexdigest(),) * 2


def test_chunked_requests_resume_a_raw_112_byte_sha256_state() -> None:
    first, second = os.urandom(3000), os.urandom(4000)
    plan = request_hashing(UploadHash(), size=0, algorithm="sha256", chunked=True)
    _fed(plan, first)
    stored = plan.result()
    plan = request_hashing(stored, size=len(first), algorithm="sha256", chunked=True)
    _fed(plan, second)

    final = plan.result()

    assert stored.mode == HashMode.RESUMABLE
    assert stored.sha256_state is not None
    assert len(stored.sha256_state) == 112
    assert digests_known(final, "sha256") == (hashlib.sha256(first + second).hexdigest(),) * 2


def test_a_request_after_a_hashlib_request_marks_the_upload_for_rehash() -> None:
    plan = request_hashing(UploadHash(), size=0, algorithm="sha256", chunked=False)
    _fed(plan, b"abc")
    plan = request_hashing(plan.result(), size=3, algorithm="sha256", chunked=True)
    _fed(plan, b"def")

    stored = plan.result()

    assert stored.mode == HashMode.REHASH
    assert digests_known(stored, "sha256") is None


def test_sha512_uploads_hash_both_algorithms_in_one_request_and_rehash_on_more() -> None:
    data = os.urandom(999)
    plan = request_hashing(UploadHash(), size=0, algorithm="sha512", chunked=True)
    _fed(plan, data)
    stored = plan.result()
    again = request_hashing(stored, size=len(data), algorithm="sha512", chunked=True)
    _fed(again, b"more")

    assert digests_known(stored, "sha512") == (
        hashlib.sha256(data).hexdigest(),
        hashlib.sha512(data).hexdigest(),
    )
    assert again.result().mode == HashMode.REHASH


def test_an_empty_request_leaves_the_hash_state_as_it_was() -> None:
    plan = request_hashing(UploadHash(), size=0, algorithm="sha256", chunked=True)
    _fed(plan, b"")

    assert plan.result() == UploadHash()
    assert digests_known(UploadHash(), "sha256") == (hashlib.sha256(b"").hexdigest(),) * 2


def test_a_resumable_state_cannot_give_a_sha512() -> None:
    plan = request_hashing(UploadHash(), size=0, algorithm="sha256", chunked=True)
    _fed(plan, b"abc")

    assert digests_known(plan.result(), "sha512") is None


def test_stream_digests_reads_back_both_digests() -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)

    found = stream_digests(io.BytesIO(data), sha512=True)

    assert (found.size, found.sha256, found.sha512) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        hashlib.sha512(data).hexdigest(),
    )


# --- rate limit ----------------------------------------------------------------------------------


def test_the_rate_limit_is_off_by_default(settings: SettingsWrapper) -> None:
    cache.clear()
    for _ in range(1000):
        rate_check(client="ip:1.2.3.4", now=120.0)


def test_the_rate_limit_refuses_past_the_limit_with_retry_after(
    settings: SettingsWrapper, db: None
) -> None:
    settings.QUAY_GEO_RATE_LIMIT_PER_MINUTE = 3
    cache.clear()
    for _ in range(3):
        rate_check(client="user:1", now=125.0)

    with pytest.raises(errors.TooManyRequests) as exc:
        rate_check(client="user:1", now=130.0)

    assert exc.value.status == 429
    assert exc.value.headers["Retry-After"] == "50"
    rate_check(client="user:2", now=130.0)  # another client has its own count
    rate_check(client="user:1", now=181.0)  # and a new minute a new one
