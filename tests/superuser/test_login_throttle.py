"""The JSON API's Basic auth and the panel's sign-in count failed logins like the token endpoint."""

import base64
from typing import Any

from django.test import Client

from registry import logins

API = "/api/v1/superuser"


def basic(username: str, password: str) -> dict[str, str]:
    return {
        "Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    }


def test_the_api_refuses_a_guessed_user_with_429_and_retry_after_before_hashing(
    client: Client, admin_user: Any, monkeypatch: Any
) -> None:
    hashed: list[str] = []
    real = logins.authenticate

    def counted(request: Any, **credentials: Any) -> Any:
        hashed.append(credentials["username"])
        return real(request, **credentials)

    monkeypatch.setattr(logins, "authenticate", counted)
    answers = [
        client.get(f"{API}/config/", headers=basic("admin", "nope")).status_code for _ in range(5)
    ]
    assert answers == [401] * 5

    refused = client.get(f"{API}/config/", headers=basic("admin", "password"))

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert len(hashed) == 5


def test_the_api_and_the_token_endpoint_count_the_same_failures(
    client: Client, admin_user: Any
) -> None:
    for _ in range(5):
        client.get(f"{API}/config/", headers=basic("admin", "nope"))

    refused = client.get("/v2/auth", headers=basic("admin", "password"))

    assert refused.status_code == 429


def test_the_panel_sign_in_shows_a_form_error_and_answers_429_when_refused(
    client: Client, admin_user: Any
) -> None:
    for _ in range(5):
        wrong = client.post("/superuser/login/", {"username": "admin", "password": "nope"})
        assert wrong.status_code == 200

    refused = client.post("/superuser/login/", {"username": "admin", "password": "password"})

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert "Too many sign-in attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session
