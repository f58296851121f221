"""podman and buildah as the tests run them: this machine's settings, names of the test's own.

``scripts/podman-setup.sh`` writes the settings (runc, cgroupfs, no default ulimits) and makes
``localhost/debian:bookworm`` with debootstrap (cached under ``var/podman``). A missing podman
fails the test that needs it: ``scripts/install-deps.sh`` installs it.
"""

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "localhost/debian:bookworm"
PYTHON_BASE_IMAGE = "localhost/quay-geo-python:bookworm"
BLOB_INFO_CACHES = [
    Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb"),
    Path.home() / ".local/share/containers/cache/blob-info-cache-v1.boltdb",
]


def podman_setup(*options: str) -> str:
    """Run scripts/podman-setup.sh with ``options``; return the CONTAINERS_CONF it wrote."""
    for tool in ("podman", "buildah", "debootstrap"):
        assert shutil.which(tool), f"{tool} is missing: run `make install` (install-deps.sh)"
    setup = subprocess.run(
        [str(ROOT / "scripts" / "podman-setup.sh"), *options],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert setup.returncode == 0, setup.stderr
    return setup.stdout.strip().removeprefix("export CONTAINERS_CONF=")


@dataclass
class Podman:
    """podman and buildah with this machine's settings and a login file of the test's own."""

    env: dict[str, str]
    names: list[str] = field(default_factory=list)

    def name(self, suffix: str) -> str:
        """Return a local image name no other test uses, removed when the test ends."""
        return self.track(f"localhost/quay-geo-e2e-{uuid.uuid4().hex[:12]}-{suffix}")

    def track(self, name: str) -> str:
        """Remove image, container or volume ``name`` from podman's storage when the test ends."""
        self.names.append(name)
        return name

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 300
    ) -> str:
        """Run ``args`` (podman, buildah or skopeo); return stdout, fail with stderr."""
        if args[0] in ("podman", "skopeo"):
            for cache in BLOB_INFO_CACHES:  # every blob really moves
                cache.unlink(missing_ok=True)
        result = subprocess.run(
            list(args),
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def login(self, host: str, user: str, password: str, *options: str) -> str:
        return self.run(
            "podman", "login", *options, "-u", user, "--password-stdin", host, stdin=password
        )

    def repo_digests(self, image: str) -> list[str]:
        """Return the ``name@digest`` references podman recorded for ``image``."""
        found = self.run("podman", "image", "inspect", "--format", "{{json .RepoDigests}}", image)
        return list(json.loads(found))

    def digest(self, image: str) -> str:
        return self.run("podman", "image", "inspect", "--format", "{{.Digest}}", image).strip()

    def remove(self, *images: str) -> None:
        self.run("podman", "rmi", "--force", "--ignore", *images)


@contextmanager
def podman_tool(containers_conf: str, directory: Path) -> Iterator[Podman]:
    """Yield a :class:`Podman` whose login file is in ``directory``; remove its names after."""
    (directory / "auth.json").write_text('{"auths": {}}')  # buildah wants the file to exist
    env = {
        **os.environ,
        "CONTAINERS_CONF": containers_conf,
        "REGISTRY_AUTH_FILE": str(directory / "auth.json"),
    }
    tool = Podman(env=env)
    try:
        yield tool
    finally:
        tool.run("podman", "rm", "--force", "--ignore", "--time", "2", *tool.names, check=False)
        tool.run("podman", "rmi", "--force", "--ignore", *tool.names, check=False)
        volumes = set(tool.run("podman", "volume", "ls", "--quiet", check=False).split())
        for name in volumes & set(tool.names):
            tool.run("podman", "volume", "rm", "--force", name, check=False)
