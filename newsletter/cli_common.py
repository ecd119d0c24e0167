"""What every command shares: exit codes, --config/--now, loading config, reporting problems."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import click

from .errors import ArticleError, ConfigError

if TYPE_CHECKING:
    from .collector import Catalog
    from .config import Config

EXIT_PROBLEMS = 1  # bad articles under --strict / check, or nothing could be built
EXIT_CONFIG = 2  # config.toml or a command-line value is wrong

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("config.toml"),
    show_default=True,
    help="Path of config.toml.",
)
now_option = click.option(
    "--now",
    "now_text",
    metavar="TIME",
    help="Build as if it were this moment (ISO 8601, e.g. 2026-11-28T09:00; no zone = site "
    "timezone). Default: the current time.",
)


def parse_now(text: str | None, timezone: str) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint="--now") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(timezone))


def log_to_stderr() -> None:
    """Log lines with time, level and logger on stderr, for the long-running commands."""
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _load(config_path: Path) -> Config:
    from .config import load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def _catalog(config: Config, use_index: bool = True) -> Catalog:
    """The config's articles, or exit 2 naming site.content_dir when that folder cannot be read."""
    from .collector import load_catalog

    try:
        return load_catalog(config, use_index)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def _report_problems(problems: list[ArticleError]) -> None:
    for problem in problems:
        click.echo(f"  {problem}", err=True)
