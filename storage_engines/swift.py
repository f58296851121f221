"""OpenStack Swift engine (python-swiftclient): chunked PUTs, SLO sessions, COPY, TempURLs.

A chunked session PUTs each part as a segment object under ``_segments/<upload id>/`` and
completes with a Static Large Object manifest at the final key. Segments stay out of
``_uploads/`` on purpose: a finished SLO keeps reading them, so a cleanup of abandoned upload
scratch space must never reach them.
"""

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, urlsplit

import requests
import requests.adapters
import urllib3.exceptions
from django import forms
from swiftclient import client as swift
from swiftclient.utils import generate_temp_url

from .base import (
    ListedObject,
    MiB,
    ObjectStat,
    StorageEngine,
    UploadState,
    range_resolve,
)
from .errors import (
    AccessDenied,
    ContainerNotFound,
    InvalidRange,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    StorageMisconfigured,
    StoragePermanentError,
    StorageUnavailable,
    UploadSessionInvalid,
)
from .keys import is_content_key
from .options import EngineOptionsForm, SecretField
from .streams import CHUNK, ByteStream, Readable

logger = logging.getLogger(__name__)
# swiftclient logs failed requests at INFO with the first characters of the token: none.
swift.logger_settings["reveal_sensitive_prefix"] = 0

#: Swift's default ``max_file_size``: the largest plain object, and so the largest COPY.
MAX_OBJECT = 5 * 1024 * MiB
#: A COPY or a manifest PUT answers only once Swift has written or checked every byte.
SLOW_READ_TIMEOUT = 900
_TRANSIENT = frozenset({408, 422, 429, 498, 499})
_MISCONFIGURED = ("Auth versions", "No tenant", "No project", "Unknown auth_version", "Endpoint")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/-]*$")
_PROJECT_KEYS = ("project_name", "project_id", "tenant_name", "tenant_id")
OS_OPTION_KEYS = frozenset(
    {
        *_PROJECT_KEYS,
        "project_domain_name",
        "project_domain_id",
        "user_id",
        "user_domain_name",
        "user_domain_id",
        "region_name",
        "service_type",
        "endpoint_type",
        "object_storage_url",
    }
)


class SwiftOptions(EngineOptionsForm):
    engine_label = "OpenStack Storage (Swift)"

    auth_url = forms.CharField(
        help_text="Identity endpoint: Keystone (https://keystone:5000/v3) or v1 auth "
        "(http://proxy:8080/auth/v1.0)."
    )
    auth_version = forms.ChoiceField(
        choices=[("1", "1 (tempauth, swauth)"), ("2", "2 (Keystone v2)"), ("3", "3 (Keystone v3)")],
        initial="2",
        help_text="Authentication protocol version of auth_url.",
    )
    swift_user = forms.CharField(help_text="User name (account:user for version 1).")
    swift_password = SecretField(help_text="Password or key of the user.")
    swift_container = forms.CharField(
        max_length=256, help_text="Existing container that holds the blobs."
    )
    storage_path = forms.CharField(
        required=False, initial="", help_text="Path prefix of every object in the container."
    )
    os_options = forms.JSONField(
        required=False,
        help_text="Keystone options as a JSON object: user_domain_name, project_name, "
        "project_domain_name, tenant_id, region_name, endpoint_type, ...",
    )
    ca_cert_path = forms.CharField(
        required=False, help_text="CA bundle that signs the Swift and Keystone certificates."
    )
    temp_url_key = SecretField(
        required=False,
        help_text="The account's or container's Temp-URL key; set it to redirect pulls to "
        "Swift with temporary URLs.",
    )
    temp_url_digest = forms.ChoiceField(
        choices=[("sha256", "SHA-256"), ("sha512", "SHA-512"), ("sha1", "SHA-1")],
        initial="sha256",
        help_text="Signature digest of temporary URLs; the cluster must allow it.",
    )
    segment_size_mb = forms.IntegerField(
        initial=8, min_value=1, max_value=5120, help_text="Size of upload segments, in MiB."
    )
    connect_timeout = forms.IntegerField(
        initial=5, min_value=1, max_value=120, help_text="Seconds to wait for a connection."
    )
    retry_count = forms.IntegerField(
        initial=2, min_value=0, max_value=10, help_text="Retries of a failed request."
    )

    def clean_auth_url(self) -> str:
        url = str(self.cleaned_data["auth_url"])
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise forms.ValidationError("Give an http:// or https:// URL.")
        return url

    def clean_swift_container(self) -> str:
        container = str(self.cleaned_data["swift_container"])
        if "/" in container:
            raise forms.ValidationError("A container name cannot contain '/'.")
        return container

    def clean_storage_path(self) -> str:
        path = str(self.cleaned_data.get("storage_path") or "").strip("/")
        if not _SAFE_PATH.match(path) or ".." in path.split("/"):
            raise forms.ValidationError("Use letters, digits, '.', '_', '-' and '/' only.")
        return path

    def clean_os_options(self) -> dict[str, str]:
        value = self.cleaned_data.get("os_options") or {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Give a JSON object.")
        unknown = sorted(set(value) - OS_OPTION_KEYS)
        if unknown:
            raise forms.ValidationError(f"Unknown key(s): {', '.join(unknown)}.")
        return {name: str(item) for name, item in value.items() if item not in (None, "")}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        version, os_options = data.get("auth_version"), data.get("os_options")
        if os_options is None:
            return data
        project = any(os_options.get(name) for name in _PROJECT_KEYS)
        if version == "3":
            if not (os_options.get("user_domain_name") or os_options.get("user_domain_id")):
                self.add_error(
                    "os_options", "Auth version 3 needs user_domain_name (or user_domain_id)."
                )
            if not project:
                self.add_error(
                    "os_options",
                    "Auth version 3 needs project_name (or project_id, tenant_name, tenant_id).",
                )
            named = os_options.get("project_name") or os_options.get("tenant_name")
            if named and not (
                os_options.get("project_domain_name") or os_options.get("project_domain_id")
            ):
                self.add_error(
                    "os_options",
                    "A project given by name needs project_domain_name (or project_domain_id).",
                )
        elif version == "2" and not project and ":" not in str(data.get("swift_user", ":")):
            self.add_error(
                "os_options", "Auth version 2 needs tenant_name (or tenant_id), or tenant:user."
            )
        return data


class _BlockAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, sending a file-like body in blocks of CHUNK bytes.

    urllib3 reads such a body 16 KiB at a time, one read and one send each: a 256 MiB PUT to
    Swift took twice the time and 15 times the client's system CPU it takes in 1 MiB blocks
    (docs/PERFORMANCE.md, case 2).
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = CHUNK
        super().init_poolmanager(*args, **kwargs)


class _Connection(swift.Connection):
    """A swiftclient connection whose Keystone login gets a plain number as its timeout, and
    whose uploads go out in blocks of CHUNK bytes."""

    timeout: Any

    def http_connection(self, url: str | None = None) -> tuple[Any, Any]:
        parsed, conn = super().http_connection(url)
        adapter = _BlockAdapter()
        conn.request_session.mount("http://", adapter)
        conn.request_session.mount("https://", adapter)
        return parsed, conn

    def get_auth(self) -> tuple[str, str]:
        if self.auth_version == "1":
            return super().get_auth()
        # keystoneauth sessions take float(timeout), requests a (connect, read) pair.
        pair, self.timeout = self.timeout, self.timeout[0]
        try:
            return super().get_auth()
        finally:
            self.timeout = pair


def _manifest_delete(
    url: str, token: str, container: str, name: str, *, http_conn: Any, **_: Any
) -> dict[str, Any]:
    """Delete an SLO with its segments in one request and return Swift's bulk-delete report."""
    parsed, conn = http_conn
    path = f"{parsed.path}/{quote(container)}/{quote(name)}?multipart-manifest=delete"
    conn.request("DELETE", path, "", {"X-Auth-Token": token, "Accept": "application/json"})
    response = conn.getresponse()
    body = response.read()
    if not 200 <= response.status < 300:
        raise swift.ClientException.from_response(response, "SLO DELETE failed", body)
    report: dict[str, Any] = json.loads(body)
    return report


def _is_slo(headers: dict[str, str]) -> bool:
    return headers.get("x-static-large-object", "").lower() == "true"


class _SizedBody:
    """The body of a PUT with a Content-Length: exactly ``size`` bytes of a stream, MD5-hashed
    on request.

    A stream that fails or ends early raises StorageUnavailable: swiftclient would take an
    OSError for a dropped connection and retry with a stream it cannot rewind, and a short body
    would keep Swift waiting for the missing bytes until its timeout.
    """

    def __init__(self, source: Readable, size: int, what: str, *, hash_md5: bool) -> None:
        self._source = source
        self._size = size
        self._what = what
        self._md5 = hashlib.md5(usedforsecurity=False) if hash_md5 else None
        self.sent = 0

    def read(self, size: int = -1, /) -> bytes:
        left = self._size - self.sent
        if left <= 0:
            return b""
        try:
            data = self._source.read(left if size is None or size < 0 else min(size, left))
        except OSError as exc:
            raise StorageUnavailable(f"reading the bytes of {self._what} failed: {exc}") from exc
        if not data:
            raise StorageUnavailable(
                f"the bytes of {self._what} ended after {self.sent} of {self._size}"
            )
        if self._md5 is not None:
            self._md5.update(data)
        self.sent += len(data)
        return data

    def md5_hex(self) -> str | None:
        return None if self._md5 is None else self._md5.hexdigest()


class _Joined:
    """Read one readable to its end, then another."""

    def __init__(self, first: Readable, rest: Readable) -> None:
        self._first: Readable | None = first
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if self._first is not None:
            data = self._first.read(size)
            if data:
                return data
            self._first = None
        return self._rest.read(size)


class SwiftEngine(StorageEngine):
    """Objects in one Swift container; sessions are segments joined by an SLO manifest."""

    kind = "swift"
    options_form = SwiftOptions
    # An SLO GET throttles segments under 1 MiB (rate_limit_under_size): only the last may be.
    min_part_size = 1 * MiB
    append_retryable = True
    #: Swift's default ``max_manifest_segments``; bigger sessions nest manifests.
    manifest_segments_max = 1000

    def __init__(self, *, location_id: str, options: dict[str, Any]) -> None:
        super().__init__(location_id=location_id, options=options)
        self.container: str = options["swift_container"]
        self.prefix: str = options.get("storage_path") or ""
        self.user: str = options["swift_user"]
        self.part_size = max(self.min_part_size, int(options["segment_size_mb"]) * MiB)
        self._local = threading.local()

    # --- connections and errors ----------------------------------------------------------------

    def _connection(self, read_timeout: float | None = None, *, quick: bool = False) -> Any:
        """Return this thread's connection: swiftclient connections are not thread-safe.

        ``quick``: of metadata calls, with short timeouts and no retry, so that a store that
        accepts connections and never answers is given up within seconds.
        """
        attribute = "conn_quick" if quick else f"conn_{read_timeout}"
        conn = getattr(self._local, attribute, None)
        if conn is None:
            conn = self._connect(read_timeout or self.deadlines.stream_read, quick=quick)
            setattr(self._local, attribute, conn)
        return conn

    def _connect(self, read_timeout: float, *, quick: bool = False) -> _Connection:
        options = self.options
        version = options["auth_version"]
        if version != "1" and getattr(swift, f"ksclient_v{version}", None) is None:
            raise StorageMisconfigured(
                f"auth version {version} of {self.location_id} needs python-keystoneclient, "
                "which is not installed"
            )
        cacert = options.get("ca_cert_path") or None
        if cacert and not os.path.isfile(cacert):
            raise StorageMisconfigured(f"ca_cert_path {cacert} of {self.location_id} is no file")
        d = self.deadlines
        quick_timeout = (min(options["connect_timeout"], d.connect), d.metadata_read)
        return _Connection(
            authurl=options["auth_url"],
            user=self.user,
            key=options["swift_password"],
            auth_version=version,
            os_options=dict(options.get("os_options") or {}),
            cacert=cacert,
            retries=0 if quick else options["retry_count"],
            starting_backoff=0.5,
            max_backoff=4,
            timeout=quick_timeout if quick else (options["connect_timeout"], read_timeout),
        )

    @contextlib.contextmanager
    def _errors(
        self,
        what: str,
        *,
        missing: StorageError | None = None,
        refused: type[StorageError] = StoragePermanentError,
    ) -> Iterator[None]:
        """Translate swiftclient and connection errors raised inside into the engine's own."""
        try:
            yield
        except swift.ClientException as exc:
            raise self._translate(exc, what, missing, refused) from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(
                f"cannot reach Swift for {what} in {self.location_id}: {exc}"
            ) from exc

    def _translate(
        self,
        exc: Any,
        what: str,
        missing: StorageError | None,
        refused: type[StorageError],
    ) -> StorageError:
        status: int | None = exc.http_status
        where = f"{what} in {self.location_id}"
        message = str(exc.msg)
        if status == 401 or (status is None and message.startswith("Unauthorized")):
            return AccessDenied(f"Swift refused the credentials of user {self.user} ({where})")
        if status == 403:
            return AccessDenied(f"user {self.user} may not {where}")
        if status == 404:
            return missing or ObjectNotFound(f"{where}: not found")
        if status == 413:
            return ObjectTooLarge(f"{where}: larger than Swift accepts")
        if status == 416:
            return InvalidRange(f"{where}: range not satisfiable")
        if status is None:
            if message.strip().startswith(_MISCONFIGURED):
                return StorageMisconfigured(f"{where}: {message.strip()}")
            return StorageUnavailable(f"{where} failed: {message}")
        detail = exc.http_response_content or ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        reason = f"HTTP {status} {exc.http_reason or ''} {detail[:200]}".strip()
        if status >= 500 or status in _TRANSIENT:
            return StorageUnavailable(f"{where} failed: {reason}")
        return refused(f"{where} failed: {reason}")

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _storage_url(self) -> str:
        conn = self._connection()
        if not conn.url:
            with self._errors("authenticate"):
                conn.get_auth()
        return str(conn.url)

    # --- objects -------------------------------------------------------------------------------

    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> ByteStream:
        name = self._name(key)
        if offset < 0 or (length is not None and length < 0) or length == 0:
            return self._read_nothing(key, offset, length)
        headers = None
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers = {"Range": f"bytes={offset}-{end}"}
        try:
            with self._errors(f"GET {name}"):
                _, body = self._connection().get_object(
                    self.container, name, resp_chunk_size=CHUNK, headers=headers
                )
        except InvalidRange:
            # Swift answers 416 to any range of an empty object, which reads as b"" at 0.
            return self._read_nothing(key, offset, length)
        return ByteStream(self._chunks(body, name), close=body.close)

    def _read_nothing(self, key: str, offset: int, length: int | None) -> ByteStream:
        """Return an empty stream if the range is valid but empty; raise otherwise."""
        found = self.stat(key)
        if found is None:
            raise ObjectNotFound(f"{key} not found in {self.location_id}")
        range_resolve(found.size, offset, length)
        return ByteStream([])

    def _chunks(self, body: Iterable[bytes], name: str) -> Iterator[bytes]:
        with self._errors(f"GET {name}"):
            yield from body

    def stat(self, key: str) -> ObjectStat | None:
        headers = self._head(self._name(key))
        return None if headers is None else ObjectStat(size=int(headers["content-length"]))

    def _head(self, name: str) -> dict[str, str] | None:
        try:
            with self._errors(f"HEAD {name}"):
                headers: dict[str, str] = self._connection(quick=True).head_object(
                    self.container, name
                )
        except ObjectNotFound:
            return None
        return headers

    def list_objects(
        self, prefix: str, *, start_after: str | None = None
    ) -> Iterator[ListedObject]:
        strip = len(self._name(""))
        marker = self._name(start_after) if start_after is not None else ""
        while True:
            with self._errors(f"list {prefix}", missing=self._no_container()):
                _, page = self._connection().get_container(
                    self.container,
                    prefix=self._name(prefix),
                    marker=marker,
                    limit=self.list_page_size,
                )
            for item in page:
                # An SLO's listing entry carries the size of the whole object, not the manifest.
                modified = datetime.fromisoformat(item["last_modified"]).replace(tzinfo=UTC)
                yield ListedObject(str(item["name"])[strip:], int(item["bytes"]), modified)
            if len(page) < self.list_page_size:
                return
            marker = str(page[-1]["name"])

    def delete(self, key: str) -> None:
        name = self._name(key)
        headers = self._head(name)
        if headers is not None and _is_slo(headers):
            self._slo_delete(name)
        elif headers is not None:
            self._delete_plain(name)

    def _delete_plain(self, name: str) -> bool:
        """Delete one object (a manifest alone, not its segments); return False if missing."""
        try:
            with self._errors(f"DELETE {name}"):
                self._connection().delete_object(self.container, name)
        except ObjectNotFound:
            return False
        return True

    def _slo_delete(self, name: str) -> None:
        with self._errors(f"DELETE {name}"):
            # swiftclient's delete_object drops the body, where Swift reports failed segments.
            report = self._connection()._retry(None, _manifest_delete, self.container, name)
        status = str(report.get("Response Status", ""))
        errors = [error for error in report.get("Errors", []) if "404" not in str(error)]
        if errors or not status.startswith(("2", "404")):
            denied = status.startswith(("401", "403"))
            error = AccessDenied if denied else StorageUnavailable
            raise error(f"DELETE {name} in {self.location_id}: {status} {errors[:3]}")

    def write(
        self, key: str, stream: Readable, *, size: int | None = None, md5: str | None = None
    ) -> int:
        if size is not None and size > MAX_OBJECT:
            return super().write(key, stream, size=size)
        if size is not None:
            # A content key holds one blob, so an SLO (which takes more than one part) can be
            # there only if this size is above a part: a smaller one needs no HEAD for the
            # segments a new object would orphan. (Left possible: segments of an SLO written
            # when the part size was smaller, if the same blob is written again.)
            fresh = is_content_key(key) and size <= self.part_size
            return self._put_sized(self._name(key), stream, size, md5, fresh=fresh)
        # Unknown length: whatever outgrows one part may outgrow Swift's 5 GiB object limit,
        # so it goes to segments; a shorter stream is one PUT.
        with tempfile.SpooledTemporaryFile(max_size=self.part_size) as head:
            buffered = 0
            while buffered <= self.part_size:
                data = stream.read(min(CHUNK, self.part_size + 1 - buffered))
                if not data:
                    head.seek(0)
                    return self._put_sized(self._name(key), head, buffered, None, fresh=False)
                head.write(data)
                buffered += len(data)
            head.seek(0)
            return super().write(key, _Joined(head, stream), size=None)

    def write_small(self, key: str, data: IO[bytes], size: int) -> None:
        self._put_file(self._name(key), data, size)

    def _put_sized(
        self, name: str, stream: Readable, size: int, md5: str | None, *, fresh: bool
    ) -> int:
        """PUT ``size`` bytes read from ``stream`` as one object, checked by MD5; return the size.

        The body goes out with a Content-Length (chunked encoding copied every chunk once more).
        With ``md5``, the MD5 the source store gave, Swift checks the body against it and
        refuses a mismatch; without, the MD5 is computed on the way and compared with the ETag
        Swift answers. Either way Swift's copy is checked without hashing it twice. ``fresh``:
        no SLO can be at ``name``, so no HEAD looks for its segments first.
        """
        body = _SizedBody(stream, size, f"{name} in {self.location_id}", hash_md5=md5 is None)
        superseded = [] if fresh else self._superseded(name)
        with self._errors(f"PUT {name}", missing=self._no_container()):
            try:
                etag = self._connection().put_object(
                    self.container, name, contents=body, content_length=size, etag=md5
                )
            except swift.ClientException as exc:
                if exc.http_status != 422:
                    raise
                raise StorageUnavailable(
                    f"PUT {name} in {self.location_id}: Swift received other bytes than the "
                    f"source's MD5 {md5} describes"
                ) from exc
        if etag != (md5 or body.md5_hex()):
            self._delete_plain(name)
            raise StorageUnavailable(f"PUT {name} in {self.location_id}: Swift stored other bytes")
        self._segments_delete(superseded)
        return body.sent

    def _put_file(self, name: str, data: IO[bytes], size: int) -> str:
        """PUT ``size`` bytes of a seekable file (retried from its start) and return the ETag."""
        start = data.tell()
        md5 = hashlib.md5(usedforsecurity=False)
        left = size
        while left > 0 and (chunk := data.read(min(CHUNK, left))):
            md5.update(chunk)
            left -= len(chunk)
        data.seek(start)
        with self._errors(f"PUT {name}", missing=self._no_container()):
            etag: str = self._connection().put_object(
                self.container, name, contents=data, content_length=size, etag=md5.hexdigest()
            )
        return etag

    def _no_container(self) -> ContainerNotFound:
        return ContainerNotFound(f"container {self.container} not found in {self.location_id}")

    def _superseded(self, name: str) -> list[dict[str, Any]]:
        """Return the segments of the SLO at ``name``, which a new object there would orphan."""
        headers = self._head(name)
        if headers is None or not _is_slo(headers):
            return []
        with self._errors(f"GET manifest {name}"):
            _, body = self._connection().get_object(
                self.container, name, query_string="multipart-manifest=get"
            )
        segments: list[dict[str, Any]] = json.loads(body)
        return segments

    def _segments_delete(self, segments: list[dict[str, Any]], keep: str | None = None) -> None:
        """Delete segments and sub-manifests no object uses, except ``keep...``; log failures."""
        for segment in segments:
            container, _, name = str(segment.get("name", "")).lstrip("/").partition("/")
            if container != self.container or (keep and name.startswith(keep)):
                continue
            try:
                if segment.get("sub_slo"):
                    self._slo_delete(name)
                else:
                    self._delete_plain(name)
            except StorageError as exc:
                logger.warning("left an unused segment %s in %s: %s", name, self.location_id, exc)

    def _copy(self, source_container: str, source_name: str, target: str) -> None:
        with self._errors(f"COPY {source_container}/{source_name} to {target}"):
            self._connection(SLOW_READ_TIMEOUT).copy_object(
                source_container, source_name, destination=f"/{self.container}/{target}"
            )

    # --- chunked sessions ----------------------------------------------------------------------

    def _segment(self, upload_id: str, number: int) -> str:
        return self._name(f"_segments/{upload_id}/seg-{number:08d}")

    def _submanifest(self, upload_id: str, number: int) -> str:
        return self._name(f"_segments/{upload_id}/manifest-{number:04d}")

    def _session_start(self, state: UploadState) -> None:
        state["segments"] = []  # [etag, size] of each segment, numbered from 1

    def _session_write_part(self, state: UploadState, data: IO[bytes], size: int) -> None:
        number = len(state["segments"]) + 1
        etag = self._put_file(self._segment(state["upload_id"], number), data, size)
        state["segments"].append([etag, size])

    def _session_complete(
        self, state: UploadState, key: str, last: IO[bytes] | None, last_size: int
    ) -> None:
        upload_id = state["upload_id"]
        segments = [
            (self._segment(upload_id, number), str(etag), int(size))
            for number, (etag, size) in enumerate(state.get("segments", []), 1)
        ]
        if last is not None and segments:
            name = self._segment(upload_id, len(segments) + 1)
            segments.append((name, self._put_file(name, last, last_size), last_size))
        target = self._name(key)
        superseded = self._superseded(target)
        keep = None
        if not segments:
            self._put_file(target, last or io.BytesIO(), last_size)
        elif len(segments) == 1:
            # One segment becomes a plain object by COPY: simpler to read, copy and delete
            # than a one-entry SLO, and it costs at most one part of server-side I/O.
            self._copy(self.container, segments[0][0], target)
            superseded.append({"name": f"/{self.container}/{segments[0][0]}"})
        else:
            self._manifest_put(target, upload_id, segments)
            keep = self._name(f"_segments/{upload_id}/")
        self._segments_delete(superseded, keep=keep)

    def _manifest_put(
        self, target: str, upload_id: str, segments: list[tuple[str, str, int]]
    ) -> None:
        limit = self.manifest_segments_max
        entries: list[dict[str, Any]] = [
            {"path": f"/{self.container}/{name}", "etag": etag, "size_bytes": size}
            for name, etag, size in segments
        ]
        if len(entries) > limit:
            # One manifest holds at most max_manifest_segments entries; nest the rest.
            groups = [entries[i : i + limit] for i in range(0, len(entries), limit)]
            if len(groups) > limit:
                raise ObjectTooLarge(f"{len(entries)} segments exceed what Swift can join")
            entries = []
            for number, group in enumerate(groups, 1):
                name = self._submanifest(upload_id, number)
                self._slo_put(name, group)
                entries.append({"path": f"/{self.container}/{name}"})
        self._slo_put(target, entries)

    def _slo_put(self, name: str, entries: list[dict[str, Any]]) -> None:
        with self._errors(
            f"PUT manifest {name}", missing=self._no_container(), refused=UploadSessionInvalid
        ):
            self._connection(SLOW_READ_TIMEOUT).put_object(
                self.container,
                name,
                contents=json.dumps(entries),
                query_string="multipart-manifest=put",
            )

    def _session_abort(self, state: UploadState) -> None:
        upload_id = state["upload_id"]
        known = len(state.get("segments", []))
        number = 1
        # Segments written after the state was last stored (a failed append) carry the next
        # numbers: delete on until one is missing, rather than listing the container.
        while self._delete_plain(self._segment(upload_id, number)) or number <= known:
            number += 1
        number = 1
        while self._delete_plain(self._submanifest(upload_id, number)):
            number += 1

    # --- fast paths ----------------------------------------------------------------------------

    def direct_url(self, key: str, *, expires_in: int = 600, method: str = "GET") -> str | None:
        secret = self.options.get("temp_url_key")
        if not secret:
            return None
        base = urlsplit(self._storage_url())
        path = f"{base.path}/{self.container}/{self._name(key)}"
        signed = generate_temp_url(
            path, expires_in, secret, method, digest=self.options["temp_url_digest"]
        )
        return f"{base.scheme}://{base.netloc}{signed}"

    def _server_side_copy_from(
        self, source: StorageEngine, key: str, target_key: str, size: int
    ) -> bool:
        if not isinstance(source, SwiftEngine) or source._storage_url() != self._storage_url():
            return False
        if size > MAX_OBJECT:
            # COPY joins an SLO into one plain object, which Swift caps at 5 GiB: stream it.
            return False
        # The target's own storage_path (Quay's copy_to used the source's).
        target = self._name(target_key)
        superseded = self._superseded(target)
        try:
            self._copy(source.container, source._name(key), target)
        except AccessDenied:
            # Same account, but this user may not read the source container: stream instead.
            return False
        self._segments_delete(superseded)
        return True

    def _check_container(self) -> None:
        with self._errors(f"HEAD container {self.container}", missing=self._no_container()):
            self._connection().head_container(self.container)
