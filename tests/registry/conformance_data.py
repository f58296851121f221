"""The conformance suite's test data, built like opencontainers/distribution-spec's setup.go.

One config and one manifest per workflow (configs carry ``data`` and an unknown field), the
gzip layer, a 42-byte blob for the chunked upload split one byte past its middle, and referrers
of ``manifests[4]`` by config media type, by ``artifactType`` and by index, plus one referrer
of ``manifests[3]``, which is never pushed.
"""

import base64
import json
import os
import random
from dataclasses import dataclass
from typing import Any

from tests.registry.conftest import EMPTY_JSON, OCI_INDEX, OCI_MANIFEST, sha256

ANNOTATION = "org.opencontainers.conformance.test"
ARTIFACT_A = "application/vnd.nhl.peanut.butter.bagel"
ARTIFACT_B = "application/vnd.nba.strawberry.jam.croissant"
ERROR_CODES = {
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
}
LAYER = base64.b64decode(
    "H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0"
    "WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD"
    "jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA"
)
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"
DUMMY_DIGEST = sha256(b"hello world")


def dumps(document: Any) -> bytes:
    return json.dumps(document, indent="\t").encode()


def descriptor(media_type: str, content: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(content), "size": len(content), **extra}


@dataclass
class Data:
    """The conformance suite's test data: one config and one manifest per workflow."""

    configs: list[bytes]
    manifests: list[bytes]
    empty_layer_manifest: bytes
    blob_a: bytes
    blob_b: bytes
    ref_blob_a: bytes
    ref_blob_b: bytes
    refs: dict[str, bytes]

    @property
    def chunk1(self) -> bytes:
        return self.blob_b[: len(self.blob_b) // 2 + 1]

    @property
    def chunk2(self) -> bytes:
        return self.blob_b[len(self.blob_b) // 2 + 1 :]

    @property
    def chunk1_range(self) -> str:
        return f"0-{len(self.chunk1) - 1}"

    @property
    def chunk2_range(self) -> str:
        return f"{len(self.chunk1)}-{len(self.blob_b) - 1}"


def _manifest_for(config: bytes, layers: list[dict[str, Any]], *, media_type: bool = True) -> bytes:
    document: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        document["mediaType"] = OCI_MANIFEST
    document["config"] = descriptor(
        "application/vnd.oci.image.config.v1+json",
        config,
        data=base64.b64encode(config).decode(),
        newUnspecifiedField=base64.b64encode(b"hello world").decode(),
    )
    document["layers"] = layers
    return dumps(document)


def conformance_data() -> Data:
    """Return fresh test data (configs and blobs are random, as in the suite)."""
    configs = [
        dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
                "author": os.urandom(8).hex(),
            }
        )
        for _ in range(5)
    ]
    layers = [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", LAYER)]
    manifests = [_manifest_for(config, layers) for config in configs]
    seeded = random.Random(os.urandom(8))
    ref_a, ref_b = b"NHL Peanut Butter on my NHL bagel", b"NBA Strawberry Jam on my NBA croissant"
    subject = descriptor(OCI_MANIFEST, manifests[4])
    empty = descriptor(EMPTY_JSON, b"{}")

    def referrer(
        config: dict[str, Any],
        layer: dict[str, Any],
        note: str | None,
        subject: dict[str, Any],
        artifact: str | None = None,
    ) -> bytes:
        document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if artifact:
            document["artifactType"] = artifact
        document.update(config=config, subject=subject, layers=[layer])
        if note:
            document["annotations"] = {ANNOTATION: note}
        return dumps(document)

    refs = {
        "a-config": referrer(descriptor(ARTIFACT_A, ref_a), empty, "test config a", subject),
        "b-config": referrer(descriptor(ARTIFACT_B, ref_b), empty, "test config b", subject),
        "a-layer": referrer(
            empty, descriptor(ARTIFACT_A, ref_a), "test layer a", subject, ARTIFACT_A
        ),
        "b-layer": referrer(
            empty, descriptor(ARTIFACT_B, ref_b), "test layer b", subject, ARTIFACT_B
        ),
        "c-layer": referrer(
            empty,
            descriptor(ARTIFACT_B, ref_b),
            None,
            descriptor(OCI_MANIFEST, manifests[3]),
            ARTIFACT_B,
        ),
    }
    refs["index"] = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/vnd.food.stand",
            "manifests": [
                descriptor(OCI_MANIFEST, refs["a-config"]),
                descriptor(OCI_MANIFEST, refs["a-layer"]),
            ],
            "subject": subject,
            "annotations": {ANNOTATION: "test index"},
        }
    )
    return Data(
        configs=configs,
        manifests=manifests,
        empty_layer_manifest=_manifest_for(configs[1], [], media_type=False),
        blob_a=seeded.randbytes(42),
        blob_b=seeded.randbytes(42),
        ref_blob_a=ref_a,
        ref_blob_b=ref_b,
        refs=refs,
    )
