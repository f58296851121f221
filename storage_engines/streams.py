"""Byte streams passed between engines, requests and hashes, with bounded memory."""

import hashlib
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Protocol

CHUNK = 1024 * 1024


class Readable(Protocol):
    """Anything with ``read(n)``: a file, a request body, a ByteStream."""

    def read(self, size: int = -1, /) -> bytes: ...


class ByteStream:
    """An iterator of byte chunks that can also be read like a file, and must be closed."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        close: Callable[[], None] | None = None,
        *,
        file: IO[bytes] | None = None,
        md5: str | None = None,
    ) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._close = close
        # Bytes of the last chunk not read yet: ``_buffer[_offset:]``. An offset, not a slice
        # kept for later: slicing off the rest copied it, again on every small read (a 16 KiB
        # read from a 1 MiB chunk copied up to 1 MiB).
        self._buffer = b""
        self._offset = 0
        self.closed = False
        #: The open file the chunks come from, positioned at the first byte, when they come from
        #: a local file: a WSGI server may then send it with sendfile() instead of the chunks.
        self.file = file
        #: The MD5 (hex) of the whole object, when the store that serves it vouches for it (an
        #: S3 ETag of a single-part object): a target that checks MD5s can use it unhashed.
        self.md5 = md5

    def _rest(self) -> bytes:
        rest = self._buffer[self._offset :] if self._offset else self._buffer
        self._buffer, self._offset = b"", 0
        return rest

    def __iter__(self) -> Iterator[bytes]:
        if len(self._buffer) > self._offset:
            yield self._rest()
        for chunk in self._chunks:
            if chunk:
                yield chunk

    def read(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` bytes (all remaining bytes when ``size`` is negative)."""
        if size is None or size < 0:
            return self._rest() + b"".join(self._chunks)
        available = len(self._buffer) - self._offset
        if available >= size:
            start = self._offset
            self._offset += size
            return self._buffer[start : self._offset]
        # Gather the pieces, then join once: adding each chunk to the buffer copied the part
        # again per chunk (36 MiB of copies for one 8 MiB part read in 1 MiB chunks).
        pieces, have = [self._rest()], available
        while have < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            pieces.append(chunk)
            have += len(chunk)
        if have <= size:
            return b"".join(pieces)
        # Keep the tail of the last chunk without copying it.
        last = pieces.pop()
        keep = len(last) - (have - size)
        self._buffer, self._offset = last, keep
        pieces.append(last[:keep])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        """Release the underlying connection or file."""
        if not self.closed:
            self.closed = True
            if self._close is not None:
                self._close()

    def __enter__(self) -> "ByteStream":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class CountingReader:
    """Wrap a readable, counting the bytes read and stopping after ``limit`` of them."""

    def __init__(self, source: Readable, limit: int | None = None) -> None:
        self._source = source
        self._limit = limit
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        if self._limit is not None:
            remaining = self._limit - self.size
            if remaining <= 0:
                return b""
            size = remaining if size is None or size < 0 else min(size, remaining)
        data = self._source.read(size)
        self.size += len(data)
        return data


class HashingReader(CountingReader):
    """Wrap a readable, counting and hashing (SHA-256) every byte read through it."""

    def __init__(self, source: Readable, limit: int | None = None) -> None:
        super().__init__(source, limit)
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = super().read(size)
        self.sha256.update(data)
        return data

    def hexdigest(self) -> str:
        """Return the SHA-256 of the bytes read so far, in hex."""
        return self.sha256.hexdigest()


def iter_readable(source: Readable, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """Yield the bytes of a readable in chunks of at most ``chunk_size``."""
    while True:
        data = source.read(chunk_size)
        if not data:
            return
        yield data
