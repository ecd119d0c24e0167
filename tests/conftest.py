"""Shared fixtures: the sample site, a generated corpus, and a fixed `now`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from configtext import smtp_tables, without_tables

from newsletter.builder import BuildResult, build
from newsletter.config import Config, load_config

# The browser fixtures, registered once for the session (see tests/browser.py).
pytest_plugins = ["browser"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# The demo site's reference moment: Saturday of ISO week 48, 2026.
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=AMSTERDAM)


def copy_site(dest: Path, content: Path | None = None, extra: str = "") -> Path:
    """A copy of the sample config (+ content) in dest, so tests never write into the repo."""
    shutil.copytree(content or REPO / "content", dest / "content")
    shutil.copytree(REPO / "templates", dest / "templates")
    text = (REPO / "config.toml").read_text(encoding="utf-8") + extra
    (dest / "config.toml").write_text(text, encoding="utf-8")
    return dest / "config.toml"


def use_smtp(config_path: Path, port: int, *, connections: int = 1, batch_size: int = 50) -> Path:
    """Point the site of config_path at an SMTP server on 127.0.0.1:port (quick retries)."""
    text = without_tables(config_path.read_text(encoding="utf-8"), {"delivery", "delivery.smtp"})
    quick_retries = (
        f"batch_size = {batch_size}\nmax_attempts = 3\nretry_backoff = 0.05\npause_after_failures = 10\n"
    )
    text += smtp_tables(port, connections, timeout=10, delivery=quick_retries)
    tomllib.loads(text)
    config_path.write_text(text, encoding="utf-8")
    return config_path


@pytest.fixture
def sample_config(tmp_path: Path) -> Config:
    return load_config(copy_site(tmp_path))


@pytest.fixture
def sample_build(sample_config: Config) -> BuildResult:
    return build(sample_config, NOW)


def make_corpus(dest: Path, count: int, seed: int = 1) -> Path:
    tool = SHARED / "tools" / "make_corpus.py"
    if not tool.exists():
        pytest.fail(f"{tool} is missing: the shared folder must sit beside the repository")
    subprocess.run(
        [sys.executable, str(tool), str(dest), "--count", str(count), "--seed", str(seed),
         "--end", "2026-11-28"],
        check=True, capture_output=True,
    )
    return dest


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "content", 400)
