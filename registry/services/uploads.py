"""Blob uploads: sessions pinned to one location, bytes streamed into its engine while hashed.

No transaction is open while bytes stream: a session is read and claimed with one conditional
``UPDATE ... RETURNING`` (``busy_until``), the bytes go from the request body through the
hashers into the engine's multipart session, and the row is written once they are in. A far
region pays a round trip to the primary per statement, so each request costs few: a POST one
(the row), a PATCH two (claim, row), a PUT two (claim, and on PostgreSQL one statement that
records the blob, its placements and its link, and drops the session). The database connection
stays open while the body streams: reconnecting to a far primary costs more round trips than
any statement.
"""

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from quay_geo.logging import request_id_current
from replication import health
from replication.commitsql import blob_commit_statement, task_sender
from replication.models import Blob, Placement, StorageLocation
from replication.selectors import (
    PreferenceError,
    blob_facts_remember,
    config_current,
    location_engine,
    upload_location_pick,
)
from replication.services import blob_commit
from storage_engines.base import StorageEngine, UploadState, store_failure
from storage_engines.errors import StorageError, StoragePermanentError, StorageUnavailable
from storage_engines.keys import content_key, upload_key
from storage_engines.streams import Readable

from .. import errors
from ..hashing import HashingBody, UploadHash, digests_known, request_hashing, stream_digests
from ..models import BlobUpload, Repository, RepositoryBlob
from ..names import Digest
from ..ranges import upload_range
from ..selectors import blob_link_remember, upload_get
from .problems import StorageFailed
from .streaming import Body

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
    return timedelta(seconds=int(getattr(settings, "QUAY_GEO_UPLOAD_LEASE_SECONDS", 30)))


class LeaseLost(StorageError):
    """Another request claimed the upload after this one's lease ran out (a stalled body)."""


class Lease:
    """A request's claim on an upload session (``busy_until``), renewed while its body streams.

    The claim is short (``QUAY_GEO_UPLOAD_LEASE_SECONDS``, 30 s), so a request whose worker
    died blocks a retry for at most that long. A body that streams longer renews it, at most
    once every third of the lease: one more statement per 10 s of streaming, none for a body
    that streams faster.
    """

    def __init__(self, upload_pk: int, until: datetime) -> None:
        self.upload_pk = upload_pk
        self.until = until
        self._renewed = time.monotonic()

    def renew_if_due(self) -> None:
        """Move ``until`` a lease ahead if a third of it has passed; raise LeaseLost if taken."""
        lease = _lease()
        if time.monotonic() - self._renewed < lease.total_seconds() / 3:
            return
        until = timezone.now() + lease
        renewed = BlobUpload.objects.filter(pk=self.upload_pk, busy_until=self.until).update(
            busy_until=until
        )
        if not renewed:
            raise LeaseLost(f"upload {self.upload_pk} was claimed by another request")
        self.until, self._renewed = until, time.monotonic()


class _Renewing:
    """A readable that renews the lease of its upload as it is read."""

    def __init__(self, source: Readable, lease: Lease) -> None:
        self._source = source
        self._lease = lease

    def read(self, size: int = -1, /) -> bytes:
        self._lease.renew_if_due()
        return self._source.read(size)


def upload_claim(*, repository: Repository, uuid: str) -> tuple[BlobUpload, Lease]:
    """Return an upload session marked busy for this request, and its lease; one statement.

    Raise BlobUploadUnknown if there is none, RangeInvalid if another request writes to it.
    """
    now = timezone.now()
    until = now + _lease()
    table = BlobUpload._meta.db_table
    claimed = list(
        BlobUpload.objects.raw(
            f"UPDATE {table} SET busy_until = %s WHERE uuid = %s AND repository_id = %s "  # noqa: S608 - table name from the model
            "AND (busy_until IS NULL OR busy_until < %s) RETURNING *",
            [until, uuid, repository.pk, now],
        )
    )
    if not claimed:
        upload = upload_get(repository=repository, uuid=uuid)
        raise _range_invalid(upload, "another request is writing to this upload")
    upload = claimed[0]
    upload.repository = repository
    location = {loc.pk: loc for loc in config_current().locations}.get(upload.location_id)
    if location is not None:
        upload.location = location
    return upload, Lease(upload.pk, until)


def _release(upload: BlobUpload, until: Lease) -> None:
    BlobUpload.objects.filter(pk=upload.pk, busy_until=until.until).update(busy_until=None)


def _abort_quietly(engine: StorageEngine, state: UploadState) -> None:
    try:
        engine.upload_abort(state)
    except StorageError as exc:
        logger.warning("could not abort upload %s: %s", state.get("upload_id"), exc)


def _upload_discard(upload: BlobUpload, engine: StorageEngine) -> None:
    """Abort the engine session (best effort) and forget the upload."""
    _abort_quietly(engine, upload.engine_state)
    BlobUpload.objects.filter(pk=upload.pk).delete()


def _store_failed(
    upload: BlobUpload, engine: StorageEngine, until: Lease, exc: StorageError, received: int
) -> errors.OCIError:
    """Keep a session whose store failed while a request appended to it, and return the 503.

    An ``append_retryable`` engine kept its session as the stored state describes it: the row is
    left as it was, so a retry of the same chunk proceeds. Otherwise the engine dropped the
    session: a session that held nothing yet gets a new one (the retry still proceeds), one that
    held bytes is forgotten (they are gone; the client starts again).
    """
    logger.warning(
        "upload %s: %s failed after %d bytes of the request (request %s): %s",
        upload.uuid,
        upload.location,
        received,
        request_id_current(),
        exc,
    )
    if not engine.append_retryable:
        if upload.byte_count:
            _upload_discard(upload, engine)
            return StorageFailed({"reason": str(exc)[:500], "resumable": False})
        try:
            fresh = engine.upload_begin(upload_id=upload.uuid)
        except StorageError:
            _upload_discard(upload, engine)
            return StorageFailed({"reason": str(exc)[:500], "resumable": False})
        BlobUpload.objects.filter(pk=upload.pk).update(engine_state=fresh)
    _release(upload, until)
    return StorageFailed(
        {"reason": str(exc)[:500], "resumable": True},
        headers={
            "Range": upload_range(upload.byte_count),
            "Location": upload_path(upload),
            "Docker-Upload-UUID": upload.uuid,
        },
    )


def _stream_failed(exc: Exception, *, expected: int | None, received: int) -> errors.OCIError:
    """Return the error a failed body stream answers: the client's (short body) or storage's."""
    if store_failure(exc):
        return StorageFailed({"reason": str(exc)[:500]})
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
    until: Lease,
    body: Body,
    content_range: tuple[int, int] | None,
    algorithm: str | None = None,
    release: bool = True,
) -> BlobUpload:
    """Stream a request body to the end of a claimed upload and return the updated upload.

    A client's failure while bytes stream (a short or broken body) discards the whole session
    (nothing half-written remains); the client starts again. The store's failure answers 503 and
    keeps the session where it can (``_store_failed``). ``release``: give the claim back (a
    PATCH); a PUT keeps it to commit.
    """
    try:
        length = _chunk_length(upload, body, content_range)
    except errors.OCIError:
        _release(upload, until)
        raise
    if length == 0:
        if release:
            _release(upload, until)
        return upload
    hashing = request_hashing(
        _hash_of(upload),
        size=upload.byte_count,
        algorithm=algorithm or upload.digest_algorithm,
        chunked=content_range is not None,
    )
    engine = location_engine(upload.location)
    reader = HashingBody(_Renewing(body.stream, until), hashing)
    try:
        state = engine.upload_append(upload.engine_state, reader, length=length)
        if content_range is not None:
            _trailing_bytes_refuse(body, reader.size)
    except Exception as exc:
        if isinstance(exc, LeaseLost):
            # The session is another request's now: neither release nor discard it.
            raise _range_invalid(upload, str(exc)) from exc
        _health_report(upload.location, exc)
        if isinstance(exc, StorageError) and store_failure(exc):
            raise _store_failed(upload, engine, until, exc, reader.size) from exc
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
        "updated_at": timezone.now(),
    }
    if release:
        BlobUpload.objects.filter(pk=upload.pk, busy_until=until.until).update(
            **fields, busy_until=None
        )
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

    Return the SHA-256 of the bytes. Nothing becomes visible on a mismatch (DigestInvalid).
    The object is written even when the database says the location holds the blob already:
    the row may outlive the object (a store that lost it), and the push is what repairs it.
    """
    key = content_key(str(digest))
    known = digests_known(hashes, digest.algorithm)
    if known is not None:
        sha256, actual = known
        if actual != digest.hex:
            _abort_quietly(engine, state)
            raise _digest_mismatch(digest, actual)
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
        engine.copy_to(staging, engine, target_key=key)
    finally:
        engine.delete(staging)
    return found.sha256


def _blob_record(
    *,
    repository: Repository,
    digest: Digest,
    size: int,
    sha256: str,
    location: StorageLocation,
    upload: BlobUpload | None = None,
) -> Blob:
    """Record a verified blob in ``location``, link it to the repository, drop the session.

    On PostgreSQL one statement (round trip) does it all and the replication tasks of the new
    placements are sent by a background thread; elsewhere a transaction of the same steps.
    """
    if connection.vendor != "postgresql":
        with transaction.atomic():
            blob = blob_commit(digest=str(digest), size=size, sha256=sha256, location=location)
            RepositoryBlob.objects.get_or_create(repository=repository, blob=blob)
            if upload is not None:
                BlobUpload.objects.filter(pk=upload.pk).delete()
        return blob
    statement = blob_commit_statement(
        digest=str(digest), size=size, sha256=sha256, location=location
    )
    sql = f"""WITH {statement.ctes},
    link AS (
        INSERT INTO {RepositoryBlob._meta.db_table} (repository_id, blob_id, created_at)
        SELECT %(repository)s, id, now() FROM blob
        ON CONFLICT (repository_id, blob_id) DO NOTHING
    ),
    gone AS (DELETE FROM {BlobUpload._meta.db_table} WHERE id = %(upload)s)
    SELECT blob.id, pending.id, pending.location_id,
        ARRAY(SELECT location_id FROM present_before)
    FROM blob LEFT JOIN pending ON true"""  # noqa: S608 - table names from the models
    params = {
        **statement.params,
        "repository": repository.pk,
        "upload": upload.pk if upload is not None else None,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    blob = Blob(pk=rows[0][0], digest=str(digest), size=size, sha256=sha256)
    task_sender.send_later((row[1], row[2]) for row in rows if row[1] is not None)
    # The region pulls what it just pushed without asking the database: its link and its
    # present copies (this one, and those present before) go to the region cache.
    holders = dict.fromkeys([location.pk, *rows[0][3]])
    blob_facts_remember(blob, [Placement(blob=blob, location_id=pk) for pk in holders])
    blob_link_remember(name=repository.full_name, digest=blob.digest)
    return blob


def upload_finish(
    *,
    upload: BlobUpload,
    until: Lease,
    body: Body,
    content_range: tuple[int, int] | None,
    digest: Digest,
) -> Blob:
    """Append the final chunk (if any) to a claimed upload, verify the digest, commit the blob."""
    if not body.empty or content_range is not None:
        upload = upload_append(
            upload=upload,
            until=until,
            body=body,
            content_range=content_range,
            algorithm=digest.algorithm,
            release=False,
        )
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
        fields = {
            "engine_state": upload.engine_state,
            "byte_count": upload.byte_count,
            "hash_mode": upload.hash_mode,
            "sha256_state": upload.sha256_state,
            "sha256_hex": upload.sha256_hex,
            "sha512_hex": upload.sha512_hex,
        }
        BlobUpload.objects.filter(pk=upload.pk, busy_until=until.until).update(
            **fields, busy_until=None
        )
        logger.warning("commit of upload %s failed: %s", upload.uuid, exc)
        raise StorageFailed({"reason": str(exc)[:500]}) from exc
    blob = _blob_record(
        repository=upload.repository,
        digest=digest,
        size=upload.byte_count,
        sha256=sha256,
        location=upload.location,
        upload=upload,
    )
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
