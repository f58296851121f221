"""Structured logs: request ids through middleware and streaming, one JSON line per event."""

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import Client, override_settings
from django.urls import path

from quay_geo.logging import JsonFormatter, RequestIdMiddleware, request_id_current

ROOT = Path(__file__).resolve().parents[2]
MIDDLEWARE_PATH = "quay_geo.logging.RequestIdMiddleware"
logger = logging.getLogger("tests.quay_geo.logging")


def _logging_view(request: HttpRequest) -> HttpResponse:
    logger.info("copied %s to %s", "sha256:abc", "eu_s3", extra={"location": "eu_s3"})
    return HttpResponse(request_id_current() or "")


def _streaming_view(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[bytes]:
        yield b"first "
        logger.warning("engine failed while streaming")
        yield b"second"

    return StreamingHttpResponse(body())


urlpatterns = [
    path("logs", _logging_view),
    path("stream", _streaming_view),
]

with_middleware = override_settings(
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[MIDDLEWARE_PATH, *(m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH)],
)


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Collect what the root logger emits, formatted by JsonFormatter at emit time."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "replication.copying", logging.INFO, __file__, 1, message, args, None
    )
    record.__dict__.update(extra)
    return record


@with_middleware
def test_a_sane_request_id_from_the_client_is_kept_and_echoed(client: Client) -> None:
    response = client.get("/logs", headers={"X-Request-ID": "push-4f2a.1"})

    assert response["X-Request-ID"] == "push-4f2a.1"
    assert response.content == b"push-4f2a.1"


@with_middleware
@pytest.mark.parametrize(
    "incoming",
    ["two words", "x" * 129, 'quote"', "new\nline", "", "é"],
    ids=["space", "too-long", "quote", "newline", "empty", "non-ascii"],
)
def test_an_unsafe_or_missing_request_id_is_replaced_by_a_random_one(
    client: Client, incoming: str
) -> None:
    response = client.get("/logs", HTTP_X_REQUEST_ID=incoming)

    chosen = response["X-Request-ID"]
    assert chosen != incoming
    assert len(chosen) == 32
    assert int(chosen, 16) >= 0


@with_middleware
def test_every_request_without_an_id_gets_its_own(client: Client) -> None:
    first = client.get("/logs")["X-Request-ID"]
    second = client.get("/logs")["X-Request-ID"]

    assert first != second


@with_middleware
def test_logs_written_by_a_view_carry_the_request_id_and_extra_fields(
    client: Client, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    client.get("/logs", headers={"X-Request-ID": "req-1"})

    copied = next(line for line in json_lines() if line["logger"] == logger.name)
    assert copied["message"] == "copied sha256:abc to eu_s3"
    assert copied["request_id"] == "req-1"
    assert copied["location"] == "eu_s3"
    assert copied["level"] == "INFO"
    assert request_id_current() is None


@with_middleware
def test_each_request_is_logged_once_with_method_path_status_and_duration(
    client: Client, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    client.get("/logs", headers={"X-Request-ID": "req-2"})

    (access,) = [line for line in json_lines() if line["logger"] == "quay_geo.request"]
    assert access["request_id"] == "req-2"
    assert (access["method"], access["path"], access["status"]) == ("GET", "/logs", 200)
    assert access["duration_ms"] >= 0


@with_middleware
def test_logs_written_while_a_body_streams_carry_the_request_id(
    client: Client, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    response = client.get("/stream", headers={"X-Request-ID": "req-3"})

    assert b"".join(response.streaming_content) == b"first second"  # type: ignore[attr-defined]
    streamed = next(line for line in json_lines() if line["message"].endswith("streaming"))
    assert streamed["request_id"] == "req-3"
    assert request_id_current() is None


@with_middleware
def test_django_request_warnings_logged_after_the_middleware_carry_the_request_id(
    client: Client, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    client.get("/no-such-page", headers={"X-Request-ID": "req-404"})

    warning = next(line for line in json_lines() if line["logger"] == "django.request")
    assert warning["request_id"] == "req-404"
    assert warning["status_code"] == 404
    assert "request" not in warning


def test_the_formatter_writes_one_json_line_with_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(_record("replicated %s (%d bytes)", "sha256:abc", 42))

    assert "\n" not in line
    event = json.loads(line)
    assert event["message"] == "replicated sha256:abc (42 bytes)"
    assert (event["level"], event["logger"]) == ("INFO", "replication.copying")
    assert event["time"].endswith("+00:00")
    assert "request_id" not in event


def test_the_formatter_keeps_extra_fields_and_stringifies_what_json_cannot_hold() -> None:
    event = json.loads(
        JsonFormatter().format(
            _record("copied", location="eu_s3", digest="sha256:abc", path=Path("/x"))
        )
    )

    assert event["location"] == "eu_s3"
    assert event["digest"] == "sha256:abc"
    assert event["path"] == "/x"


def test_the_formatter_keeps_an_exception_in_the_same_line() -> None:
    try:
        raise RuntimeError("engine down")
    except RuntimeError:
        record = _record("copy failed")
        record.exc_info = sys.exc_info()

    line = JsonFormatter().format(record)

    assert "\n" not in line
    assert "RuntimeError: engine down" in json.loads(line)["exception"]


def test_an_explicit_request_id_extra_wins() -> None:
    event = json.loads(JsonFormatter().format(_record("task", request_id="from-task")))

    assert event["request_id"] == "from-task"


def test_the_middleware_resets_the_request_id_when_the_view_raises() -> None:
    def failing(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        RequestIdMiddleware(failing)(HttpRequest())

    assert request_id_current() is None


# --- Wiring in quay_geo/settings.py --------------------------------------------------------------


def test_the_middleware_comes_first_so_every_later_log_has_the_id() -> None:
    assert settings.MIDDLEWARE[0] == MIDDLEWARE_PATH


def _formatter_in_a_fresh_process(**env: str) -> str:
    code = (
        "import logging, django; django.setup(); "
        "print(type(logging.getLogger().handlers[0].formatter).__name__)"
    )
    keep = {k: v for k, v in os.environ.items() if k not in ("QUAY_GEO_LOG_FORMAT", "DJANGO_DEBUG")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**keep, "DJANGO_SETTINGS_MODULE": "quay_geo.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "JsonFormatter"),
        ({"DJANGO_DEBUG": "1"}, "Formatter"),
        ({"DJANGO_DEBUG": "1", "QUAY_GEO_LOG_FORMAT": "json"}, "JsonFormatter"),
        ({"QUAY_GEO_LOG_FORMAT": "text"}, "Formatter"),
    ],
    ids=["default-json", "debug-text", "debug-forced-json", "forced-text"],
)
def test_quay_geo_log_format_switches_the_console_formatter(
    env: dict[str, str], expected: str
) -> None:
    assert _formatter_in_a_fresh_process(**env) == expected


# --- forged access-log lines (issue 15) ------------------------------------------------------


def test_gunicorn_access_log_escapes_a_user_name_with_a_line_feed(tmp_path: Path) -> None:
    import base64
    import datetime as dt
    from types import SimpleNamespace

    from gunicorn.config import Config

    from quay_geo.gunicorn_logging import AccessLogger

    log_file = tmp_path / "access.log"
    config = Config()
    config.set("accesslog", str(log_file))
    logger = AccessLogger(config)
    forged = '10.0.0.1 - bob - "GET /v2/ HTTP/1.1" 200 0'  # no colon: it ends the user name
    credentials = base64.b64encode(f"mallory\\\n{forged}:pw".encode()).decode()
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/v2/",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Basic {credentials}",
        "HTTP_USER_AGENT": "agent\r\nsecond",
    }
    response = SimpleNamespace(status="401 Unauthorized", sent=0, headers=[])
    request = SimpleNamespace(headers=[("USER-AGENT", "agent\r\nsecond")])

    logger.access(response, request, environ, dt.timedelta(seconds=0))
    for handler in logger.access_log.handlers:
        handler.flush()

    lines = log_file.read_text().splitlines()
    assert len(lines) == 1
    assert "mallory\\\\\\x0a10.0.0.1 - bob" in lines[0]
    assert "agent\\x0d\\x0asecond" in lines[0]


@with_middleware
def test_text_access_log_escapes_a_line_feed_in_the_path(client: Client) -> None:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("quay_geo.request")
    access.addHandler(handler)
    try:
        client.get("/logs%0aGET%20/forged%20200")
    finally:
        access.removeHandler(handler)

    written = handler.stream.getvalue().splitlines()
    assert written == ["GET /logs\\x0aGET /forged 200 404"]
