"""Upload routes: open (or mount, or upload in one POST), append, close, inspect, cancel."""

from django.http import HttpRequest, HttpResponseBase

from .. import auth, errors
from ..models import BlobUpload, Repository
from ..names import EMPTY_DIGESTS, Digest, algorithm_check, digest_parse, name_check
from ..ranges import upload_range
from ..selectors import repository_find, repository_get, upload_get
from ..services.repositories import blob_mount, repository_for_push
from ..services.uploads import (
    Lease,
    blob_upload_whole,
    chunk_min_length,
    upload_append,
    upload_cancel,
    upload_claim,
    upload_finish,
    upload_path,
    upload_start,
)
from .base import RegistryView, answer
from .body import content_range_of, request_body


def _session_headers(upload: BlobUpload) -> dict[str, str]:
    return {
        "Location": upload_path(upload),
        "Range": upload_range(upload.byte_count),
        "Docker-Upload-UUID": upload.uuid,
    }


def _blob_created(name: str, digest: Digest | str) -> HttpResponseBase:
    return answer(
        201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest)}
    )


class UploadsView(RegistryView):
    """``POST /v2/<name>/blobs/uploads/``: a session, a whole blob (``?digest=``) or a mount."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, name: str) -> HttpResponseBase:
        name_check(name)
        params = request.GET
        identity = auth.access_require(request, name, ["pull", "push"])
        repository = repository_for_push(name=name)
        mount, source = params.get("mount"), params.get("from")
        if mount is not None:
            wanted = digest_parse(mount)
            if source and _mounted(request, repository, str(wanted), source):
                return _blob_created(name, wanted)
        if params.get("digest") is not None:
            digest = digest_parse(params["digest"])
            body = request_body(request)
            if not body.empty or str(digest) in EMPTY_DIGESTS:
                blob_upload_whole(repository=repository, body=body, digest=digest)
                return _blob_created(name, digest)
        algorithm = algorithm_check(params.get("digest-algorithm") or "sha256")
        upload = upload_start(repository=repository, user=identity.user, algorithm=algorithm)
        headers = _session_headers(upload)
        minimum = chunk_min_length(location=upload.location)
        if minimum:
            headers["OCI-Chunk-Min-Length"] = str(minimum)
        return answer(202, headers)


def _mounted(request: HttpRequest, repository: Repository, digest: str, source: str) -> bool:
    """Mount ``digest`` from ``source`` if the caller may pull it there; return whether it was."""
    try:
        name_check(source)
        auth.access_require(request, source, ["pull"])
    except (errors.NameInvalid, errors.Unauthorized, errors.Denied):
        return False
    found = repository_find(name=source)
    return (
        found is not None
        and blob_mount(repository=repository, source=found, digest=digest) is not None
    )


class UploadView(RegistryView):
    """``GET``/``PATCH``/``PUT``/``DELETE /v2/<name>/blobs/uploads/<uuid>``."""

    http_method_names = ["get", "patch", "put", "delete"]

    def _upload(self, request: HttpRequest, name: str, uuid: str) -> BlobUpload:
        name_check(name)
        auth.access_require(request, name, ["pull", "push"])
        return upload_get(repository=repository_get(name=name), uuid=uuid)

    def get(self, request: HttpRequest, name: str, uuid: str) -> HttpResponseBase:
        return answer(204, _session_headers(self._upload(request, name, uuid)))

    def _claimed(self, request: HttpRequest, name: str, uuid: str) -> tuple[BlobUpload, Lease]:
        name_check(name)
        auth.access_require(request, name, ["pull", "push"])
        return upload_claim(repository=repository_get(name=name), uuid=uuid)

    def patch(self, request: HttpRequest, name: str, uuid: str) -> HttpResponseBase:
        body, content_range = request_body(request), content_range_of(request)
        upload, until = self._claimed(request, name, uuid)
        upload = upload_append(upload=upload, until=until, body=body, content_range=content_range)
        return answer(202, _session_headers(upload))

    def put(self, request: HttpRequest, name: str, uuid: str) -> HttpResponseBase:
        if request.GET.get("digest") is None:
            self._upload(request, name, uuid)
            raise errors.DigestInvalid(message="the digest query parameter is required")
        digest = digest_parse(request.GET["digest"])
        body, content_range = request_body(request), content_range_of(request)
        upload, until = self._claimed(request, name, uuid)
        upload_finish(
            upload=upload, until=until, body=body, content_range=content_range, digest=digest
        )
        return _blob_created(name, digest)

    def delete(self, request: HttpRequest, name: str, uuid: str) -> HttpResponseBase:
        upload_cancel(upload=self._upload(request, name, uuid))
        return answer(204)
