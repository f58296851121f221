"""The registry's data: namespaces, repositories, manifests (byte-exact), tags, upload sessions."""

from django.conf import settings
from django.db import models


class NamespaceKind(models.TextChoices):
    USER = "user"
    ORGANIZATION = "org"


class Role(models.TextChoices):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class Namespace(models.Model):
    """A user's or an organization's name: the first component of a repository name."""

    name = models.CharField(max_length=255, unique=True)
    kind = models.CharField(max_length=8, choices=NamespaceKind.choices, default=NamespaceKind.USER)
    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="namespace",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class NamespaceMember(models.Model):
    """A user's role in an organization namespace."""

    namespace = models.ForeignKey(Namespace, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.READ)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["namespace", "user"], name="namespace_member_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} in {self.namespace_id}"


class Visibility(models.TextChoices):
    PRIVATE = "private"
    PUBLIC = "public"


class Repository(models.Model):
    """A repository; its full name is ``<namespace>/<name>``."""

    namespace = models.ForeignKey(Namespace, on_delete=models.CASCADE, related_name="repositories")
    name = models.CharField(max_length=255)
    visibility = models.CharField(
        max_length=8, choices=Visibility.choices, default=Visibility.PRIVATE
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="repository_unique_name"),
        ]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.full_name

    @property
    def full_name(self) -> str:
        return f"{self.namespace.name}/{self.name}"


class RepositoryBlob(models.Model):
    """A blob reachable in a repository (uploaded there or mounted into it)."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="+")
    blob = models.ForeignKey("replication.Blob", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["repository", "blob"], name="repository_blob_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.blob_id} in {self.repository_id}"


class Manifest(models.Model):
    """A manifest stored byte-exact, with the media type it was pushed with."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="manifests")
    digest = models.CharField(max_length=140)
    media_type = models.CharField(max_length=255)
    content = models.BinaryField()
    size = models.PositiveIntegerField()
    artifact_type = models.CharField(max_length=255, blank=True, default="")
    subject_digest = models.CharField(max_length=140, blank=True, default="", db_index=True)
    annotations = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["repository", "digest"], name="manifest_unique_digest"),
        ]

    def __str__(self) -> str:
        return f"{self.repository_id}@{self.digest}"


class ManifestBlob(models.Model):
    """A blob (config or layer) that a manifest references."""

    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="blob_links")
    blob = models.ForeignKey(
        "replication.Blob", on_delete=models.PROTECT, related_name="manifest_links"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["manifest", "blob"], name="manifest_blob_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.manifest_id} -> blob {self.blob_id}"


class ManifestChild(models.Model):
    """A manifest that an index references (same repository)."""

    parent = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="child_links")
    #: Deleting a child manifest drops the link (the index then dangles), as distribution allows.
    child = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="parent_links")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["parent", "child"], name="manifest_child_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.parent_id} -> manifest {self.child_id}"


class Tag(models.Model):
    """A name pointing at a manifest of the same repository."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=128)
    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="tags")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["repository", "name"], name="tag_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.repository_id}:{self.name}"


class HashMode(models.TextChoices):
    """How the bytes of an upload were hashed so far (see registry.hashing)."""

    EMPTY = "empty"
    #: A resumable SHA-256 state is stored after every request.
    RESUMABLE = "resumable"
    #: One request hashed everything with hashlib: the finished digests are stored.
    FINAL = "final"
    #: Neither: the bytes are read back from the engine once, at commit.
    REHASH = "rehash"


class BlobUpload(models.Model):
    """An upload session pinned to one storage location; any web process can continue it."""

    uuid = models.CharField(max_length=64, unique=True)
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="uploads")
    location = models.ForeignKey(
        "replication.StorageLocation", on_delete=models.CASCADE, related_name="+"
    )
    engine_state = models.JSONField(default=dict)
    byte_count = models.PositiveBigIntegerField(default=0)
    #: The algorithm announced on POST (``digest-algorithm``); the PUT's digest decides at commit.
    digest_algorithm = models.CharField(max_length=8, default="sha256")
    hash_mode = models.CharField(max_length=9, choices=HashMode.choices, default=HashMode.EMPTY)
    #: Raw resumable SHA-256 state (112 bytes, never pickled), see registry.hashing.
    sha256_state = models.BinaryField(null=True, blank=True)
    sha256_hex = models.CharField(max_length=64, blank=True, default="")
    sha512_hex = models.CharField(max_length=128, blank=True, default="")
    #: Set while one request streams bytes into the session: a second writer is refused.
    busy_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return self.uuid


class AppToken(models.Model):
    """A per-user application token for CI robots; only its hash is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="app_tokens"
    )
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user_id}/{self.name}"


class Counter(models.Model):
    """A count shared by every process (failed logins, requests per minute) kept in the database.

    Used only when Django's cache is not shared (registry/counters.py). Times are Unix seconds.
    """

    name = models.CharField(max_length=200, primary_key=True)
    count = models.IntegerField(default=0)
    last_at = models.FloatField()
    expires_at = models.FloatField(db_index=True)

    def __str__(self) -> str:
        return f"{self.name}={self.count}"
