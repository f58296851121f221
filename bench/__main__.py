"""``python -m bench <case> [--quick] [--runs N]``: benchmarks of quay-geo against its peers."""

import argparse
import importlib
import signal
import sys
import time
from typing import Any

from .procs import STATE, fresh_dir, stale_runs_remove
from .servers import services

#: case name -> (module in bench/, keyword arguments of its ``run``), in the issue's order.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "push-pull-fs": ("push_pull", {"storage": "fs"}),
    "push-pull-s3": ("push_pull", {"storage": "s3"}),
    "push-pull-rgw": ("push_pull", {"storage": "rgw"}),
    "push-pull-swift": ("push_pull", {"storage": "swift"}),
    "replication": ("replication", {}),
    "lag": ("lag", {}),
    "backfill": ("backfill", {}),
    "memory": ("memory", {}),
    "metadata-fs": ("metadata", {"storage": "fs"}),
    "metadata-s3": ("metadata", {"storage": "s3"}),
    "geo": ("far_region", {}),
    "audit": ("audit", {}),
    "audit-local": ("audit", {"engine": "local"}),
}
#: ``all --quick`` (run by ``make test``) runs every module once with small sizes.
QUICK_CASES = (
    "push-pull-s3",
    "replication",
    "lag",
    "backfill",
    "memory",
    "metadata-fs",
    "geo",
    "audit",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("cases", nargs="*", choices=[*CASES, "all"], default=["all"])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: checks that the harness works, measures nothing",
    )
    parser.add_argument("--runs", type=int, default=0, help="runs per side (default 3, quick 1)")
    parser.add_argument(
        "--blobs",
        type=int,
        default=0,
        help="backfill: blobs in the database (default 1,000,000, quick 10,000); audit: "
        "objects in the audited location besides 1,000 (default 100,000, quick none)",
    )
    parser.add_argument(
        "--replica",
        action="store_true",
        help="geo: a far process that reads from a region-local hot standby (always in a full run)",
    )
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    cases = (QUICK_CASES if args.quick else tuple(CASES)) if "all" in args.cases else args.cases
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so every server this run started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stale_runs_remove()
    fresh_dir(STATE)
    with services():
        for case in cases:
            run_case(case, args.quick, runs, args.blobs, args.replica)
    return 0


def run_case(case: str, quick: bool, runs: int, blobs: int, replica: bool = False) -> None:
    """Run one case and say how long it took."""
    started = time.monotonic()
    print(f"== {case} ({'quick' if quick else f'{runs} runs'})", flush=True)
    module_name, kwargs = CASES[case]
    if module_name == "backfill":
        kwargs = {**kwargs, "blobs": blobs or (10_000 if quick else 1_000_000)}
    if module_name == "audit":
        kwargs = {**kwargs, "blobs": blobs or (1000 if quick else 100_000)}
    if module_name == "far_region":
        kwargs = {**kwargs, "replica": replica or not quick}
    module = importlib.import_module(f".{module_name}", __package__)
    module.run(quick=quick, runs=runs, **kwargs)
    print(f"== {case} done in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
