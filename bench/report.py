"""Summaries of timed samples, JSON results and Markdown tables."""

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def summary(samples: list[float]) -> dict[str, float]:
    """Return the median, min and max of ``samples``."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def machine() -> dict[str, Any]:
    """Return the facts of this machine a reader needs to judge the figures."""
    with open("/proc/cpuinfo") as handle:
        model = next((ln.split(":", 1)[1].strip() for ln in handle if "model name" in ln), "?")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_end": os.getloadavg(),  # includes the benchmark's own processes
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }


def save(case: str, data: dict[str, Any]) -> Path:
    """Write ``data`` as ``bench/results/<case>-<time>.json``; return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{case}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    data = {"case": case, "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2))
    return path


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _span(stats: dict[str, float]) -> str:
    return f"{_fmt(stats['min'])} to {_fmt(stats['max'])}"


def compare_table(
    rows: list[tuple[str, str, dict[str, float], dict[str, float]]], unit: str
) -> str:
    """Render (metric, peer name, quay-geo summary, peer summary) rows as a Markdown table."""
    unit = f" ({unit})" if unit else ""
    lines = [
        f"| metric | quay-geo median{unit} | min to max | peer | peer median{unit} | min to max "
        "| ratio quay-geo/peer |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric, peer, ours, theirs in rows:
        ratio = ours["median"] / theirs["median"] if theirs["median"] else float("nan")
        lines.append(
            f"| {metric} | **{_fmt(ours['median'])}** | {_span(ours)} | {peer} "
            f"| **{_fmt(theirs['median'])}** | {_span(theirs)} | **{ratio:.2f}** |"
        )
    return "\n".join(lines)


def markdown(path: Path) -> str:
    """Render a result file of a case with a peer as Markdown tables."""
    data = json.loads(path.read_text())
    if "quay-geo" not in data["summary"]:
        return "\n".join(
            f"| {k} | {_fmt(v['median'])} | {_span(v)} | {v['n']} |"
            for k, v in data["summary"].items()
        )
    ours, theirs = data["summary"]["quay-geo"], data["summary"]["distribution"]
    peer = data["params"]["peer"]
    return compare_table([(m, peer, ours[m], theirs[m]) for m in ours], "")


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(f"{name}\n\n{markdown(Path(name))}\n")
