"""Upload routes: open (or mount, or upload in one POST), append, close, inspect, cancel."""

from django.http import HttpRequest, HttpResponseBase

from .. import auth, errors
from ..models import BlobUpload, Repository
from ..names import EMPTY_DIGESTS, Digest, algorithm_check, digest_parse, name_check
from ..permissions import repository_name_split
from ..ranges import upload_range
from ..selectors import blob_readable_find, repository_find, repository_get, upload_get
from ..services.repositories import blob_link, blob_mount, repository_for_push
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
        mount, given_source = params.get("mount"), params.get("from") or None
        source = given_source  # not a repository name: nothing to mount from, no scope to ask
        if given_source is not None and repository_name_split(given_source) is None:
            source = None
        # The challenge also asks pull on the source, as distribution's does, so that the
        # client's next token can mount; without it the answer is an upload session.
        optional = [(source, ("pull",))] if mount is not None and source is not None else []
        identity = auth.access_require(request, name, ["pull", "push"], optional=optional)
        repository = repository_for_push(name=name)
        if mount is not None:
            wanted = digest_parse(mount)
            if _mounted(identity, repository, str(wanted), given=given_source, source=source):
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


def _mounted(
    identity: auth.Identity,
    repository: Repository,
    digest: str,
    *,
    given: str | None,
    source: str | None,
) -> bool:
    """Mount ``digest`` into ``repository``; return whether it was.

    From ``source`` when the token grants pull there; with no ``from`` at all (optional in the
    spec), from any repository the caller may read.
    """
    if given is None:
        blob = blob_readable_find(digest=digest, user=identity.user)
        if blob is not None:
            blob_link(repository=repository, blob=blob)
        return blob is not None
    if source is None or not identity.allows(source, "pull"):
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
