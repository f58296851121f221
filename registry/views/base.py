"""What every /v2/ route shares: the error envelope, no CSRF, the rate limit, bodiless HEADs."""

import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from quay_geo.replica import replica_failed

from .. import auth
from ..errors import OCIError
from ..ratelimit import client_key, limit_per_minute, rate_check
from ..services.problems import InternalError, MethodNotAllowed

logger = logging.getLogger(__name__)

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


class RegistryResponse(HttpResponse):
    """An HttpResponse that may repeat a header (one ``OCI-Tag`` line per tag)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repeated_headers: list[tuple[str, str]] = []

    def items(self) -> Any:
        return [*super().items(), *self.repeated_headers]


def answer(
    status: int, headers: dict[str, str] | None = None, *, body: bytes = b"", content_type: str = ""
) -> RegistryResponse:
    """Return a response with ``headers`` and an exact ``Content-Length``."""
    response = RegistryResponse(body, status=status, content_type=content_type or None)
    if not content_type:
        del response["Content-Type"]
    for name, value in (headers or {}).items():
        response[name] = value
    response["Content-Length"] = str(len(body))
    return response


def json_answer(
    data: Any, *, status: int = 200, content_type: str = "application/json"
) -> RegistryResponse:
    """Return a JSON response."""
    return answer(status, body=json.dumps(data).encode(), content_type=content_type)


def _rate_limit(request: HttpRequest) -> None:
    if limit_per_minute() <= 0:
        return
    try:
        user = auth.identity_of(request).user
    except OCIError:
        user = None  # the route itself answers the bad token
    rate_check(client=client_key(request, user.pk if user is not None else None))


def _head_strip(response: HttpResponseBase) -> None:
    """Drop the body of a HEAD answer, keeping the length the GET would have."""
    if isinstance(response, HttpResponse) and response.content:
        length = response.get("Content-Length") or str(len(response.content))
        response.content = b""
        response["Content-Length"] = length


@method_decorator(csrf_exempt, name="dispatch")
class RegistryView(View):
    """Base of every registry route: parse, call one service, answer; errors as the envelope."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            _rate_limit(request)
            response = super().dispatch(request, *args, **kwargs)
        except OCIError as exc:
            response = exc.response()
        except Exception as exc:
            if replica_failed(exc):
                raise  # quay_geo.replica.ReplicaMiddleware answers again from the primary
            logger.exception("unexpected error answering %s %s", request.method, request.path)
            response = InternalError().response()
        response[API_VERSION[0]] = API_VERSION[1]
        if request.method == "HEAD":
            _head_strip(response)
        return response

    def http_method_not_allowed(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        raise MethodNotAllowed(
            {"method": request.method},
            headers={
                "Allow": ", ".join(m.upper() for m in self.http_method_names if hasattr(self, m))
            },
        )
