"""config.toml validation: every bad key is named; every key is documented in the README."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from newsletter.cli import main
from newsletter.config import AUDIENCE_SETTINGS, SETTINGS, load_config, parse_config
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


@pytest.mark.parametrize("setting", SETTINGS + AUDIENCE_SETTINGS, ids=lambda s: s.path)
def test_every_config_key_is_documented(setting: Any) -> None:
    reference = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    heading = "### [[audiences]]" if setting.section == "audiences" else f"### [{setting.section}]"
    assert heading + "\n" in reference, f"no '{heading}' in the README's configuration reference"
    table = reference.split(heading + "\n", 1)[1].split("\n### ", 1)[0]
    row = re.search(rf"^\| `{re.escape(setting.key)}` \|.*$", table, re.M)
    assert row, f"{setting.path} is not in the README's configuration reference"


def test_readme_documents_no_unknown_keys() -> None:
    """The other direction: a README row for a key that no longer exists is caught too."""
    reference = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    known = {(s.section, s.key) for s in SETTINGS + AUDIENCE_SETTINGS}
    for block in reference.split("\n### ")[1:]:
        heading, _, table = block.partition("\n")
        section = heading.strip("[] ")
        for key in re.findall(r"^\| `([^`]+)` \|", table, re.M):
            assert (section, key) in known, f"README documents unknown key {section}.{key}"


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


# --- [[audiences]] and the mailing sections ----------------------------------------------------
AUDIENCE = {"id": "beslissers", "title": "Voor beslissers", "labels": ["BESLISSER"]}


def with_audience(**change: Any) -> dict[str, Any]:
    return {**MINIMAL, "audiences": [{**AUDIENCE, **change}]}


def test_sample_audiences() -> None:
    config = load_config(REPO / "config.toml")
    beslissers = config.audience("beslissers")
    assert beslissers.labels == ("BESLISSER",)
    assert beslissers.highlight_section == "Wat kun je hier morgen mee?"
    assert beslissers.schedule == "mon 08:00"
    assert config.audience("bouwers").labels == ("BOUWER",)
    assert dict(beslissers.utm)["utm_campaign"] == "beslissers"
    assert config.delivery.transport == "outbox"
    assert config.store_url == f"sqlite:///{REPO / 'newsletter.db'}"
    assert config.email.templates_dir == REPO / "templates"


def test_mailing_defaults(tmp_path: Path) -> None:
    config = parse_config({**MINIMAL, "audiences": [AUDIENCE]}, tmp_path)
    audience = config.audiences[0]
    assert audience.window.days == 7 and audience.max_items == 10 and audience.skip_if_empty
    assert audience.template == "digest" and audience.tag_mode == "any" and audience.schedule == ""
    assert config.email.sender == "T <nieuwsbrief@example.nl>"
    assert config.email.unsubscribe_mailto == "unsubscribe@example.nl"
    assert config.email.templates_dir is None  # the default folder does not exist: built-ins only
    assert config.delivery.outbox_dir == tmp_path / "outbox"
    assert config.store_url == f"sqlite:///{tmp_path / 'newsletter.db'}"
    assert config.public_url == "https://example.nl"
    assert config.delivery.smtp.port == 587 and config.delivery.smtp.starttls


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("id", "Beslissers", "lower-case"),
        ("id", "", "lower-case"),
        ("title", "", "must not be empty"),
        ("labels", "BESLISSER", "list"),
        ("labels", [""], "list"),
        ("tags", [1], "list"),
        ("tag_mode", "some", "one of"),
        ("window", "7", "look-back"),
        ("window", "0d", "look-back"),
        ("window", 7, "look-back"),
        ("max_items", 0, "at least 1"),
        ("subject", "{{ week ", "not a valid Jinja template"),
        ("preheader", "{% if %}", "not a valid Jinja template"),
        ("template", "../digest", "template name"),
        ("template", "digest.html", "template name"),
        ("utm", {"utm_source": 1}, "table of text"),
        ("utm", "utm_source=x", "table of text"),
        ("highlight_section", ["x"], "string"),
        ("skip_if_empty", "yes", "true or false"),
        ("schedule", "maandag 08:00", "unknown day"),
        ("schedule", "0 8 * * 1", "day names"),
        ("schedule", "mon 25:00", "HH:MM"),
        ("colour", "blue", "unknown key"),
    ],
)
def test_bad_audience_values_name_the_audience_and_key(
    tmp_path: Path, key: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_audience(**{key: value}), tmp_path)
    where = "audiences[0]" if key == "id" else "audiences.beslissers"
    assert info.value.key == f"{where}.{key}"
    assert message in str(info.value)


def test_audience_problems_of_the_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="used by two audiences") as info:
        parse_config({**MINIMAL, "audiences": [AUDIENCE, AUDIENCE]}, tmp_path)
    assert info.value.key == "audiences.beslissers.id"
    with pytest.raises(ConfigError, match=r"array of tables"):
        parse_config({**MINIMAL, "audiences": AUDIENCE}, tmp_path)
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "audiences": [{"title": "x"}]}, tmp_path)
    assert info.value.key == "audiences[0].id" and "required" in str(info.value)
    config = parse_config(with_audience(), tmp_path)
    with pytest.raises(ConfigError, match=r"no audience 'bouwers' \(known: beslissers\)"):
        config.audience("bouwers")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("email", "from", "nieuwsbrief"),
        ("email", "from", "Redactie <nieuwsbrief@example.nl>\r\nBcc: x@y.nl"),
        ("email", "reply_to", "not an address"),
        ("delivery", "transport", "sendmail"),
        ("delivery", "batch_size", 0),
        ("store", "url", "mysql://x/y"),
        ("store", "url", ""),
        ("web", "public_url", "ai-nieuws.example.nl"),
    ],
)
def test_bad_mailing_values_name_the_key(tmp_path: Path, section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_key(section, key, value), tmp_path)
    assert info.value.key == f"{section}.{key}"


@pytest.mark.parametrize(
    ("smtp", "key"),
    [
        ({"port": 0}, "delivery.smtp.port"),
        ({"port": "587"}, "delivery.smtp.port"),
        ({"rate": -1}, "delivery.smtp.rate"),
        ({"timeout": 0}, "delivery.smtp.timeout"),
        ({"connections": 0}, "delivery.smtp.connections"),
        ({"password_env": "hunter2!"}, "delivery.smtp.password_env"),
        ({"ssl": True, "starttls": True}, "delivery.smtp.starttls"),
        ({"hots": "x"}, "delivery.smtp.hots"),
    ],
)
def test_bad_smtp_values_name_the_nested_key(tmp_path: Path, smtp: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "delivery": {"smtp": smtp}}, tmp_path)
    assert info.value.key == key


def test_implicit_tls_turns_starttls_off(tmp_path: Path) -> None:
    config = parse_config({**MINIMAL, "delivery": {"smtp": {"ssl": True, "port": 465}}}, tmp_path)
    assert config.delivery.smtp.ssl and not config.delivery.smtp.starttls


def test_explicit_templates_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_key("email", "templates_dir", "mijn-templates"), tmp_path)
    assert info.value.key == "email.templates_dir"
    (tmp_path / "mijn-templates").mkdir()
    config = parse_config(with_key("email", "templates_dir", "mijn-templates"), tmp_path)
    assert config.email.templates_dir == tmp_path / "mijn-templates"


def test_unknown_section_suggests_audiences(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'audiences'") as info:
        parse_config({**MINIMAL, "audience": [AUDIENCE]}, tmp_path)
    assert info.value.key == "audience"
