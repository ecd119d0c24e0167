#!/usr/bin/env python3
"""Benchmark `newsletter build` on generated corpora: cold, no-change and one-change rebuilds.

    python bench/build.py [--sizes 1000,10000,100000] [--runs 3]

Corpora come from ../shared/tools/make_corpus.py (seed 1) and are kept in bench/corpora/.
Each build runs in a fresh process; "cold" means no index cache and no previous output (the
OS page cache is warm). Prints the median and range over the runs, and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MAKE_CORPUS = REPO.parent / "shared" / "tools" / "make_corpus.py"
NOW = "2026-11-28T09:00"

CONFIG = """[site]
title = "Bench"
url = "https://bench.example.nl"
content_dir = "{content}"
output_dir = "{output}"
cache_dir = "{cache}"

[feeds]
per_label = true
per_tag = true
max_items = 50
"""


def corpus(size: int) -> Path:
    target = HERE / "corpora" / str(size)
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(
            [sys.executable, str(MAKE_CORPUS), str(target), "--count", str(size), "--seed", "1",
             "--end", "2026-11-28"],
            check=True, stdout=subprocess.DEVNULL,
        )
        (target / ".complete").write_text("")
    return target


def timed_build(config: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one `newsletter build` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "build", "--config", str(config), "--now", NOW],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return elapsed, usage.ru_maxrss


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.3f} s ({min(values):.3f}-{max(values):.3f})"


def bench(size: int, runs: int) -> dict[str, list[float]]:
    content = corpus(size)
    results: dict[str, list[float]] = {"cold": [], "nochange": [], "onechange": [], "rss_mb": []}
    victim = sorted(content.rglob("*.md"))[len(list(content.rglob("*.md"))) // 2]
    original = victim.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "config.toml"
        config.write_text(CONFIG.format(content=content, output=work / "public", cache=work / "cache"))
        try:
            for run in range(runs):
                shutil.rmtree(work / "public", ignore_errors=True)
                shutil.rmtree(work / "cache", ignore_errors=True)
                seconds, rss = timed_build(config)
                results["cold"].append(seconds)
                results["rss_mb"].append(rss / 1024)
                seconds, rss = timed_build(config)
                results["nochange"].append(seconds)
                victim.write_bytes(original + f"\n\nWijziging {run}.\n".encode())
                seconds, rss = timed_build(config)
                results["onechange"].append(seconds)
                victim.write_bytes(original)
                timed_build(config)  # back to the original state for the next round
        finally:
            victim.write_bytes(original)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'articles':>9} | {'cold build':>26} | {'no change':>26} | {'one change':>26} | peak RSS")
    for size in (int(s) for s in args.sizes.split(",")):
        r = bench(size, args.runs)
        print(
            f"{size:>9} | {fmt(r['cold'])} | {fmt(r['nochange'])} | {fmt(r['onechange'])} | "
            f"{statistics.median(r['rss_mb']):.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
