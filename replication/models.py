"""Where bytes live: storage locations, blobs, their placements, and replication settings."""

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from storage_engines.registry import engine_class

from .crypto import secret_decrypt, secret_encrypt

location_id_validator = RegexValidator(
    r"^[A-Za-z0-9_-]+$", "Location IDs use only letters, digits, '_' and '-'."
)


class EngineKind(models.TextChoices):
    S3 = "s3", "Amazon S3"
    RADOSGW = "radosgw", "Ceph RADOS Gateway"
    GCS = "gcs", "Google Cloud Storage"
    SWIFT = "swift", "OpenStack Swift"
    LOCAL = "local", "Local Storage"
    MEMORY = "memory", "In-memory (tests only)"


class ServeMode(models.TextChoices):
    REDIRECT = "redirect", "Redirect clients to a short-lived storage URL"
    PROXY = "proxy", "Stream blobs through the registry"


class ReplicationSettings(models.Model):
    """The singleton row: replication on or off, and the configuration version."""

    storage_replication_enabled = models.BooleanField(default=False)
    config_version = models.PositiveBigIntegerField(default=1)
    #: Bumped when the targets of blobs may have changed (defaults, namespace targets).
    targets_version = models.PositiveBigIntegerField(default=1)
    #: The targets_version the reconciler last brought placements in line with.
    reconciled_targets_version = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "replication settings"

    def __str__(self) -> str:
        state = "on" if self.storage_replication_enabled else "off"
        return f"replication {state}, config v{self.config_version}"

    @classmethod
    def load(cls) -> "ReplicationSettings":
        """Return the singleton, creating it on first use."""
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


class StorageLocation(models.Model):
    """A named storage engine instance in some region."""

    location_id = models.CharField(max_length=64, unique=True, validators=[location_id_validator])
    kind = models.CharField(max_length=16, choices=EngineKind.choices)
    #: Non-secret engine options, exactly as the engine's options form declares them.
    options = models.JSONField(default=dict, blank=True)
    #: Secret engine options, each encrypted at rest (see replication.crypto).
    secrets = models.JSONField(default=dict, blank=True)
    replicate_by_default = models.BooleanField(default=False)
    rank = models.PositiveIntegerField(
        default=0, help_text="Position in the stored preference order."
    )
    serve_mode = models.CharField(
        max_length=16, choices=ServeMode.choices, default=ServeMode.REDIRECT
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["rank", "location_id"]

    def __str__(self) -> str:
        return self.location_id

    def engine_options(self) -> dict[str, Any]:
        """Return the engine options with secrets decrypted (for the engine factory only)."""
        merged = dict(self.options)
        merged.update({name: secret_decrypt(token) for name, token in self.secrets.items()})
        return merged

    def set_engine_options(self, options: dict[str, Any]) -> None:
        """Store engine options, encrypting those the engine declares secret."""
        secret_names = engine_class(self.kind).options_form.secret_names()
        self.options = {k: v for k, v in options.items() if k not in secret_names}
        self.secrets = {
            k: secret_encrypt(str(v))
            for k, v in options.items()
            if k in secret_names and v not in (None, "")
        }


class Blob(models.Model):
    """Content-addressed bytes: one row per digest, whatever the repository."""

    digest = models.CharField(max_length=140, unique=True)
    size = models.PositiveBigIntegerField()
    #: SHA-256 of the bytes (equal to the digest for sha256 blobs), used to verify every copy.
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    #: Set when no location holds a good copy any more (pulls answer BLOB_UNKNOWN); cleared
    #: when a push or a copy makes one present again.
    unrecoverable_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.digest


class PlacementState(models.TextChoices):
    PENDING = "pending"
    COPYING = "copying"
    PRESENT = "present"
    FAILED = "failed"
    #: The store answered "not found" or a wrong size for a copy that was present.
    LOST = "lost"
    #: The store returned bytes whose SHA-256 is not the blob's.
    CORRUPT = "corrupt"


#: States of a copy that was present and must be copied again from a verified one.
DAMAGED_STATES = (PlacementState.LOST, PlacementState.CORRUPT)


class PlacementQuerySet(models.QuerySet["Placement"]):
    def present(self) -> "PlacementQuerySet":
        return self.filter(state=PlacementState.PRESENT)


class Placement(models.Model):
    """A blob in one location; only a ``present`` placement serves reads."""

    # No index of their own: the unique (blob, location) and the (location, state) indexes
    # start with these columns, and every index costs each of a backfill's million inserts.
    blob = models.ForeignKey(
        Blob, on_delete=models.CASCADE, related_name="placements", db_index=False
    )
    location = models.ForeignKey(
        StorageLocation, on_delete=models.CASCADE, related_name="placements", db_index=False
    )
    state = models.CharField(
        max_length=8, choices=PlacementState.choices, default=PlacementState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    #: True when last_error is permanent: the reconciler does not retry it by itself.
    error_permanent = models.BooleanField(default=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    #: Set when transient failures reached QUAY_GEO_REPLICATION_GIVE_UP_ATTEMPTS: the placement
    #: stays failed (error_permanent) until an operator retries it or its store probes healthy
    #: again after failing.
    given_up_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    #: When the bytes were last read and found right (a copy, a push, a scrub, a deep audit).
    verified_at = models.DateTimeField(null=True, blank=True)
    #: Why and when the copy was last found lost or corrupt (kept after a repair, as history).
    #: A database default too: the raw INSERTs of commits and backfills do not name it.
    lost_reason = models.TextField(blank=True, default="", db_default="")
    lost_at = models.DateTimeField(null=True, blank=True)
    copy_method = models.CharField(max_length=8, blank=True, default="")
    copy_seconds = models.FloatField(null=True, blank=True)
    #: When a task for this placement was last handed to the broker (None: never).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    backfill_run = models.ForeignKey(
        "BackfillRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="placements"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PlacementQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["blob", "location"], name="placement_unique_blob_location"
            ),
        ]
        indexes = [
            models.Index(fields=["location", "state"], name="placement_location_state"),
            models.Index(fields=["state", "next_attempt_at"], name="placement_state_next"),
            # The scrub's order: a location's present copies, least recently verified first.
            models.Index(
                fields=["location", "verified_at"],
                condition=models.Q(state="present"),
                name="placement_scrub_order",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.blob_id}@{self.location_id}:{self.state}"


class NamespaceReplication(models.Model):
    """An extra target location for every blob of one namespace."""

    namespace = models.ForeignKey(
        "registry.Namespace", on_delete=models.CASCADE, related_name="replication_targets"
    )
    location = models.ForeignKey(StorageLocation, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "location"], name="namespace_replication_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.namespace_id} -> {self.location_id}"


class Tombstone(models.Model):
    """Bytes to delete from one location, retried until done (garbage collection)."""

    location = models.ForeignKey(StorageLocation, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=300)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["location", "key"], name="tombstone_unique_location_key"
            ),
        ]

    def __str__(self) -> str:
        return f"delete {self.key} from {self.location_id}"


class BackfillRun(models.Model):
    """One backfill: what it planned, so its progress can be followed."""

    location = models.ForeignKey(
        StorageLocation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    namespace = models.CharField(max_length=255, blank=True, default="")
    planned = models.PositiveBigIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    planned_at = models.DateTimeField(null=True, blank=True)
    started_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"backfill {self.pk} ({self.planned} planned)"


class AuditKind(models.TextChoices):
    AUDIT = "audit", "Inventory audit"
    SCRUB = "scrub", "Scrub"


class AuditRun(models.Model):
    """One audit of a location against its listing, or one scrub slice: what it found."""

    location = models.ForeignKey(StorageLocation, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=AuditKind.choices)
    deep = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    objects_seen = models.PositiveBigIntegerField(default=0)
    bytes_read = models.PositiveBigIntegerField(default=0)
    verified = models.PositiveBigIntegerField(default=0)
    lost = models.PositiveBigIntegerField(default=0)
    corrupt = models.PositiveBigIntegerField(default=0)
    repaired = models.PositiveBigIntegerField(default=0)
    orphans = models.PositiveBigIntegerField(default=0)
    orphans_deleted = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["location", "kind", "-started_at"], name="auditrun_latest"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.location_id} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class InstanceHeartbeat(models.Model):
    """A running web or worker process, and which locations it reached on its last probe."""

    instance_id = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200)
    role = models.CharField(max_length=16)
    preference = models.CharField(max_length=500, blank=True, default="")
    version = models.CharField(max_length=32, blank=True, default="")
    reachable = models.JSONField(default=dict, blank=True)
    # quay_geo.replica.replica_status(): host, port, database, state and lag; never a password.
    replica = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.role} {self.instance_id}"


class HostProbe(models.Model):
    """The last probe of every location from one host, shared by all its processes.

    ``claimed_at`` is the lock: a process probes only if its conditional ``UPDATE`` moved it
    (once per heartbeat interval and host); the others reuse ``reachable``.
    """

    host = models.CharField(max_length=200, unique=True)
    claimed_at = models.DateTimeField()
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    #: {location ID: {ok, error, at}}, as ``InstanceHeartbeat.reachable``.
    reachable = models.JSONField(default=dict, blank=True)
    probed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"probe from {self.host}"


class AuditEntry(models.Model):
    """Who changed the storage configuration, when, and what (secrets masked)."""

    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    changes = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.actor} {self.action} at {self.created_at:%Y-%m-%d %H:%M:%S}"
