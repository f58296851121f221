"""Repositories created on first push, and links of blobs to repositories."""

from replication.models import Blob, Placement, PlacementState
from replication.selectors import blob_facts_remember

from .. import errors
from ..models import Namespace, Repository, RepositoryBlob
from ..selectors import (
    blob_link_forget,
    blob_link_remember,
    blob_linked,
    repository_find,
    repository_remember,
)


def repository_for_push(*, name: str) -> Repository:
    """Return the repository a push goes to, created on first push; Denied without namespace.

    The caller has checked that the pusher may write the namespace.
    """
    existing = repository_find(name=name)
    if existing is not None:
        return existing
    namespace_name, _, rest = name.partition("/")
    namespace = Namespace.objects.filter(name=namespace_name).first()
    if namespace is None:
        raise errors.Denied(
            {"namespace": namespace_name},
            message=f"namespace {namespace_name} does not exist; push to your own namespace "
            "or to an organization you may write to",
        )
    repository, _ = Repository.objects.get_or_create(namespace=namespace, name=rest)
    repository.namespace = namespace  # loaded already: no second query for it
    repository_remember(name=name, repository=repository)
    return repository


def blob_mount(*, repository: Repository, source: Repository, digest: str) -> Blob | None:
    """Link a blob of ``source`` into ``repository``; return it, or None if it cannot be mounted."""
    blob = blob_linked(repository=source, digest=digest)
    if blob is None:
        return None
    present = list(Placement.objects.filter(blob=blob, state=PlacementState.PRESENT))
    if not present:
        return None
    blob_link(repository=repository, blob=blob)
    # Like a push, a mount fills the region cache: the pull that follows asks nothing.
    blob_facts_remember(blob, present)
    return blob


def blob_link(*, repository: Repository, blob: Blob) -> None:
    """Make ``blob`` reachable in ``repository`` (a mount); nothing if it is already."""
    RepositoryBlob.objects.get_or_create(repository=repository, blob=blob)
    blob_link_remember(name=repository.full_name, digest=blob.digest)


def blob_unlink(*, repository: Repository, digest: str) -> None:
    """Remove a blob from a repository (its bytes are collected later); BlobUnknown if absent."""
    deleted, _ = RepositoryBlob.objects.filter(repository=repository, blob__digest=digest).delete()
    blob_link_forget(name=repository.full_name, digest=digest)
    if not deleted:
        raise errors.BlobUnknown({"digest": digest})
