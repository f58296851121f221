"""``python -m bench <case> [--quick] [--runs N]``: benchmarks of quay-geo against its peers."""

import argparse
import sys
import time

from .procs import STATE, fresh_dir

CASES = ("push-pull-s3", "push-pull-fs", "metadata-s3", "metadata-fs", "backfill")
#: ``all --quick`` runs each module once (S3 and local disk both covered) to stay under 60 s.
QUICK_CASES = ("push-pull-s3", "metadata-fs", "backfill")


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
        help="backfill: blobs in the database (default 1,000,000, quick 10,000)",
    )
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    cases = (QUICK_CASES if args.quick else CASES) if "all" in args.cases else args.cases
    fresh_dir(STATE)
    for case in cases:
        started = time.monotonic()
        print(f"== {case} ({'quick' if args.quick else f'{runs} runs'})", flush=True)
        if case.startswith("push-pull"):
            from . import push_pull

            push_pull.run(quick=args.quick, runs=runs, storage=case.rsplit("-", 1)[1])
        elif case.startswith("metadata"):
            from . import metadata

            metadata.run(quick=args.quick, runs=runs, storage=case.rsplit("-", 1)[1])
        elif case == "backfill":
            from . import backfill

            backfill.run(
                quick=args.quick,
                runs=runs,
                blobs=args.blobs or (10_000 if args.quick else 1_000_000),
            )
        print(f"== {case} done in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
