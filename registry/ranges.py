"""HTTP byte ranges (RFC 9110 §14) for blob downloads, and the upload ``Range`` strings.

Only single ranges are honoured; a header that is not one valid ``bytes=`` range is ignored (the
whole blob is served), as RFC 9110 allows. Ends past the blob are clamped. A range that starts
at or past the end (or any range of an empty blob) is unsatisfiable: 416 with
``Content-Range: bytes */<size>``.
"""

import re
from dataclasses import dataclass

_BYTE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CONTENT_RANGE = re.compile(r"(?:bytes[= ])?(\d+)-(\d+)(?:/(?:\d+|\*))?")


class RangeNotSatisfiable(Exception):
    """The requested range selects no byte of the blob."""

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

    Raise RangeNotSatisfiable when the range is valid but selects nothing.
    """
    if not header:
        return None
    match = _BYTE_RANGE.fullmatch(header.strip())
    if match is None:
        return None  # another unit, several ranges or bad syntax: ignored, per RFC 9110
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1, size)
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None  # invalid, hence ignored
    if first >= size:
        raise RangeNotSatisfiable(size)
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
