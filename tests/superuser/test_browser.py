"""The panel in a real browser: Debian's chromium, headless, driven by Playwright.

Celery runs eagerly (see conftest), and ``live_server`` serves the site from a thread of this
process, so a backfill started from the page copies the blobs while the request runs.
Screenshots of the main pages are written under ``tests/artifacts/`` for a person to look at.
"""

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from replication.heartbeat import heartbeat_record
from replication.models import Placement, PlacementState, ReplicationSettings, StorageLocation
from replication.selectors import location_engine
from replication.services import blob_commit, location_create
from replication.targets import LOCAL_REFUSED
from storage_engines.keys import content_key
from tests import servers
from tests.superuser.conftest import db_state

pytestmark = [pytest.mark.servers, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "superuser"
CHROMIUM = os.environ.get("QUAY_GEO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls of the test itself
    # are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/install-deps.sh (apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def site(live_server: Any, settings: Any) -> str:
    # Plain HTTP on the loopback: cookies cannot be "Secure" here.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(live_server.url)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, site: str, username: str, password: str) -> None:
    page.goto(f"{site}/superuser/")
    assert "/superuser/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def add_card(page: Any, location_id: str, kind: str) -> Any:
    page.click("#add-card")
    card = page.locator("article[data-card]").last
    card.locator('input[name$="-location_id"]').fill(location_id)
    card.locator('select[name$="-kind"]').select_option(kind)
    return card


def fill(card: Any, kind: str, **options: str) -> None:
    for name, value in options.items():
        card.locator(f'[name$="-{kind}-{name}"]').fill(value)


def existing_images(count: int) -> StorageLocation:
    source = location_create(location_id="src_mem", kind="memory", options={})
    for index in range(count):
        data = os.urandom(50_000 + index)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        location_engine(source).write(content_key(digest), io.BytesIO(data), size=len(data))
        blob_commit(digest=digest, size=len(data), sha256=digest[7:], location=source)
    return source


def test_superuser_configures_storage_and_syncs_existing_images(
    page: Any, site: str, django_user_model: Any
) -> None:
    servers.require("moto")
    servers.require("swift")
    django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    existing_images(3)
    bucket = servers.new_s3_bucket()
    container = servers.new_swift_container()

    page.goto(f"{site}/superuser/login/")
    shot(page, "01-login")
    sign_in(page, site, "root", "root-pass-123")
    page.wait_for_selector("h2:has-text('Registry Storage')")

    # Enable replication; add an S3 engine on the local moto server, replicated by default.
    page.check("#id_storage_replication_enabled")
    card = add_card(page, "us_s3", "s3")
    assert card.locator('fieldset[data-kind="s3"]').is_visible()
    assert not card.locator('fieldset[data-kind="swift"]').is_visible()
    fill(
        card,
        "s3",
        s3_bucket=bucket,
        endpoint_url=servers.S3_A,
        s3_access_key="testing",
        s3_secret_key="testing",
    )
    card.locator('select[name$="-s3-addressing_style"]').select_option("path")
    card.locator('input[name$="-replicate_by_default"]').check()
    page.click("#save")
    page.wait_for_selector(".message.success")
    assert "Storage configuration saved" in page.inner_text(".messages")
    assert StorageLocation.objects.get(location_id="us_s3").replicate_by_default
    assert ReplicationSettings.load().storage_replication_enabled
    assert page.locator("#sync-offer").is_visible()
    shot(page, "02-config-saved")

    # A Swift engine with a wrong key: the error is on its card, and nothing changes.
    before = db_state()
    card = add_card(page, "ap_swift", "swift")
    card.locator('select[name$="-swift-auth_version"]').select_option("1")
    fill(
        card,
        "swift",
        auth_url=servers.SWIFT_AUTH,
        swift_user=servers.SWIFT_USER,
        swift_password="not-the-key",
        swift_container=container,
    )
    page.click("#save")
    page.wait_for_selector("#save-errors")
    failed_card = page.locator("article[data-card]", has=page.locator('input[value="ap_swift"]'))
    assert "Access denied" in failed_card.locator(".card-errors").inner_text()
    assert failed_card.locator('input[name$="-swift-swift_password"]').input_value() == ""
    assert db_state() == before
    shot(page, "03-config-swift-error")

    # Local storage while replication is enabled.
    page.goto(f"{site}/superuser/")
    card = add_card(page, "disk", "local")
    fill(card, "local", storage_path="/tmp")
    page.click("#save")
    page.wait_for_selector("#save-errors")
    local_card = page.locator("article[data-card]", has=page.locator('input[value="disk"]'))
    assert LOCAL_REFUSED in local_card.inner_text()
    assert db_state() == before
    shot(page, "04-config-local-refused")

    # Sync existing images now: the backfill runs and its progress reaches 100 %.
    page.goto(f"{site}/superuser/")
    page.check("#id_storage_replication_enabled")  # still ticked: a no-op save
    src = page.locator("article[data-card]", has=page.locator('input[value="src_mem"]'))
    src.locator('input[name$="-replicate_by_default"]').uncheck()
    page.click("#save")
    page.wait_for_selector(".message.success")
    page.goto(f"{site}/api/v1/superuser/status/")  # the session also opens the JSON API
    assert '"failed_total"' in page.content()
    page.goto(f"{site}/superuser/status/")
    page.select_option("#backfill-location", "us_s3")
    page.click("#backfills button[type=submit]")
    page.wait_for_selector('.backfill[data-percent="100"]')
    assert "3 of 3 copied" in page.inner_text("#backfills")
    us_s3 = StorageLocation.objects.get(location_id="us_s3")
    assert Placement.objects.filter(location=us_s3, state=PlacementState.PRESENT).count() == 3

    # The status refreshes itself: a new failure shows without a reload.
    heartbeat_record(role="web", probe=True)
    placement = Placement.objects.filter(location=us_s3).first()
    assert placement is not None
    Placement.objects.filter(pk=placement.pk).update(
        state=PlacementState.FAILED,
        last_error="Access denied: demo failure",
        error_permanent=True,
        updated_at=timezone.now(),
    )
    page.wait_for_selector(f'tr[data-placement="{placement.pk}"]')
    page.wait_for_selector("#instances td .ok")
    shot(page, "05-status")
    page.click(f'tr[data-placement="{placement.pk}"] button')
    page.wait_for_selector(".message.success")
    assert Placement.objects.get(pk=placement.pk).state == PlacementState.PRESENT

    page.goto(f"{site}/superuser/namespaces/")
    shot(page, "06-namespaces")


def test_the_engine_select_shows_that_engines_fields(page: Any, site: str, admin_user: Any) -> None:
    sign_in(page, site, "admin", "password")
    page.wait_for_selector("h2:has-text('Registry Storage')")
    card = add_card(page, "x", "gcs")

    visible = [
        kind
        for kind in ("s3", "radosgw", "gcs", "swift", "local")
        if card.locator(f'fieldset[data-kind="{kind}"]').is_visible()
    ]
    assert visible == ["gcs"]
    assert not card.locator('input[name$="-replicate_by_default"]').is_visible()  # replication off
    page.check("#id_storage_replication_enabled")
    assert card.locator('input[name$="-replicate_by_default"]').is_visible()
    card.locator('select[name$="-kind"]').select_option("radosgw")
    assert card.locator('fieldset[data-kind="radosgw"]').is_visible()
    assert card.locator('[name$="-radosgw-server_side_encryption"]').count() == 0
    assert card.locator('[name$="-radosgw-hostname"]').is_visible()


def test_a_non_superuser_is_refused(page: Any, site: str, django_user_model: Any) -> None:
    django_user_model.objects.create_user("mallory", password="mallory-pass-1")

    sign_in(page, site, "mallory", "mallory-pass-1")

    page.wait_for_selector("h1:has-text('Superusers only')")
    response = page.goto(f"{site}/superuser/status/")
    assert response is not None
    assert response.status == 403
    shot(page, "07-forbidden")


def test_cards_reorder_with_the_arrows_and_remove(page: Any, site: str, admin_user: Any) -> None:
    for location_id in ("first", "second", "third"):
        location_create(location_id=location_id, kind="memory", options={})
    sign_in(page, site, "admin", "password")
    page.wait_for_selector("h2:has-text('Registry Storage')")

    third = page.locator("article[data-card]", has=page.locator('input[value="third"]'))
    third.locator('[data-move="up"]').click()
    third.locator('[data-move="up"]').click()
    page.locator("article[data-card]", has=page.locator('input[value="second"]')).locator(
        'input[name$="-DELETE"]'
    ).check()
    page.click("#save")
    page.wait_for_selector(".message.success")

    assert list(StorageLocation.objects.values_list("location_id", flat=True)) == ["third", "first"]
    titles = page.locator("[data-card-title]").all_inner_texts()
    assert titles == ["third", "first"]
