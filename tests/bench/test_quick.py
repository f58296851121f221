"""The benchmark harness still works: ``python -m bench all --quick`` runs every case module.

Quick mode measures nothing (small sizes, one run); it checks that each case starts its servers,
does its work against both sides and writes its result file and chart. Speed is never asserted.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.__main__ import QUICK_CASES

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"

pytestmark = pytest.mark.servers


@pytest.mark.timeout(1500)
def test_every_case_runs_in_quick_mode(tmp_path: Path) -> None:
    started = time.time()
    env = dict(os.environ, QUAY_GEO_BENCH_DIR=str(tmp_path))
    env.pop("DATABASE_URL", None)  # the harness runs its own PostgreSQL and Redis
    result = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1400,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for case in QUICK_CASES:
        assert f"== {case} done in" in result.stdout, result.stdout[-4000:]
    fresh = [p for p in RESULTS.glob("*.json") if p.stat().st_mtime >= started]
    written = {json.loads(p.read_text())["case"] for p in fresh}
    assert written == {case.replace("push-pull", "push_pull") for case in QUICK_CASES}
    for path in fresh:
        data = json.loads(path.read_text())
        assert data["params"]["quick"] is True
        assert path.with_suffix(".png").stat().st_size > 1000, f"no chart for {path.name}"
