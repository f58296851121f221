"""Fixtures for replication tests: two in-memory regions and a committed blob factory."""

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from replication import health, selectors
from replication.models import Blob, StorageLocation
from replication.selectors import location_engine
from replication.services import blob_commit, location_create, replication_enable
from storage_engines.keys import content_key


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    selectors.cache_clear()
    health.breaker_reset()
    with override_settings(
        CELERY_TASK_ALWAYS_EAGER=True, QUAY_DISTRIBUTED_STORAGE_PREFERENCE="us_mem"
    ):
        from quay_geo.celery import app

        app.conf.task_always_eager = True
        yield
        app.conf.task_always_eager = False
    selectors.cache_clear()
    health.breaker_reset()


@pytest.fixture
def regions(db: Any) -> tuple[StorageLocation, StorageLocation]:
    """Two replicated-by-default in-memory locations, us_mem preferred."""
    us = location_create(location_id="us_mem", kind="memory", options={}, replicate_by_default=True)
    eu = location_create(location_id="eu_mem", kind="memory", options={}, replicate_by_default=True)
    replication_enable(enabled=True)
    return us, eu


def put_bytes(location: StorageLocation, data: bytes) -> tuple[str, str]:
    """Write bytes at their content key in a location; return (digest, key)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    key = content_key(digest)
    location_engine(location).write(key, io.BytesIO(data), size=len(data))
    return digest, key


@pytest.fixture
def committed_blob(
    django_capture_on_commit_callbacks: Any,
) -> Callable[..., tuple[Blob, bytes]]:
    """Return a function that writes a blob into a location and commits it (tasks run eagerly)."""

    def make(
        location: StorageLocation, size: int = 4096, run_tasks: bool = True
    ) -> tuple[Blob, bytes]:
        data = os.urandom(size)
        digest, _ = put_bytes(location, data)
        with django_capture_on_commit_callbacks(execute=run_tasks):
            blob = blob_commit(
                digest=digest, size=size, sha256=digest.split(":")[1], location=location
            )
        return blob, data

    return make
