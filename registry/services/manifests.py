"""Manifest pushes and deletes, tags, and the hook that tells replication about a new manifest."""

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from replication.commitsql import placements_ensure_statement, task_sender
from replication.services import placements_ensure

from .. import errors
from ..models import Manifest, ManifestBlob, ManifestChild, Repository, RepositoryBlob, Tag
from ..names import digest_parse, is_digest_reference, tag_check, tag_valid
from ..selectors import manifest_forget, manifest_remember
from .manifest_parse import ParsedManifest, manifest_parse

logger = logging.getLogger(__name__)

MiB = 1024 * 1024


def manifest_max_bytes() -> int:
    """Return the largest manifest accepted (``QUAY_GEO_MANIFEST_MAX_BYTES``, default 4 MiB)."""
    return int(getattr(settings, "QUAY_GEO_MANIFEST_MAX_BYTES", 4 * MiB))


@dataclass(frozen=True)
class ManifestPushed:
    """The outcome of a manifest push."""

    manifest: Manifest
    tags: list[str]
    subject: str | None


def replication_manifest_committed(manifest: Manifest) -> None:
    """Tell replication that ``manifest`` (and the blobs it references) was committed.

    Called once per push, after the transaction that recorded it: the targets of every blob it
    references, children of an index included, are checked again, for namespaces whose extra
    locations the blobs' first push did not know.
    """
    placements_ensure(blob_ids=manifest_blob_ids(manifest))


def manifest_blob_ids(manifest: Manifest) -> set[int]:
    """Return the ids of every blob a manifest references, through nested indexes too."""
    blob_ids: set[int] = set()
    seen: set[int] = set()
    frontier = [manifest.pk]
    while frontier:
        seen.update(frontier)
        blob_ids.update(
            ManifestBlob.objects.filter(manifest_id__in=frontier).values_list("blob_id", flat=True)
        )
        children = ManifestChild.objects.filter(parent_id__in=frontier).values_list(
            "child_id", flat=True
        )
        frontier = [child for child in children if child not in seen]
    return blob_ids


def _digest_of(content: bytes, reference: str) -> str:
    """Return the manifest's digest: the reference's algorithm if it is a digest, else sha256."""
    if not is_digest_reference(reference):
        return f"sha256:{hashlib.sha256(content).hexdigest()}"
    wanted = digest_parse(reference)
    actual = hashlib.new(wanted.algorithm, content).hexdigest()
    if actual != wanted.hex:
        raise errors.DigestInvalid(
            {"reference": reference, "actual": f"{wanted.algorithm}:{actual}"},
            message="the manifest's digest does not match the reference",
        )
    return reference


def _references_resolve(
    repository: Repository, parsed: ParsedManifest
) -> tuple[list[int], list[int]]:
    """Return the ids of the blobs and child manifests a manifest references.

    Raise ManifestBlobUnknown when one is not in the repository (a foreign layer may be absent).
    """
    wanted = {str(d.digest) for d in parsed.blobs}
    blob_ids = dict(
        RepositoryBlob.objects.filter(repository=repository, blob__digest__in=wanted).values_list(
            "blob__digest", "blob_id"
        )
    )
    children = {str(d.digest) for d in parsed.children}
    child_ids = dict(
        Manifest.objects.filter(repository=repository, digest__in=children).values_list(
            "digest", "pk"
        )
    )
    missing = sorted(
        {str(d.digest) for d in parsed.blobs if not d.foreign and str(d.digest) not in blob_ids}
        | {digest for digest in children if digest not in child_ids}
    )
    if missing:
        raise errors.ManifestBlobUnknown(
            [{"digest": digest} for digest in missing],
            message=f"manifest references content unknown to {repository.full_name}: "
            + ", ".join(missing),
        )
    return sorted(set(blob_ids.values())), sorted(set(child_ids.values()))


def manifest_put(
    *,
    repository: Repository,
    reference: str,
    tags: list[str],
    content: bytes,
    content_type: str,
) -> ManifestPushed:
    """Store a manifest byte-exact, record what it references and point its tags at it."""
    wanted_tags = [] if is_digest_reference(reference) else [tag_check(reference)]
    wanted_tags = list(dict.fromkeys(wanted_tags + [tag_check(tag) for tag in tags]))
    digest = _digest_of(content, reference)
    parsed = manifest_parse(content, content_type)
    blob_ids, child_ids = _references_resolve(repository, parsed)
    pushed = _Pushed(repository, digest, parsed, content, wanted_tags, blob_ids, child_ids)
    if connection.vendor == "postgresql":
        manifest = _manifest_record_statement(pushed)
    else:
        manifest = _manifest_record(pushed)
        replication_manifest_committed(manifest)
    manifest_remember(name=repository.full_name, manifest=manifest, tags=wanted_tags)
    logger.info("manifest %s pushed to %s, tags %s", digest, repository, wanted_tags)
    return ManifestPushed(
        manifest=manifest,
        tags=wanted_tags,
        subject=str(parsed.subject.digest) if parsed.subject else None,
    )


@dataclass(frozen=True)
class _Pushed:
    """A parsed manifest push whose references are resolved, ready to be recorded."""

    repository: Repository
    digest: str
    parsed: ParsedManifest
    content: bytes
    tags: list[str]
    blob_ids: list[int]
    child_ids: list[int]

    def fields(self) -> dict[str, Any]:
        """Return the Manifest row's fields other than repository and digest."""
        parsed = self.parsed
        return {
            "media_type": parsed.media_type,
            "content": self.content,
            "size": len(self.content),
            "artifact_type": parsed.artifact_type,
            "subject_digest": str(parsed.subject.digest) if parsed.subject else "",
            "annotations": parsed.annotations,
        }


def _manifest_record(pushed: _Pushed) -> Manifest:
    """Record the manifest, its references and tags in a transaction (any database)."""
    repository, parsed = pushed.repository, pushed.parsed
    blob_ids, child_ids, tags = pushed.blob_ids, pushed.child_ids, pushed.tags
    with transaction.atomic():
        manifest, created = Manifest.objects.get_or_create(
            repository=repository, digest=pushed.digest, defaults=pushed.fields()
        )
        if created:
            ManifestBlob.objects.bulk_create(
                [ManifestBlob(manifest=manifest, blob_id=blob_id) for blob_id in blob_ids]
            )
            ManifestChild.objects.bulk_create(
                [ManifestChild(parent=manifest, child_id=child_id) for child_id in child_ids]
            )
        elif manifest.media_type != parsed.media_type:
            Manifest.objects.filter(pk=manifest.pk).update(media_type=parsed.media_type)
            manifest.media_type = parsed.media_type
        for tag in tags:
            Tag.objects.update_or_create(
                repository=repository, name=tag, defaults={"manifest": manifest}
            )
    return manifest


def _manifest_record_statement(pushed: _Pushed) -> Manifest:
    """Record the manifest, its references, its tags and its blobs' missing placements in one
    statement (PostgreSQL): a far region pays one round trip for it, not a dozen.

    The blobs of an index's children are ensured afterwards, as on other databases.
    """
    repository, digest = pushed.repository, pushed.digest
    ensure = placements_ensure_statement(
        blob_ids=pushed.blob_ids, namespace_id=repository.namespace_id
    )
    fields = pushed.fields()
    sql = f"""WITH {ensure.ctes},
    manifest AS (
        INSERT INTO {Manifest._meta.db_table} (repository_id, digest, media_type, content, size,
            artifact_type, subject_digest, annotations, created_at)
        VALUES (%(repository)s, %(digest)s, %(media_type)s, %(content)s, %(size)s,
            %(artifact_type)s, %(subject_digest)s, %(annotations)s::jsonb, now())
        ON CONFLICT (repository_id, digest) DO UPDATE SET media_type = EXCLUDED.media_type
        RETURNING id
    ),
    blobs AS (
        INSERT INTO {ManifestBlob._meta.db_table} (manifest_id, blob_id)
        SELECT manifest.id, blob_id FROM manifest, unnest(%(blob_ids)s::bigint[]) AS blob_id
        ON CONFLICT (manifest_id, blob_id) DO NOTHING
    ),
    children AS (
        INSERT INTO {ManifestChild._meta.db_table} (parent_id, child_id)
        SELECT manifest.id, child_id FROM manifest, unnest(%(child_ids)s::bigint[]) AS child_id
        ON CONFLICT (parent_id, child_id) DO NOTHING
    ),
    tags AS (
        INSERT INTO {Tag._meta.db_table} (repository_id, name, manifest_id, updated_at)
        SELECT %(repository)s, tag, manifest.id, now()
        FROM manifest, unnest(%(tags)s::text[]) AS tag
        ON CONFLICT (repository_id, name)
        DO UPDATE SET manifest_id = EXCLUDED.manifest_id, updated_at = now()
    )
    SELECT manifest.id, ensured.id, ensured.location_id
    FROM manifest LEFT JOIN ensured ON true"""  # noqa: S608 - table names from the models
    params = {
        **ensure.params,
        **fields,
        "annotations": json.dumps(fields["annotations"]),
        "repository": repository.pk,
        "digest": digest,
        "blob_ids": pushed.blob_ids,
        "child_ids": pushed.child_ids,
        "tags": pushed.tags,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    manifest = Manifest(pk=rows[0][0], repository=repository, digest=digest, **fields)
    task_sender.send_later((row[1], row[2]) for row in rows if row[1] is not None)
    if pushed.child_ids:
        replication_manifest_committed(manifest)
    return manifest


def manifest_delete(*, repository: Repository, reference: str) -> None:
    """Delete a manifest and its tags (digest reference), or only a tag (tag reference)."""
    name = repository.full_name
    if is_digest_reference(reference):
        digest_parse(reference)
        tags = list(
            Tag.objects.filter(repository=repository, manifest__digest=reference).values_list(
                "name", flat=True
            )
        )
        deleted, _ = Manifest.objects.filter(repository=repository, digest=reference).delete()
        manifest_forget(name=name, digests=[reference], tags=tags)
    elif tag_valid(reference):
        deleted, _ = Tag.objects.filter(repository=repository, name=reference).delete()
        manifest_forget(name=name, tags=[reference])
    else:
        deleted = 0
    if not deleted:
        raise errors.ManifestUnknown({"reference": reference[:300]})
    logger.info("deleted %s from %s", reference, repository)
