"""In-memory engine for fast unit tests: every instance owns its own objects."""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from django import forms

from .base import ListedObject, ObjectStat, StorageEngine, UploadState, range_resolve
from .errors import ObjectNotFound, UploadSessionInvalid
from .options import EngineOptionsForm
from .streams import CHUNK, ByteStream


class MemoryOptions(EngineOptionsForm):
    engine_label = "In-memory (tests only)"

    max_object_size = forms.IntegerField(
        required=False, min_value=0, help_text="Refuse objects larger than this (tests)."
    )


class MemoryEngine(StorageEngine):
    """Objects in a dict; upload sessions keep their parts in another dict."""

    kind = "memory"
    options_form = MemoryOptions
    remote = False

    def __init__(self, *, location_id: str, options: dict[str, Any]) -> None:
        super().__init__(location_id=location_id, options=options)
        self.objects: dict[str, bytes] = {}
        #: When each object was written (tests may move it back in time).
        self.modified: dict[str, datetime] = {}
        self.sessions: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        if options.get("max_object_size") is not None:
            self.max_object_size = int(options["max_object_size"])  # type: ignore[misc]

    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> ByteStream:
        data = self.objects.get(key)
        if data is None:
            raise ObjectNotFound(f"{key} not found in {self.location_id}")
        offset, length = range_resolve(len(data), offset, length)
        view = data[offset : offset + length]
        return ByteStream(view[i : i + CHUNK] for i in range(0, len(view), CHUNK))

    def stat(self, key: str) -> ObjectStat | None:
        data = self.objects.get(key)
        return None if data is None else ObjectStat(size=len(data))

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def list_objects(
        self, prefix: str, *, start_after: str | None = None
    ) -> Iterator[ListedObject]:
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix))
        for key in keys:
            if start_after is None or key > start_after:
                data = self.objects.get(key)
                if data is not None:
                    yield ListedObject(key, len(data), self.modified.get(key))

    def _session_start(self, state: UploadState) -> None:
        with self._lock:
            self.sessions[state["upload_id"]] = []

    def _parts(self, state: UploadState) -> list[bytes]:
        parts = self.sessions.get(state["upload_id"])
        if parts is None:
            raise UploadSessionInvalid(f"no upload session {state['upload_id']}")
        return parts

    def _session_write_part(self, state: UploadState, data: IO[bytes], size: int) -> None:
        self._parts(state).append(data.read(size))

    def _session_complete(
        self, state: UploadState, key: str, last: IO[bytes] | None, last_size: int
    ) -> None:
        parts = self._parts(state)
        if last is not None:
            parts.append(last.read(last_size))
        self.objects[key] = b"".join(parts)
        self.modified[key] = datetime.now(UTC)
        del self.sessions[state["upload_id"]]

    def _session_abort(self, state: UploadState) -> None:
        self.sessions.pop(state["upload_id"], None)
