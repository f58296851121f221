"""End to end with podman and buildah: images built here, pushed and pulled through gunicorn.

podman runs as on these machines (``scripts/podman-setup.sh``: runc, cgroupfs, no default
ulimits, ``localhost/debian:bookworm`` made with debootstrap). Blobs land on moto S3. Every
image name of a test is unique to it and removed from podman's storage afterwards.
"""

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import User

from tests.podman import BASE_IMAGE, BLOB_INFO_CACHES, Podman, podman_setup, podman_tool
from tests.registry.conftest import PASSWORD
from tests.registry.test_e2e_clients import (
    README_PASSWORD,
    _location_on_moto,
    bucket_keys,
    readme_commands,
    token,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def containers_conf() -> str:
    return podman_setup()


@pytest.fixture
def podman(containers_conf: str, tmp_path: Path) -> Iterator[Podman]:
    with podman_tool(containers_conf, tmp_path) as tool:
        yield tool


@pytest.fixture
def moto_bucket() -> str:
    """A redirecting S3 location on moto (the default serve mode), the only one; its bucket."""
    return _location_on_moto(serve_mode="redirect")[1]


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password=PASSWORD)


def _manifest(host: str, repository: str, reference: str, user: str, password: str) -> bytes:
    bearer = token(host, f"repository:{repository}:pull", user, password)
    response = requests.get(
        f"http://{host}/v2/{repository}/manifests/{reference}",
        headers={
            "Authorization": f"Bearer {bearer}",
            "Accept": ",".join(
                [
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                ]
            ),
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.content


def _blob_key(digest: str) -> str:
    algorithm, hexdigest = digest.split(":")
    return f"registry/{algorithm}/{hexdigest[:2]}/{hexdigest}"


def test_podman_and_buildah_images_built_here_push_and_pull_with_the_same_digests(
    registry_server: str, moto_bucket: str, alice: User, podman: Podman, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    context = tmp_path / "context"
    context.mkdir()
    (context / "marker").write_text(marker)
    (context / "Containerfile").write_text(
        f"FROM {BASE_IMAGE}\nCOPY marker /marker\nRUN sha256sum /marker > /marker.sum\n"
    )
    built = podman.name("podman")
    podman.run("podman", "build", "--quiet", "-t", built, str(context))
    assembled = podman.name("buildah")
    container = podman.run("buildah", "from", BASE_IMAGE).strip()
    podman.run("buildah", "copy", container, str(context / "marker"), "/marker")
    podman.run("buildah", "config", "--label", "org.example.built-by=buildah", container)
    podman.run("buildah", "commit", "--quiet", "--rm", container, assembled)
    remote = {
        built: podman.track(f"{registry_server}/alice/app:podman"),
        assembled: podman.track(f"{registry_server}/alice/app:buildah"),
    }

    login = podman.login(registry_server, "alice", PASSWORD, "--tls-verify=false")
    pushed = {}
    for local, target in remote.items():
        digestfile = tmp_path / "digest"
        podman.run(
            "podman", "push", "--tls-verify=false", "--digestfile", str(digestfile), local, target
        )
        pushed[target] = digestfile.read_text().strip()
    podman.remove(*remote, *remote.values())
    for target in remote.values():
        podman.run("podman", "pull", "--quiet", "--tls-verify=false", target)

    assert "Login Succeeded" in login
    for target, digest in pushed.items():
        raw = _manifest(registry_server, "alice/app", target.rsplit(":", 1)[1], "alice", PASSWORD)
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
        assert podman.digest(target) == digest
        layers = [layer["digest"] for layer in json.loads(raw)["layers"]]
        assert set(map(_blob_key, layers)) <= set(bucket_keys(moto_bucket))
    podman_target, buildah_target = remote.values()
    assert podman.run("podman", "run", "--rm", podman_target, "cat", "/marker") == marker
    assert podman.run("podman", "run", "--rm", podman_target, "cat", "/marker.sum").startswith(
        hashlib.sha256(marker.encode()).hexdigest()
    )
    assert podman.run("podman", "run", "--rm", buildah_target, "cat", "/marker") == marker
    labels = podman.run(
        "podman", "image", "inspect", "--format", "{{json .Labels}}", buildah_target
    )
    assert json.loads(labels)["org.example.built-by"] == "buildah"


def test_a_podman_manifest_list_of_two_architectures_pushes_and_pulls_per_architecture(
    registry_server: str, moto_bucket: str, alice: User, podman: Podman, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text("FROM scratch\nCOPY arch /arch\n")
    images = {}
    for arch in ("amd64", "arm64"):
        (context / "arch").write_text(f"{arch} {uuid.uuid4().hex}")
        images[arch] = podman.name(arch)
        podman.run(
            "podman",
            "build",
            "--quiet",
            "--platform",
            f"linux/{arch}",
            "-t",
            images[arch],
            str(context),
        )
    files = {arch: _image_file(podman, images[arch], "/arch") for arch in images}
    manifest_list = podman.name("list")
    podman.run("podman", "manifest", "create", manifest_list)
    for image in images.values():
        podman.run("podman", "manifest", "add", manifest_list, f"containers-storage:{image}")
    target = podman.track(f"{registry_server}/alice/multi:v1")
    podman.login(registry_server, "alice", PASSWORD, "--tls-verify=false")

    digestfile = tmp_path / "digest"
    podman.run(
        "podman",
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "--digestfile",
        str(digestfile),
        manifest_list,
        f"docker://{target}",
    )
    podman.run("podman", "manifest", "rm", manifest_list)
    podman.remove(*images.values())
    pulled = {}
    for arch in images:
        image_id = podman.run(
            "podman", "pull", "--quiet", "--tls-verify=false", "--arch", arch, target
        ).strip()
        pulled[arch] = (podman.repo_digests(image_id), _image_file(podman, image_id, "/arch"))
        podman.remove(image_id)

    raw = _manifest(registry_server, "alice/multi", "v1", "alice", PASSWORD)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digestfile.read_text().strip()
    children = {m["platform"]["architecture"]: m["digest"] for m in json.loads(raw)["manifests"]}
    assert sorted(children) == ["amd64", "arm64"]
    for arch, (digests, content) in pulled.items():
        assert f"{target.rsplit(':', 1)[0]}@{children[arch]}" in digests
        assert content == files[arch]
    assert _blob_key(children["arm64"]) not in bucket_keys(moto_bucket)  # manifests: database


def _image_file(podman: Podman, image: str, path: str) -> str:
    """Return a file of an image of any architecture, read from its mounted root file system."""
    root = podman.run("podman", "image", "mount", image).strip()
    try:
        return (Path(root) / path.lstrip("/")).read_text()
    finally:
        podman.run("podman", "image", "unmount", image)


def test_the_readme_podman_commands_work_as_written(
    registry_server: str, moto_bucket: str, podman: Podman, tmp_path: Path
) -> None:
    User.objects.create_user("admin", password=README_PASSWORD)
    commands = readme_commands()
    assert len(commands.get("podman", [])) == 4
    demo = podman.name("demo")
    podman.track(f"localhost{tmp_path}/demo-image")  # the name `podman pull oci:...` gives

    def run(command: str) -> str:
        for written, actual in [
            ("127.0.0.1:8000", registry_server),  # both regions are this one server
            ("127.0.0.1:8001", registry_server),
            ("PASSWORD", README_PASSWORD),
            ("var/", f"{tmp_path}/"),
            ("localhost/demo", demo),  # a name of this test's own in podman's storage
        ]:
            command = command.replace(written, actual)
        for cache in BLOB_INFO_CACHES:
            cache.unlink(missing_ok=True)
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=podman.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    run(commands["python"][0])  # the demo image
    for command in commands["podman"]:
        run(command)

    pulled = podman.track(f"{registry_server}/admin/demo:v2")
    raw = _manifest(registry_server, "admin/demo", "v2", "admin", README_PASSWORD)
    manifest_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert f"{registry_server}/admin/demo@{manifest_digest}" in podman.repo_digests(pulled)
    layers = [layer["digest"] for layer in json.loads(raw)["layers"]]
    assert set(map(_blob_key, layers)) <= set(bucket_keys(moto_bucket))
