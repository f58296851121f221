"""Login end to end: the gunicorn server on loopback (``registry_server``) and ``skopeo login``."""

import subprocess
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import User

from registry import accounts

# Against a real server: the conftest keeps Django's real password hashers for these.
pytestmark = pytest.mark.servers

PASSWORD = "correct horse battery staple"


def skopeo_login(
    host: str, authfile: Path, username: str, password: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "skopeo",
            "login",
            "--tls-verify=false",
            "--authfile",
            str(authfile),
            "--username",
            username,
            "--password-stdin",
            host,
        ],
        input=password,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.django_db(transaction=True)
def test_docker_login_flow_over_http(registry_server: str) -> None:
    server = registry_server
    User.objects.create_user("alice", password=PASSWORD)
    base = f"http://{server}"

    challenge = requests.get(f"{base}/v2/", timeout=10)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"] == (
        f'Bearer realm="{base}/v2/auth",service="{server}"'
    )

    issued = requests.get(
        f"{base}/v2/auth", params={"service": server}, auth=("alice", PASSWORD), timeout=10
    )
    assert issued.status_code == 200
    token = issued.json()["token"]

    answer = requests.get(f"{base}/v2/", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.django_db(transaction=True)
def test_skopeo_login_with_a_password(registry_server: str, tmp_path: Path) -> None:
    User.objects.create_user("alice", password=PASSWORD)
    authfile = tmp_path / "auth.json"

    result = skopeo_login(registry_server, authfile, "alice", PASSWORD)

    assert result.returncode == 0, result.stderr
    assert "Login Succeeded" in result.stdout
    assert registry_server in authfile.read_text()


@pytest.mark.django_db(transaction=True)
def test_skopeo_login_with_an_app_token(registry_server: str, tmp_path: Path) -> None:
    robot = User.objects.create_user("robot", password=PASSWORD)
    _, secret = accounts.app_token_create(user=robot, name="ci")

    result = skopeo_login(registry_server, tmp_path / "auth.json", "robot", secret)

    assert result.returncode == 0, result.stderr


@pytest.mark.django_db(transaction=True)
def test_skopeo_login_with_a_wrong_password_fails(registry_server: str, tmp_path: Path) -> None:
    User.objects.create_user("alice", password=PASSWORD)
    authfile = tmp_path / "auth.json"

    result = skopeo_login(registry_server, authfile, "alice", "wrong")

    assert result.returncode != 0
    assert "invalid username/password" in result.stderr
    assert not authfile.exists()
