"""Listings through the API: referrers (with the subject rule), tags and the catalog."""

import json

import pytest
from django.test import Client

from registry import accounts
from registry.models import Manifest, Visibility
from tests.registry.conftest import (
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    Api,
    Image,
    error_code,
    image_manifest,
    index_of,
    put_raw,
    sha256,
    user_create,
)

# --- subject and referrers ------------------------------------------------------------------------


@pytest.fixture
def referrers(api: Api, image: Image) -> dict[str, str]:
    """An image and four referrers of it (two by config type, one by artifactType, one index)."""
    put_raw(api, "alice/app", "v1", image.content)
    subject = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.content)}
    api.blob_push("alice/app", b"{}")
    sbom, sig = b"sbom bytes", b"signature bytes"
    api.blob_push("alice/app", sbom)
    api.blob_push("alice/app", sig)
    digests: dict[str, str] = {}
    for key, config_type, artifact_type, blob in [
        ("config-sbom", "application/vnd.example.sbom", None, sbom),
        ("layer-sig", EMPTY_JSON, "application/vnd.example.sig", sig),
    ]:
        manifest = image_manifest(
            sha256(b"{}") if config_type == EMPTY_JSON else sha256(blob),
            2 if config_type == EMPTY_JSON else len(blob),
            [(sha256(blob), len(blob))],
        )
        manifest["config"]["mediaType"] = config_type
        manifest["subject"] = subject
        manifest["annotations"] = {"org.example.key": key}
        if artifact_type:
            manifest["artifactType"] = artifact_type
        response = api.manifest_push(
            "alice/app", sha256(json.dumps(manifest, indent=2).encode()), manifest
        )
        assert response["OCI-Subject"] == image.digest
        digests[key] = response["Docker-Content-Digest"]
    index = index_of(
        (
            digests["config-sbom"],
            len(Manifest.objects.get(digest=digests["config-sbom"]).content),
            OCI_MANIFEST,
        )
    )
    index.update(
        subject=subject,
        artifactType="application/vnd.example.bundle",
        annotations={"org.example.key": "index"},
    )
    content = json.dumps(index).encode()
    response = put_raw(api, "alice/app", sha256(content), content, OCI_INDEX)
    assert response["OCI-Subject"] == image.digest
    digests["index"] = sha256(content)
    return digests


def test_referrers_list_every_manifest_whose_subject_is_the_digest(
    api: Api, image: Image, referrers: dict[str, str]
) -> None:
    response = api.call("GET", f"/v2/alice/app/referrers/{image.digest}")

    assert response.status_code == 200
    assert response["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in response
    body = response.json()
    assert (body["schemaVersion"], body["mediaType"]) == (2, OCI_INDEX)
    by_digest = {d["digest"]: d for d in body["manifests"]}
    assert set(by_digest) == set(referrers.values())
    assert by_digest[referrers["config-sbom"]]["artifactType"] == "application/vnd.example.sbom"
    assert by_digest[referrers["layer-sig"]]["artifactType"] == "application/vnd.example.sig"
    assert by_digest[referrers["index"]]["artifactType"] == "application/vnd.example.bundle"
    assert by_digest[referrers["index"]]["mediaType"] == OCI_INDEX
    assert by_digest[referrers["layer-sig"]]["annotations"] == {"org.example.key": "layer-sig"}
    for descriptor in body["manifests"]:
        stored = Manifest.objects.get(digest=descriptor["digest"])
        assert descriptor["size"] == len(stored.content)


def test_referrers_filter_by_artifact_type(
    api: Api, image: Image, referrers: dict[str, str]
) -> None:
    response = api.call(
        "GET",
        f"/v2/alice/app/referrers/{image.digest}",
        query={"artifactType": "application/vnd.example.sig"},
    )

    assert response["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in response.json()["manifests"]] == [referrers["layer-sig"]]


def test_a_subject_that_does_not_exist_is_accepted_and_listed(api: Api, image: Image) -> None:
    missing = sha256(b"pushed later")
    manifest = dict(
        image.manifest, subject={"mediaType": OCI_MANIFEST, "digest": missing, "size": 12}
    )

    pushed = api.manifest_push("alice/app", "ref", manifest)
    listed = api.call("GET", f"/v2/alice/app/referrers/{missing}").json()["manifests"]

    assert pushed.status_code == 201
    assert pushed["OCI-Subject"] == missing
    assert [d["digest"] for d in listed] == [pushed["Docker-Content-Digest"]]


def test_referrers_of_a_digest_nothing_refers_to_is_an_empty_index(api: Api, image: Image) -> None:
    put_raw(api, "alice/app", "v1", image.content)

    response = api.call("GET", f"/v2/alice/app/referrers/{sha256(b'nothing')}")

    assert response.status_code == 200
    assert response.json()["manifests"] == []


def test_referrers_of_a_repository_that_does_not_exist_yet_is_an_empty_index(api: Api) -> None:
    response = api.call("GET", f"/v2/alice/not-yet/referrers/{sha256(b'anything')}")

    assert (response.status_code, response["Content-Type"]) == (200, OCI_INDEX)
    assert response.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def test_referrers_of_an_unknown_repository_still_refuse_who_may_not_read_its_namespace(
    api: Api, client: Client
) -> None:
    user_create("bob")
    path = f"/v2/alice/not-yet/referrers/{sha256(b'anything')}"

    as_bob = Api(client, "bob").call("GET", path)
    as_nobody = Api(client, None).call("GET", path, token="")

    assert (as_bob.status_code, error_code(as_bob)) == (403, "DENIED")
    assert (as_nobody.status_code, error_code(as_nobody)) == (401, "UNAUTHORIZED")


def test_referrers_of_a_malformed_digest_is_a_400(api: Api, image: Image) -> None:
    put_raw(api, "alice/app", "v1", image.content)

    response = api.call("GET", "/v2/alice/app/referrers/sha256:nope")

    assert (response.status_code, error_code(response)) == (400, "DIGEST_INVALID")


def test_a_manifest_without_subject_has_no_oci_subject_header(api: Api, image: Image) -> None:
    assert "OCI-Subject" not in put_raw(api, "alice/app", "v1", image.content)


# --- tags list -----------------------------------------------------------------------------------


@pytest.fixture
def tagged(api: Api, image: Image) -> list[str]:
    tags = ["b", "B", "a", "a1", "a10", "a2", "Z", "_x"]
    put_raw(api, "alice/app", image.digest, image.content, query={"tag": tags})
    return sorted(tags)  # Python sorts by code point, as the spec's lexical order wants


def test_tags_are_listed_in_lexical_order(api: Api, tagged: list[str]) -> None:
    response = api.call("GET", "/v2/alice/app/tags/list")

    assert response.status_code == 200
    assert response.json() == {"name": "alice/app", "tags": tagged}
    assert tagged == ["B", "Z", "_x", "a", "a1", "a10", "a2", "b"]
    assert "Link" not in response


def test_tags_paginate_with_n_last_and_a_link(api: Api, tagged: list[str]) -> None:
    first = api.call("GET", "/v2/alice/app/tags/list", query={"n": "3"})
    second = api.call("GET", "/v2/alice/app/tags/list", query={"n": "3", "last": "_x"})
    rest = api.call("GET", "/v2/alice/app/tags/list", query={"last": "a10"})
    last_page = api.call("GET", "/v2/alice/app/tags/list", query={"n": "2", "last": "a10"})

    assert first.json()["tags"] == ["B", "Z", "_x"]
    assert first["Link"] == '</v2/alice/app/tags/list?n=3&last=_x>; rel="next"'
    assert second.json()["tags"] == ["a", "a1", "a10"]
    assert second["Link"] == '</v2/alice/app/tags/list?n=3&last=a10>; rel="next"'
    assert rest.json()["tags"] == ["a2", "b"]
    assert last_page.json()["tags"] == ["a2", "b"]
    assert "Link" not in last_page


def test_n_zero_lists_nothing_and_a_bad_n_is_a_400(api: Api, tagged: list[str]) -> None:
    empty = api.call("GET", "/v2/alice/app/tags/list", query={"n": "0"})
    bad = api.call("GET", "/v2/alice/app/tags/list", query={"n": "-1"})

    assert (empty.json()["tags"], "Link" in empty) == ([], False)
    assert bad.status_code == 400


@pytest.mark.parametrize("path", ["/v2/alice/app/tags/list", "/v2/_catalog"])
@pytest.mark.parametrize(
    "query",
    [
        {"n": "²"},
        {"n": "٣"},
        {"n": "1e3"},
        {"n": " 1"},
        {"last": "a\x00b"},
        {"last": "a\nb"},
        {"last": "a" * 513},
    ],
    ids=["superscript", "arabic-digit", "exponent", "space", "nul", "newline", "too-long"],
)
def test_a_bad_n_or_last_is_a_400_in_the_oci_envelope(
    api: Api, tagged: list[str], path: str, query: dict[str, str]
) -> None:
    response = api.call("GET", path, query=query)

    assert response.status_code == 400
    assert error_code(response) == "UNSUPPORTED"


def test_a_huge_n_is_capped_like_any_large_page(api: Api, tagged: list[str]) -> None:
    for n in ("9" * 30, "9" * 5000):
        response = api.call("GET", "/v2/alice/app/tags/list", query={"n": n})

        assert response.status_code == 200
        assert response.json()["tags"] == sorted(tagged)


def test_tags_of_an_unknown_repository_is_name_unknown(api: Api) -> None:
    response = api.call("GET", "/v2/alice/none/tags/list")

    assert (response.status_code, error_code(response)) == (404, "NAME_UNKNOWN")


# --- catalog -------------------------------------------------------------------------------------


@pytest.fixture
def repositories(api: Api) -> Api:
    """alice has three repositories; bob one private and one public."""
    for name in ("alice/zeta", "alice/alpha", "alice/beta/sub"):
        api.call("POST", f"/v2/{name}/blobs/uploads/")
    bob = Api(api.client, user_create("bob").username)
    bob.call("POST", "/v2/bob/secret/blobs/uploads/")
    bob.call("POST", "/v2/bob/shared/blobs/uploads/")
    accounts.repository_visibility_set(repository="bob/shared", visibility=Visibility.PUBLIC)
    return bob


def test_the_catalog_lists_only_what_the_caller_may_pull(api: Api, repositories: Api) -> None:
    mine = api.call("GET", "/v2/_catalog")
    bobs = repositories.call("GET", "/v2/_catalog")

    assert mine.json() == {
        "repositories": ["alice/alpha", "alice/beta/sub", "alice/zeta", "bob/shared"]
    }
    assert bobs.json() == {"repositories": ["bob/secret", "bob/shared"]}


def test_the_catalog_paginates_like_tags(api: Api, repositories: Api) -> None:
    first = api.call("GET", "/v2/_catalog", query={"n": "2"})
    second = api.call("GET", "/v2/_catalog", query={"n": "2", "last": "alice/beta/sub"})

    assert first.json()["repositories"] == ["alice/alpha", "alice/beta/sub"]
    assert first["Link"] == '</v2/_catalog?n=2&last=alice%2Fbeta%2Fsub>; rel="next"'
    assert second.json()["repositories"] == ["alice/zeta", "bob/shared"]
    assert "Link" not in second


def test_the_catalog_challenges_a_caller_without_token(anonymous: Api, repositories: Api) -> None:
    challenged = anonymous.call("GET", "/v2/_catalog", token="")
    public_only = anonymous.call("GET", "/v2/_catalog")

    assert challenged.status_code == 401
    assert challenged["WWW-Authenticate"].endswith(',scope="registry:catalog:*"')
    assert public_only.json() == {"repositories": ["bob/shared"]}
