"""Givens of the registry API tests: an in-memory location, users, and a client with tokens.

The client fetches real tokens from the token endpoint (``/v2/auth``) with Basic credentials, for
the scope each request needs, the way docker clients do after a challenge.
"""

import base64
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from replication import health, selectors
from replication.models import Blob, Placement, StorageLocation
from replication.selectors import location_engine
from replication.services import location_create
from storage_engines.memory import MemoryEngine
from tests.registry.live import registry_server

__all__ = ["registry_server"]  # the session fixture of the end-to-end tests

PASSWORD = "correct horse battery staple"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"
_REPOSITORY_PATH = re.compile(r"^/v2/(.+)/(?:blobs|manifests|tags|referrers)/")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


@pytest.fixture(autouse=True)
def _fresh_engine_cache(request: pytest.FixtureRequest, settings: Any) -> Iterator[None]:
    """Every test builds its own engines (the in-memory engine keeps objects in the instance).

    Passwords hash fast, except for tests against a real server (it must verify them).
    """
    if request.node.get_closest_marker("servers") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    selectors.cache_clear()
    health.breaker_reset()
    yield
    selectors.cache_clear()
    health.breaker_reset()


@dataclass
class Memory:
    """The in-memory location uploads land in, and its engine."""

    location: StorageLocation
    engine: MemoryEngine

    def keys(self) -> list[str]:
        """Return every object key the engine holds, staging objects included."""
        return sorted(self.engine.objects)

    def holds_nothing_but(self, *digests: str) -> bool:
        """Return whether the engine holds exactly the blobs named, and no session or staging."""
        expected = sorted(
            f"{d.split(':')[0]}/{d.split(':')[1][:2]}/{d.split(':')[1]}" for d in digests
        )
        return self.keys() == expected and not self.engine.sessions


@pytest.fixture
def memory(db: None) -> Memory:
    location = location_create(location_id="mem", kind="memory", options={})
    engine = location_engine(location)
    assert isinstance(engine, MemoryEngine)
    return Memory(location, engine)


def user_create(username: str, *, superuser: bool = False) -> User:
    """Create a user; their namespace (the lowercased username) comes with them."""
    if superuser:
        return User.objects.create_superuser(username, password=PASSWORD)
    return User.objects.create_user(username, password=PASSWORD)


@dataclass
class Api:
    """Django's test client speaking as one user (None: anonymous), with tokens per scope."""

    client: Client
    username: str | None
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, *scopes: str) -> str:
        key = " ".join(scopes)
        if key not in self.tokens:
            headers: dict[str, Any] = {}
            if self.username is not None:
                basic = base64.b64encode(f"{self.username}:{PASSWORD}".encode()).decode()
                headers["HTTP_AUTHORIZATION"] = f"Basic {basic}"
            response = self.client.get(
                "/v2/auth", {"service": "testserver", "scope": list(scopes)}, **headers
            )
            assert response.status_code == 200, response.content
            self.tokens[key] = response.json()["token"]
        return self.tokens[key]

    def scopes_for(self, path: str, query: dict[str, Any]) -> list[str]:
        if path.startswith("/v2/_catalog"):
            return ["registry:catalog:*"]
        match = _REPOSITORY_PATH.match(path)
        if match is None:
            return []
        scopes = [f"repository:{match.group(1)}:pull,push,delete"]
        if "from" in query:
            scopes.append(f"repository:{query['from']}:pull")
        return scopes

    def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
        token: str | None = None,
        **extra: Any,
    ) -> Any:
        """Send a request with a token for the repository in ``path``; return the response."""
        query = query or {}
        scopes = self.scopes_for(path, query)
        if token is None and scopes:
            token = self.token(*scopes)
        if token:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        if query:
            from urllib.parse import urlencode

            path = f"{path}?{urlencode(query, doseq=True)}"
        return self.client.generic(
            method, path, body, content_type=content_type, headers=headers or {}, **extra
        )

    # Blob and manifest helpers used by many tests.

    def blob_push(self, name: str, data: bytes) -> str:
        """Push a blob with POST + PUT and return its digest."""
        digest = sha256(data)
        started = self.call("POST", f"/v2/{name}/blobs/uploads/")
        assert started.status_code == 202, started.content
        done = self.call("PUT", started["Location"], data, query={"digest": digest})
        assert done.status_code == 201, done.content
        return digest

    def manifest_push(
        self,
        name: str,
        reference: str,
        manifest: dict[str, Any],
        media_type: str = "application/vnd.oci.image.manifest.v1+json",
    ) -> Any:
        content = json.dumps(manifest, indent=2).encode()
        return self.call(
            "PUT", f"/v2/{name}/manifests/{reference}", content, content_type=media_type
        )


@pytest.fixture
def alice(db: None) -> User:
    return user_create("alice")


@pytest.fixture
def api(client: Client, alice: User, memory: Memory) -> Api:
    """Alice, who owns the namespace ``alice``, with an in-memory location to push to."""
    return Api(client, "alice")


@pytest.fixture
def anonymous(client: Client) -> Api:
    return Api(client, None)


def image_manifest(
    config: str, config_size: int, layers: list[tuple[str, int]], **fields: Any
) -> dict[str, Any]:
    """Return an OCI image manifest document."""
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config,
            "size": config_size,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}
            for d, s in layers
        ],
        **fields,
    }


@dataclass
class Image:
    """A pushed image: its config and layers, and the manifest document that lists them."""

    config: bytes
    layers: list[bytes]
    manifest: dict[str, Any]

    @property
    def content(self) -> bytes:
        return json.dumps(self.manifest, indent=2).encode()

    @property
    def digest(self) -> str:
        return sha256(self.content)


def image_blobs_push(api: Api, name: str, layer_count: int = 2, **fields: Any) -> Image:
    """Push a config and random layers to ``name``; return the image (manifest not pushed)."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "seed": os.urandom(8).hex()}
    ).encode()
    layers = [os.urandom(1000 + i) for i in range(layer_count)]
    api.blob_push(name, config)
    for layer in layers:
        api.blob_push(name, layer)
    manifest = image_manifest(
        sha256(config), len(config), [(sha256(layer), len(layer)) for layer in layers], **fields
    )
    return Image(config, layers, manifest)


def body_cut_short(sent: bytes, declared: int) -> dict[str, Any]:
    """Return request environ where the client declares ``declared`` bytes but stops early."""
    return {"CONTENT_LENGTH": str(declared), "wsgi.input": io.BytesIO(sent)}


def rows_of(digest: str) -> tuple[int, int]:
    """Return how many Blob and Placement rows exist for a digest."""
    return (
        Blob.objects.filter(digest=digest).count(),
        Placement.objects.filter(blob__digest=digest).count(),
    )


def error_code(response: Any) -> str:
    """Return the spec error code of an error answer."""
    return str(response.json()["errors"][0]["code"])


def put_raw(
    api: Api, name: str, reference: str, content: bytes, media_type: str = OCI_MANIFEST, **kw: Any
) -> Any:
    """PUT manifest bytes exactly as given."""
    return api.call(
        "PUT", f"/v2/{name}/manifests/{reference}", content, content_type=media_type, **kw
    )


@pytest.fixture
def image(api: Api) -> Image:
    """A config and two layers pushed to ``alice/app`` (the manifest is not pushed)."""
    return image_blobs_push(api, "alice/app")


def index_of(
    *children: tuple[str, int, str], media_type: str = OCI_INDEX, **fields: Any
) -> dict[str, Any]:
    """Return an image index of ``(digest, size, media type)`` children."""
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": child_type,
                "digest": digest,
                "size": size,
                "platform": {"architecture": "amd64", "os": "linux"},
            }
            for digest, size, child_type in children
        ],
        **fields,
    }


def spy(monkeypatch: pytest.MonkeyPatch, target: Any, method: str) -> list[Any]:
    """Record every call of ``target.method`` (still calling it); return the list of calls."""
    calls: list[Any] = []
    original = getattr(target, method)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(target, method, recorded)
    return calls


def session(api: Api, name: str = "alice/app", **query: str) -> Any:
    response = api.call("POST", f"/v2/{name}/blobs/uploads/", query=query)
    assert response.status_code == 202, response.content
    return response
