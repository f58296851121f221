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
#: Charts of full runs, linked from docs/PERFORMANCE.md (quick runs chart into RESULTS instead).
CHARTS = Path(__file__).resolve().parent.parent / "docs" / "perf"


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
    """Write ``data`` as ``bench/results/<case>-<time>.json`` and its chart; return the path.

    The chart of a full run is ``docs/perf/<case>.png``; a quick run's goes next to its JSON.
    """
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{case}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    data = {"case": case, "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2))
    quick = bool(data.get("params", {}).get("quick"))
    chart(data, path.with_suffix(".png") if quick else CHARTS / f"{case}.png")
    return path


def _series(data: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Return {metric: {bar label: summary}} for the three shapes of ``summary``.

    ``{metric: stats}`` (one side), ``{side: {metric: stats}}`` (against a peer) and
    ``{pair: {side: {metric: stats}}}`` (case 2: several pairs, each against a peer).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, value in data["summary"].items():
        if "median" in value:
            out.setdefault(key, {})[""] = value
            continue
        for inner, stats in value.items():
            if "median" in stats:
                out.setdefault(inner, {})[key] = stats
            else:
                for metric, leaf in stats.items():
                    out.setdefault(metric, {})[f"{key}\n{inner}"] = leaf
    return out


#: Units of single-sided metrics, by name suffix: such metrics share one panel per unit.
_UNITS = ("_one_mb", "_total_mb", "_rss_mb", "_mb", "_seconds", "_per_s", "_rps", "_s")


def _one_sided(series: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Regroup ``{metric: {"": stats}}`` as ``{unit: {metric prefix: stats}}`` panels."""
    panels: dict[str, dict[str, Any]] = {}
    for metric, bars in series.items():
        unit = next((u for u in _UNITS if metric.endswith(u)), "")
        label = metric.removesuffix(unit) or metric
        panels.setdefault(unit.lstrip("_") or metric, {})[label] = bars[""]
    return panels


def _budget_of(params: dict[str, Any], unit: str) -> float | None:
    """Return the budget a panel of ``unit`` is held to, if the case has one."""
    if unit == "one_mb" and "budget_mb_per_process" in params:
        return float(params["budget_mb_per_process"])
    budget = params.get("budget") or {}
    if unit == "s" and "seconds" in budget:
        return float(budget["seconds"])
    if unit in ("rss_mb", "mb") and "rss_mb" in budget:
        return float(budget["rss_mb"])
    return None


def chart(data: dict[str, Any], path: Path) -> Path:
    """Draw one panel per metric: the median of each side as a bar, min to max as a whisker.

    A case without a peer draws one panel per unit instead, with its budget as a dashed line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = data.get("params", {})
    series: dict[str, dict[str, Any]] = dict(_series(data))
    single = all(list(bars) == [""] for bars in series.values())
    if single:
        series = _one_sided(series)
    extra = "lags_s" in data and bool(data["lags_s"])
    panels = len(series) + int(extra)
    columns = min(3, panels)
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, (metric, bars) in zip(flat, series.items(), strict=False):
        labels = list(bars)
        medians = [bars[label]["median"] for label in labels]
        low = [m - bars[label]["min"] for m, label in zip(medians, labels, strict=True)]
        high = [bars[label]["max"] - m for m, label in zip(medians, labels, strict=True)]
        colors = ["#c0392b" if "quay" in label or single else "#7f8c8d" for label in labels]
        ax.bar(range(len(labels)), medians, yerr=[low, high], capsize=4, color=colors)
        crowded = {"rotation": 30, "ha": "right"} if len(labels) > 4 else {}
        ax.set_xticks(
            range(len(labels)), [label or metric for label in labels], fontsize=7, **crowded
        )
        ax.set_title(metric, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        budget = _budget_of(params, metric) if single else None
        if budget is not None:
            ax.axhline(budget, color="black", linestyle="--", linewidth=1)
            ax.annotate(f"budget {budget:g}", (0, budget), fontsize=7, va="bottom")
    if extra:
        ax = flat[len(series)]
        ax.hist(data["lags_s"], bins=40, color="#c0392b")
        ax.set_title("lag from commit to present (s), every blob", fontsize=9)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(
        f"{data['case']}: median, whiskers min to max ({params.get('runs', '?')} runs"
        f"{', quick' if params.get('quick') else ''})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
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


def sides_table(summaries: dict[str, dict[str, dict[str, float]]], metrics: list[str]) -> str:
    """Render ``{side: {metric: summary}}`` as a Markdown table, a row per metric, sides across."""
    sides = list(summaries)
    lines = [
        "| metric | " + " | ".join(f"{side} median (min to max)" for side in sides) + " |",
        "|---|" + "---|" * len(sides),
    ]
    for metric in metrics:
        cells = [
            f"**{_fmt(stats['median'])}** ({_span(stats)})" if stats else "—"
            for stats in (summaries[side].get(metric) for side in sides)
        ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(path: Path) -> str:
    """Render a result file as Markdown tables, whichever of the three shapes it has."""
    data = json.loads(path.read_text())
    summaries = data["summary"]
    peer = data.get("params", {}).get("peer", "peer")
    first = next(iter(summaries.values()))
    if "median" in first:  # one side, no peer
        return "\n".join(
            f"| {k} | {_fmt(v['median'])} | {_span(v)} | {v['n']} |" for k, v in summaries.items()
        )
    if "quay-geo" in summaries:  # against one peer
        ours, theirs = summaries["quay-geo"], summaries["distribution"]
        return compare_table([(m, peer, ours[m], theirs[m]) for m in ours], "")
    if "median" in next(iter(first.values())):  # several sides, no peer (case 7)
        metrics = list(dict.fromkeys(m for per in summaries.values() for m in per))
        return sides_table(summaries, metrics)
    tables = []  # several pairs, each against the peer
    for pair, sides in summaries.items():
        (other,) = (side for side in sides if side != "quay-geo")
        ours, theirs = sides["quay-geo"], sides[other]
        rows_both = [(m, other, ours[m], theirs[m]) for m in ours if m in theirs]
        tables.append(f"{pair}\n\n{compare_table(rows_both, '')}")
    return "\n\n".join(tables)


if __name__ == "__main__":
    import sys

    # python -m bench.report [--chart OUT.png] RESULT.json...
    args = sys.argv[1:]
    if args[:1] == ["--chart"]:
        out, source = Path(args[1]), Path(args[2])
        print(chart(json.loads(source.read_text()), out))
    else:
        for name in args:
            print(f"{name}\n\n{markdown(Path(name))}\n")
