"""Heartbeats: one probe per host and interval, one row per service, idle web processes beat."""

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from replication import heartbeat
from replication.models import HostProbe, InstanceHeartbeat, StorageLocation
from replication.services import location_create

Regions = tuple[StorageLocation, StorageLocation]


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the probe rounds of this host (each probes every location)."""
    calls: list[int] = []
    real = heartbeat._reachability

    def counting(timeout: float) -> dict[str, Any]:
        calls.append(1)
        return real(timeout)

    monkeypatch.setattr(heartbeat, "_reachability", counting)
    heartbeat._probe_state.reset()
    return calls


def _as_process(monkeypatch: pytest.MonkeyPatch, pid: int) -> None:
    monkeypatch.setattr(heartbeat.os, "getpid", lambda: pid)


@override_settings(QUAY_GEO_HEARTBEAT_SECONDS=30, QUAY_DISTRIBUTED_STORAGE_PREFERENCE="")
def test_processes_of_one_host_probe_once_per_interval_and_share_the_result(
    regions: Regions, probes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_process(monkeypatch, 101)
    web = heartbeat.heartbeat_record(role="web")
    _as_process(monkeypatch, 102)
    second_web = heartbeat.heartbeat_record(role="web")
    _as_process(monkeypatch, 201)
    worker = heartbeat.heartbeat_record(role="worker")

    assert len(probes) == 1
    assert worker.reachable == web.reachable == second_web.reachable
    assert web.reachable["eu_mem"]["ok"] is True

    HostProbe.objects.update(claimed_at=timezone.now() - timedelta(seconds=30))
    for pid in (101, 102, 201):
        _as_process(monkeypatch, pid)
        heartbeat.heartbeat_record(role="web")

    assert len(probes) == 2, "the next interval is probed once more, by one process"


@override_settings(QUAY_GEO_HEARTBEAT_SECONDS=30, QUAY_DISTRIBUTED_STORAGE_PREFERENCE="")
def test_status_tab_counts_one_instance_per_service_not_per_process(
    regions: Regions, probes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from superuser.selectors import status_overview

    for pid in (101, 102, 103, 104):  # gunicorn's workers of one web service
        _as_process(monkeypatch, pid)
        heartbeat.heartbeat_record(role="web")
    for pid in (201, 202):  # a Celery main process and the task run in one of its children
        _as_process(monkeypatch, pid)
        heartbeat.heartbeat_record(role="worker")
    with override_settings(QUAY_DISTRIBUTED_STORAGE_PREFERENCE="eu_mem"):
        heartbeat.heartbeat_record(role="web")  # another web service on the host: its own row

    rows = status_overview().instances

    assert sorted((row.beat.role, row.beat.instance_id.split(":")[-1]) for row in rows) == [
        ("web", ""),
        ("web", "eu_mem"),
        ("worker", ""),
    ]


@pytest.mark.django_db(transaction=True)
@override_settings(QUAY_GEO_HEARTBEAT_SECONDS=30)
def test_concurrent_claims_of_one_host_let_exactly_one_process_probe() -> None:
    barrier = threading.Barrier(6, timeout=10)
    won: list[bool] = []

    def claim(pid: int) -> None:
        try:
            barrier.wait()
            won.append(heartbeat.probe_claim(who=f"test:{pid}"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(pid,)) for pid in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert sorted(won) == [False] * 5 + [True]
    assert HostProbe.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@override_settings(QUAY_GEO_HEARTBEAT_SECONDS=1)
def test_an_idle_web_process_keeps_beating_from_its_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    location_create(location_id="us_mem", kind="memory", options={})
    beater = heartbeat._Beater()
    monkeypatch.setattr(heartbeat, "_beater", beater)
    heartbeat.HeartbeatMiddleware(lambda request: None)  # type: ignore[arg-type,return-value]
    try:
        seen: list[Any] = []
        deadline = time.monotonic() + 15
        while len(set(seen)) < 3 and time.monotonic() < deadline:
            row = InstanceHeartbeat.objects.filter(role="web").first()
            if row is not None:
                seen.append(row.seen_at)
            time.sleep(0.2)
    finally:
        beater.halt()

    assert len(set(seen)) >= 3, "three beats without a single request"
    assert InstanceHeartbeat.objects.filter(role="web").count() == 1
