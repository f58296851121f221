"""quay_geo.memory: malloc settings applied at process start."""

import subprocess
import sys

import pytest

from quay_geo.memory import malloc_tune


def test_applied_on_glibc() -> None:
    assert malloc_tune() is True


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAY_GEO_MALLOC_TUNE", "0")
    assert malloc_tune() is False


def test_freed_part_buffers_go_back_to_the_system() -> None:
    # Allocate and free 8 MiB buffers as a copy does; with the fixed threshold they are mmapped,
    # so the resident size returns close to where it started.
    script = """
import os, sys
from quay_geo.memory import malloc_tune
if sys.argv[1] == "1":
    malloc_tune()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
base = rss()
parts = [bytes(8 << 20) for _ in range(3)]
for _ in range(20):
    parts = [bytearray(8 << 20) for _ in range(3)] + parts[:1]
parts = None
small = [bytes(4096) for _ in range(10)]  # heap activity after the frees
print(rss() - base)
"""
    grown = {}
    for tuned in ("0", "1"):
        out = subprocess.run(
            [sys.executable, "-c", script, tuned], capture_output=True, text=True, check=True
        ).stdout
        grown[tuned] = int(out)
    assert grown["0"] >= 8 << 20, f"glibc kept nothing untuned: the test shows nothing {grown}"
    assert grown["1"] < 4 << 20, grown
