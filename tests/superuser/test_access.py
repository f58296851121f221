"""Who may use the panel and the API: superusers only, signed in, with CSRF."""

from typing import Any

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db

PAGES = [
    "/superuser/",
    "/superuser/namespaces/",
    "/superuser/status/",
    "/superuser/status/fragment/",
]


@pytest.fixture
def staff_client(client: Client, django_user_model: Any) -> Client:
    user = django_user_model.objects.create_user("alice", password="alice-pass-123", is_staff=True)
    client.force_login(user)
    return client


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitors_are_sent_to_the_sign_in_page(client: Client, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/superuser/login/?next=")


@pytest.mark.parametrize("url", PAGES)
def test_signed_in_non_superusers_get_403(staff_client: Client, url: str) -> None:
    response = staff_client.get(url)

    assert response.status_code == 403
    assert "Superusers only" in response.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/superuser/",
        "/superuser/storage/sync/",
        "/superuser/status/retry/",
        "/superuser/namespaces/1/targets/",
    ],
)
def test_non_superusers_cannot_post_either(staff_client: Client, url: str) -> None:
    assert staff_client.post(url, {}).status_code == 403


def test_superuser_signs_in_and_lands_on_the_configuration(client: Client, admin_user: Any) -> None:
    page = client.get("/superuser/login/")
    assert page.status_code == 200

    response = client.post("/superuser/login/", {"username": "admin", "password": "password"})

    assert response.status_code == 302
    assert response["Location"] == "/superuser/"
    assert client.get("/superuser/").status_code == 200


def test_wrong_password_is_refused(client: Client, admin_user: Any) -> None:
    response = client.post("/superuser/login/", {"username": "admin", "password": "nope"})

    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()


def test_every_form_needs_its_csrf_token(admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    for url in [
        "/superuser/",
        "/superuser/storage/sync/",
        "/superuser/status/retry/",
        "/superuser/logout/",
    ]:
        assert client.post(url, {}).status_code == 403, url
    page = client.get("/superuser/").content.decode()
    assert page.count('name="csrfmiddlewaretoken"') >= 2  # the storage form and sign out


def test_sessions_expire_at_browser_close_and_after_eight_hours(
    client: Client, admin_user: Any
) -> None:
    response = client.post("/superuser/login/", {"username": "admin", "password": "password"})

    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert not cookie["expires"]  # a browser-session cookie
    assert not cookie["max-age"]
    assert client.session.get_expiry_age() <= 8 * 3600


def test_sign_out_ends_the_session(admin_client: Client) -> None:
    response = admin_client.post("/superuser/logout/")

    assert response.status_code == 302
    assert admin_client.get("/superuser/").status_code == 302
