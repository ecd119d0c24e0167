"""config.toml -> a typed, frozen `Config`. Every bad key raises `ConfigError` naming the key path.

The keys are declared once, as data (`SETTINGS`), so that validation, defaults and the README's
config reference cannot drift apart: a test checks that every key here is documented.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

FEED_FORMATS = ("rss", "atom", "json")
_LANG_RE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_REQUIRED: Any = object()


@dataclass(frozen=True)
class Setting:
    """One config key: where it lives, its default and what it means."""

    section: str
    key: str
    default: Any
    doc: str
    check: Callable[[str, Any], Any]

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"


def _str(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, "must be a string", value)
    return value


def _nonempty_str(path: str, value: Any) -> str:
    if not _str(path, value).strip():
        raise ConfigError(path, "must not be empty", value)
    return str(value)


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, "must be true or false", value)
    return value


def _positive_int(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(path, "must be a whole number of at least 1", value)
    return value


def _optional_positive_int(path: str, value: Any) -> int:
    return 0 if value == 0 else _positive_int(path, value)


def _site_url(path: str, value: Any) -> str:
    parts = urlsplit(_str(path, value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(path, "must be an absolute http(s) URL such as https://example.nl", value)
    if parts.query or parts.fragment:
        raise ConfigError(path, "must not have a query or fragment", value)
    # One canonical form: no trailing slash, so joins are predictable.
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _language(path: str, value: Any) -> str:
    if not _LANG_RE.match(_str(path, value)):
        raise ConfigError(path, "must be a language tag such as 'nl' or 'nl-NL' (hyphen)", value)
    return str(value)


def _timezone(path: str, value: Any) -> str:
    try:
        ZoneInfo(_str(path, value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            path, "is not a known IANA time zone (e.g. Europe/Amsterdam)", value
        ) from None
    return str(value)


def _permalink(path: str, value: Any) -> str:
    text = _str(path, value)
    if not text.startswith("/"):
        raise ConfigError(path, "must start with '/'", value)
    unknown = set(re.findall(r"{([^}]*)}", text)) - {"dir", "slug", "year", "month", "day"}
    if unknown:
        raise ConfigError(
            path, f"unknown placeholder {{{sorted(unknown)[0]}}}; use dir, slug, year, month, day"
        )
    if "{slug}" not in text:
        raise ConfigError(path, "must contain {slug}, or two articles would share one id", value)
    return text


def _formats(path: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f"must be a non-empty list of {', '.join(FEED_FORMATS)}", value)
    for item in value:
        if item not in FEED_FORMATS:
            raise ConfigError(path, f"unknown format; choose from {', '.join(FEED_FORMATS)}", item)
    if len(set(value)) != len(value):
        raise ConfigError(path, "lists a format twice", value)
    return tuple(value)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "site", "title", _REQUIRED, "Name of the publication; feed and OPML title.", _nonempty_str
    ),
    Setting(
        "site",
        "url",
        _REQUIRED,
        "Absolute base URL of the public site; permalinks and feed URLs start with it.",
        _site_url,
    ),
    Setting(
        "site",
        "description",
        "",
        "One line about the site; the RSS channel description (defaults to the title).",
        _str,
    ),
    Setting(
        "site",
        "language",
        "nl",
        "Language tag of the content (`nl`, `en`, `nl-NL`); feed language.",
        _language,
    ),
    Setting(
        "site",
        "timezone",
        "Europe/Amsterdam",
        "IANA zone in which dates without a zone or time are read.",
        _timezone,
    ),
    Setting(
        "site",
        "content_dir",
        "content",
        "Folder of Markdown articles, relative to config.toml.",
        _nonempty_str,
    ),
    Setting(
        "site",
        "output_dir",
        "public",
        "Folder the feeds are written to, relative to config.toml.",
        _nonempty_str,
    ),
    Setting(
        "site",
        "cache_dir",
        ".newsletter-cache",
        "Folder for the parse index that makes rebuilds fast; safe to delete.",
        _nonempty_str,
    ),
    Setting(
        "site",
        "permalink",
        "/{dir}/{slug}/",
        "Permalink pattern of an article: `{dir}` (folder below content_dir), `{slug}`, `{year}`, `{month}`, `{day}`. The permalink is the article's stable id.",
        _permalink,
    ),
    Setting(
        "site",
        "author",
        "",
        "Feed-level author name (defaults to the site title); articles may set their own `author`.",
        _str,
    ),
    Setting("site", "author_email", "", "Optional e-mail address of the feed-level author.", _str),
    Setting(
        "feeds",
        "formats",
        ["rss", "atom", "json"],
        "Which feed formats to write: any of `rss`, `atom`, `json`.",
        _formats,
    ),
    Setting("feeds", "max_items", 50, "Items per feed, newest first.", _positive_int),
    Setting(
        "feeds",
        "full_content",
        True,
        "Put the full article HTML in each item (else the summary only).",
        _bool,
    ),
    Setting(
        "feeds",
        "per_label",
        True,
        "Also write one feed per label (audience), under `labels/<label>/`.",
        _bool,
    ),
    Setting("feeds", "per_tag", False, "Also write one feed per tag, under `tags/<tag>/`.", _bool),
    Setting("feeds", "ttl", 0, "RSS `<ttl>` in minutes; 0 leaves it out.", _optional_positive_int),
)


@dataclass(frozen=True)
class SiteConfig:
    title: str
    url: str
    description: str
    language: str
    timezone: str
    content_dir: Path
    output_dir: Path
    cache_dir: Path
    permalink: str
    author: str
    author_email: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class FeedsConfig:
    formats: tuple[str, ...] = FEED_FORMATS
    max_items: int = 50
    full_content: bool = True
    per_label: bool = True
    per_tag: bool = False
    ttl: int = 0


@dataclass(frozen=True)
class Config:
    path: Path
    site: SiteConfig
    feeds: FeedsConfig


def load_config(path: str | Path) -> Config:
    """Read and validate config.toml.

    Raises:
        ConfigError: the file is missing or not TOML, or a key is unknown or has a bad value.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(
            "--config", f"file {path} not found; copy the sample config.toml"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("--config", f"{path} is not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    return parse_config(raw, base_dir=path.resolve().parent, path=path)


def parse_config(raw: dict[str, Any], base_dir: Path, path: Path | None = None) -> Config:
    """Validate an already parsed TOML mapping; relative folders are resolved against base_dir."""
    sections = {setting.section for setting in SETTINGS}
    for name, value in raw.items():
        if name not in sections:
            raise ConfigError(
                name, f"unknown section; known sections: {', '.join(sorted(sections))}"
            )
        if not isinstance(value, dict):
            raise ConfigError(name, "must be a table ([" + name + "])", value)
    values: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for name in sections:
        given = dict(raw.get(name, {}))
        known = {s.key: s for s in SETTINGS if s.section == name}
        for key in given:
            if key not in known:
                hint = _closest(key, known)
                raise ConfigError(
                    f"{name}.{key}", "unknown key" + (f"; did you mean '{hint}'?" if hint else "")
                )
        for key, setting in known.items():
            if key in given:
                values[name][key] = setting.check(setting.path, given[key])
            elif setting.default is _REQUIRED:
                raise ConfigError(setting.path, "is required")
            else:
                values[name][key] = setting.check(setting.path, setting.default)
    site = values["site"]
    for key in ("content_dir", "output_dir", "cache_dir"):
        site[key] = (base_dir / site[key]).resolve()
    site["description"] = site["description"] or site["title"]
    site["author"] = site["author"] or site["title"]
    return Config(
        path=path or base_dir / "config.toml",
        site=SiteConfig(**site),
        feeds=FeedsConfig(**values["feeds"]),
    )


def _closest(key: str, known: dict[str, Setting]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, list(known), n=1)
    return match[0] if match else None
