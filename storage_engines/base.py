"""The storage engine contract: every backend implements this one class.

Methods are grouped like Django's ``Storage``: what an engine must implement, what it may
override for speed (a native one-shot write, a server-side copy, direct URLs), and what the base
class provides on top (chunked upload sessions with part buffering, streamed copies, probes).
"""

import concurrent.futures
import contextlib
import copy
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, ClassVar, Literal

from .errors import (
    InvalidRange,
    ObjectNotFound,
    ObjectTooLarge,
    SourceEnded,
    StorageError,
    StoragePermanentError,
    StorageUnavailable,
    UploadSessionInvalid,
)
from .keys import upload_key
from .options import EngineOptionsForm
from .streams import CHUNK, ByteStream, CountingReader, HashingReader, Readable

MiB = 1024 * 1024

#: A chunked upload session's state: small, JSON-serialisable, owned and stored by the caller.
UploadState = dict[str, Any]


@dataclass(frozen=True)
class ObjectStat:
    """What an engine knows about a stored object."""

    size: int


@dataclass(frozen=True)
class ListedObject:
    """One object of a listing: its key (without the engine's path prefix), size, and when it
    was last written (None when the store does not say)."""

    key: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True)
class Deadlines:
    """How long one storage call may wait, in seconds: a metadata call (stat, a HEAD, the first
    byte of a read, a delete) short and without retries, so that a hung store is left for the
    next location; a streamed body (an upload part, a copy, the rest of a read) longer."""

    connect: float = 2.0
    metadata_read: float = 3.0
    stream_read: float = 20.0
    stream_attempts: int = 2

    @classmethod
    def from_settings(cls) -> "Deadlines":
        """Return the deadlines set in Django's settings (``QUAY_GEO_STORAGE_*``), else defaults."""
        from django.conf import settings

        default = cls()
        if not settings.configured:
            return default
        return cls(
            connect=float(getattr(settings, "QUAY_GEO_STORAGE_CONNECT_TIMEOUT", default.connect)),
            metadata_read=float(
                getattr(settings, "QUAY_GEO_STORAGE_METADATA_TIMEOUT", default.metadata_read)
            ),
            stream_read=float(
                getattr(settings, "QUAY_GEO_STORAGE_READ_TIMEOUT", default.stream_read)
            ),
            stream_attempts=int(
                getattr(settings, "QUAY_GEO_STORAGE_ATTEMPTS", default.stream_attempts)
            ),
        )


#: Objects asked for per listing request (the most S3 ListObjectsV2 answers in one page).
LIST_PAGE = 1000


@dataclass(frozen=True)
class CopyResult:
    """How an object reached another engine, and what was written when it streamed."""

    method: Literal["server", "stream"]
    size: int
    sha256: str | None  # None for a server-side copy: the bytes never passed through us


def range_resolve(size: int, offset: int, length: int | None) -> tuple[int, int]:
    """Return ``(offset, length)`` clamped to an object of ``size`` bytes, or raise InvalidRange."""
    if offset < 0 or (length is not None and length < 0):
        raise InvalidRange(f"invalid range offset={offset} length={length}")
    if offset > size or (offset == size and size > 0):
        raise InvalidRange(f"offset {offset} is past the end of a {size}-byte object")
    available = size - offset
    return offset, available if length is None else min(length, available)


class StorageEngine(ABC):
    """One configured storage backend at one location."""

    #: The engine kind, the key of the engine table (``s3``, ``gcs``, ...).
    kind: ClassVar[str]
    #: The options declaration: its fields are the engine's only options.
    options_form: ClassVar[type[EngineOptionsForm]]
    #: A non-final part of a chunked session must hold at least this many bytes.
    min_part_size: ClassVar[int] = 1
    #: Non-final parts must be a multiple of this many bytes (GCS: 256 KiB).
    part_multiple: ClassVar[int] = 1
    #: Largest object the engine stores, None when unbounded.
    max_object_size: ClassVar[int | None] = None
    #: True when a session's parts live outside the engine (a local temp file).
    single_host_sessions: ClassVar[bool] = False
    #: True when a session survives an append the store failed: its parts are numbered from the
    #: caller's state, so a retry of the same append overwrites what the failed one wrote.
    append_retryable: ClassVar[bool] = False
    #: True when calls cross a network and may hang: a pull bounds them with a time budget
    #: on a helper thread. Local disk and memory answer in the caller's thread.
    remote: ClassVar[bool] = True

    def __init__(self, *, location_id: str, options: dict[str, Any]) -> None:
        self.location_id = location_id
        self.options = options
        self.part_size: int = max(self.min_part_size, 8 * MiB)
        self.list_page_size: int = LIST_PAGE
        self.deadlines = Deadlines.from_settings()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location_id}>"

    # --- Must implement: objects ------------------------------------------------------------

    @abstractmethod
    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> ByteStream:
        """Return a stream of the object's bytes from ``offset``; raise ObjectNotFound if absent."""

    @abstractmethod
    def stat(self, key: str) -> ObjectStat | None:
        """Return the object's size, or None if there is no object at ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""

    @abstractmethod
    def list_objects(
        self, prefix: str, *, start_after: str | None = None
    ) -> Iterator[ListedObject]:
        """Yield the objects whose keys start with ``prefix`` (and sort after ``start_after``),
        in ascending byte order of their keys, fetched ``list_page_size`` at a time."""

    # --- Must implement: chunked sessions (called by the template methods below) ---------------

    @abstractmethod
    def _session_start(self, state: UploadState) -> None:
        """Open the native upload session, recording what it needs in ``state``."""

    @abstractmethod
    def _session_write_part(self, state: UploadState, data: IO[bytes], size: int) -> None:
        """Append one non-final part of ``size`` bytes (already buffered) to the session."""

    @abstractmethod
    def _session_complete(
        self, state: UploadState, key: str, last: IO[bytes] | None, last_size: int
    ) -> None:
        """Append the final part (possibly empty) and make the object visible at ``key``."""

    @abstractmethod
    def _session_abort(self, state: UploadState) -> None:
        """Discard the native session and everything it wrote."""

    # --- May override: native fast paths ------------------------------------------------------

    def write(
        self, key: str, stream: Readable, *, size: int | None = None, md5: str | None = None
    ) -> int:
        """Write a whole object from a stream with memory bounded by a part; return its size.

        ``md5``: the MD5 (hex) of the bytes, when the caller has it from the source store; an
        engine whose store checks uploads by MD5 (Swift) sends it instead of hashing the bytes.
        """
        state = self.upload_begin(upload_id=uuid.uuid4().hex, expected_size=size)
        try:
            with tempfile.SpooledTemporaryFile(max_size=state["part_size"]) as pending:
                last_size = self._parts_feed(state, stream, pending, 0)
                pending.seek(0)
                self._session_complete(state, key, pending if last_size else None, last_size)
        except BaseException:
            self._session_abort(state)
            raise
        return int(state["size"]) + last_size

    def direct_url(self, key: str, *, expires_in: int = 600, method: str = "GET") -> str | None:
        """Return a short-lived URL that serves the object without credentials, or None."""
        return None

    def _server_side_copy_from(
        self, source: "StorageEngine", key: str, target_key: str, size: int
    ) -> bool:
        """Copy ``key`` (``size`` bytes) from ``source`` inside the backend and return True, or
        return False."""
        return False

    def warm(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Build what first use would build (clients, sessions) without touching the network."""

    def _check_container(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Raise ContainerNotFound if the bucket or container is missing."""

    # --- Provided: sessions ---------------------------------------------------------------------

    def upload_begin(self, *, upload_id: str, expected_size: int | None = None) -> UploadState:
        """Start a chunked upload session and return its state."""
        upload_key(upload_id, "check")  # validates the id
        part_size = self.part_size
        if expected_size:
            # Keep a big object under the 10,000-part ceiling common to multipart APIs.
            part_size = max(part_size, _round_up(-(-expected_size // 9000), self.part_multiple))
        state: UploadState = {
            "upload_id": upload_id,
            "size": 0,
            "tail": 0,
            "tails": 0,
            "part_size": part_size,
        }
        self._session_start(state)
        return state

    def upload_size(self, state: UploadState) -> int:
        """Return how many bytes the session holds."""
        return int(state["size"]) + int(state["tail"])

    def upload_append(
        self, state: UploadState, stream: Readable, *, length: int | None = None
    ) -> UploadState:
        """Append ``length`` bytes (or the whole stream) and return the new state.

        A failed append aborts the session (what it wrote may be only partly recorded in any
        state the caller holds), so the caller starts the upload again; except where the store
        failed and the engine is ``append_retryable``: then the session stays as the caller's
        state describes it, and the same append may be tried again.
        """
        before = state
        state = copy.deepcopy(state)
        source = CountingReader(stream, limit=length)
        old_tail = None
        try:
            with tempfile.SpooledTemporaryFile(max_size=state["part_size"]) as pending:
                old_tail = self._tail_read(state, pending)
                buffered = self._parts_feed(state, source, pending, int(state["tail"]))
                if length is not None and source.size != length:
                    raise SourceEnded(f"stream ended after {source.size} of {length} bytes")
                state["tail"] = 0
                self._remainder_store(state, pending, buffered)
        except BaseException as exc:
            with contextlib.suppress(StorageError):
                if self.append_retryable and store_failure(exc):
                    self._append_undo(before, state)
                else:
                    self.upload_abort(state)
                    if old_tail is not None:
                        self.delete(old_tail)
            raise
        # Only now is the old tail no longer needed: a failed append can be retried from the
        # caller's previous state, which still names it.
        if old_tail is not None:
            self.delete(old_tail)
        return state

    def _append_undo(self, before: UploadState, after: UploadState) -> None:
        """Remove what a failed append created that ``before`` does not name and a retry from
        ``before`` would not overwrite (engines that are ``append_retryable``)."""
        return None

    def _parts_feed(
        self, state: UploadState, source: Readable, pending: IO[bytes], buffered: int
    ) -> int:
        """Write every full part read from ``source``; return the size left in ``pending``."""
        part_size = int(state["part_size"])
        while data := source.read(min(CHUNK, part_size - buffered)):
            pending.write(data)
            buffered += len(data)
            if buffered >= part_size:
                self._part_flush(state, pending, buffered)
                buffered = 0
        return buffered

    def upload_complete(self, state: UploadState, key: str) -> int:
        """Finish the session, make the object visible at ``key`` and return its size."""
        state = copy.deepcopy(state)
        size = self.upload_size(state)
        with tempfile.SpooledTemporaryFile(max_size=state.get("part_size", self.part_size)) as last:
            old_tail = self._tail_read(state, last)
            last_size = int(state["tail"])
            last.seek(0)
            self._session_complete(state, key, last if last_size else None, last_size)
        if old_tail is not None:
            self.delete(old_tail)
        return size

    def upload_abort(self, state: UploadState) -> None:
        """Abort the session and remove what it wrote; aborting twice is harmless."""
        if state.get("tail"):
            self.delete(upload_key(state["upload_id"], f"tail-{state['tails']}"))
        with contextlib.suppress(UploadSessionInvalid):
            self._session_abort(state)

    def _part_flush(self, state: UploadState, pending: IO[bytes], size: int) -> None:
        pending.seek(0)
        self._session_write_part(state, pending, size)
        state["size"] = int(state["size"]) + size
        pending.seek(0)
        pending.truncate()

    def _remainder_store(self, state: UploadState, pending: IO[bytes], size: int) -> None:
        """Write what fits the part rules as a part; keep the rest as a staged tail object."""
        whole = size - size % self.part_multiple
        if whole and whole >= self.min_part_size:
            if whole == size:
                self._part_flush(state, pending, size)
                return
            pending.seek(whole)
            rest = pending.read()
            pending.seek(0)
            pending.truncate(whole)
            self._part_flush(state, pending, whole)
            pending.write(rest)
            size -= whole
        if size:
            pending.seek(0)
            # A remainder below the part minimum waits in the engine itself, so that any
            # process (not only this one) can continue the session.
            state["tails"] = int(state["tails"]) + 1
            self.write_small(
                upload_key(state["upload_id"], f"tail-{state['tails']}"), pending, size
            )
            state["tail"] = size

    def _tail_read(self, state: UploadState, into: IO[bytes]) -> str | None:
        """Copy the staged tail object, if any, into ``into``; return its key."""
        if not int(state.get("tail", 0)):
            return None
        key = upload_key(state["upload_id"], f"tail-{state['tails']}")
        with self.read(key) as stream:
            for chunk in stream:
                into.write(chunk)
        return key

    def write_small(self, key: str, data: IO[bytes], size: int) -> None:
        """Write an object known to fit one part (a staged tail, a probe object)."""
        state = self.upload_begin(upload_id=uuid.uuid4().hex, expected_size=size)
        self._session_complete(state, key, data if size else None, size)

    # --- Provided: copies and probes ---

    def copy_to(
        self,
        key: str,
        target: "StorageEngine",
        *,
        target_key: str | None = None,
        size: int | None = None,
        source_md5: bool = True,
    ) -> CopyResult:
        """Copy an object to another engine, server-side when both ends allow it.

        ``size``: the object's size when the caller knows it (replication knows every blob's),
        which saves asking the source; a missing object then fails the copy or the read with
        ObjectNotFound instead of the stat. ``source_md5``: hand the target the MD5 the source
        store gives for the object, if any (False: the target hashes what it needs itself).
        """
        target_key = target_key or key
        if size is None:
            found = self.stat(key)
            if found is None:
                raise ObjectNotFound(f"{key} not found in {self.location_id}")
            size = found.size
        if target.max_object_size is not None and size > target.max_object_size:
            raise ObjectTooLarge(f"{size} bytes exceed {target.location_id}'s limit")
        if target._server_side_copy_from(self, key, target_key, size):
            return CopyResult(method="server", size=size, sha256=None)
        with self.read(key) as stream:
            reader = HashingReader(stream)
            md5 = stream.md5 if source_md5 else None
            written = target.write(target_key, reader, size=size, md5=md5)
        # The size the target says it took; the digest is of what the source gave.
        return CopyResult(method="stream", size=written, sha256=reader.hexdigest())

    def probe(self, *, timeout: float = 5.0) -> None:
        """Check the container exists and a small object can be written, read and deleted."""
        # Not a ``with`` block: leaving one waits for the thread, and a hung endpoint must not
        # hold the caller past its timeout.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe")
        future = pool.submit(self._probe_once)
        try:
            future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise StorageUnavailable(
                f"cannot connect to {self.location_id} within {timeout:g} s"
            ) from None
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _probe_once(self) -> None:
        self._check_container()
        key = f"_probe/{uuid.uuid4().hex}"
        payload = b"quay-geo probe " + key.encode()
        with tempfile.SpooledTemporaryFile() as data:
            data.write(payload)
            data.seek(0)
            self.write_small(key, data, len(payload))
        try:
            with self.read(key) as stream:
                echoed = b"".join(stream)
            if echoed != payload:
                raise StoragePermanentError(
                    f"{self.location_id} returned different bytes than were written"
                )
        finally:
            self.delete(key)


def store_failure(exc: BaseException) -> bool:
    """Return whether ``exc`` is the store's failure, not the sender's (a short or broken body)."""
    return isinstance(exc, StorageError) and not isinstance(exc, SourceEnded)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
