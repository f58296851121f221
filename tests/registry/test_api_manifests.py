"""Manifests through the API: push, pull, validation, digests, tags, deletes."""

import hashlib
import json

import pytest
from django.db import connection
from pytest_django.fixtures import Settings

from registry.models import Manifest, ManifestBlob, ManifestChild, Namespace, Tag
from registry.services import manifests as manifest_services
from registry.services.manifest_parse import manifest_parse
from replication.commitsql import task_sender
from replication.models import Placement, PlacementState
from replication.services import location_create, namespace_targets_set, replication_enable
from tests.registry.conftest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    Api,
    Image,
    body_cut_short,
    error_code,
    image_blobs_push,
    image_manifest,
    index_of,
    put_raw,
    sha256,
    sha512,
)

# --- push and pull -------------------------------------------------------------------------------


def test_a_manifest_pushed_by_tag_is_pulled_byte_exact_by_tag_and_digest(
    api: Api, image: Image
) -> None:
    pushed = put_raw(api, "alice/app", "v1", image.content)
    by_tag = api.call("GET", "/v2/alice/app/manifests/v1")
    by_digest = api.call("GET", f"/v2/alice/app/manifests/{image.digest}")
    head = api.call("HEAD", "/v2/alice/app/manifests/v1")

    assert pushed.status_code == 201
    assert pushed["Location"] == f"/v2/alice/app/manifests/{image.digest}"
    assert pushed["Docker-Content-Digest"] == image.digest
    for response in (by_tag, by_digest):
        assert response.status_code == 200
        assert response.content == image.content
        assert response["Content-Type"] == OCI_MANIFEST
        assert response["Docker-Content-Digest"] == image.digest
        assert response["Content-Length"] == str(len(image.content))
    assert (head.status_code, head.content, head["Content-Length"]) == (
        200,
        b"",
        str(len(image.content)),
    )
    manifest = Manifest.objects.get()
    assert ManifestBlob.objects.filter(manifest=manifest).count() == 3


def test_a_manifest_push_plans_copies_of_its_blobs_to_its_namespace_targets(
    api: Api, image: Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given blobs pushed before their namespace had an extra target location
    target = location_create(location_id="ap_mem", kind="memory", options={})
    replication_enable(enabled=True)
    namespace_targets_set(namespace=Namespace.objects.get(name="alice"), location_ids=["ap_mem"])
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(task_sender, "send_later", lambda pairs: sent.extend(pairs))
    committed: list[Manifest] = []
    hook = manifest_services.replication_manifest_committed

    def observed(manifest: Manifest) -> None:
        committed.append(manifest)
        hook(manifest)

    monkeypatch.setattr(manifest_services, "replication_manifest_committed", observed)

    # When the manifest naming them is pushed
    put_raw(api, "alice/app", "v1", image.content)

    # Then each blob has a pending copy planned there, marked enqueued, and its task handed over
    planned = Placement.objects.filter(location=target)
    blobs = {sha256(image.config), *(sha256(layer) for layer in image.layers)}
    assert {p.blob.digest for p in planned} == blobs
    assert {p.state for p in planned} == {PlacementState.PENDING}
    if connection.vendor == "postgresql":  # one statement; the tasks go to the sender thread
        assert all(p.enqueued_at is not None for p in planned)
        assert sorted(placement_id for placement_id, _ in sent) == sorted(p.pk for p in planned)
        assert committed == []
    else:  # a transaction, then the replication hook
        assert [m.digest for m in committed] == [image.digest]


def test_a_docker_schema2_manifest_and_manifest_list_keep_their_media_types(
    api: Api, image: Image
) -> None:
    docker = dict(image.manifest, mediaType=DOCKER_MANIFEST)
    docker["config"] = dict(
        docker["config"], mediaType="application/vnd.docker.container.image.v1+json"
    )
    content = json.dumps(docker).encode()
    listing = json.dumps(
        index_of((sha256(content), len(content), DOCKER_MANIFEST), media_type=DOCKER_LIST)
    ).encode()

    first = put_raw(api, "alice/app", "docker", content, DOCKER_MANIFEST)
    second = put_raw(api, "alice/app", "list", listing, DOCKER_LIST)

    assert (first.status_code, second.status_code) == (201, 201)
    assert api.call("GET", "/v2/alice/app/manifests/docker")["Content-Type"] == DOCKER_MANIFEST
    fetched = api.call("GET", "/v2/alice/app/manifests/list")
    assert (fetched["Content-Type"], fetched.content) == (DOCKER_LIST, listing)


def test_an_index_records_its_children_and_nested_indexes_work(api: Api, image: Image) -> None:
    put_raw(api, "alice/app", image.digest, image.content)
    inner = json.dumps(index_of((image.digest, len(image.content), OCI_MANIFEST))).encode()
    outer = json.dumps(index_of((sha256(inner), len(inner), OCI_INDEX))).encode()

    assert put_raw(api, "alice/app", "inner", inner, OCI_INDEX).status_code == 201
    assert put_raw(api, "alice/app", "outer", outer, OCI_INDEX).status_code == 201
    assert ManifestChild.objects.count() == 2
    assert api.call("GET", "/v2/alice/app/manifests/outer").content == outer


def test_an_index_with_an_unknown_child_is_manifest_blob_unknown(api: Api, image: Image) -> None:
    index = json.dumps(index_of((image.digest, len(image.content), OCI_MANIFEST))).encode()

    response = put_raw(api, "alice/app", "idx", index, OCI_INDEX)

    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"
    assert not Manifest.objects.exists()


def test_a_manifest_referencing_a_missing_blob_stores_nothing(api: Api, image: Image) -> None:
    manifest = dict(image.manifest)
    manifest["layers"] = [
        *manifest["layers"],
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": sha256(b"gone"),
            "size": 4,
        },
    ]

    response = put_raw(api, "alice/app", "v1", json.dumps(manifest).encode())

    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"
    assert response.json()["errors"][0]["detail"] == [{"digest": sha256(b"gone")}]
    assert not Manifest.objects.exists()
    assert not Tag.objects.exists()


def test_a_blob_of_another_repository_does_not_satisfy_a_manifest(api: Api, image: Image) -> None:
    response = put_raw(api, "alice/elsewhere", "v1", image.content)

    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"


def test_foreign_layers_data_fields_custom_fields_and_empty_layer_lists_are_stored(
    api: Api,
) -> None:
    config = b"{}"
    api.blob_push("alice/app", config)
    foreign = {
        "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "digest": sha256(b"windows base layer"),
        "size": 18,
        "urls": ["https://example.com/layer.tar.gz"],
    }
    manifest = image_manifest(sha256(config), 2, [], **{"x-custom": {"kept": True}})
    manifest["config"]["data"] = "e30="
    manifest["layers"] = [foreign]
    no_layers = image_manifest(sha256(config), 2, [])
    no_layers["config"]["mediaType"] = EMPTY_JSON
    no_layers["artifactType"] = "application/vnd.example.sbom"

    first = api.manifest_push("alice/app", "foreign", manifest)
    second = api.manifest_push("alice/app", "artifact", no_layers)

    assert (first.status_code, second.status_code) == (201, 201)
    assert json.loads(api.call("GET", "/v2/alice/app/manifests/foreign").content)["x-custom"] == {
        "kept": True
    }
    assert (
        Manifest.objects.get(tags__name="artifact").artifact_type == "application/vnd.example.sbom"
    )


def test_the_media_type_may_come_from_the_mediatype_field(api: Api, image: Image) -> None:
    response = put_raw(api, "alice/app", "v1", image.content, "application/json")

    assert response.status_code == 201
    assert api.call("GET", "/v2/alice/app/manifests/v1")["Content-Type"] == OCI_MANIFEST


@pytest.mark.parametrize(
    ("content", "media_type"),
    [
        (b"blablabla", OCI_MANIFEST),
        (b"[1, 2]", OCI_MANIFEST),
        (json.dumps({"schemaVersion": 1, "name": "x"}).encode(), OCI_MANIFEST),
        (
            json.dumps({"schemaVersion": 2, "config": {}}).encode(),
            "application/vnd.example.unknown+json",
        ),
        (
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode(),
            OCI_MANIFEST,
        ),
        (
            json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(),
            OCI_MANIFEST,
        ),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "a", "digest": "sha256:nope", "size": 1},
                    "layers": [],
                }
            ).encode(),
            OCI_MANIFEST,
        ),
        (
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": {}}).encode(),
            OCI_INDEX,
        ),
        (b"\xff\xfe not utf-8", OCI_MANIFEST),
    ],
    ids=[
        "not-json",
        "not-object",
        "schema1",
        "unknown-type",
        "type-mismatch",
        "no-config",
        "bad-descriptor-digest",
        "manifests-not-list",
        "not-utf8",
    ],
)
def test_invalid_manifests_are_manifest_invalid(api: Api, content: bytes, media_type: str) -> None:
    response = put_raw(api, "alice/app", "bad", content, media_type)

    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_INVALID"
    assert not Manifest.objects.exists()


def test_a_manifest_above_the_size_limit_is_413(api: Api, settings: Settings) -> None:
    settings.QUAY_GEO_MANIFEST_MAX_BYTES = 1000

    response = put_raw(api, "alice/app", "big", b" " * 1001)
    at_limit = put_raw(api, "alice/app", "big", b" " * 1000)

    assert response.status_code == 413
    assert error_code(response) == "MANIFEST_INVALID"
    assert at_limit.status_code == 400  # read, then refused as not JSON


def test_the_default_manifest_limit_is_4_mib(api: Api) -> None:
    response = put_raw(api, "alice/app", "big", b" " * (4 * 1024 * 1024 + 1))

    assert response.status_code == 413


def test_a_manifest_body_shorter_than_its_length_is_size_invalid(api: Api, image: Image) -> None:
    cut = body_cut_short(image.content, len(image.content) + 10)

    response = put_raw(api, "alice/app", "v1", image.content, **cut)

    assert response.status_code == 400
    assert error_code(response) == "SIZE_INVALID"


# --- digests and tags ----------------------------------------------------------------------------


def test_a_digest_reference_must_match_the_content(api: Api, image: Image) -> None:
    response = put_raw(api, "alice/app", sha256(b"other"), image.content)

    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"
    assert not Manifest.objects.exists()


def test_a_sha512_reference_is_answered_in_sha512(api: Api, image: Image) -> None:
    digest = sha512(image.content)

    pushed = put_raw(api, "alice/app", digest, image.content)
    fetched = api.call("GET", f"/v2/alice/app/manifests/{digest}")

    assert pushed.status_code == 201
    assert pushed["Docker-Content-Digest"] == digest
    assert pushed["Location"] == f"/v2/alice/app/manifests/{digest}"
    assert (fetched.status_code, fetched["Docker-Content-Digest"]) == (200, digest)


def test_several_tag_parameters_tag_the_manifest_with_one_oci_tag_header_each(
    api: Api, image: Image
) -> None:
    response = put_raw(
        api, "alice/app", image.digest, image.content, query={"tag": ["a", "b", "c"]}
    )

    assert response.status_code == 201
    assert [value for name, value in response.items() if name == "OCI-Tag"] == ["a", "b", "c"]
    listed = api.call("GET", "/v2/alice/app/tags/list").json()
    assert listed == {"name": "alice/app", "tags": ["a", "b", "c"]}


@pytest.mark.parametrize("tag", [".INVALID_MANIFEST_NAME", "-x", "a" * 129, "tag!"])
def test_an_invalid_tag_is_refused_on_push_and_unknown_on_pull(
    api: Api, image: Image, tag: str
) -> None:
    pushed = put_raw(api, "alice/app", tag, image.content)
    pulled = api.call("GET", f"/v2/alice/app/manifests/{tag}")
    head = api.call("HEAD", f"/v2/alice/app/manifests/{tag}")
    query_tag = put_raw(api, "alice/app", image.digest, image.content, query={"tag": tag})

    assert (pushed.status_code, error_code(pushed)) == (400, "MANIFEST_INVALID")
    assert (pulled.status_code, error_code(pulled)) == (404, "MANIFEST_UNKNOWN")
    assert (head.status_code, head.content) == (404, b"")
    assert query_tag.status_code == 400
    assert not Manifest.objects.exists()


@pytest.mark.parametrize(
    "reference", ["sha256:totallywrong", "sha1:" + "0" * 40, "sha512:" + "0" * 64]
)
def test_a_malformed_digest_reference_is_a_400(api: Api, image: Image, reference: str) -> None:
    put_raw(api, "alice/app", "v1", image.content)

    for method in ("GET", "HEAD", "DELETE", "PUT"):
        response = api.call(
            method, f"/v2/alice/app/manifests/{reference}", image.content, content_type=OCI_MANIFEST
        )
        assert response.status_code == 400, method
        if method != "HEAD":
            assert error_code(response) == "DIGEST_INVALID"


def test_retagging_moves_the_tag(api: Api) -> None:
    first = image_blobs_push(api, "alice/app")
    second = image_blobs_push(api, "alice/app")
    put_raw(api, "alice/app", "latest", first.content)
    put_raw(api, "alice/app", "latest", second.content)

    assert api.call("GET", "/v2/alice/app/manifests/latest").content == second.content
    assert Tag.objects.count() == 1


# --- deletes -------------------------------------------------------------------------------------


def test_deleting_a_tag_removes_only_the_tag(api: Api, image: Image) -> None:
    put_raw(api, "alice/app", "v1", image.content)
    put_raw(api, "alice/app", "v2", image.content)

    deleted = api.call("DELETE", "/v2/alice/app/manifests/v1")

    assert deleted.status_code == 202
    assert api.call("GET", "/v2/alice/app/manifests/v1").status_code == 404
    assert api.call("GET", f"/v2/alice/app/manifests/{image.digest}").status_code == 200
    assert api.call("GET", "/v2/alice/app/tags/list").json()["tags"] == ["v2"]


def test_deleting_by_digest_removes_the_manifest_and_its_tags_at_once(
    api: Api, image: Image
) -> None:
    put_raw(api, "alice/app", "v1", image.content)
    index = json.dumps(index_of((image.digest, len(image.content), OCI_MANIFEST))).encode()
    put_raw(api, "alice/app", "idx", index, OCI_INDEX)

    deleted = api.call("DELETE", f"/v2/alice/app/manifests/{image.digest}")

    assert deleted.status_code == 202
    assert api.call("GET", f"/v2/alice/app/manifests/{image.digest}").status_code == 404
    assert api.call("GET", "/v2/alice/app/manifests/v1").status_code == 404
    assert api.call("GET", "/v2/alice/app/tags/list").json()["tags"] == ["idx"]
    assert not ManifestBlob.objects.filter(manifest__digest=image.digest).exists()


@pytest.mark.parametrize("reference", ["nope", sha256(b"nope"), ".bad"])
def test_deleting_an_unknown_reference_is_manifest_unknown(
    api: Api, image: Image, reference: str
) -> None:
    put_raw(api, "alice/app", "v1", image.content)

    response = api.call("DELETE", f"/v2/alice/app/manifests/{reference}")

    assert (response.status_code, error_code(response)) == (404, "MANIFEST_UNKNOWN")


def test_manifest_content_is_stored_byte_exact_including_whitespace(api: Api, image: Image) -> None:
    content = b"\n  " + json.dumps(image.manifest, separators=(",", ":")).encode() + b"\n\n"

    pushed = put_raw(api, "alice/app", "exact", content)

    assert pushed["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(content).hexdigest()
    assert api.call("GET", "/v2/alice/app/manifests/exact").content == content


# --- hostile manifests (issue 15): each a MANIFEST_INVALID, never a 500 ------------------------

NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def _with_layer(image: Image, **layer_fields: object) -> dict[str, object]:
    manifest = json.loads(image.content)
    manifest["layers"][0].update(layer_fields)
    return manifest


def test_a_manifest_nested_100000_levels_deep_is_manifest_invalid(api: Api) -> None:
    deep = b'{"schemaVersion": 2, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    response = put_raw(api, "alice/app", "deep", deep)

    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_INVALID"
    assert not Manifest.objects.exists()


@pytest.mark.parametrize(
    "layer_fields",
    [
        {"urls": ["https://example.com/layer.tar.gz"]},
        {"mediaType": NONDISTRIBUTABLE, "urls": ["ftp://example.com/layer"]},
        {"mediaType": NONDISTRIBUTABLE, "urls": ["https://example.com/layer#part"]},
        {"mediaType": NONDISTRIBUTABLE, "urls": "https://example.com/layer"},
        {"mediaType": NONDISTRIBUTABLE, "urls": [42]},
        {"annotations": {"org.example.count": 3}},
        {"size": 2**63},
        {"size": -1},
    ],
    ids=[
        "urls-on-distributable-layer",
        "url-not-http",
        "url-with-fragment",
        "urls-not-list",
        "url-not-string",
        "descriptor-annotation-not-string",
        "size-above-int64",
        "size-negative",
    ],
)
def test_hostile_descriptors_are_manifest_invalid(
    api: Api, image: Image, layer_fields: dict[str, object]
) -> None:
    response = api.manifest_push("alice/app", "bad", _with_layer(image, **layer_fields))

    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_INVALID"
    assert not Manifest.objects.exists()


@pytest.mark.parametrize("annotations", [{"a": None}, {"a": {"b": "c"}}, {"a": ["b"]}, ["a"]])
def test_manifest_annotations_must_map_strings_to_strings(
    api: Api, image: Image, annotations: object
) -> None:
    manifest = dict(image.manifest, annotations=annotations)

    response = api.manifest_push("alice/app", "bad", manifest)

    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_INVALID"


def test_the_largest_int64_size_parses(image: Image) -> None:
    manifest = _with_layer(image, size=2**63 - 1)

    parsed = manifest_parse(json.dumps(manifest).encode(), OCI_MANIFEST)

    assert parsed.blobs[1].size == 2**63 - 1


def test_manifest_urls_follow_the_allow_and_deny_patterns(
    api: Api, image: Image, settings: Settings
) -> None:
    settings.QUAY_GEO_MANIFEST_URLS_ALLOW = r"^https://mcr\.example\.com/"
    settings.QUAY_GEO_MANIFEST_URLS_DENY = r"/private/"
    foreign = {"mediaType": NONDISTRIBUTABLE, "digest": sha256(b"not here"), "size": 8}

    def push(reference: str, url: str) -> int:
        manifest = json.loads(image.content)
        manifest["layers"].append(dict(foreign, urls=[url]))
        return int(api.manifest_push("alice/app", reference, manifest).status_code)

    assert push("allowed", "https://mcr.example.com/layer.tar.gz") == 201
    assert push("other-host", "https://elsewhere.example.com/layer.tar.gz") == 400
    assert push("denied", "https://mcr.example.com/private/layer.tar.gz") == 400
    assert list(Tag.objects.values_list("name", flat=True)) == ["allowed"]
