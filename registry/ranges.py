"""HTTP byte ranges (RFC 9110 §14) for blob downloads, and the upload ``Range`` strings.

Only single ranges are served. What RFC 9110 lets a server do with the other forms, and what
this module does:

* another range unit: ignored (the whole blob is served), as §14.2 requires;
* text that is not a ``bytes=`` ranges-specifier (``bytes=a-b``, ``bytes=-``): ignored, as
  §14.2 allows;
* an invalid byte-range-spec, whose last position is below its first (``bytes=500-0``):
  rejected with 416, as §14.2 allows and as Go's ``http.ServeContent`` (hence distribution and
  the OCI conformance suite) does;
* ranges that select nothing (first position at or past the end, a zero suffix, any range of an
  empty blob): 416, per §15.5.17;
* several ranges, some of which are satisfiable: ignored (no multipart answers).

Ends past the blob are clamped. Every 416 carries ``Content-Range: bytes */<size>``.
"""

import re
from dataclasses import dataclass

_BYTES_UNIT = re.compile(r"bytes=", re.IGNORECASE)  # a range unit is case-insensitive
_RANGE_SPEC = re.compile(r"[ \t]*([0-9]*)-([0-9]*)[ \t]*")  # ASCII digits: \d takes "٣"
#: A position with more digits than this is past any blob (and int() refuses 4,300 digits).
_POSITION_DIGITS_MAX = 18
_CONTENT_RANGE = re.compile(r"(?:bytes[= ])?(\d+)-(\d+)(?:/(?:\d+|\*))?")


class RangeNotSatisfiable(Exception):
    """The requested ranges are invalid, or select no byte of the blob."""

    def __init__(self, size: int) -> None:
        super().__init__(f"bytes */{size}")
        self.size = size


@dataclass(frozen=True)
class ByteRange:
    """Inclusive ``first``..``last`` byte positions of a blob of ``size`` bytes."""

    first: int
    last: int
    size: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self) -> str:
        """Return the ``Content-Range`` value of a 206 answer."""
        return f"bytes {self.first}-{self.last}/{self.size}"


def range_parse(header: str | None, size: int) -> ByteRange | None:
    """Return the range a ``Range`` header asks of a blob, None for the whole blob.

    Raise RangeNotSatisfiable when the ranges are invalid or select nothing (module docstring).
    """
    if not header or not _BYTES_UNIT.match(header.strip()):
        return None
    specs = []
    for text in header.strip()[len("bytes=") :].split(","):
        if not text.strip():
            continue  # an empty list element, which RFC 9110 §5.6.1.2 has recipients skip
        match = _RANGE_SPEC.fullmatch(text)
        if match is None or match.groups() == ("", ""):
            return None  # not a ranges-specifier: ignored
        specs.append(match.groups())
    if not specs:
        return None
    ranges = [_spec_resolve(first, last, size) for first, last in specs]
    satisfiable = [byte_range for byte_range in ranges if byte_range is not None]
    if not satisfiable:
        raise RangeNotSatisfiable(size)
    return satisfiable[0] if len(specs) == 1 else None


def _position(text: str) -> int:
    return int(text) if len(text) <= _POSITION_DIGITS_MAX else 10**_POSITION_DIGITS_MAX


def _spec_resolve(first_text: str, last_text: str, size: int) -> ByteRange | None:
    """Return the bytes one byte-range-spec selects, None if none; raise if it is invalid."""
    if not first_text:
        suffix = _position(last_text)
        if suffix == 0 or size == 0:
            return None
        return ByteRange(max(0, size - suffix), size - 1, size)
    first = _position(first_text)
    last = _position(last_text) if last_text else size - 1
    if last_text and last < first:
        raise RangeNotSatisfiable(size)
    if first >= size:
        return None
    return ByteRange(first, min(last, size - 1), size)


def content_range_parse(header: str) -> tuple[int, int] | None:
    """Return ``(first, last)`` of an upload chunk's ``Content-Range``, None if malformed.

    The spec's form is ``<first>-<last>``; the ``bytes`` prefix and a ``/<total>`` suffix that
    some clients add are accepted too.
    """
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def upload_range(size: int) -> str:
    """Return the ``Range`` header of an upload holding ``size`` bytes: ``0-<last byte>``.

    An empty upload answers ``0-0`` like distribution does; clients read it as "nothing yet".
    """
    return f"0-{max(size - 1, 0)}"
