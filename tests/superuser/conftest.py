"""Fixtures of the superuser panel tests: fresh caches, eager Celery, form helpers."""

from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import override_settings

from replication import health, selectors
from replication.models import (
    AuditEntry,
    NamespaceReplication,
    Placement,
    ReplicationSettings,
    StorageLocation,
)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    from quay_geo.celery import app

    selectors.cache_clear()
    health.breaker_reset()
    app.conf.task_always_eager = True
    with override_settings(
        CELERY_TASK_ALWAYS_EAGER=True,
        QUAY_DISTRIBUTED_STORAGE_PREFERENCE="",
        QUAY_GEO_HEARTBEAT_SECONDS=0,
    ):
        yield
    app.conf.task_always_eager = False
    selectors.cache_clear()
    health.breaker_reset()


class _FormParser(HTMLParser):
    """Collect what a browser would submit from one form (outside <template> elements)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.template = 0
        self.fields: list[tuple[str, str]] = []
        self.select: str | None = None
        self.select_value: str | None = None
        self.select_first: str | None = None
        self.textarea: str | None = None
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
        if not self.inside:
            return
        if tag == "template":
            self.template += 1
        if self.template:
            return
        if tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((a["name"], a.get("value") or "on"))
            elif kind not in ("submit", "button"):
                self.fields.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self.select, self.select_value, self.select_first = a.get("name"), None, None
        elif tag == "option" and self.select:
            if self.select_first is None:
                self.select_first = a.get("value", "")
            if "selected" in a:
                self.select_value = a.get("value", "")
        elif tag == "textarea":
            self.textarea, self.text = a.get("name"), ""

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            self.text += data

    def handle_endtag(self, tag: str) -> None:
        if not self.inside:
            return
        if tag == "template":
            self.template -= 1
        elif tag == "form" and not self.template:
            self.inside = False
        elif tag == "select" and self.select and not self.template:
            value = self.select_value if self.select_value is not None else self.select_first
            self.fields.append((self.select, value or ""))
            self.select = None
        elif tag == "textarea" and self.textarea is not None and not self.template:
            self.fields.append((self.textarea, self.text.lstrip("\n")))
            self.textarea = None


def form_data(html: str, form_id: str = "storage-form") -> dict[str, Any]:
    """Return the fields a browser would submit from the form, as a dict."""
    parser = _FormParser(form_id)
    parser.feed(html)
    data: dict[str, Any] = {}
    for name, value in parser.fields:
        data[name] = value
    return data


class StoragePage:
    """The configuration page as a browser sees it: read it, change cards, submit it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.response = client.get("/superuser/")
        assert self.response.status_code == 200
        self.data = form_data(self.response.content.decode())

    @property
    def count(self) -> int:
        return int(self.data["form-TOTAL_FORMS"])

    def index_of(self, location_id: str) -> int:
        for index in range(self.count):
            if self.data.get(f"form-{index}-location_id") == location_id:
                return index
        raise KeyError(location_id)

    def replication(self, enabled: bool) -> "StoragePage":
        if enabled:
            self.data["storage_replication_enabled"] = "on"
        else:
            self.data.pop("storage_replication_enabled", None)
        return self

    def add(self, location_id: str, kind: str, default: bool = False, **options: Any) -> int:
        index = self.count
        self.data["form-TOTAL_FORMS"] = str(index + 1)
        self.data[f"form-{index}-location_id"] = location_id
        self.data[f"form-{index}-kind"] = kind
        self.data[f"form-{index}-serve_mode"] = "redirect"
        self.data[f"form-{index}-ORDER"] = str(index + 1)
        if default:
            self.data[f"form-{index}-replicate_by_default"] = "on"
        self.set(index, kind, **options)
        return index

    def set(self, index: int, kind: str | None = None, **options: Any) -> "StoragePage":
        kind = kind or self.data[f"form-{index}-kind"]
        for name, value in options.items():
            key = f"form-{index}-{kind}-{name}"
            if value is False or value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = "on" if value is True else str(value)
        return self

    def card(self, index: int, **fields: Any) -> "StoragePage":
        for name, value in fields.items():
            key = f"form-{index}-{name}"
            if value is False or value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = "on" if value is True else str(value)
        return self

    def save(self) -> Any:
        data = dict(self.data)
        data["save"] = "1"
        return self.client.post("/superuser/", data)


@pytest.fixture
def storage_page(admin_client: Any) -> Any:
    """Return a function that loads the configuration page as the superuser sees it."""
    return lambda: StoragePage(admin_client)


def db_state() -> dict[str, Any]:
    """Return everything a storage save may change, to compare before and after."""
    ReplicationSettings.load()  # the singleton appears on first read; that is no change
    return {
        "settings": list(ReplicationSettings.objects.values()),
        "locations": list(StorageLocation.objects.order_by("pk").values()),
        "placements": list(Placement.objects.order_by("pk").values()),
        "namespaces": list(NamespaceReplication.objects.order_by("pk").values()),
        "audit": AuditEntry.objects.count(),
    }
