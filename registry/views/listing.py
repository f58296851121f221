"""Listing routes: the API root, tags, the catalog and referrers."""

import re
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponseBase

from .. import auth, errors
from ..names import digest_parse, name_check
from ..selectors import (
    referrers_list,
    repositories_page,
    repository_find,
    repository_get,
    tags_page,
)
from ..services.manifest_parse import OCI_INDEX
from ..services.problems import RouteUnknown
from .base import RegistryView, json_answer

CATALOG_SCOPE = "registry:catalog:*"


#: Beyond this ``n`` the selectors' page cap applies anyway (and int() refuses 4,300 digits).
_N_DIGITS_MAX = 18
#: ``last`` is a tag or a repository name: no control characters (PostgreSQL refuses NUL).
_LAST_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
_LAST_MAX_LENGTH = 512


def _page_params(request: HttpRequest) -> tuple[int | None, str | None]:
    raw = request.GET.get("n")
    n = None
    if raw is not None:
        # str.isdigit() is true for "²" and "٣", which int() refuses or reads as other numbers.
        if not (raw.isascii() and raw.isdigit()):
            raise errors.Unsupported(
                {"n": raw[:50]}, message="n must be a non-negative integer in ASCII digits"
            )
        n = int(raw) if len(raw) <= _N_DIGITS_MAX else 10**_N_DIGITS_MAX
    last = request.GET.get("last") or None
    if last is not None and (len(last) > _LAST_MAX_LENGTH or _LAST_FORBIDDEN.search(last)):
        raise errors.Unsupported(
            {"last": last[:50]},
            message=f"last must be a tag or repository name: at most {_LAST_MAX_LENGTH} "
            "characters, no control characters",
        )
    return n, last


def _next_link(path: str, n: int | None, items: list[str]) -> str:
    query = {"n": str(n if n is not None else len(items)), "last": items[-1]}
    return f'<{path}?{urlencode(query)}>; rel="next"'


class RootView(RegistryView):
    """``GET /v2/``: 200 for a valid token, otherwise the challenge that starts a login."""

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest) -> HttpResponseBase:
        auth.registry_root_require(request)
        return json_answer({})


class TagsView(RegistryView):
    """``GET /v2/<name>/tags/list`` with ``n`` and ``last``, in lexical order."""

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest, name: str) -> HttpResponseBase:
        name_check(name)
        auth.access_require(request, name, ["pull"])
        repository = repository_get(name=name)
        n, last = _page_params(request)
        tags, more = tags_page(repository=repository, n=n, last=last) if n != 0 else ([], False)
        response = json_answer({"name": name, "tags": tags})
        if more:
            response["Link"] = _next_link(request.path, n, tags)
        return response


class CatalogView(RegistryView):
    """``GET /v2/_catalog``: the repositories the caller may pull, paginated like tags."""

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest) -> HttpResponseBase:
        try:
            identity = auth.registry_root_require(request)
        except errors.Unauthorized as exc:
            challenge = exc.headers.get("WWW-Authenticate", "")
            if challenge and "scope=" not in challenge:
                exc.headers["WWW-Authenticate"] = f'{challenge},scope="{CATALOG_SCOPE}"'
            raise
        n, last = _page_params(request)
        names: list[str] = []
        more = False
        if n != 0:
            names, more = repositories_page(
                visible=auth.repositories_visible(identity), n=n, last=last
            )
        response = json_answer({"repositories": names})
        if more:
            response["Link"] = _next_link(request.path, n, names)
        return response


class ReferrersView(RegistryView):
    """``GET /v2/<name>/referrers/<digest>`` with the ``artifactType`` filter."""

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest, name: str, digest: str) -> HttpResponseBase:
        name_check(name)
        subject = str(digest_parse(digest))
        auth.access_require(request, name, ["pull"])
        artifact_type = request.GET.get("artifactType") or None
        # The spec forbids a 404 from a registry that supports referrers: a repository with
        # nothing pushed yet has no referrers (the caller may read its namespace, checked above).
        repository = repository_find(name=name)
        descriptors = (
            []
            if repository is None
            else referrers_list(repository=repository, digest=subject, artifact_type=artifact_type)
        )
        response = json_answer(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors},
            content_type=OCI_INDEX,
        )
        if artifact_type:
            response["OCI-Filters-Applied"] = "artifactType"
        return response


class UnknownRouteView(RegistryView):
    """Any other path under ``/v2/``: the JSON envelope rather than Django's 404 page."""

    def dispatch_unknown(self) -> HttpResponseBase:
        raise RouteUnknown()

    def get(self, request: HttpRequest, rest: str = "") -> HttpResponseBase:
        return self.dispatch_unknown()

    head = post = put = patch = delete = get
