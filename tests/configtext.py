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


def smtp_tables(port: int, connections: int, timeout: int, delivery: str = "") -> str:
    """TOML: [delivery] over SMTP (plus the `delivery` lines) and [delivery.smtp] for a server
    on 127.0.0.1:port, without TLS, login or rate limit."""
    return f"""
[delivery]
transport = "smtp"
{delivery}
[delivery.smtp]
host = "127.0.0.1"
port = {port}
starttls = false
ssl = false
username_env = ""
password_env = ""
connections = {connections}
rate = 0
timeout = {timeout}
"""
