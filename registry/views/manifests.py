"""Manifest routes: pull by tag or digest, push (with several ``?tag=``), delete."""

from django.http import HttpRequest, HttpResponseBase

from quay_geo.replica import read_or_primary

from .. import auth, errors
from ..names import digest_parse, is_digest_reference, name_check
from ..selectors import manifest_get, repository_get
from ..services.manifests import manifest_delete, manifest_max_bytes, manifest_put
from ..services.repositories import repository_for_push
from .base import RegistryView, answer
from .body import body_read_limited


class ManifestView(RegistryView):
    """``GET``/``HEAD``/``PUT``/``DELETE /v2/<name>/manifests/<reference>``."""

    http_method_names = ["get", "head", "put", "delete"]

    def get(self, request: HttpRequest, name: str, reference: str) -> HttpResponseBase:
        name_check(name)
        if is_digest_reference(reference):
            digest_parse(reference)
        auth.access_require(request, name, ["pull"])
        # A miss on a lagging replica asks the primary: a push elsewhere in the region is seen.
        manifest = read_or_primary(
            lambda: manifest_get(name=name, reference=reference),
            not_found=(errors.ManifestUnknown, errors.NameUnknown),
        )
        assert manifest is not None
        return answer(
            200,
            {"Docker-Content-Digest": manifest.digest},
            body=bytes(manifest.content),
            content_type=manifest.media_type,
        )

    def put(self, request: HttpRequest, name: str, reference: str) -> HttpResponseBase:
        name_check(name)
        auth.access_require(request, name, ["pull", "push"])
        repository = repository_for_push(name=name)
        limit = manifest_max_bytes()
        too_large = errors.ManifestTooLarge(
            {"limit": limit}, message=f"manifest exceeds the {limit}-byte limit"
        )
        pushed = manifest_put(
            repository=repository,
            reference=reference,
            tags=request.GET.getlist("tag"),
            content=body_read_limited(request, limit, too_large),
            content_type=request.META.get("CONTENT_TYPE", ""),
        )
        digest = pushed.manifest.digest
        response = answer(
            201,
            {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest},
        )
        if pushed.subject:
            response["OCI-Subject"] = pushed.subject
        response.repeated_headers += [("OCI-Tag", tag) for tag in pushed.tags]
        return response

    def delete(self, request: HttpRequest, name: str, reference: str) -> HttpResponseBase:
        name_check(name)
        auth.access_require(request, name, ["delete"])
        manifest_delete(repository=repository_get(name=name), reference=reference)
        return answer(202)
