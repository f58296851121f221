"""Listing routes: the API root, tags, the catalog and referrers."""

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponseBase

from .. import auth, errors
from ..names import digest_parse, name_check
from ..selectors import referrers_list, repositories_page, repository_get, tags_page
from ..services.manifest_parse import OCI_INDEX
from ..services.problems import RouteUnknown
from .base import RegistryView, json_answer

CATALOG_SCOPE = "registry:catalog:*"


def _page_params(request: HttpRequest) -> tuple[int | None, str | None]:
    raw = request.GET.get("n")
    n = None
    if raw is not None:
        if not raw.isdigit():
            raise errors.Unsupported({"n": raw[:50]}, message="n must be a non-negative integer")
        n = int(raw)
    return n, request.GET.get("last") or None


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
        descriptors = referrers_list(
            repository=repository_get(name=name), digest=subject, artifact_type=artifact_type
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
