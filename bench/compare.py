#!/usr/bin/env python3
"""Compare the cold build of two checkouts, run for run, alternating.

    python3 bench/compare.py OTHER_CHECKOUT [--size 10000] [--runs 8] [--drop-caches]

This machine's speed drifts by up to 15% within minutes, more than most single changes are
worth; running the two builds alternately on the same corpus (bench/run.py's, seed 1) lets the
drift fall on both. OTHER_CHECKOUT is e.g. `git worktree add /tmp/before <commit>`. Prints the
median and range of each, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import CONFIG, NOW, REPO, _fresh, byte_compile, corpus, drop_caches, measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (its `python -m newsletter`)")
    parser.add_argument("--size", type=int, default=10000, help="corpus size")
    parser.add_argument("--runs", type=int, default=8, help="cold builds of each checkout")
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache before each build (root)")
    args = parser.parse_args()
    content = corpus(args.size)
    projects = {"this": REPO, "other": args.other.resolve()}
    for project in projects.values():
        byte_compile(project)
    seconds: dict[str, list[float]] = {name: [] for name in projects}
    with tempfile.TemporaryDirectory(prefix="newsletter-compare-") as tmp:
        work = Path(tmp)
        config = work / "config.toml"
        config.write_text(CONFIG.format(content=content, output=work / "public", cache=work / "cache"))
        command = [sys.executable, "-m", "newsletter", "build", "--config", str(config), "--now", NOW]
        for _ in range(args.runs):
            for name, project in projects.items():
                _fresh(work / "public", work / "cache")
                if args.drop_caches:
                    drop_caches()
                seconds[name].append(measure(command, cwd=project).seconds)
    for name, values in seconds.items():
        print(f"{name:5s} {projects[name]}: median {statistics.median(values):.3f} s "
              f"[{min(values):.3f}-{max(values):.3f}] of {len(values)}")
    print(f"other / this: {statistics.median(seconds['other']) / statistics.median(seconds['this']):.2f}")


if __name__ == "__main__":
    main()
