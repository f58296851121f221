"""Google Cloud Storage engine: resumable uploads, ranged media reads and rewrite copies.

The data path (uploads, downloads, resumable sessions) speaks the JSON API's upload and media
endpoints directly over one authorised ``requests`` session, so a session's URL can live in the
upload state and be continued by any process; metadata calls go through google-cloud-storage.
With HMAC keys the engine speaks GCS's S3-compatible XML API by delegating to the S3 engine.
"""

import contextlib
import datetime
import functools
import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar, cast
from urllib.parse import quote

import google.auth
import requests
from django import forms
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

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
    StorageError,
    StorageMisconfigured,
    StoragePermanentError,
    StorageUnavailable,
    UploadSessionInvalid,
)
from .keys import upload_key
from .options import EndpointURLField, EngineOptionsForm, SecretField, options_clean
from .s3 import S3Engine
from .streams import CHUNK, ByteStream, Readable, iter_readable

logger = logging.getLogger(__name__)

KiB = 1024
GCS_ENDPOINT = "https://storage.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
#: How long google-cloud-storage keeps retrying a transient failure of one metadata call.
RETRY_WINDOW = 2.0
#: How often one chunk is re-sent when GCS persisted only part of it.
RESENDS = 5
_COMMITTED = re.compile(r"bytes=0-(\d+)")

F = TypeVar("F", bound=Callable[..., Any])


class GCSOptions(EngineOptionsForm):
    engine_label = "Google Cloud Storage"

    bucket_name = forms.CharField(help_text="Name of the bucket that holds the blobs.")
    storage_path = forms.CharField(
        required=False, initial="", help_text="Prefix of every object in the bucket (may be empty)."
    )
    project_id = forms.CharField(
        required=False, help_text="Google Cloud project ID (default: the credentials' project)."
    )
    service_account_json = SecretField(
        required=False,
        help_text="Content of a service-account JSON key file; enables signed download URLs. "
        "Leave empty (with no HMAC keys) to use Application Default Credentials.",
    )
    access_key = forms.CharField(
        required=False, help_text="HMAC access ID: talk to the S3-compatible XML API instead."
    )
    secret_key = SecretField(required=False, help_text="HMAC secret of the access ID.")
    anonymous = forms.BooleanField(
        required=False, initial=False, help_text="Send no credentials (emulators only)."
    )
    api_endpoint = EndpointURLField(
        required=False,
        help_text=f"API endpoint for emulators and private endpoints (default {GCS_ENDPOINT}).",
    )
    chunk_size_mb = forms.IntegerField(
        initial=8,
        min_value=1,
        max_value=1024,
        help_text="Size of each resumable upload request, in MiB.",
    )
    connect_timeout = forms.FloatField(
        initial=5, min_value=0.1, max_value=120, help_text="Seconds to wait for a connection."
    )

    def clean_storage_path(self) -> str:
        return str(self.cleaned_data.get("storage_path") or "").strip("/")

    def clean_api_endpoint(self) -> str:
        return str(self.cleaned_data.get("api_endpoint") or "").rstrip("/")

    def clean_service_account_json(self) -> str:
        text = str(self.cleaned_data.get("service_account_json") or "").strip()
        if not text:
            return ""
        try:
            info = json.loads(text)
        except ValueError:
            raise forms.ValidationError("This is not valid JSON.") from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise forms.ValidationError(
                'Give a service-account key file ("type": "service_account").'
            )
        try:
            service_account.Credentials.from_service_account_info(info)
        except (ValueError, auth_exceptions.GoogleAuthError):
            # The library's message may quote the key; name the fields a key file needs instead.
            raise forms.ValidationError(
                "The key file lacks a usable client_email, token_uri or private_key."
            ) from None
        return text

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if bool(data.get("access_key")) != bool(data.get("secret_key")):
            self.add_error(
                "secret_key", "Give both the HMAC access key and its secret, or neither."
            )
        modes = [data.get("service_account_json"), data.get("access_key"), data.get("anonymous")]
        if sum(1 for mode in modes if mode) > 1:
            raise forms.ValidationError(
                "Choose one way to authenticate: a service-account key, HMAC keys or anonymous."
            )
        return data


def _interop(method: F) -> F:
    """Send the call to the S3 engine when HMAC keys select the XML API."""

    @functools.wraps(method)
    def call(self: "GCSEngine", *args: Any, **kwargs: Any) -> Any:
        if self.interop is not None:
            return getattr(self.interop, method.__name__)(*args, **kwargs)
        return method(self, *args, **kwargs)

    return cast(F, call)


class GCSEngine(StorageEngine):
    """Objects in one bucket; chunked sessions are native resumable upload sessions."""

    kind = "gcs"
    options_form = GCSOptions
    min_part_size = 256 * KiB
    part_multiple = 256 * KiB

    def __init__(self, *, location_id: str, options: dict[str, Any]) -> None:
        super().__init__(location_id=location_id, options=options)
        self.part_size = int(options.get("chunk_size_mb") or 8) * MiB
        self.bucket_name = str(options["bucket_name"])
        self.prefix = str(options.get("storage_path") or "").strip("/")
        # Always explicit, so the process-global STORAGE_EMULATOR_HOST never redirects us.
        self.endpoint = str(options.get("api_endpoint") or GCS_ENDPOINT).rstrip("/")
        connect = float(options.get("connect_timeout") or 5)
        self.timeout = (connect, self.deadlines.stream_read)
        #: Of a metadata call: a store that accepts and never answers is given up within seconds.
        self.quick_timeout = (min(connect, self.deadlines.connect), self.deadlines.metadata_read)
        self.retry = DEFAULT_RETRY.with_timeout(RETRY_WINDOW).with_delay(
            initial=0.2, maximum=1.0, multiplier=2.0
        )
        self.interop = self._interop_engine() if options.get("access_key") else None
        self._lock = threading.Lock()
        self._transport: tuple[storage.Client, requests.Session, Credentials] | None = None

    def _interop_engine(self) -> StorageEngine:
        # The emulator has no XML API: this path is tested against an S3 server only.
        s3_options = {
            "s3_bucket": self.bucket_name,
            "endpoint_url": self.endpoint,
            "s3_region": "auto",
            "s3_access_key": self.options["access_key"],
            "s3_secret_key": self.options["secret_key"],
            "storage_path": self.prefix,
            "addressing_style": "path",
        }
        options = options_clean(S3Engine.options_form, s3_options)
        return S3Engine(location_id=self.location_id, options=options)

    # --- clients and errors -----------------------------------------------------------------

    def _credentials(self) -> tuple[Credentials, str | None]:
        project = self.options.get("project_id") or None
        if self.options.get("anonymous"):
            return AnonymousCredentials(), project
        if self.options.get("service_account_json"):
            info = json.loads(self.options["service_account_json"])
            credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
            return credentials, project or info.get("project_id")
        try:
            credentials, default_project = google.auth.default(scopes=SCOPES)
        except auth_exceptions.DefaultCredentialsError as exc:
            raise StorageMisconfigured(
                f"{self.location_id}: no credentials given and no Application Default Credentials"
            ) from exc
        return credentials, project or default_project

    def _connect(self) -> tuple[storage.Client, requests.Session, Credentials]:
        """Return the client and the session, built on first use (ADC may probe the network)."""
        with self._lock:
            if self._transport is None:
                credentials, project = self._credentials()
                session = (
                    requests.Session()
                    if self.options.get("anonymous")
                    else AuthorizedSession(credentials, refresh_timeout=self.timeout[0] + 10)
                )
                # A connect error means nothing was sent, so even a PUT can be retried.
                retries = Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.2)
                session.mount("http://", HTTPAdapter(max_retries=retries))
                session.mount("https://", HTTPAdapter(max_retries=retries))
                client = storage.Client(
                    project=project,
                    credentials=credentials,
                    client_options={"api_endpoint": self.endpoint},
                    _http=session,  # one transport with bounded retries for both paths
                )
                self._transport = (client, session, credentials)
            return self._transport

    def _bucket(self) -> storage.Bucket:
        return self._connect()[0].bucket(self.bucket_name)

    def _identity(self) -> tuple[str, str]:
        if self.options.get("anonymous"):
            return ("anonymous", "")
        if self.options.get("service_account_json"):
            return (
                "service_account",
                json.loads(self.options["service_account_json"])["client_email"],
            )
        return ("default", "")

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _what(self, action: str, key: str) -> str:
        return f"{action} {key} in {self.location_id}"

    def _error(self, exc: Exception, what: str) -> StorageError:
        """Return the project error for an SDK or transport exception raised during ``what``."""
        if isinstance(exc, api_exceptions.RetryError) and isinstance(exc.cause, Exception):
            return self._error(exc.cause, what)
        if isinstance(exc, api_exceptions.GoogleAPICallError):
            reasons = [e.get("message") for e in exc.errors if isinstance(e, dict)]
            reason = str(reasons[0] if reasons and reasons[0] else type(exc).__name__)
            return _status_error(int(exc.code or 0), f"{what}: HTTP {exc.code} {reason}", reason)
        if isinstance(exc, auth_exceptions.DefaultCredentialsError):
            return StorageMisconfigured(f"{what}: {exc}")
        if isinstance(exc, auth_exceptions.RefreshError) and not exc.retryable:
            return AccessDenied(f"{what}: the token endpoint refused the credentials")
        if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
            return StorageMisconfigured(f"{what}: invalid endpoint {self.endpoint}")
        if isinstance(exc, requests.RequestException | auth_exceptions.GoogleAuthError):
            return StorageUnavailable(
                f"{what}: cannot reach {self.endpoint} ({type(exc).__name__})"
            )
        return StorageError(f"{what}: {type(exc).__name__}")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (
            api_exceptions.GoogleAPIError,
            auth_exceptions.GoogleAuthError,
            requests.RequestException,
        ) as exc:
            raise self._error(exc, what) from exc

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
        with self._errors(what):
            return self._connect()[1].request(method, url, timeout=self.timeout, **kwargs)

    def _upload_url(self) -> str:
        return f"{self.endpoint}/upload/storage/v1/b/{quote(self.bucket_name, safe='')}/o"

    # --- objects ------------------------------------------------------------------------------

    @_interop
    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> ByteStream:
        what = self._what("read", key)
        headers = {"Accept-Encoding": "identity"}
        if offset or length is not None:
            # The emulator answers a range past the end with 206 and no bytes, not 416.
            found = self.stat(key)
            if found is None:
                raise ObjectNotFound(f"{key} not found in {self.location_id}")
            offset, length = range_resolve(found.size, offset, length)
            if not length:
                return ByteStream([])
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
        url = (
            f"{self.endpoint}/download/storage/v1/b/{quote(self.bucket_name, safe='')}"
            f"/o/{quote(self._name(key), safe='')}?alt=media"
        )
        response = self._request("GET", url, what, headers=headers, stream=True)
        if response.status_code not in (200, 206):
            with response:
                raise _response_error(response, what)

        def chunks() -> Iterator[bytes]:
            with self._errors(what):
                yield from response.iter_content(CHUNK)

        return ByteStream(chunks(), close=response.close)

    @_interop
    def stat(self, key: str) -> ObjectStat | None:
        blob = self._bucket().blob(self._name(key))
        try:
            with self._errors(self._what("stat", key)):
                blob.reload(timeout=self.quick_timeout, retry=self.retry)
        except ObjectNotFound:
            return None
        return ObjectStat(size=int(blob.size or 0))

    @_interop
    def list_objects(
        self, prefix: str, *, start_after: str | None = None
    ) -> Iterator[ListedObject]:
        strip = len(self._name(""))
        client = self._connect()[0]
        with self._errors(f"list {prefix} in {self.location_id}"):
            blobs = client.list_blobs(
                self.bucket_name,
                prefix=self._name(prefix),
                start_offset=self._name(start_after) if start_after is not None else None,
                page_size=self.list_page_size,
                fields="items(name,size,updated),nextPageToken",
                timeout=self.timeout,
                retry=self.retry,
            )
            for page in blobs.pages:
                for blob in page:
                    key = str(blob.name)[strip:]
                    # startOffset is inclusive; start_after is not.
                    if start_after is None or key > start_after:
                        yield ListedObject(key, int(blob.size or 0), blob.updated)

    @_interop
    def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectNotFound), self._errors(self._what("delete", key)):
            self._bucket().delete_blob(
                self._name(key), timeout=self.quick_timeout, retry=self.retry
            )

    @_interop
    def write(
        self, key: str, stream: Readable, *, size: int | None = None, md5: str | None = None
    ) -> int:
        what = self._what("write", key)
        part = _read_up_to(stream, self.part_size)
        if 0 < len(part) < self.part_size:
            _size_check(len(part), size, what)
            self._media_upload(self._name(key), part, what)
            return len(part)
        # Big or empty (the emulator fails on an empty media upload): a resumable session.
        url = self._session_open(self._name(key), what)
        written = 0
        try:
            while True:
                final = len(part) < self.part_size or written + len(part) == size
                if final:  # checked before the last request, so a short stream writes nothing
                    _size_check(written + len(part), size, what)
                total = written + len(part) if final else None
                self._put_range(url, io.BytesIO(part), written, len(part), total, what)
                written += len(part)
                if final:
                    return written
                part = _read_up_to(stream, self.part_size)
        except BaseException:
            with contextlib.suppress(StorageError):
                self._session_cancel(url, what)
            raise

    @_interop
    def write_small(self, key: str, data: IO[bytes], size: int) -> None:
        super().write_small(key, data, size)

    def _media_upload(self, name: str, data: bytes, what: str) -> None:
        params = {"uploadType": "media", "name": name}
        headers = {"Content-Type": "application/octet-stream"}
        response = self._request(
            "POST", self._upload_url(), what, params=params, data=data, headers=headers
        )
        if response.status_code not in (200, 201):
            raise _response_error(response, what)

    # --- resumable sessions -------------------------------------------------------------------

    def _session_open(self, name: str, what: str) -> str:
        """Return the URL of a new resumable upload session for the object ``name``."""
        response = self._request(
            "POST",
            self._upload_url(),
            what,
            params={"uploadType": "resumable", "name": name},
            json={"name": name},
            headers={"X-Upload-Content-Type": "application/octet-stream"},
        )
        if response.status_code not in (200, 201) or not response.headers.get("Location"):
            raise _response_error(response, what)
        return response.headers["Location"]

    def _put_range(
        self, url: str, data: IO[bytes], start: int, size: int, total: int | None, what: str
    ) -> None:
        """Send ``size`` bytes of ``data`` at ``start`` of a session; a ``total`` finishes it."""
        origin, sent, end = data.tell(), start, start + size
        for _ in range(RESENDS):
            data.seek(origin + sent - start)
            span = f"{sent}-{end - 1}" if end > sent else "*"
            headers = {"Content-Range": f"bytes {span}/{'*' if total is None else total}"}
            body = _Slice(data, end - sent) if end > sent else b""
            response = self._request(
                "PUT", url, what, data=body, headers=headers, allow_redirects=False
            )
            if response.status_code in (200, 201):
                if total is None:
                    raise UploadSessionInvalid(f"{what}: the upload session was already finished")
                stored = int(response.json().get("size", total))
                if stored != total:
                    raise StorageError(f"{what}: GCS stored {stored} of {total} bytes")
                return
            if response.status_code in (404, 410):
                raise UploadSessionInvalid(f"{what}: the upload session expired or is unknown")
            if response.status_code != 308:
                raise _response_error(response, what)
            committed = _committed(response)
            if committed < start:
                raise UploadSessionInvalid(f"{what}: GCS holds {committed} bytes, expected {start}")
            if total is None and committed >= end:
                return
            sent = min(committed, end)  # GCS may persist only part of a chunk: send the rest
        raise StorageUnavailable(f"{what}: GCS kept only part of a chunk {RESENDS} times")

    def _session_cancel(self, url: str, what: str) -> None:
        response = self._request("DELETE", url, what)
        # 499: cancelled; 404/410: already gone; 501: the emulator cannot cancel sessions.
        if response.status_code not in (200, 204, 404, 410, 499, 501):
            raise _response_error(response, what)

    def _session_start(self, state: UploadState) -> None:
        # The GCS session opens with the first full part (see below), so a blob smaller than
        # a part costs one media upload at complete and no session at all.
        state["session_url"] = None

    def _session_write_part(self, state: UploadState, data: IO[bytes], size: int) -> None:
        what = self._what("append to upload", state["upload_id"])
        if not state.get("session_url"):
            # A session can only finish at the name it was opened for, and the blob's key
            # (its digest) is known only at complete: stage the object, rewrite it there.
            staging = self._name(upload_key(state["upload_id"], "data"))
            state["session_url"] = self._session_open(staging, what)
        self._put_range(state["session_url"], data, int(state["size"]), size, None, what)

    def _session_complete(
        self, state: UploadState, key: str, last: IO[bytes] | None, last_size: int
    ) -> None:
        data = last if last is not None else io.BytesIO()
        if not state.get("session_url"):
            self.write(key, data, size=last_size)
            return
        what = self._what("complete upload", state["upload_id"])
        start, staging = int(state["size"]), upload_key(state["upload_id"], "data")
        try:
            self._put_range(state["session_url"], data, start, last_size, start + last_size, what)
        except UploadSessionInvalid:
            found = self.stat(staging)
            if found is None or found.size != start + last_size:
                raise  # not a retry of a session that did finish
        # In one bucket a rewrite is a metadata-only copy (same location and storage class):
        # cheaper than re-uploading, and GCS has no rename outside hierarchical buckets.
        self._rewrite(self.bucket_name, self._name(staging), self._name(key), what)
        self.delete(staging)

    def _session_abort(self, state: UploadState) -> None:
        if state.get("session_url"):
            what = self._what("abort upload", state["upload_id"])
            self._session_cancel(state["session_url"], what)
            self.delete(upload_key(state["upload_id"], "data"))

    @_interop
    def upload_begin(self, *, upload_id: str, expected_size: int | None = None) -> UploadState:
        return super().upload_begin(upload_id=upload_id, expected_size=expected_size)

    @_interop
    def upload_append(
        self, state: UploadState, stream: Readable, *, length: int | None = None
    ) -> UploadState:
        return super().upload_append(state, stream, length=length)

    @_interop
    def upload_complete(self, state: UploadState, key: str) -> int:
        return super().upload_complete(state, key)

    @_interop
    def upload_abort(self, state: UploadState) -> None:
        super().upload_abort(state)

    # --- copies, URLs, probes -------------------------------------------------------------------

    def _rewrite(self, source_bucket: str, source_name: str, target_name: str, what: str) -> None:
        client = self._connect()[0]
        source = client.bucket(source_bucket).blob(source_name)
        target = client.bucket(self.bucket_name).blob(target_name)
        token: str | None = None
        with self._errors(what):
            while True:
                # Real GCS may answer a big or cross-location rewrite in several calls.
                token, done, total = target.rewrite(
                    source, token=token, timeout=self.timeout, retry=self.retry
                )
                if token is None:
                    return
                logger.debug("rewrite to %s: %s of %s bytes", target_name, done, total)

    def _server_side_copy_from(
        self, source: StorageEngine, key: str, target_key: str, size: int
    ) -> bool:
        if self.interop is not None:
            if isinstance(source, GCSEngine) and source.interop is not None:
                source = source.interop
            return self.interop._server_side_copy_from(source, key, target_key, size)
        if not isinstance(source, GCSEngine) or source.interop is not None:
            return False
        if source.endpoint != self.endpoint or source._identity() != self._identity():
            return False
        what = f"copy {key} from {source.location_id} to {self.location_id}"
        self._rewrite(source.bucket_name, source._name(key), self._name(target_key), what)
        return True

    @_interop
    def direct_url(self, key: str, *, expires_in: int = 600, method: str = "GET") -> str | None:
        if not self.options.get("service_account_json"):
            return None  # signing needs a private key
        credentials = self._connect()[2]
        with self._errors(self._what("sign a URL for", key)):
            return str(
                self._bucket()
                .blob(self._name(key))
                .generate_signed_url(
                    version="v4",
                    expiration=datetime.timedelta(seconds=expires_in),
                    method=method,
                    credentials=credentials,
                    api_access_endpoint=self.endpoint,
                )
            )

    @_interop
    def _check_container(self) -> None:
        # Listing needs only object permissions (roles/storage.objectAdmin), unlike
        # buckets.get; for a missing bucket GCS answers 404 either way.
        what = f"check bucket {self.bucket_name} of {self.location_id}"
        client = self._connect()[0]
        try:
            with self._errors(what):
                blobs = client.list_blobs(
                    self.bucket_name,
                    max_results=1,
                    prefix=self.prefix or None,
                    timeout=self.timeout,
                    retry=self.retry,
                )
                next(iter(blobs), None)
        except ObjectNotFound as exc:
            raise ContainerNotFound(f"bucket {self.bucket_name} does not exist") from exc


class _Slice:
    """A request body of the next ``size`` bytes of a file, streamed rather than loaded."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        self._source, self._size, self._left = source, size, size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        return iter_readable(self)

    def read(self, size: int = -1, /) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._source.read(size)
        self._left -= len(data)
        return data


def _read_up_to(stream: Readable, size: int) -> bytes:
    """Return the next ``size`` bytes of a stream, fewer only at its end."""
    buffer = bytearray()
    while len(buffer) < size:
        data = stream.read(min(CHUNK, size - len(buffer)))
        if not data:
            break
        buffer += data
    return bytes(buffer)


def _size_check(actual: int, declared: int | None, what: str) -> None:
    if declared is not None and actual != declared:
        raise StorageError(f"{what}: the stream held {actual} bytes, {declared} were declared")


def _committed(response: requests.Response) -> int:
    """Return how many bytes a 308 answer says the session holds (no Range header: none)."""
    match = _COMMITTED.fullmatch(response.headers.get("Range", ""))
    return int(match.group(1)) + 1 if match else 0


def _response_error(response: requests.Response, what: str) -> StorageError:
    try:
        reason = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        reason = response.reason or ""
    return _status_error(
        response.status_code, f"{what}: HTTP {response.status_code} {reason}", reason
    )


def _status_error(status: int, message: str, reason: str) -> StorageError:
    message = message.strip()
    if status == 404:
        missing_bucket = "bucket does not exist" in reason.lower()
        return ContainerNotFound(message) if missing_bucket else ObjectNotFound(message)
    if status in (401, 403):
        return AccessDenied(message)
    if status == 416:
        return InvalidRange(message)
    if status in (408, 429) or status >= 500:
        return StorageUnavailable(message)
    if 400 <= status < 500:
        return StoragePermanentError(message)
    return StorageError(message)
