"""Failures of the registry that are not among the spec's error codes."""

from typing import ClassVar

from ..errors import OCIError


class StorageFailed(OCIError):
    """No storage engine could do what the request needs right now (retry later)."""

    code: ClassVar[str] = "UNAVAILABLE"
    status: ClassVar[int] = 503
    message: ClassVar[str] = "storage is unavailable; retry later"


class RouteUnknown(OCIError):
    """No API route has this path."""

    code: ClassVar[str] = "UNSUPPORTED"
    status: ClassVar[int] = 404
    message: ClassVar[str] = "no such API route"


class MethodNotAllowed(OCIError):
    """The route exists but does not accept this method."""

    code: ClassVar[str] = "UNSUPPORTED"
    status: ClassVar[int] = 405
    message: ClassVar[str] = "method not allowed on this route"


class InternalError(OCIError):
    """An unexpected failure: the 500 safety net, still answered as the JSON envelope."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    message: ClassVar[str] = "internal server error"
