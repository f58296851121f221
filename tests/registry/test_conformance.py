"""The OCI conformance workflows (pull, push, content discovery, content management), step by step.

Each test follows one workflow of opencontainers/distribution-spec's ``conformance`` suite in
order, with the same data shapes (configs with ``data`` and unknown fields, the gzip layer, a
chunked blob split one byte past the middle, referrers by config type, by ``artifactType`` and
by index) and checks the exact statuses, headers and ``Range`` strings that suite checks.

Requests go through ``Suite``, which authenticates as the suite's client does: it keeps one
token and sends it on every request; only a 401 whose ``Bearer`` challenge names a scope makes
it fetch a new token, for exactly that scope, and retry once. A 403 is final.
"""

import base64
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client

from tests.registry.conformance_data import (
    ANNOTATION,
    ARTIFACT_A,
    DUMMY_DIGEST,
    ERROR_CODES,
    LAYER,
    NONEXISTENT_MANIFEST,
    Data,
    conformance_data,
)
from tests.registry.conftest import OCI_INDEX, OCI_MANIFEST, PASSWORD, Api, sha256

NAME = "alice/conformance"
CROSSMOUNT = "alice/conformance-crossmount"


_CHALLENGE_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Suite(Api):
    """Alice, authenticating like the conformance suite's client (module docstring)."""

    current: str = ""

    def call(self, method: str, path: str, body: bytes = b"", **kwargs: Any) -> Any:
        response = super().call(method, path, body, token=self.current, **kwargs)
        challenge = response.get("WWW-Authenticate", "")
        if response.status_code != 401 or not challenge.startswith("Bearer "):
            return response
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        basic = base64.b64encode(f"{self.username}:{PASSWORD}".encode()).decode()
        issued = self.client.get(
            urlsplit(params["realm"]).path,
            {"service": params["service"], "scope": params.get("scope", "")},
            HTTP_AUTHORIZATION=f"Basic {basic}",
        )
        assert issued.status_code == 200, issued.content
        self.current = issued.json()["token"]
        return super().call(method, path, body, token=self.current, **kwargs)

    def token_narrow(self, *actions: str) -> None:
        """Hold a token granting only ``actions`` on the workflow's repository, as after a pull."""
        scope = f"repository:{NAME}:{','.join(actions)}"
        self.tokens.pop(scope, None)  # a new token each time, as the suite's client would have
        self.current = self.token(scope)


@pytest.fixture
def api(client: Client, alice: Any, memory: Any) -> Suite:
    return Suite(client, "alice")


@pytest.fixture
def data() -> Data:
    return conformance_data()


def populate_blob(api: Api, content: bytes, name: str = NAME) -> None:
    """POST a session, then PUT the blob into it (the suites' "Populate registry" steps)."""
    location = api.call("POST", f"/v2/{name}/blobs/uploads/")["Location"]
    response = api.call("PUT", location, content, query={"digest": sha256(content)})
    assert 200 <= response.status_code < 300


def put_manifest(api: Api, reference: str, content: bytes, media_type: str = OCI_MANIFEST) -> Any:
    return api.call("PUT", f"/v2/{NAME}/manifests/{reference}", content, content_type=media_type)


def accepted_or_created(response: Any) -> bool:
    return 200 <= response.status_code < 300


def test_pull_workflow(api: Suite, data: Data) -> None:
    populate_blob(api, data.configs[0])
    populate_blob(api, data.configs[1])
    populate_blob(api, LAYER)
    assert accepted_or_created(put_manifest(api, "tagtest0", data.manifests[0]))
    assert accepted_or_created(put_manifest(api, sha256(data.manifests[1]), data.manifests[1]))

    # Pull blobs
    assert api.call("HEAD", f"/v2/{NAME}/blobs/{DUMMY_DIGEST}").status_code == 404
    head = api.call("HEAD", f"/v2/{NAME}/blobs/{sha256(data.configs[0])}")
    assert (head.status_code, head["Docker-Content-Digest"]) == (200, sha256(data.configs[0]))
    assert api.call("GET", f"/v2/{NAME}/blobs/{DUMMY_DIGEST}").status_code == 404
    assert api.call("GET", f"/v2/{NAME}/blobs/{sha256(data.configs[0])}").status_code == 200
    invalid = api.call(
        "GET", f"/v2/{NAME}/blobs/{sha256(data.configs[0])}", headers={"Range": "bytes=500-0"}
    )
    assert (invalid.status_code, invalid["Content-Range"]) == (
        416,
        f"bytes */{len(data.configs[0])}",
    )

    # Pull manifests
    accept = {"Accept": OCI_MANIFEST}
    assert (
        api.call("HEAD", f"/v2/{NAME}/manifests/{NONEXISTENT_MANIFEST}", headers=accept).status_code
        == 404
    )
    for content in data.manifests[:2]:
        response = api.call("HEAD", f"/v2/{NAME}/manifests/{sha256(content)}", headers=accept)
        assert (response.status_code, response["Docker-Content-Digest"]) == (200, sha256(content))
    by_tag = api.call("HEAD", f"/v2/{NAME}/manifests/tagtest0", headers=accept)
    assert (by_tag.status_code, by_tag["Docker-Content-Digest"]) == (200, sha256(data.manifests[0]))
    assert (
        api.call("GET", f"/v2/{NAME}/manifests/{NONEXISTENT_MANIFEST}", headers=accept).status_code
        == 404
    )
    for content in data.manifests[:2]:
        assert (
            api.call("GET", f"/v2/{NAME}/manifests/{sha256(content)}", headers=accept).status_code
            == 200
        )
    assert api.call("GET", f"/v2/{NAME}/manifests/tagtest0", headers=accept).status_code == 200

    # Error codes
    wrong = api.call(
        "GET", f"/v2/{NAME}/manifests/sha256:totallywrong", b"blablabla", content_type=OCI_MANIFEST
    )
    assert wrong.status_code in (400, 404)
    assert wrong.json()["errors"][0]["code"] in ERROR_CODES

    # Teardown (manifests before blobs)
    for content in data.manifests[:2]:
        assert accepted_or_created(api.call("DELETE", f"/v2/{NAME}/manifests/{sha256(content)}"))
    for content in (data.configs[0], data.configs[1], LAYER):
        assert accepted_or_created(api.call("DELETE", f"/v2/{NAME}/blobs/{sha256(content)}"))


def test_push_workflow(api: Suite, data: Data) -> None:
    # Blob Upload Streamed
    started = api.call("POST", f"/v2/{NAME}/blobs/uploads/")
    assert started["Location"]
    patched = api.call("PATCH", started["Location"], data.blob_a)
    assert patched.status_code == 202
    done = api.call("PUT", patched["Location"], query={"digest": sha256(data.blob_a)})
    assert (done.status_code, bool(done["Location"])) == (201, True)

    # Blob Upload Monolithic
    assert api.call("GET", f"/v2/{NAME}/blobs/{DUMMY_DIGEST}").status_code == 404
    mono = api.call(
        "POST",
        f"/v2/{NAME}/blobs/uploads/",
        data.configs[1],
        query={"digest": sha256(data.configs[1])},
    )
    assert (mono.status_code, bool(mono["Location"])) == (201, True)
    assert api.call("GET", f"/v2/{NAME}/blobs/{sha256(data.configs[1])}").status_code == 200
    session = api.call("POST", f"/v2/{NAME}/blobs/uploads/")
    assert session.status_code == 202
    put = api.call(
        "PUT", session["Location"], data.configs[1], query={"digest": sha256(data.configs[1])}
    )
    assert (put.status_code, bool(put["Location"])) == (201, True)
    assert api.call("GET", f"/v2/{NAME}/blobs/{sha256(data.configs[1])}").status_code == 200
    layer_session = api.call("POST", f"/v2/{NAME}/blobs/uploads/")
    layer_put = api.call("PUT", layer_session["Location"], LAYER, query={"digest": sha256(LAYER)})
    assert (layer_put.status_code, bool(layer_put["Location"])) == (201, True)
    assert api.call("GET", f"/v2/{NAME}/blobs/{sha256(LAYER)}").status_code == 200

    # Blob Upload Chunked
    out_of_order = api.call("POST", f"/v2/{NAME}/blobs/uploads/", CONTENT_LENGTH="0")
    assert "OCI-Chunk-Min-Length" not in out_of_order or int(
        out_of_order["OCI-Chunk-Min-Length"]
    ) <= len(data.chunk1)
    refused = api.call(
        "PATCH", out_of_order["Location"], data.chunk2, headers={"Content-Range": data.chunk2_range}
    )
    assert refused.status_code == 416
    api.token_narrow("pull")  # the status of a session with a token that lacks push
    status = api.call("GET", out_of_order["Location"])
    assert (status.status_code, status["Range"], bool(status["Location"])) == (204, "0-0", True)
    api.token_narrow("pull")  # cancelling a session with a token that lacks push
    cancelled = api.call("DELETE", out_of_order["Location"])
    assert cancelled.status_code == 204
    assert api.call("GET", out_of_order["Location"]).status_code == 404
    first = api.call("POST", f"/v2/{NAME}/blobs/uploads/", CONTENT_LENGTH="0")
    chunk1 = api.call(
        "PATCH", first["Location"], data.chunk1, headers={"Content-Range": data.chunk1_range}
    )
    assert (chunk1.status_code, chunk1["Range"]) == (202, data.chunk1_range)
    retry = api.call(
        "PATCH", first["Location"], data.chunk1, headers={"Content-Range": data.chunk1_range}
    )
    assert retry.status_code == 416
    stale = api.call("GET", first["Location"])
    assert (stale.status_code, bool(stale["Location"]), stale["Range"]) == (
        204,
        True,
        data.chunk1_range,
    )
    chunk2 = api.call(
        "PATCH", stale["Location"], data.chunk2, headers={"Content-Range": data.chunk2_range}
    )
    assert (chunk2.status_code, bool(chunk2["Location"])) == (202, True)
    closed = api.call(
        "PUT", chunk2["Location"], CONTENT_LENGTH="0", query={"digest": sha256(data.blob_b)}
    )
    assert (closed.status_code, bool(closed["Location"])) == (201, True)

    # Cross-Repository Blob Mount
    no_from = api.call("POST", f"/v2/{CROSSMOUNT}/blobs/uploads/", query={"mount": DUMMY_DIGEST})
    assert (no_from.status_code, bool(no_from["Location"])) == (202, True)
    mounted = api.call(
        "POST",
        f"/v2/{CROSSMOUNT}/blobs/uploads/",
        query={"mount": sha256(data.blob_a), "from": NAME},
    )
    assert mounted.status_code == 201
    assert mounted["Location"] == f"/v2/{CROSSMOUNT}/blobs/{sha256(data.blob_a)}"
    assert api.call("GET", mounted["Location"]).status_code == 200
    # Without from, with automatic content discovery (OCI_AUTOMATIC_CROSSMOUNT)
    discovered = api.call(
        "POST", f"/v2/{NAME}-automount/blobs/uploads/", query={"mount": sha256(data.blob_a)}
    )
    assert discovered.status_code == 201
    assert discovered["Location"] == f"/v2/{NAME}-automount/blobs/{sha256(data.blob_a)}"
    assert api.call("GET", discovered["Location"]).status_code == 200

    # Manifest Upload
    assert api.call("GET", f"/v2/{NAME}/manifests/{NONEXISTENT_MANIFEST}").status_code == 404
    for i in range(4):
        response = put_manifest(api, f"test{i}", data.manifests[1])
        assert (response.status_code, bool(response["Location"])) == (201, True)
    empty_layers = put_manifest(api, "emptylayer", data.empty_layer_manifest)
    assert (empty_layers.status_code, bool(empty_layers["Location"])) == (201, True)
    fetched = api.call(
        "GET", f"/v2/{NAME}/manifests/{sha256(data.manifests[1])}", headers={"Accept": OCI_MANIFEST}
    )
    assert fetched.status_code == 200

    # Teardown (manifests before blobs)
    for content in (data.manifests[1], data.empty_layer_manifest):
        assert accepted_or_created(api.call("DELETE", f"/v2/{NAME}/manifests/{sha256(content)}"))
    for content in (data.configs[1], LAYER, data.blob_a, data.blob_b):
        assert accepted_or_created(api.call("DELETE", f"/v2/{NAME}/blobs/{sha256(content)}"))


def test_content_discovery_workflow(api: Suite, data: Data) -> None:
    # Referrers of a repository nothing was pushed to: an empty index, never a 404
    unborn = api.call("GET", f"/v2/{NAME}-unborn/referrers/{DUMMY_DIGEST}")
    assert (unborn.status_code, unborn["Content-Type"]) == (200, OCI_INDEX)
    assert unborn.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}

    populate_blob(api, data.configs[2])
    populate_blob(api, LAYER)
    for i in range(4):
        assert accepted_or_created(put_manifest(api, f"test{i}", data.manifests[2]))
    # References setup, in the suite's order (a subject-less push first, subjects pushed later)
    populate_blob(api, b"{}")
    populate_blob(api, data.ref_blob_a)
    for key in ("a-config", "a-layer"):
        response = put_manifest(api, sha256(data.refs[key]), data.refs[key])
        assert accepted_or_created(response)
        assert response["OCI-Subject"] == sha256(data.manifests[4])
    index = put_manifest(api, sha256(data.refs["index"]), data.refs["index"], OCI_INDEX)
    assert (accepted_or_created(index), index["OCI-Subject"]) == (True, sha256(data.manifests[4]))
    populate_blob(api, data.configs[4])
    populate_blob(api, LAYER)
    assert accepted_or_created(put_manifest(api, "tagtest0", data.manifests[4]))
    populate_blob(api, data.ref_blob_b)
    for key in ("b-config", "b-layer"):
        response = put_manifest(api, sha256(data.refs[key]), data.refs[key])
        assert response["OCI-Subject"] == sha256(data.manifests[4])
    dangling = put_manifest(api, sha256(data.refs["c-layer"]), data.refs["c-layer"])
    assert (accepted_or_created(dangling), dangling["OCI-Subject"]) == (
        True,
        sha256(data.manifests[3]),
    )

    # Listing tags
    listed = api.call("GET", f"/v2/{NAME}/tags/list")
    assert listed.status_code == 200
    tags = listed.json()["tags"]
    half = len(tags) // 2
    limited = api.call("GET", f"/v2/{NAME}/tags/list", query={"n": str(half)})
    assert (limited.status_code, len(limited.json()["tags"])) == (200, half)
    after = api.call(
        "GET",
        f"/v2/{NAME}/tags/list",
        query={"n": str(half), "last": limited.json()["tags"][half - 1]},
    )
    assert after.status_code == 200
    assert len(after.json()["tags"]) <= half
    assert limited.json()["tags"][half - 1] not in after.json()["tags"]

    # Listing references
    nothing = api.call("GET", f"/v2/{NAME}/referrers/{DUMMY_DIGEST}")
    assert (nothing.status_code, nothing["Content-Type"], nothing.json()["manifests"]) == (
        200,
        OCI_INDEX,
        [],
    )
    every = api.call("GET", f"/v2/{NAME}/referrers/{sha256(data.manifests[4])}")
    assert (every.status_code, every["Content-Type"]) == (200, OCI_INDEX)
    notes = {
        sha256(data.refs[k]): n
        for k, n in [
            ("a-config", "test config a"),
            ("b-config", "test config b"),
            ("a-layer", "test layer a"),
            ("b-layer", "test layer b"),
            ("index", "test index"),
        ]
    }
    found = every.json()["manifests"]
    assert len(found) == 5
    assert found[0]["digest"] != found[1]["digest"]
    for entry in found:
        assert entry["annotations"] == {ANNOTATION: notes[entry["digest"]]}
    filtered = api.call(
        "GET",
        f"/v2/{NAME}/referrers/{sha256(data.manifests[4])}",
        query={"artifactType": ARTIFACT_A},
    )
    assert filtered["OCI-Filters-Applied"] == "artifactType"
    assert sorted(e["digest"] for e in filtered.json()["manifests"]) == sorted(
        [sha256(data.refs["a-config"]), sha256(data.refs["a-layer"])]
    )
    missing = api.call("GET", f"/v2/{NAME}/referrers/{sha256(data.manifests[3])}")
    assert missing.status_code == 200
    assert [e["digest"] for e in missing.json()["manifests"]] == [sha256(data.refs["c-layer"])]

    # Teardown: manifests and tags, then blobs
    for content in (
        data.refs["index"],
        *(data.refs[k] for k in ("a-config", "a-layer", "b-config", "b-layer", "c-layer")),
        data.manifests[2],
        data.manifests[4],
    ):
        assert accepted_or_created(api.call("DELETE", f"/v2/{NAME}/manifests/{sha256(content)}"))
    assert api.call("GET", f"/v2/{NAME}/tags/list").json()["tags"] == []


def test_content_management_workflow(api: Suite, data: Data) -> None:
    populate_blob(api, data.configs[3])
    populate_blob(api, LAYER)
    assert accepted_or_created(put_manifest(api, "tagtest0", data.manifests[3]))
    before = len(api.call("GET", f"/v2/{NAME}/tags/list").json()["tags"])

    # Manifest delete (with the token of the pushes, which lacks delete)
    assert api.call("DELETE", f"/v2/{NAME}/manifests/tagtest0").status_code == 202
    assert (
        api.call("DELETE", f"/v2/{NAME}/manifests/{sha256(data.manifests[3])}").status_code == 202
    )
    assert api.call("GET", f"/v2/{NAME}/manifests/{sha256(data.manifests[3])}").status_code == 404
    listed = api.call("GET", f"/v2/{NAME}/tags/list")
    assert listed.status_code == 200
    assert len(listed.json()["tags"]) < before

    # Blob delete
    assert api.call("DELETE", f"/v2/{NAME}/blobs/{sha256(data.configs[3])}").status_code == 202
    assert api.call("DELETE", f"/v2/{NAME}/blobs/{sha256(LAYER)}").status_code == 202
    assert api.call("GET", f"/v2/{NAME}/blobs/{sha256(data.configs[3])}").status_code == 404
