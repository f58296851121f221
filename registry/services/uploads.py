"""Blob uploads: sessions pinned to one location, bytes streamed into its engine while hashed.

No transaction is open and no database connection is held while bytes stream: a session is
claimed with one conditional UPDATE (``busy_until``), the bytes go from the request body through
the hashers into the engine's multipart session, and the row is written once they are in.
"""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from replication import health
from replication.models import Blob, StorageLocation
from replication.selectors import PreferenceError, location_engine, upload_location_pick
from replication.services import blob_commit
from storage_engines.base import StorageEngine, UploadState
from storage_engines.errors import StorageError, StoragePermanentError, StorageUnavailable
from storage_engines.keys import content_key, upload_key

from .. import errors
from ..hashing import HashingBody, UploadHash, digests_known, request_hashing, stream_digests
from ..models import BlobUpload, Repository, RepositoryBlob
from ..names import Digest
from ..ranges import upload_range
from ..selectors import blob_present_at
from .problems import StorageFailed
from .streaming import Body, db_release

logger = logging.getLogger(__name__)


def upload_location_choose() -> StorageLocation:
    """Return the location a new upload is pinned to: the first healthy one of the preference."""
    try:
        return upload_location_pick()
    except PreferenceError as exc:
        raise StorageFailed(message=str(exc)) from exc


def _health_report(location: StorageLocation, exc: BaseException) -> None:
    """Count a storage failure against the location's circuit breaker."""
    if isinstance(exc, StorageUnavailable | StoragePermanentError):
        health.location_failed(location.location_id, reason=str(exc))


def chunk_min_length(*, location: StorageLocation) -> int | None:
    """Return the ``OCI-Chunk-Min-Length`` to announce for uploads pinned to ``location``.

    ``QUAY_GEO_CHUNK_MIN_LENGTH`` decides when set (0: announce nothing). Otherwise it is the
    engine's minimum part size when it has one (S3: 5 MiB, GCS: 256 KiB): a smaller chunk is
    accepted but costs the engine an extra staging write and read-back.
    """
    configured = getattr(settings, "QUAY_GEO_CHUNK_MIN_LENGTH", None)
    if configured is not None:
        return int(configured) or None
    minimum = location_engine(location).min_part_size
    return minimum if minimum > 1 else None


def upload_path(upload: BlobUpload) -> str:
    """Return the ``Location`` of an upload session."""
    return f"/v2/{upload.repository.full_name}/blobs/uploads/{upload.uuid}"


@contextmanager
def _storage(doing: str, location: StorageLocation | None = None) -> Iterator[None]:
    try:
        yield
    except StorageError as exc:
        logger.warning("storage failed while %s: %s", doing, exc)
        if location is not None:
            _health_report(location, exc)
        raise StorageFailed({"reason": str(exc)[:500]}) from exc


def upload_start(
    *, repository: Repository, user: User | None, algorithm: str = "sha256"
) -> BlobUpload:
    """Open an upload session in the chosen location and record it."""
    location = upload_location_choose()
    upload_id = str(uuid.uuid4())
    with _storage("starting an upload", location):
        state = location_engine(location).upload_begin(upload_id=upload_id)
    return BlobUpload.objects.create(
        uuid=upload_id,
        repository=repository,
        location=location,
        engine_state=state,
        digest_algorithm=algorithm,
        user=user,
    )


def _hash_of(upload: BlobUpload) -> UploadHash:
    state = upload.sha256_state
    return UploadHash(
        mode=upload.hash_mode,
        sha256_state=bytes(state) if state is not None else None,
        sha256_hex=upload.sha256_hex,
        sha512_hex=upload.sha512_hex,
    )


def _range_invalid(upload: BlobUpload, message: str) -> errors.OCIError:
    current = BlobUpload.objects.filter(pk=upload.pk).values_list("byte_count", flat=True).first()
    size = upload.byte_count if current is None else current
    return errors.RangeInvalid(
        {"size": size},
        message=message,
        headers={
            "Range": upload_range(size),
            "Location": upload_path(upload),
            "Docker-Upload-UUID": upload.uuid,
        },
    )


def _chunk_length(
    upload: BlobUpload, body: Body, content_range: tuple[int, int] | None
) -> int | None:
    """Return how many bytes the request appends (None: to the end of a chunked body)."""
    if content_range is None:
        return body.length
    first, last = content_range
    if last < first:
        raise _range_invalid(upload, f"invalid Content-Range {first}-{last}")
    if first != upload.byte_count:
        raise _range_invalid(
            upload, f"chunk starts at {first}; the upload holds {upload.byte_count} bytes"
        )
    length = last - first + 1
    if body.length is not None and body.length != length:
        raise errors.SizeInvalid(
            {"content_range": f"{first}-{last}", "content_length": body.length},
            message=f"Content-Length {body.length} disagrees with Content-Range {first}-{last}",
        )
    return length


def _lease() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "QUAY_GEO_UPLOAD_LEASE_SECONDS", 3600)))


def _claim(upload: BlobUpload) -> datetime:
    """Mark the session busy for this request; raise RangeInvalid if another one writes to it."""
    now = timezone.now()
    until = now + _lease()
    claimed = (
        BlobUpload.objects.filter(pk=upload.pk, byte_count=upload.byte_count)
        .filter(Q(busy_until__isnull=True) | Q(busy_until__lt=now))
        .update(busy_until=until)
    )
    if not claimed:
        raise _range_invalid(upload, "another request is writing to this upload")
    return until


def _abort_quietly(engine: StorageEngine, state: UploadState) -> None:
    try:
        engine.upload_abort(state)
    except StorageError as exc:
        logger.warning("could not abort upload %s: %s", state.get("upload_id"), exc)


def _upload_discard(upload: BlobUpload, engine: StorageEngine) -> None:
    """Abort the engine session (best effort) and forget the upload."""
    _abort_quietly(engine, upload.engine_state)
    BlobUpload.objects.filter(pk=upload.pk).delete()


def _stream_failed(exc: Exception, *, expected: int | None, received: int) -> errors.OCIError:
    """Return the error a failed body stream answers: the client's (short body) or storage's."""
    if expected is not None and received < expected:
        return errors.SizeInvalid(
            {"expected": expected, "received": received},
            message=f"the body ended after {received} of {expected} bytes",
        )
    if isinstance(exc, StorageError):
        return StorageFailed({"reason": str(exc)[:500]})
    return errors.BlobUploadInvalid({"reason": str(exc)[:500]})


def _trailing_bytes_refuse(body: Body, appended: int) -> None:
    """Raise SizeInvalid if a chunked body carries more than its Content-Range announced."""
    if body.length is None and body.stream.read(1):
        raise errors.SizeInvalid(message=f"the body is longer than its Content-Range ({appended})")


def upload_append(
    *,
    upload: BlobUpload,
    body: Body,
    content_range: tuple[int, int] | None,
    algorithm: str | None = None,
) -> BlobUpload:
    """Stream a request body to the end of an upload and return the updated upload.

    A failure while bytes stream discards the whole session (nothing half-written remains); the
    client starts again.
    """
    length = _chunk_length(upload, body, content_range)
    if length == 0:
        return upload
    until = _claim(upload)
    hashing = request_hashing(
        _hash_of(upload),
        size=upload.byte_count,
        algorithm=algorithm or upload.digest_algorithm,
        chunked=content_range is not None,
    )
    engine = location_engine(upload.location)
    reader = HashingBody(body.stream, hashing)
    db_release()
    try:
        state = engine.upload_append(upload.engine_state, reader, length=length)
        if content_range is not None:
            _trailing_bytes_refuse(body, reader.size)
    except Exception as exc:
        _health_report(upload.location, exc)
        _upload_discard(upload, engine)
        if isinstance(exc, errors.OCIError):
            raise
        raise _stream_failed(exc, expected=length, received=reader.size) from exc
    result = hashing.result()
    fields = {
        "engine_state": state,
        "byte_count": upload.byte_count + reader.size,
        "hash_mode": result.mode,
        "sha256_state": result.sha256_state,
        "sha256_hex": result.sha256_hex,
        "sha512_hex": result.sha512_hex,
        "busy_until": None,
        "updated_at": timezone.now(),
    }
    BlobUpload.objects.filter(pk=upload.pk, busy_until=until).update(**fields)
    for name, value in fields.items():
        setattr(upload, name, value)
    return upload


def _digest_mismatch(digest: Digest, actual: str) -> errors.OCIError:
    return errors.DigestInvalid(
        {"expected": str(digest), "actual": f"{digest.algorithm}:{actual}"},
        message="provided digest did not match uploaded content",
    )


def _bytes_commit(
    *,
    engine: StorageEngine,
    location: StorageLocation,
    state: UploadState,
    size: int,
    hashes: UploadHash,
    digest: Digest,
) -> str:
    """Verify a session's bytes against ``digest``, then make them the blob's object.

    Return the SHA-256 of the bytes. Nothing becomes visible on a mismatch (DigestInvalid); a
    blob already present in the location is not written twice.
    """
    key = content_key(str(digest))
    present = blob_present_at(digest=str(digest), location_id=location.pk)
    known = digests_known(hashes, digest.algorithm)
    if known is not None:
        sha256, actual = known
        if actual != digest.hex:
            _abort_quietly(engine, state)
            raise _digest_mismatch(digest, actual)
        if present:
            _abort_quietly(engine, state)
        else:
            engine.upload_complete(state, key)
        return sha256
    # The bytes came in several requests that could not share a hash state: read them back once.
    staging = upload_key(state["upload_id"], "assembled")
    engine.upload_complete(state, staging)
    try:
        with engine.read(staging) as stream:
            found = stream_digests(stream, sha512=digest.algorithm == "sha512")
        actual = found.sha512 if digest.algorithm == "sha512" else found.sha256
        if found.size != size or actual != digest.hex:
            raise _digest_mismatch(digest, actual)
        if not present:
            engine.copy_to(staging, engine, target_key=key)
    finally:
        engine.delete(staging)
    return found.sha256


def _blob_record(
    *, repository: Repository, digest: Digest, size: int, sha256: str, location: StorageLocation
) -> Blob:
    with transaction.atomic():
        blob = blob_commit(digest=str(digest), size=size, sha256=sha256, location=location)
        RepositoryBlob.objects.get_or_create(repository=repository, blob=blob)
    return blob


def upload_finish(
    *,
    upload: BlobUpload,
    body: Body,
    content_range: tuple[int, int] | None,
    digest: Digest,
) -> Blob:
    """Append the final chunk (if any), verify the digest and commit the blob."""
    if not body.empty or content_range is not None:
        upload = upload_append(
            upload=upload, body=body, content_range=content_range, algorithm=digest.algorithm
        )
    until = _claim(upload)
    engine = location_engine(upload.location)
    try:
        sha256 = _bytes_commit(
            engine=engine,
            location=upload.location,
            state=upload.engine_state,
            size=upload.byte_count,
            hashes=_hash_of(upload),
            digest=digest,
        )
    except errors.DigestInvalid:
        _upload_discard(upload, engine)
        raise
    except StorageError as exc:
        BlobUpload.objects.filter(pk=upload.pk, busy_until=until).update(busy_until=None)
        logger.warning("commit of upload %s failed: %s", upload.uuid, exc)
        raise StorageFailed({"reason": str(exc)[:500]}) from exc
    with transaction.atomic():
        blob = _blob_record(
            repository=upload.repository,
            digest=digest,
            size=upload.byte_count,
            sha256=sha256,
            location=upload.location,
        )
        BlobUpload.objects.filter(pk=upload.pk).delete()
    logger.info("blob %s committed in %s (%d bytes)", digest, upload.location, upload.byte_count)
    return blob


def upload_cancel(*, upload: BlobUpload) -> None:
    """Abort an upload session in its engine and forget it."""
    _upload_discard(upload, location_engine(upload.location))


def blob_upload_whole(*, repository: Repository, body: Body, digest: Digest) -> Blob:
    """Store a blob sent in one request (``POST ?digest=``), verified before it is visible."""
    location = upload_location_choose()
    engine = location_engine(location)
    with _storage("starting an upload", location):
        state = engine.upload_begin(upload_id=str(uuid.uuid4()), expected_size=body.length)
    hashing = request_hashing(UploadHash(), size=0, algorithm=digest.algorithm, chunked=False)
    reader = HashingBody(body.stream, hashing)
    db_release()
    try:
        state = engine.upload_append(state, reader, length=body.length)
        sha256 = _bytes_commit(
            engine=engine,
            location=location,
            state=state,
            size=reader.size,
            hashes=hashing.result(),
            digest=digest,
        )
    except Exception as exc:
        _health_report(location, exc)
        _abort_quietly(engine, state)
        if isinstance(exc, errors.OCIError):
            raise
        raise _stream_failed(exc, expected=body.length, received=reader.size) from exc
    return _blob_record(
        repository=repository, digest=digest, size=reader.size, sha256=sha256, location=location
    )
