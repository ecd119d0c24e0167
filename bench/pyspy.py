#!/usr/bin/env python3
"""Profile a command and its worker processes with py-spy, and summarise where the time went.

    python3 bench/pyspy.py OUT.txt -- python3 -m newsletter build ...   # record + summary
    python3 bench/pyspy.py OUT.txt                                       # summary of a recording

py-spy (`pip install py-spy`) samples every Python process of the tree (`--subprocesses`), so
the forked parse/render workers and the sending processes are seen, which cProfile cannot do.
The summary groups samples by process role (the first frame that names one: a sending lane, a
parse worker, ...) and lists each role's functions by own time (the innermost frame).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

RATE = 250  # samples per second: enough detail, little slow-down

# The frames that tell what a process (or thread) is doing, most specific first.
ROLES = (
    ("_lane_main", "sending process (compose + SMTP)"),
    ("_send_locked", "ledger (claims, outcomes)"),
    ("_load_chunk", "parse worker"),
    ("_render_chunk", "body render worker"),
    ("_write_jobs", "feed render worker (renders and writes)"),
    ("_scan", "build: scan (waiting for parse workers, index)"),
    ("_write_stale", "build: feeds (waiting for the feed workers)"),
    ("_find_and_load", "imports"),
)


def record(out: Path, command: Sequence[str]) -> int:
    """Run command under py-spy; raw (collapsed) stacks to out. Returns the exit code."""
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: python3 -m pip install py-spy")
    return subprocess.call(
        ["py-spy", "record", "--subprocesses", "--rate", str(RATE), "--format", "raw",
         "--output", str(out), "--", *command],
        stdout=subprocess.DEVNULL,
    )


def summary(raw: Path, top: int = 12) -> str:
    """Own time per role and function, in seconds (samples / rate)."""
    by_role: dict[str, Counter[str]] = defaultdict(Counter)
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        role = next((name for key, name in ROLES if any(key in f for f in frames)), "other")
        leaf = frames[-1].split(" (")[0]
        where = frames[-1].rpartition("(")[2].rstrip(")").split(":")[0]
        by_role[role][f"{leaf} ({Path(where).name})"] += int(count)
    lines: list[str] = []
    for role, counter in sorted(by_role.items(), key=lambda item: -sum(item[1].values())):
        lines.append(f"{role}: {sum(counter.values()) / RATE:.2f} s sampled")
        for function, samples in counter.most_common(top):
            lines.append(f"  {samples / RATE:6.3f} s  {function}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("out", type=Path, help="the raw py-spy recording (written or read)")
    parser.add_argument("--top", type=int, default=12, help="functions per role")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if command:
        code = record(args.out, command)
        if code:
            sys.exit(code)
    print(summary(args.out, args.top))


if __name__ == "__main__":
    main()
