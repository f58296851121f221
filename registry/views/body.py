"""Request bodies read as streams: never through ``request.body`` or a DRF parser.

Under WSGI the view reads ``wsgi.input`` as bytes arrive. A body with ``Content-Length`` is read
through Django's length-limited stream; a chunked body (``Transfer-Encoding: chunked``, no
length, as docker and podman may send) straight from ``wsgi.input`` to its end, which the WSGI
server (gunicorn) de-chunks.
"""

from django.http import HttpRequest

from .. import errors
from ..ranges import content_range_parse
from ..services.streaming import EMPTY_BODY, Body


def request_body(request: HttpRequest) -> Body:
    """Return the request body as a stream, with its length when the client declared one."""
    if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return Body(request.META["wsgi.input"], None)
    declared = request.META.get("CONTENT_LENGTH") or ""
    if not declared:
        return EMPTY_BODY
    try:
        length = int(declared)
    except ValueError:
        length = -1
    if length < 0:
        raise errors.SizeInvalid(
            {"content_length": declared[:50]}, message="invalid Content-Length"
        )
    return Body(request, length) if length else EMPTY_BODY


def content_range_of(request: HttpRequest) -> tuple[int, int] | None:
    """Return the upload chunk's ``Content-Range`` as (first, last), None if there is none."""
    header = request.headers.get("Content-Range")
    if header is None:
        return None
    parsed = content_range_parse(header)
    if parsed is None:
        raise errors.RangeInvalid(
            {"content_range": header[:100]}, message="malformed Content-Range: use <first>-<last>"
        )
    return parsed


def body_read_limited(request: HttpRequest, limit: int, too_large: errors.OCIError) -> bytes:
    """Return a whole small body (a manifest); raise ``too_large`` above ``limit`` bytes."""
    body = request_body(request)
    if body.length is not None and body.length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit and (chunk := body.stream.read(min(65536, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:  # the client went away in the middle of its body
        raise errors.SizeInvalid(message=f"the body broke off after {size} bytes") from exc
    if size > limit:
        raise too_large
    if body.length is not None and size != body.length:
        raise errors.SizeInvalid(
            {"expected": body.length, "received": size},
            message=f"the body ended after {size} of {body.length} bytes",
        )
    return b"".join(chunks)
