"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the samples go.

``python -m bench.profile FILE [--top N] [--active]`` prints the frames with the most inclusive
samples (in quay-geo's own code and overall) and the leaf frames with the most self samples.
``--active`` leaves out the samples of threads waiting (a lock, a poll, a socket read), so the
percentages are of the time spent working; py-spy counts a blocking send as active.
"""

import argparse
import re
from collections import Counter
from pathlib import Path

#: Leaf frames of a thread that waits for something rather than works.
WAITS = re.compile(
    r"^(Condition\.wait|_epoll\.poll|EpollSelector\.select|SocketIO\.readinto|Connection\.wait"
    r"|Connection\._recv|Thread\._wait_for_tstate_lock|select|sleep) "
)
OURS = re.compile(r"\((?:/work/main/)?(registry|replication|storage_engines|quay_geo|superuser)/")


def summarise(path: Path, top: int, *, active: bool = False) -> str:
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if active and frames and WAITS.match(frames[-1]):
            continue
        total += samples
        for frame in set(frames):
            inclusive[frame] += samples
            if OURS.search(frame):
                ours[frame] += samples
        if frames:
            leaf[frames[-1]] += samples
    what = "active samples" if active else "samples"
    out = [f"{total} {what} in {path.name}", "", f"top {top} quay-geo frames (inclusive):"]
    out += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in ours.most_common(top)]
    out += ["", f"top {top} leaf frames (self):"]
    out += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in leaf.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--active", action="store_true", help="leave out waiting threads")
    args = parser.parse_args()
    print(summarise(args.file, args.top, active=args.active))


if __name__ == "__main__":
    main()
