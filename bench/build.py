#!/usr/bin/env python3
"""Benchmark `newsletter build` alone: cold, no-change and one-change rebuilds.

    python3 bench/build.py [--sizes 1000,10000,100000] [--runs 3]

The same measurements as bench/run.py (which see), without Hugo.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main  # noqa: E402

if __name__ == "__main__":
    main([*sys.argv[1:], "--no-hugo"])
