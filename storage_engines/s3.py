"""Amazon S3 engine (boto3): native multipart sessions, presigned URLs, server-side copies."""

import concurrent.futures
import contextlib
import io
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

import boto3
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConnectTimeoutError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.utils import parse_timestamp as botocore_timestamp_parse
from django import forms

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
    StorageTimeout,
    StorageUnavailable,
    UploadSessionInvalid,
)
from .keys import upload_key
from .options import EndpointURLField, EngineOptionsForm, SecretField
from .streams import CHUNK, ByteStream, Readable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

logger = logging.getLogger(__name__)

GiB = 1024 * MiB
THREADS = 4  # parallel parts of one upload or copy; more does not help on moto or RGW
MAX_PARTS = 10_000

_ACCESS_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
}
_TRANSIENT_CODES = {
    "InternalError",
    "RequestTimeout",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
}
_TRANSIENT_ERRORS = (
    BotoConnectionError,
    HTTPClientError,
    IncompleteReadError,
    ChecksumError,
    FlexibleChecksumError,
)


class S3CommonOptions(EngineOptionsForm):
    """Options shared by every S3-API engine."""

    storage_path = forms.CharField(
        required=False, initial="", help_text="Path prefix of every object in the bucket."
    )
    signature_version = forms.CharField(
        required=False, initial="s3v4", help_text="Request signature version (s3v4 or s3)."
    )
    minimum_chunk_size_mb = forms.IntegerField(
        initial=5, min_value=5, help_text="Smallest multipart part in MiB (S3 requires 5)."
    )
    part_size_mb = forms.IntegerField(
        initial=8, min_value=5, help_text="Part size of uploads in MiB; at least the minimum."
    )
    maximum_chunk_size_gb = forms.IntegerField(
        initial=5,
        min_value=1,
        max_value=5,
        help_text="Largest single server-side copy in GB; bigger objects copy in parts.",
    )
    connect_timeout = forms.IntegerField(
        initial=5, min_value=1, max_value=60, help_text="Seconds to wait for a connection."
    )

    def clean_storage_path(self) -> str:
        return str(self.cleaned_data.get("storage_path") or "").strip("/")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        minimum, part = cleaned.get("minimum_chunk_size_mb"), cleaned.get("part_size_mb")
        if minimum is not None and part is not None and part < minimum:
            self.add_error("part_size_mb", "Give at least minimum_chunk_size_mb.")
        return cleaned


class S3Options(S3CommonOptions):
    engine_label = "Amazon S3"
    field_order = ["s3_bucket", "storage_path", "s3_region", "endpoint_url", "s3_access_key"]

    s3_bucket = forms.CharField(help_text="Name of the bucket that holds the blobs.")
    s3_region = forms.CharField(
        required=False, initial="us-east-1", help_text="Region of the bucket."
    )
    endpoint_url = EndpointURLField(
        required=False,
        help_text="S3-compatible endpoint URL; leave empty for Amazon S3.",
    )
    s3_access_key = forms.CharField(
        required=False, help_text="Access key ID; leave both keys empty for the default chain."
    )
    s3_secret_key = SecretField(required=False, help_text="Secret access key.")
    aws_session_token = SecretField(
        required=False, help_text="Session token of temporary credentials."
    )
    addressing_style = forms.ChoiceField(
        required=False,
        initial="auto",
        choices=[("auto", "auto"), ("path", "path"), ("virtual", "virtual")],
        help_text="Bucket addressing: path style for most S3-compatible servers.",
    )
    server_side_encryption = forms.BooleanField(
        required=False, initial=False, help_text="Encrypt objects at rest (SSE-S3, AES256)."
    )

    def clean_s3_bucket(self) -> str:
        bucket = str(self.cleaned_data["s3_bucket"]).strip()
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$", bucket):
            raise forms.ValidationError("Give a bucket name, without slashes or spaces.")
        return bucket

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        access, secret = cleaned.get("s3_access_key"), cleaned.get("s3_secret_key")
        if access and not secret:
            self.add_error("s3_secret_key", "Give the secret key of this access key.")
        if secret and not access:
            self.add_error("s3_access_key", "Give the access key of this secret key.")
        if cleaned.get("aws_session_token") and not access:
            self.add_error("aws_session_token", "A session token needs an access key.")
        return cleaned


@dataclass(frozen=True)
class S3Settings:
    """Connection and tuning settings, whatever the options form that produced them."""

    bucket: str
    prefix: str
    region: str
    endpoint_url: str | None
    access_key: str | None
    secret_key: str | None
    session_token: str | None
    addressing_style: Literal["auto", "path", "virtual"]
    signature_version: str
    min_part_size: int
    part_size: int
    copy_part_size: int
    encrypt: bool
    connect_timeout: int

    @classmethod
    def common(cls, options: dict[str, Any], **fields: Any) -> "S3Settings":
        """Return settings from the shared options plus the engine-specific ``fields``."""
        return cls(
            prefix=options.get("storage_path") or "",
            signature_version=options.get("signature_version") or "s3v4",
            min_part_size=int(options.get("minimum_chunk_size_mb") or 5) * MiB,
            part_size=int(options.get("part_size_mb") or 8) * MiB,
            copy_part_size=int(options.get("maximum_chunk_size_gb") or 5) * GiB,
            connect_timeout=int(options.get("connect_timeout") or 5),
            **fields,
        )


class S3Engine(StorageEngine):
    """Objects in one S3 bucket under a path prefix; sessions are multipart uploads."""

    kind = "s3"
    options_form: ClassVar[type[EngineOptionsForm]] = S3Options
    min_part_size = 5 * MiB
    max_object_size = 5 * 1024 * GiB
    append_retryable = True

    def __init__(self, *, location_id: str, options: dict[str, Any]) -> None:
        super().__init__(location_id=location_id, options=options)
        self.settings = self.settings_from(options)
        self.bucket = self.settings.bucket
        self.min_part_size = self.settings.min_part_size  # type: ignore[misc]
        self.part_size = max(self.settings.part_size, self.min_part_size)
        #: Largest object copied with one CopyObject; tests lower it to reach UploadPartCopy.
        self.copy_part_size = self.settings.copy_part_size
        self._secrets = [s for s in (self.settings.secret_key, self.settings.session_token) if s]
        self._client_cache: S3Client | None = None
        self._quick_cache: S3Client | None = None
        self._lock = threading.Lock()

    @classmethod
    def settings_from(cls, options: dict[str, Any]) -> S3Settings:
        """Return the connection settings described by validated ``options``."""
        return S3Settings.common(
            options,
            bucket=options["s3_bucket"],
            region=options.get("s3_region") or "us-east-1",
            endpoint_url=options.get("endpoint_url") or None,
            access_key=options.get("s3_access_key") or None,
            secret_key=options.get("s3_secret_key") or None,
            session_token=options.get("aws_session_token") or None,
            addressing_style=options.get("addressing_style") or "auto",
            encrypt=bool(options.get("server_side_encryption")),
        )

    # --- client, keys, errors -----------------------------------------------------------------

    @property
    def client(self) -> "S3Client":
        """Return the client of streamed bodies and copies, built on first use (boto3 clients
        are thread-safe)."""
        if self._client_cache is None:
            with self._lock:
                if self._client_cache is None:
                    self._client_cache = self._client_build(quick=False)
        return self._client_cache

    @property
    def quick(self) -> "S3Client":
        """Return the client of metadata calls: short timeouts and no retry, so that a store
        that accepts connections and never answers is given up within seconds."""
        if self._quick_cache is None:
            with self._lock:
                if self._quick_cache is None:
                    self._quick_cache = self._client_build(quick=True)
        return self._quick_cache

    def warm(self) -> None:
        # Building a client loads and parses botocore's S3 model: about 0.1 s of CPU per process.
        self.client  # noqa: B018 - built for its side effect
        self.quick  # noqa: B018 - built for its side effect

    def _client_build(self, *, quick: bool) -> "S3Client":
        s, d = self.settings, self.deadlines
        config = Config(
            region_name=s.region,
            signature_version=s.signature_version,
            s3={"addressing_style": s.addressing_style},
            connect_timeout=min(s.connect_timeout, d.connect) if quick else s.connect_timeout,
            read_timeout=d.metadata_read if quick else d.stream_read,
            retries={"total_max_attempts": 1 if quick else d.stream_attempts, "mode": "standard"},
            max_pool_connections=4 * THREADS,
            # Reads are checked by the SHA-256 of the blob where it matters (a replicated copy,
            # an upload read back); botocore's CRC32 over every byte read was a third hash in a
            # streamed copy (bench case 2 profile). Uploads keep their checksums.
            response_checksum_validation="when_required",
        )
        try:
            return _client_make(
                "s3",
                endpoint_url=s.endpoint_url,
                aws_access_key_id=s.access_key,
                aws_secret_access_key=s.secret_key,
                aws_session_token=s.session_token,
                config=config,
            )
        except (ValueError, BotoCoreError) as exc:
            raise StorageMisconfigured(self._scrub(f"{self.location_id}: {exc}")) from exc

    def endpoint(self) -> str:
        """Return the endpoint URL requests go to."""
        return self.settings.endpoint_url or self.client.meta.endpoint_url

    def copy_identity(self) -> tuple[str, str | None]:
        """Return what two engines must share for a server-side copy: endpoint and access key."""
        if self.settings.endpoint_url is None:
            # Every AWS region copies from every other one of its partition.
            where = f"aws:{boto3.session.Session().get_partition_for_region(self.settings.region)}"
        else:
            url = urlsplit(self.settings.endpoint_url)
            default = {"http": 80, "https": 443}.get(url.scheme)
            where = f"{url.scheme}://{url.hostname}:{url.port or default}{url.path.rstrip('/')}"
        return where.lower(), self.settings.access_key

    def _key(self, key: str) -> str:
        return f"{self.settings.prefix}/{key}" if self.settings.prefix else key

    def _encryption(self) -> dict[str, Any]:
        return {"ServerSideEncryption": "AES256"} if self.settings.encrypt else {}

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message

    @contextlib.contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, doing) from exc

    def _translate(self, exc: BotoCoreError | ClientError, doing: str) -> StorageError:
        where = f"{self.location_id}: {doing}"
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            detail = exc.response.get("Error", {}).get("Message", "") or f"HTTP {status}"
            message = self._scrub(f"{where}: {code or status}: {detail}")
            if code in ("NoSuchKey", "NotFound") or (status == 404 and code == "404"):
                return ObjectNotFound(message)
            if code == "NoSuchBucket":
                return ContainerNotFound(message)
            if code == "NoSuchUpload":
                return UploadSessionInvalid(message)
            if code == "InvalidRange" or status == 416:
                return InvalidRange(message)
            if code in _ACCESS_CODES or status in (401, 403):
                return AccessDenied(message)
            if code == "EntityTooLarge":
                return ObjectTooLarge(message)
            if code in _TRANSIENT_CODES or status == 429 or status >= 500:
                return StorageUnavailable(message)
            return StoragePermanentError(message)
        message = self._scrub(f"{where}: {exc}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageMisconfigured(
                f"{where}: no credentials; give s3_access_key and s3_secret_key "
                "or configure the default AWS credential chain"
            )
        if isinstance(exc, ParamValidationError | SSLError):
            return StorageMisconfigured(message)
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
            return StorageTimeout(message)
        if isinstance(exc, _TRANSIENT_ERRORS):
            return StorageUnavailable(message)
        return StoragePermanentError(message)

    # --- objects ------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectStat | None:
        try:
            head = self.quick.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise self._translate(exc, f"stat {key}") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, f"stat {key}") from exc
        return ObjectStat(size=int(head["ContentLength"]))

    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> ByteStream:
        if offset < 0 or (length is not None and length < 0):
            raise InvalidRange(f"invalid range offset={offset} length={length}")
        if length == 0:
            return self._read_empty(key, offset, length)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            params["Range"] = f"bytes={offset}-{end}"
        try:
            with self._translated(f"read {key}"):
                response = self.quick.get_object(**params)
        except InvalidRange:
            # An empty object has no satisfiable range, yet reads as empty from offset 0.
            return self._read_empty(key, offset, length)
        body = response["Body"]
        _socket_timeout_set(body, self.deadlines.stream_read)
        md5 = None if "Range" in params else _etag_md5(response)
        return ByteStream(self._body_chunks(body, key), close=body.close, md5=md5)

    def _read_empty(self, key: str, offset: int, length: int | None) -> ByteStream:
        found = self.stat(key)
        if found is None:
            raise ObjectNotFound(f"{key} not found in {self.location_id}")
        if range_resolve(found.size, offset, length)[1]:
            raise InvalidRange(f"{self.location_id} refused a satisfiable range of {key}")
        return ByteStream([])

    def _body_chunks(self, body: Any, key: str) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(self._scrub(f"{self.location_id}: read {key}: {exc}")) from exc

    def list_objects(
        self, prefix: str, *, start_after: str | None = None
    ) -> Iterator[ListedObject]:
        strip = len(self._key(""))
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self._key(prefix),
            "MaxKeys": self.list_page_size,
        }
        if start_after is not None:
            params["StartAfter"] = self._key(start_after)
        while True:
            with self._translated(f"list {prefix}"):
                page = self.client.list_objects_v2(**params)
            for item in page.get("Contents", []):
                yield ListedObject(item["Key"][strip:], int(item["Size"]), item.get("LastModified"))
            if not page.get("IsTruncated"):
                return
            params.pop("StartAfter", None)
            params["ContinuationToken"] = page["NextContinuationToken"]

    def delete(self, key: str) -> None:
        with self._translated(f"delete {key}"):
            self.quick.delete_object(Bucket=self.bucket, Key=self._key(key))

    def write_small(self, key: str, data: IO[bytes], size: int) -> None:
        body = data.read(size)  # small by contract, and a body of known length signs cleanly
        with self._translated(f"write {key}"):
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=body, **self._encryption()
            )

    def write(
        self, key: str, stream: Readable, *, size: int | None = None, md5: str | None = None
    ) -> int:
        part_size = self.part_size
        if size:
            part_size = max(part_size, -(-size // (MAX_PARTS - 1000)))
        reader = _FullReader(stream)
        config = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=THREADS,
        )
        # A stream without seek is buffered part by part: bound how many parts wait in memory.
        config.max_in_memory_upload_chunks = THREADS
        with self._translated(f"write {key}"):
            self.client.upload_fileobj(
                reader,  # type: ignore[arg-type]
                self.bucket,
                self._key(key),
                ExtraArgs=self._encryption(),
                Config=config,
            )
        return reader.size

    def direct_url(self, key: str, *, expires_in: int = 600, method: str = "GET") -> str | None:
        operation = {"GET": "get_object", "HEAD": "head_object"}.get(method.upper())
        if operation is None:
            return None
        with self._translated(f"presign {key}"):
            return self.client.generate_presigned_url(
                operation,
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=expires_in,
            )

    def _check_container(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            where = f"{self.location_id}: bucket {self.bucket} at {self.endpoint()}"
            if status == 404:
                raise ContainerNotFound(f"{where} not found") from exc
            if status in (401, 403):
                raise AccessDenied(
                    f"{where}: access denied; check the access key, secret key and policy"
                ) from exc
            raise self._translate(exc, f"check bucket {self.bucket}") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, f"check bucket {self.bucket}") from exc

    # --- chunked sessions: one multipart upload at a staging key -------------------------------

    def _staging_key(self, state: UploadState) -> str:
        return self._key(upload_key(state["upload_id"], "data"))

    def _session_start(self, state: UploadState) -> None:
        # The multipart upload is created with the first full part, so small blobs cost one PUT.
        state["parts"] = []

    def _session_write_part(self, state: UploadState, data: IO[bytes], size: int) -> None:
        staging = self._staging_key(state)
        with self._translated(f"upload part of {state['upload_id']}"):
            if not state.get("mpu"):
                created = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=staging, **self._encryption()
                )
                state["mpu"] = created["UploadId"]
            number = len(state["parts"]) + 1
            sent = self.client.upload_part(
                Bucket=self.bucket,
                Key=staging,
                UploadId=state["mpu"],
                PartNumber=number,
                Body=data,
                ContentLength=size,
            )
        state["parts"].append(sent["ETag"])

    def _session_complete(
        self, state: UploadState, key: str, last: IO[bytes] | None, last_size: int
    ) -> None:
        if not state.get("mpu"):
            self.write_small(key, last if last is not None else io.BytesIO(), last_size)
            return
        staging = self._staging_key(state)
        try:
            if last is not None:
                self._session_write_part(state, last, last_size)
            parts: list[CompletedPartTypeDef] = [
                {"PartNumber": number, "ETag": etag}
                for number, etag in enumerate(state["parts"], 1)
            ]
            with self._translated(f"complete upload {state['upload_id']}"):
                # Ceph RGW 16 answers with an empty ETag, so the response is not used.
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=staging,
                    UploadId=state["mpu"],
                    MultipartUpload={"Parts": parts},
                )
        except UploadSessionInvalid:
            if self.stat(upload_key(state["upload_id"], "data")) is None:
                raise  # not a retry of a completed session
        size = int(state["size"]) + last_size
        # The blob's key is known only now: move the assembled object there inside S3.
        self._copy(self.bucket, staging, self._key(key), size)
        self.delete(upload_key(state["upload_id"], "data"))

    def _append_undo(self, before: UploadState, after: UploadState) -> None:
        # A multipart upload the failed append created is named by no state the caller holds.
        if after.get("mpu") and not before.get("mpu"):
            self._session_abort({**before, "mpu": after["mpu"]})

    def _session_abort(self, state: UploadState) -> None:
        if not state.get("mpu"):
            return
        try:
            with self._translated(f"abort upload {state['upload_id']}"):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._staging_key(state), UploadId=state["mpu"]
                )
        except (UploadSessionInvalid, ObjectNotFound):
            logger.debug("upload %s was already finished or aborted", state["upload_id"])
        self.delete(upload_key(state["upload_id"], "data"))

    # --- server-side copies -------------------------------------------------------------------

    def _server_side_copy_from(
        self, source: StorageEngine, key: str, target_key: str, size: int
    ) -> bool:
        if not isinstance(source, S3Engine) or source.copy_identity() != self.copy_identity():
            return False
        source_key, destination = source._key(key), self._key(target_key)
        if (source.bucket, source_key) != (self.bucket, destination):
            self._copy(source.bucket, source_key, destination, size)
        elif source.stat(key) is None:  # a copy onto itself: the object must still be there
            raise ObjectNotFound(f"{key} not found in {source.location_id}")
        return True

    def _copy(self, bucket: str, key: str, target: str, size: int) -> None:
        """Copy an object into this bucket: CopyObject, or UploadPartCopy above copy_part_size."""
        copy_source: Any = {"Bucket": bucket, "Key": key}
        with self._translated(f"copy {bucket}/{key}"):
            if size <= self.copy_part_size:
                # No new checksum asked for: computing one cost moto a third more time per copy
                # (bench case 2). A copy keeps the source's checksum, which for a multipart
                # source moto gets wrong; reads no longer validate checksums (``_client_build``).
                self.client.copy_object(
                    CopySource=copy_source, Bucket=self.bucket, Key=target, **self._encryption()
                )
                return
            part = max(self.copy_part_size, -(-size // MAX_PARTS))
            ranges = [(start, min(start + part, size) - 1) for start in range(0, size, part)]
            mpu = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=target, **self._encryption()
            )["UploadId"]

            def copy_part(number: int) -> "CompletedPartTypeDef":
                first, last = ranges[number - 1]
                copied = self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=mpu,
                    PartNumber=number,
                    CopySource=copy_source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
                return {"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]}

            try:
                with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
                    parts = list(pool.map(copy_part, range(1, len(ranges) + 1)))
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=mpu,
                    MultipartUpload={"Parts": parts},
                )
            except BaseException:
                with contextlib.suppress(BotoCoreError, ClientError):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=mpu)
                raise
        logger.info("copied %s/%s to %s in %d parts", bucket, key, target, len(ranges))


def _socket_timeout_set(body: Any, seconds: float) -> None:
    """Give the rest of a GetObject body the read timeout of streams.

    The answer's headers came within the metadata timeout (a hung store is given up quickly);
    the body that follows may pause longer between chunks without being a failure.
    """
    # botocore keeps urllib3's response, which keeps http.client's, which reads a socket file.
    answer = getattr(getattr(body, "_raw_stream", None), "_fp", None)
    sock = getattr(getattr(getattr(answer, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)
    else:
        logger.debug("no socket found under a GetObject body: it keeps the metadata timeout")


def _etag_md5(response: Any) -> str | None:
    """Return the MD5 an S3 GetObject answer vouches for, or None.

    S3 documents the ETag as the MD5 of the object for a single-part upload that is not
    encrypted with KMS or a customer key; a multipart ETag has a ``-<parts>`` suffix.
    """
    etag = str(response.get("ETag") or "").strip('"').lower()
    if not _MD5_HEX.fullmatch(etag):
        return None
    if response.get("SSECustomerAlgorithm") or response.get("ServerSideEncryption") not in (
        None,
        "AES256",
    ):
        return None
    return etag


_MD5_HEX = re.compile(r"[0-9a-f]{32}")

_SESSION: boto3.session.Session | None = None
_SESSION_LOCK = threading.Lock()


def _client_make(service: str, **kwargs: Any) -> Any:
    """Build a client from one boto3 session per process.

    Each session loads its own copy of the service model (13 to 27 MB measured for S3), so a
    session per engine cost that much per location in every web and worker process. A session is
    not thread-safe, hence the lock; the clients it makes are.
    """
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
            parsers = _SESSION._session.get_component("response_parser_factory")
            parsers.set_parser_defaults(timestamp_parser=timestamp_parse)
        return _SESSION.client(service, **kwargs)  # type: ignore[call-overload]


def timestamp_parse(value: str) -> datetime:
    """Return the aware datetime of a timestamp the store sent, ISO 8601 the fast way.

    botocore parses each one with dateutil: half the CPU of a ListObjectsV2 page of 1,000
    objects (bench case 9 profile), and an audit of a million objects reads a million of them.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        return botocore_timestamp_parse(value)  # RFC 822 headers, epochs, whatever else
    return parsed


class _FullReader:
    """Wrap a readable so that ``read(n)`` returns ``n`` bytes unless the stream ends, counting."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            data = b"".join(iter(lambda: self._source.read(CHUNK), b""))
        else:
            pieces, wanted = [], size
            while wanted > 0:
                piece = self._source.read(wanted)
                if not piece:
                    break
                pieces.append(piece)
                wanted -= len(piece)
            data = b"".join(pieces)
        self.size += len(data)
        return data
