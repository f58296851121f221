"""Local directory engine: atomic writes (temp file + rename). Single-region use only."""

import copy
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from django import forms

from .base import ListedObject, ObjectStat, StorageEngine, UploadState, range_resolve
from .errors import (
    ContainerNotFound,
    ObjectNotFound,
    SourceEnded,
    StorageMisconfigured,
    StorageUnavailable,
    UploadSessionInvalid,
)
from .options import EngineOptionsForm
from .streams import CHUNK, ByteStream, CountingReader, Readable


class LocalOptions(EngineOptionsForm):
    engine_label = "Local Storage"

    storage_path = forms.CharField(help_text="Absolute path of the directory that holds the blobs.")

    def clean_storage_path(self) -> str:
        path = str(self.cleaned_data["storage_path"])
        if not os.path.isabs(path):
            raise forms.ValidationError("Give an absolute path.")
        return path


class LocalEngine(StorageEngine):
    """Objects are files under ``storage_path``; sessions are temp files under ``_uploads``."""

    kind = "local"
    options_form = LocalOptions
    single_host_sessions = True
    remote = False

    def __init__(self, *, location_id: str, options: dict[str, Any]) -> None:
        super().__init__(location_id=location_id, options=options)
        self.root = Path(options["storage_path"])

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StorageMisconfigured(f"key {key!r} escapes the storage directory")
        return path

    def _check_container(self) -> None:
        if not self.root.is_dir():
            raise ContainerNotFound(f"directory {self.root} does not exist")

    def list_objects(
        self, prefix: str, *, start_after: str | None = None
    ) -> Iterator[ListedObject]:
        if not self.root.is_dir():
            raise ContainerNotFound(f"directory {self.root} does not exist")
        top = prefix.rpartition("/")[0]
        for key, size, mtime in self._walk(self.root / top if top else self.root, top):
            if key.startswith(prefix) and (start_after is None or key > start_after):
                yield ListedObject(key, size, datetime.fromtimestamp(mtime, UTC))

    def _walk(self, directory: Path, base: str) -> Iterator[tuple[str, int, float]]:
        """Yield (key, size) under ``directory`` in key order (a directory sorts as "name/")."""
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        named = sorted(
            (entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name, entry)
            for entry in entries
            if not entry.name.startswith(".tmp-")  # a commit in progress (_session_complete)
        )
        for name, entry in named:
            key = f"{base}/{name}" if base else name
            if name.endswith("/"):
                yield from self._walk(Path(entry.path), key.rstrip("/"))
            elif entry.is_file(follow_symlinks=False):
                found = entry.stat(follow_symlinks=False)
                yield key, found.st_size, found.st_mtime

    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> ByteStream:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.location_id}") from None
        except OSError as exc:
            raise StorageUnavailable(str(exc)) from exc
        size = os.fstat(handle.fileno()).st_size
        try:
            offset, length = range_resolve(size, offset, length)
        except Exception:
            handle.close()
            raise
        handle.seek(offset)

        def chunks() -> Any:
            remaining = length
            while remaining > 0:
                data = handle.read(min(CHUNK, remaining))
                if not data:
                    return
                remaining -= len(data)
                yield data

        return ByteStream(chunks(), close=handle.close, file=handle)

    def stat(self, key: str) -> ObjectStat | None:
        try:
            return ObjectStat(size=self._path(key).stat().st_size)
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def write(
        self, key: str, stream: Readable, *, size: int | None = None, md5: str | None = None
    ) -> int:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".tmp-", delete=False) as tmp:
            try:
                while data := stream.read(CHUNK):
                    tmp.write(data)
                    written += len(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, target)
        return written

    def upload_append(
        self, state: UploadState, stream: Readable, *, length: int | None = None
    ) -> UploadState:
        """Append straight to the session file: one copy of each byte, no part buffering.

        The generic path buffers each part in a spooled temporary file and copies it again into
        the session file; on one disk that doubled the bytes written per push. A failed append
        aborts the session, as the contract says.
        """
        if int(state.get("tail", 0)):  # a session a generic append left with a staged tail
            return super().upload_append(state, stream, length=length)
        state = copy.deepcopy(state)
        source = CountingReader(stream, limit=length)
        path = self._session_path(state)
        try:
            try:
                handle = path.open("r+b")
            except FileNotFoundError:
                raise UploadSessionInvalid(f"no upload session {state['upload_id']}") from None
            with handle:
                handle.seek(self.upload_size(state))  # a retried request overwrites
                while data := source.read(CHUNK):
                    handle.write(data)
                handle.truncate()
            if length is not None and source.size != length:
                raise SourceEnded(f"stream ended after {source.size} of {length} bytes")
        except BaseException:
            self.upload_abort(state)
            raise
        state["size"] = self.upload_size(state) + source.size
        state["tail"] = 0
        return state

    def _session_path(self, state: UploadState) -> Path:
        return self._path(f"_uploads/{state['upload_id']}/data")

    def _session_start(self, state: UploadState) -> None:
        path = self._session_path(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def _session_write_part(self, state: UploadState, data: IO[bytes], size: int) -> None:
        path = self._session_path(state)
        if not path.exists():
            raise UploadSessionInvalid(f"no upload session {state['upload_id']}")
        with path.open("r+b") as handle:
            handle.seek(int(state["size"]))  # a retried request overwrites, never duplicates
            shutil.copyfileobj(data, handle, CHUNK)
            handle.truncate()

    def _session_complete(
        self, state: UploadState, key: str, last: IO[bytes] | None, last_size: int
    ) -> None:
        if last is not None:
            self._session_write_part(state, last, last_size)
        path = self._session_path(state)
        if not path.exists():
            raise UploadSessionInvalid(f"no upload session {state['upload_id']}")
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.parent / f".tmp-{uuid.uuid4().hex}"
        os.replace(path, staged)
        with staged.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, target)
        shutil.rmtree(path.parent, ignore_errors=True)

    def _session_abort(self, state: UploadState) -> None:
        shutil.rmtree(self._session_path(state).parent, ignore_errors=True)
