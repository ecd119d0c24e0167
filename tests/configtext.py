"""Editing config.toml text, for tests and benchmarks (bench/send.py imports this too)."""

from __future__ import annotations

import re


def without_tables(text: str, names: set[str]) -> str:
    """The TOML text without the tables `names` (header line through to the next header)."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        header = re.match(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
        if header:
            skipping = header.group(1) in names
        if not skipping:
            kept.append(line)
    return "".join(kept)
