"""Structured logs: a request id for every HTTP request, and one JSON line per log event.

``RequestIdMiddleware`` takes the client's (or the proxy's) ``X-Request-ID`` when it is sane,
makes one up otherwise, keeps it in a context variable for the whole request, body streaming
included, and echoes it in the response. ``JsonFormatter`` writes each record as one line of
JSON with the time, level, logger, message, the request id when there is one, and every
``extra`` field (``logger.info("copied %s", digest, extra={"location": "eu_s3"})``).
"""

import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.http import FileResponse, HttpRequest, HttpResponseBase, StreamingHttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
#: Ids a client may choose: short, and nothing that could forge a log line or a header.
_SANE_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")

#: C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the backslash.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")

_request_id: ContextVar[str | None] = ContextVar("quay_geo_request_id", default=None)

access_logger = logging.getLogger("quay_geo.request")

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName", "request"}


def log_escape(text: str) -> str:
    """Return ``text`` with backslashes and control characters written as ``\\xNN`` escapes."""
    return _UNPRINTABLE.sub(
        lambda match: "\\\\" if match.group() == "\\" else f"\\x{ord(match.group()):02x}", text
    )


def request_id_current() -> str | None:
    """Return the id of the request being handled by this thread or task, if any."""
    return _request_id.get()


def request_id_choose(incoming: str | None) -> str:
    """Return ``incoming`` when it is a sane id, else a new random one."""
    if incoming and _SANE_ID.fullmatch(incoming):
        return incoming
    return secrets.token_hex(16)


def _streamed_with_id(content: Iterable[bytes], request_id: str) -> Iterator[bytes]:
    """Yield ``content`` with the request id set, so logs written while streaming carry it."""
    token = _request_id.set(request_id)
    try:
        yield from content
    finally:
        _request_id.reset(token)


class RequestIdMiddleware:
    """Give every request an id: in the logs of the request, and in the response header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = request_id_choose(request.headers.get(REQUEST_ID_HEADER))
        request.META["quay_geo.request_id"] = request_id
        started = time.monotonic()
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
            access_logger.info(
                "%s %s %s",
                request.method,
                log_escape(request.path),  # a %0a in the path must not start a line of text logs
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        finally:
            _request_id.reset(token)
        # A FileResponse keeps its file for wsgi.file_wrapper; async bodies keep their context.
        if isinstance(response, StreamingHttpResponse) and not isinstance(response, FileResponse):
            content = response.streaming_content
            if isinstance(content, Iterator):
                response.streaming_content = _streamed_with_id(content, request_id)
        response[REQUEST_ID_HEADER] = request_id
        return response


class JsonFormatter(logging.Formatter):
    """Format each record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _record_request_id(record)
        if request_id:
            event["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES and name not in event and not name.startswith("_"):
                event[name] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exception"] = record.exc_text
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, default=str, ensure_ascii=False)


def _record_request_id(record: logging.LogRecord) -> str | None:
    """Return the request id of a record: explicit, current, or that of its ``request``."""
    explicit = record.__dict__.get("request_id")
    if explicit:
        return str(explicit)
    current = _request_id.get()
    if current:
        return current
    # django.request logs 4xx and 5xx answers after the middleware chain has returned.
    request = record.__dict__.get("request")
    meta = getattr(request, "META", None)
    if isinstance(meta, dict):
        found = meta.get("quay_geo.request_id")
        return str(found) if found else None
    return None
