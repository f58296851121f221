"""The project's own storage error hierarchy: SDK exceptions never leave an engine.

Retry policy reads only these classes: ``StorageUnavailable`` is transient (retry later),
``StoragePermanentError`` and its subclasses are not (fix the configuration first).
"""


class StorageError(Exception):
    """Base class of every error an engine raises."""


class ObjectNotFound(StorageError):
    """The object does not exist at that key."""


class SourceEnded(StorageError):
    """The stream being written ended before its announced length: the sender's fault."""


class InvalidRange(StorageError):
    """The requested byte range cannot be satisfied for this object."""


class InvalidOptions(StorageError):
    """The engine options do not validate; ``errors`` maps each option to its messages."""

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class UnknownEngineKind(StorageError):
    """No engine is registered under that kind."""


class StorageUnavailable(StorageError):
    """The engine could not be reached or answered with a transient failure; retry later."""


class StorageTimeout(StorageUnavailable):
    """The engine did not answer within the call's deadline (a hung store)."""


class StoragePermanentError(StorageError):
    """The engine refused the operation for a reason a retry will not fix."""


class AccessDenied(StoragePermanentError):
    """The credentials were refused or lack a permission."""


class ContainerNotFound(StoragePermanentError):
    """The bucket or container does not exist."""


class StorageMisconfigured(StoragePermanentError):
    """The engine's configuration cannot work (bad endpoint, bad option combination)."""


class ObjectTooLarge(StoragePermanentError):
    """The object exceeds what this engine can store."""


class UploadSessionInvalid(StoragePermanentError):
    """A chunked upload session is unknown to the engine, expired or already finished."""
