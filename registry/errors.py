"""OCI Distribution errors: one class per spec code, rendered as the spec's JSON envelope."""

import json
from typing import Any, ClassVar

from django.http import HttpResponse


class OCIError(Exception):
    """An error answered as ``{"errors": [{"code", "message", "detail"}]}``."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 400
    message: ClassVar[str] = "unknown error"

    def __init__(
        self,
        detail: Any = None,
        *,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.message)
        self.detail = detail
        self.text = message or self.message
        self.headers = headers or {}

    def response(self) -> HttpResponse:
        """Return the HTTP response for this error."""
        body = {"errors": [{"code": self.code, "message": self.text, "detail": self.detail}]}
        response = HttpResponse(
            json.dumps(body), status=self.status, content_type="application/json"
        )
        for name, value in self.headers.items():
            response[name] = value
        return response


def _error(code: str, status: int, message: str) -> type[OCIError]:
    return type(
        code.title().replace("_", ""),
        (OCIError,),
        {"code": code, "status": status, "message": message},
    )


BlobUnknown = _error("BLOB_UNKNOWN", 404, "blob unknown to registry")
BlobUploadInvalid = _error("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
BlobUploadUnknown = _error("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
DigestInvalid = _error("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
ManifestBlobUnknown = _error(
    "MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry"
)
ManifestInvalid = _error("MANIFEST_INVALID", 400, "manifest invalid")
ManifestUnknown = _error("MANIFEST_UNKNOWN", 404, "manifest unknown to registry")
NameInvalid = _error("NAME_INVALID", 400, "invalid repository name")
NameUnknown = _error("NAME_UNKNOWN", 404, "repository name not known to registry")
SizeInvalid = _error("SIZE_INVALID", 400, "provided length did not match content length")
Unauthorized = _error("UNAUTHORIZED", 401, "authentication required")
Denied = _error("DENIED", 403, "requested access to the resource is denied")
Unsupported = _error("UNSUPPORTED", 400, "the operation is unsupported")
TooManyRequests = _error("TOOMANYREQUESTS", 429, "too many requests")
# Not in the OCI table but used by every peer for an unsatisfiable upload range.
RangeInvalid = _error("RANGE_INVALID", 416, "invalid content range")
ManifestTooLarge = _error("MANIFEST_INVALID", 413, "manifest exceeds the size limit")

#: Every spec error code, for the test that walks the whole table.
ALL_ERRORS: tuple[type[OCIError], ...] = (
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
)
