"""The project's Dockerfile builds with podman and the image serves, without a public registry.

The base image is a build argument: here ``localhost/quay-geo-python:bookworm`` (Debian's
python3 on the debootstrap base, ``scripts/podman-setup.sh --python``) stands in for the default
``python:3.11-slim-bookworm``, which no registry here can serve. pip inside the build reaches
the package index with the host's CA bundle, mounted for the build only.
"""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.live import free_port, wait_http
from tests.podman import PYTHON_BASE_IMAGE, ROOT, Podman, podman_setup, podman_tool

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_CA_PATH = "/run/quay-geo-build-ca.crt"


def app_image_build(podman: Podman, tag: str) -> None:
    """Build the Dockerfile at the repository root as ``tag`` on the local Python base."""
    ca = ["-v", f"{HOST_CA_BUNDLE}:{BUILD_CA_PATH}:ro", "--build-arg", f"PIP_CERT={BUILD_CA_PATH}"]
    podman.run(
        "podman", "build", "--quiet", "--format", "docker", "--network", "host",
        *(ca if HOST_CA_BUNDLE.exists() else []),
        "--build-arg", f"BASE_IMAGE={PYTHON_BASE_IMAGE}",
        "-t", tag, str(ROOT),
        timeout=900,
    )  # fmt: skip


@pytest.fixture(scope="module")
def app_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Podman, str]]:
    conf = podman_setup("--python")
    with podman_tool(conf, tmp_path_factory.mktemp("podman")) as podman:
        tag = podman.name("app")
        app_image_build(podman, tag)
        yield podman, tag


def test_the_image_built_on_another_base_serves_its_health_check_as_a_non_root_user(
    app_image: tuple[Podman, str],
) -> None:
    podman, image = app_image
    port = free_port()
    name = podman.track(f"quay-geo-image-test-{uuid.uuid4().hex[:12]}")
    # The embedded database (SQLite under /app/var) in a volume: migrated once, then served.
    data = ["-v", f"{podman.track(name + '-var')}:/app/var"]
    settings = ["-e", "DJANGO_SECRET_KEY=image-test-only"]
    settings += ["-e", "DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost"]
    podman.run("podman", "run", "--rm", *data, *settings, image, "python", "manage.py", "migrate")
    podman.run(
        "podman", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", *data, *settings,
        image,
    )  # fmt: skip

    wait_http(f"http://127.0.0.1:{port}/health/instance", timeout=120)
    health = requests.get(f"http://127.0.0.1:{port}/health/instance", timeout=10)
    podman.run("podman", "healthcheck", "run", name)  # the image's HEALTHCHECK: exit status 0
    user = podman.run("podman", "exec", name, "id", "-u").strip()
    config = json.loads(podman.run("podman", "image", "inspect", image))[0]["Config"]

    assert health.status_code == 200, health.text
    assert user == "10001"
    assert "PIP_CERT" not in " ".join(config.get("Env", []))  # the build's CA stays outside
