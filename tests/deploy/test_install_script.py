"""scripts/lib.sh: the check behind install-deps.sh's decision to install Debian packages."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def apt_missing(*packages: str) -> list[str]:
    """Run qg_apt_missing as install-deps.sh does (errexit, pipefail, inside mapfile)."""
    script = (
        f'set -euo pipefail; . "{ROOT}/scripts/lib.sh"; '
        'mapfile -t missing < <(qg_apt_missing "$@"); printf "%s\\n" "${missing[@]}"'
    )
    out = subprocess.run(
        ["bash", "-c", script, "bash", *packages],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [line for line in out.splitlines() if line]


def test_a_package_dpkg_never_heard_of_is_reported_missing_beside_installed_ones() -> None:
    # dpkg-query exits 1 for the unknown name; that used to end the check before it printed,
    # so install-deps.sh said "all present" and installed nothing.
    assert apt_missing("coreutils", "quay-geo-no-such-package", "bash") == [
        "quay-geo-no-such-package"
    ]


def test_installed_packages_are_not_reported() -> None:
    assert apt_missing("coreutils", "bash") == []
