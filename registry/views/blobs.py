"""Blob routes: download (redirect or stream, with ranges) and delete."""

from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

from quay_geo.replica import read_or_primary
from storage_engines.streams import CHUNK

from .. import auth, errors
from ..names import digest_parse, name_check
from ..ranges import RangeNotSatisfiable, range_parse
from ..selectors import blob_for_pull, repository_get
from ..services.repositories import blob_unlink
from ..services.serving import BlobRedirect, blob_source_open
from .base import RegistryView, answer


class BlobView(RegistryView):
    """``GET``/``HEAD``/``DELETE /v2/<name>/blobs/<digest>``."""

    http_method_names = ["get", "head", "delete"]

    def get(self, request: HttpRequest, name: str, digest: str) -> HttpResponseBase:
        return self._serve(request, name, digest, "GET")

    def head(self, request: HttpRequest, name: str, digest: str) -> HttpResponseBase:
        return self._serve(request, name, digest, "HEAD")

    def _serve(self, request: HttpRequest, name: str, digest: str, method: str) -> HttpResponseBase:
        name_check(name)
        wanted = str(digest_parse(digest))
        auth.access_require(request, name, ["pull"])
        # A miss on a lagging replica asks the primary: a push elsewhere in the region is seen.
        found = read_or_primary(
            lambda: blob_for_pull(name=name, digest=wanted),
            not_found=(errors.BlobUnknown, errors.NameUnknown),
        )
        assert found is not None
        blob, present = found
        try:
            byte_range = range_parse(request.headers.get("Range"), blob.size)
        except RangeNotSatisfiable:
            return answer(416, {"Content-Range": f"bytes */{blob.size}"})
        source = blob_source_open(blob=blob, method=method, byte_range=byte_range, present=present)
        headers = {"Docker-Content-Digest": wanted}
        if isinstance(source, BlobRedirect):
            return answer(307, {**headers, "Location": source.url})
        headers.update({"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
        status, length = 200, blob.size
        if byte_range is not None:
            status, length = 206, byte_range.length
            headers["Content-Range"] = byte_range.content_range()
        response: HttpResponseBase
        if source.stream is None:
            response = answer(status, headers)
        else:
            response = StreamingHttpResponse(source.stream, status=status)
            if source.stream.file is not None:
                # A local file: gunicorn sends it with sendfile() (wsgi.file_wrapper), from the
                # position the engine seeked to, for Content-Length bytes.
                response.file_to_stream = source.stream.file  # type: ignore[attr-defined]
                response.block_size = CHUNK  # type: ignore[attr-defined]
            for header, value in headers.items():
                response[header] = value
        response["Content-Length"] = str(length)
        return response

    def delete(self, request: HttpRequest, name: str, digest: str) -> HttpResponseBase:
        name_check(name)
        wanted = str(digest_parse(digest))
        auth.access_require(request, name, ["delete"])
        blob_unlink(repository=repository_get(name=name), digest=wanted)
        return answer(202)
