"""A blob commit in one statement, and replication tasks sent off the request path.

A far region pays a round trip to the primary for every statement, and a transaction adds
two (``BEGIN`` and ``COMMIT``). On PostgreSQL the commit of an uploaded blob is therefore one
statement of data-modifying CTEs: the blob row, its ``present`` placement where the bytes
were written, and the ``pending`` placements of every target it misses. The caller (the
registry) appends its own CTEs to the same statement; this module owns only the text that
touches replication's tables. Other databases (the embedded SQLite of ``make run``) use
``replication.services.blob_commit`` in a transaction.

The new placements are marked enqueued in that statement and their tasks are handed to a
background thread: a broker far away costs the request nothing, and a task lost with a dying
process is sent again by the reconciler (``QUAY_GEO_RECONCILE_LOST_AFTER``).
"""

import logging
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.db import close_old_connections

from .models import Blob, NamespaceReplication, Placement, PlacementState, StorageLocation
from .selectors import config_current

logger = logging.getLogger(__name__)


#: The columns a new placement row names in the statements below (the rest have defaults).
PLACEMENT_COLUMNS = (
    "blob_id, location_id, state, attempts, last_error, error_permanent, copy_method, "
    "created_at, updated_at"
)


@dataclass(frozen=True)
class CommitStatement:
    """CTEs with their parameters: ``blob`` (its ``id``), ``pending`` (``id``, ``location_id``)
    for a blob commit, and ``present_before`` (``location_id``: copies present before it)."""

    ctes: str
    params: dict[str, Any]


def _default_targets() -> tuple[bool, list[int]]:
    config = config_current()
    if not config.replication_enabled:
        return False, []
    return True, [
        location.pk
        for location in config.locations
        if location.replicate_by_default and location.kind != "local"
    ]


def blob_commit_statement(
    *, digest: str, size: int, sha256: str, location: StorageLocation
) -> CommitStatement:
    """Return the CTEs that record verified bytes of a blob in ``location`` and plan its copies.

    The targets are those of ``replication.targets.targets_of_blobs``: the default locations
    (from the cached configuration) and the namespace targets of manifests already referencing
    the blob (a blob pushed again, or mounted). A blob pushed again is recoverable again, and
    the repairs that failed for want of a source are planned anew.
    """
    enabled, defaults = _default_targets()
    manifest_blob = apps.get_model("registry", "ManifestBlob")
    manifest = apps.get_model("registry", "Manifest")
    repository = apps.get_model("registry", "Repository")
    tables = {
        "blob": Blob._meta.db_table,
        "placement": Placement._meta.db_table,
        "location": StorageLocation._meta.db_table,
        "namespace_target": NamespaceReplication._meta.db_table,
        "manifest_blob": manifest_blob._meta.db_table,
        "manifest": manifest._meta.db_table,
        "repository": repository._meta.db_table,
    }
    placement_columns = PLACEMENT_COLUMNS
    ctes = f"""
    blob AS (
        INSERT INTO {tables["blob"]} (digest, size, sha256, created_at)
        VALUES (%(digest)s, %(size)s, %(sha256)s, now())
        ON CONFLICT (digest) DO UPDATE SET digest = EXCLUDED.digest, unrecoverable_at = NULL
        RETURNING id
    ),
    here AS (
        INSERT INTO {tables["placement"]} ({placement_columns}, verified_at)
        SELECT id, %(location)s, %(present)s, 0, '', false, '', now(), now(), now() FROM blob
        ON CONFLICT (blob_id, location_id) DO UPDATE SET
            state = EXCLUDED.state, verified_at = now(), last_error = '',
            error_permanent = false, lease_expires_at = NULL, next_attempt_at = NULL,
            updated_at = now()
        RETURNING id
    ),
    targets AS (
        SELECT target FROM unnest(%(defaults)s::bigint[]) AS target
        UNION
        SELECT nt.location_id FROM {tables["namespace_target"]} nt
        JOIN {tables["location"]} sl ON sl.id = nt.location_id AND sl.kind <> 'local'
        JOIN {tables["repository"]} r ON r.namespace_id = nt.namespace_id
        JOIN {tables["manifest"]} m ON m.repository_id = r.id
        JOIN {tables["manifest_blob"]} mb ON mb.manifest_id = m.id
        JOIN blob ON mb.blob_id = blob.id
        WHERE %(enabled)s
    ),
    pending AS (
        INSERT INTO {tables["placement"]} ({placement_columns}, enqueued_at)
        SELECT blob.id, targets.target, %(pending)s, 0, '', false, '', now(), now(), now()
        FROM blob, targets WHERE targets.target <> %(location)s
        ON CONFLICT (blob_id, location_id) DO UPDATE SET
            state = EXCLUDED.state, attempts = 0, error_permanent = false, given_up_at = NULL,
            next_attempt_at = NULL, enqueued_at = now(), updated_at = now()
        -- a repair that found no source left: this push is one
        WHERE {tables["placement"]}.state = %(failed)s AND {tables["placement"]}.lost_at IS NOT NULL
        RETURNING id, location_id
    ),
    present_before AS (
        SELECT p.location_id FROM {tables["placement"]} p JOIN blob ON p.blob_id = blob.id
        WHERE p.state = %(present)s
    )"""  # noqa: S608 - table names from the models
    params = {
        "digest": digest,
        "size": size,
        "sha256": sha256,
        "location": location.pk,
        "present": PlacementState.PRESENT.value,
        "pending": PlacementState.PENDING.value,
        "failed": PlacementState.FAILED.value,
        "defaults": defaults,
        "enabled": enabled,
    }
    return CommitStatement(ctes=ctes, params=params)


# --- Tasks sent by a background thread -------------------------------------------------------


class TaskSender:
    """One daemon thread per process that sends replication tasks handed to it."""

    #: Work waiting beyond this is dropped (and logged): the reconciler sends it later.
    MAX_WAITING = 10_000

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, list[int]]] = queue.Queue(self.MAX_WAITING)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def send_later(self, placements: Iterable[tuple[int, int]]) -> None:
        """Send the tasks of ``(placement id, location pk)`` pairs soon, from the thread."""
        by_location: dict[str, list[int]] = {}
        ids_of = {location.pk: location.location_id for location in config_current().locations}
        for placement_id, location_pk in placements:
            location_id = ids_of.get(location_pk)
            if location_id is not None:
                by_location.setdefault(location_id, []).append(placement_id)
        for location_id, ids in by_location.items():
            try:
                self._queue.put_nowait((location_id, ids))
            except queue.Full:
                logger.warning("%s replication task(s) left for the reconciler", len(ids))
        if by_location:
            self._thread_ensure()

    def _thread_ensure(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="replication-sender", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        from .services import tasks_send

        while True:
            location_id, ids = self._queue.get()
            try:
                tasks_send(ids, location_id)
            except Exception:
                logger.exception("could not send %s replication task(s)", len(ids))
            finally:
                close_old_connections()
                self._queue.task_done()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every task handed over was sent (tests)."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        done.wait(timeout)


task_sender = TaskSender()


def placements_ensure_statement(*, blob_ids: list[int], namespace_id: int) -> CommitStatement:
    """Return a CTE ``ensured`` (``id``, ``location_id``) creating the missing placements of
    blobs that a manifest of ``namespace_id`` references: default and namespace targets.

    The statement's caller records the manifest in the same statement, whose new rows the CTE
    cannot see: the namespace's targets are therefore named here, not found through them.
    """
    enabled, defaults = _default_targets()
    placement_columns = f"{PLACEMENT_COLUMNS}, enqueued_at"
    ctes = f"""
    ensured_targets AS (
        SELECT target FROM unnest(%(ensure_defaults)s::bigint[]) AS target
        UNION
        SELECT nt.location_id FROM {NamespaceReplication._meta.db_table} nt
        JOIN {StorageLocation._meta.db_table} sl ON sl.id = nt.location_id AND sl.kind <> 'local'
        WHERE nt.namespace_id = %(ensure_namespace)s AND %(ensure_enabled)s
    ),
    ensured AS (
        INSERT INTO {Placement._meta.db_table} ({placement_columns})
        SELECT blob_id, target, %(ensure_pending)s, 0, '', false, '', now(), now(), now()
        FROM unnest(%(ensure_blobs)s::bigint[]) AS blob_id, ensured_targets
        ON CONFLICT (blob_id, location_id) DO NOTHING
        RETURNING id, location_id
    )"""  # noqa: S608 - table names from the models
    params = {
        "ensure_defaults": defaults,
        "ensure_namespace": namespace_id,
        "ensure_enabled": enabled,
        "ensure_pending": PlacementState.PENDING.value,
        "ensure_blobs": blob_ids,
    }
    return CommitStatement(ctes=ctes, params=params)
