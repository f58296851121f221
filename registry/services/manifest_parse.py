"""Reading a pushed manifest: its media type, the blobs and manifests it references, its subject.

The bytes are kept as pushed; this only extracts what the registry must check and record.
Unknown fields and ``data`` fields pass through untouched; annotations must map strings to
strings. ``urls`` are accepted only on non-distributable layers, and only when they match
``QUAY_GEO_MANIFEST_URLS_ALLOW`` and not ``QUAY_GEO_MANIFEST_URLS_DENY`` (read at call time),
as distribution's ``validation.manifests.urls`` settings do.
"""

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from .. import errors
from ..names import Digest, digest_parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES
#: Layers whose bytes may live elsewhere (``urls``): the registry need not hold them.
NONDISTRIBUTABLE_PREFIX = "application/vnd.oci.image.layer.nondistributable."
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
#: The spec's descriptor size is an int64.
SIZE_MAX = 2**63 - 1


@dataclass(frozen=True)
class Descriptor:
    """A reference to content by digest, as found in a manifest."""

    media_type: str
    digest: Digest
    size: int
    foreign: bool = False  # a non-distributable layer with ``urls``: it need not be here


@dataclass(frozen=True)
class ParsedManifest:
    """What a manifest says that the registry checks and records."""

    media_type: str
    blobs: list[Descriptor] = field(default_factory=list)
    children: list[Descriptor] = field(default_factory=list)
    subject: Descriptor | None = None
    artifact_type: str = ""
    annotations: dict[str, str] = field(default_factory=dict)


def _invalid(message: str, detail: Any = None) -> errors.OCIError:
    return errors.ManifestInvalid(detail, message=f"manifest invalid: {message}")


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"{where} is not a descriptor object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where} has no mediaType")
    if not isinstance(digest, str):
        raise _invalid(f"{where} has no digest")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= SIZE_MAX:
        raise _invalid(f"{where} has no valid size: a whole number from 0 to 2^63-1")
    try:
        parsed = digest_parse(digest)
    except errors.DigestInvalid as exc:
        raise _invalid(f"{where} has an invalid digest: {exc.text}", {"digest": digest}) from exc
    _annotations(value.get("annotations"), f"{where}.annotations")
    foreign = _urls_check(value.get("urls"), media_type, where)
    return Descriptor(media_type, parsed, size, foreign=foreign)


def _annotations(value: Any, where: str) -> dict[str, str]:
    """Return the annotations ``value`` holds; raise ManifestInvalid unless strings to strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{where} is not an object")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _invalid(f"{where} has a value that is not a string", {"annotation": key[:300]})
    return value


def nondistributable(media_type: str) -> bool:
    """Return whether a layer of ``media_type`` may be served from its ``urls`` instead of here."""
    return media_type.startswith(NONDISTRIBUTABLE_PREFIX) or media_type == DOCKER_FOREIGN_LAYER


@functools.lru_cache(maxsize=8)
def _pattern(expression: str) -> re.Pattern[str] | None:
    return re.compile(expression) if expression else None


def _url_allowed(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        return False
    allow = _pattern(getattr(settings, "QUAY_GEO_MANIFEST_URLS_ALLOW", ""))
    deny = _pattern(getattr(settings, "QUAY_GEO_MANIFEST_URLS_DENY", ""))
    return (allow is None or allow.search(url) is not None) and (
        deny is None or deny.search(url) is None
    )


def _urls_check(urls: Any, media_type: str, where: str) -> bool:
    """Return whether the bytes are elsewhere (``urls``); raise ManifestInvalid if refused."""
    if urls is None:
        return False
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise _invalid(f"{where}.urls is not a list of strings")
    if not urls:
        return False
    if not nondistributable(media_type):
        raise _invalid(
            f"{where} has urls, which only non-distributable layers may have",
            {"mediaType": media_type[:300]},
        )
    for url in urls:
        if not _url_allowed(url):
            raise _invalid(f"{where} has a URL this registry does not accept", {"url": url[:300]})
    return True


def _media_type(document: dict[str, Any], content_type: str) -> str:
    """Return the manifest's media type from the Content-Type header or the mediaType field."""
    declared = content_type.split(";", 1)[0].strip().lower()
    field_type = document.get("mediaType")
    if field_type is not None and not isinstance(field_type, str):
        raise _invalid("mediaType is not a string")
    if declared in MANIFEST_TYPES:
        if field_type is not None and field_type != declared:
            raise _invalid(
                f"Content-Type {declared} disagrees with mediaType {field_type}",
                {"content_type": declared, "mediaType": field_type},
            )
        return declared
    if field_type in MANIFEST_TYPES:
        return str(field_type)
    raise _invalid(
        "unknown media type: expected an OCI image manifest or index, or a Docker schema 2 "
        "manifest or manifest list",
        {"content_type": declared, "mediaType": field_type},
    )


def manifest_parse(content: bytes, content_type: str) -> ParsedManifest:
    """Return what a manifest references; raise ManifestInvalid if it is not one we accept."""
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _invalid("not valid JSON") from exc
    except RecursionError as exc:
        raise _invalid("nested too deeply") from exc
    if not isinstance(document, dict):
        raise _invalid("not a JSON object")
    schema_version = document.get("schemaVersion")
    if schema_version != 2 or isinstance(schema_version, bool):
        raise _invalid("schemaVersion must be 2")
    media_type = _media_type(document, content_type)
    annotations = _annotations(document.get("annotations"), "annotations")
    artifact_type = document.get("artifactType") or ""
    if not isinstance(artifact_type, str):
        raise _invalid("artifactType is not a string")
    subject = document.get("subject")
    parsed_subject = _descriptor(subject, "subject") if subject is not None else None
    if media_type in IMAGE_TYPES:
        config = _descriptor(document.get("config"), "config")
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise _invalid("layers is not a list")
        blobs = [config] + [_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers)]
        return ParsedManifest(
            media_type,
            blobs=blobs,
            subject=parsed_subject,
            artifact_type=artifact_type or config.media_type,
            annotations=annotations,
        )
    children = document.get("manifests")
    if not isinstance(children, list):
        raise _invalid("manifests is not a list")
    return ParsedManifest(
        media_type,
        children=[_descriptor(child, f"manifests[{i}]") for i, child in enumerate(children)],
        subject=parsed_subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )
