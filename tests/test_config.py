"""config.toml validation: every bad key is named; every key is documented in the README."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from newsletter.cli import main
from newsletter.config import SETTINGS, load_config, parse_config
from newsletter.errors import ConfigError

MINIMAL = {"site": {"title": "T", "url": "https://example.nl/"}}


def with_key(section: str, key: str, value: Any) -> dict[str, Any]:
    raw = {"site": dict(MINIMAL["site"])}
    raw.setdefault(section, {})[key] = value
    return raw


def test_sample_config_loads() -> None:
    config = load_config(REPO / "config.toml")
    assert config.site.url == "https://ai-nieuws.example.nl"
    assert config.site.content_dir == REPO / "content"
    assert config.feeds.per_tag and config.feeds.per_label
    assert config.feeds.formats == ("rss", "atom", "json")


def test_defaults(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, tmp_path)
    assert config.site.url == "https://example.nl"  # trailing slash normalised away
    assert config.site.timezone == "Europe/Amsterdam" and config.site.language == "nl"
    assert config.site.output_dir == tmp_path / "public"
    assert config.site.description == "T" and config.site.author == "T"
    assert config.feeds.max_items == 50


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("site", "url", "example.nl"),
        ("site", "url", "ftp://example.nl"),
        ("site", "url", "https://example.nl/?x=1"),
        ("site", "title", ""),
        ("site", "title", 5),
        ("site", "timezone", "Europe/Amsterdan"),
        ("site", "language", "nl_NL"),
        ("site", "permalink", "{slug}"),
        ("site", "permalink", "/{title}/"),
        ("site", "permalink", "/{year}/"),
        ("feeds", "formats", ["rss", "atom1"]),
        ("feeds", "formats", []),
        ("feeds", "formats", ["rss", "rss"]),
        ("feeds", "max_items", 0),
        ("feeds", "max_items", "50"),
        ("feeds", "max_items", True),
        ("feeds", "per_tag", "yes"),
        ("feeds", "ttl", -5),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_key(section, key, value), tmp_path)
    assert info.value.key == f"{section}.{key}"
    assert f"{section}.{key}" in str(info.value)


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_key("feeds", "max_item", 5), tmp_path)
    assert info.value.key == "feeds.max_item" and "max_items" in str(info.value)


def test_unknown_section_and_missing_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "feed": {}}, tmp_path)
    assert info.value.key == "feed"
    with pytest.raises(ConfigError) as info:
        parse_config({"site": {"title": "T"}}, tmp_path)
    assert info.value.key == "site.url"


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "config.toml"
    bad.write_text("[site\ntitle = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


# --- the README documents every key and every CLI option ---------------------------------------
README = (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.path)
def test_every_config_key_is_documented(setting: Any) -> None:
    section = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    row = re.search(rf"^\| `{re.escape(setting.key)}` \|.*$", section.split(f"### [{setting.section}]", 1)[1].split("\n### ", 1)[0], re.M)
    assert row, f"{setting.path} is not in the README's configuration reference"


def _options(command: Any, prefix: str = "") -> list[tuple[str, str]]:
    found = []
    for name, sub in getattr(command, "commands", {}).items():
        found += _options(sub, f"{prefix} {name}".strip())
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("--"):
                found.append((prefix, opt))
    return found


@pytest.mark.parametrize(("command", "option"), _options(main))
def test_every_cli_option_is_documented(command: str, option: str) -> None:
    section = README.split("## CLI reference", 1)[1].split("\n## ", 1)[0]
    assert f"newsletter {command}".strip() in section
    assert option in section, f"{option} of '{command}' is not in the README's CLI reference"
