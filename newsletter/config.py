"""config.toml -> a typed, frozen `Config`. Every bad key raises `ConfigError` naming the key path.

The keys are declared once, as data (`SETTINGS`), so that validation, defaults and the README's
config reference cannot drift apart: a test checks that every key here is documented.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
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


def _str_list(path: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(path, "must be a list of non-empty strings", value)
    return tuple(v.strip() for v in value)


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def check(path: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(map(repr, choices))}", value)
        return str(value)

    return check


def _port(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(path, "must be a port number from 1 to 65535", value)
    return value


def _non_negative_number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(path, "must be a number of at least 0", value)
    return float(value)


def _positive_number(path: str, value: Any) -> float:
    if _non_negative_number(path, value) == 0:
        raise ConfigError(path, "must be more than 0", value)
    return float(value)


def _env_name(path: str, value: Any) -> str:
    if _str(path, value) and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ConfigError(path, "must be the NAME of an environment variable, not its value", value)
    return str(value)


def _address(path: str, value: Any) -> str:
    """An RFC 5322 mailbox (`Name <a@b.nl>` or `a@b.nl`); empty means "derive a default"."""
    text = _str(path, value).strip()
    if not text:
        return ""
    # Imported here, and only for a given address: email.utils costs a build ~5 ms of start-up.
    from email.utils import parseaddr

    if any(c in text for c in "\r\n"):
        raise ConfigError(path, "must be one line", value)
    _, address = parseaddr(text)
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain:
        raise ConfigError(path, "must be an e-mail address such as 'Redactie <nieuwsbrief@example.nl>'", value)
    return text


def _store_url(path: str, value: Any) -> str:
    text = _nonempty_str(path, value)
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", text):
        raise ConfigError(path, "must be a sqlite:/// or postgresql:// URL", value)
    return text


def _optional_url(path: str, value: Any) -> str:
    return _site_url(path, value) if _str(path, value) else ""


_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _timespan(units: str, message: str) -> Callable[[str, Any], timedelta]:
    """A check for a positive span like '3h' in one of `units` (letters of _UNITS)."""
    pattern = re.compile(rf"\s*(\d+)\s*([{units}])\s*")

    def check(path: str, value: Any) -> timedelta:
        match = pattern.fullmatch(value) if isinstance(value, str) else None
        if not match or int(match.group(1)) == 0:
            raise ConfigError(path, message, value)
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})

    return check


_duration = _timespan("mhd", "must be a duration such as '30m', '3h' or '1d'")
_window = _timespan("hdw", "must be a look-back such as '7d', '36h' or '2w'")


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
    Setting(
        "email",
        "templates_dir",
        "templates",
        "Folder of site templates (`email/digest.html`, ...) that override the built-in ones file by file; relative to config.toml. A missing folder means the built-in templates, unless the key is set explicitly.",
        _nonempty_str,
    ),
    Setting(
        "email",
        "sender_line",
        "",
        "Postal/sender line printed in every digest's footer (who sends this and where they are).",
        _str,
    ),
    Setting(
        "email",
        "from",
        "",
        "`From` of every mailing, e.g. `Redactie <nieuwsbrief@example.nl>` (defaults to the site title at `nieuwsbrief@` the site's host).",
        _address,
    ),
    Setting("email", "reply_to", "", "Optional `Reply-To` address.", _address),
    Setting(
        "email",
        "unsubscribe_mailto",
        "",
        "Address for the `mailto:` unsubscribe in `List-Unsubscribe` (defaults to `unsubscribe@` the site's host).",
        _address,
    ),
    Setting(
        "delivery",
        "transport",
        "outbox",
        "`outbox` writes one `.eml` file per message into `outbox_dir` (no server needed); `smtp` sends through `[delivery.smtp]`.",
        _choice("outbox", "smtp"),
    ),
    Setting(
        "delivery",
        "outbox_dir",
        "outbox",
        "Folder of the outbox transport, relative to config.toml.",
        _nonempty_str,
    ),
    Setting(
        "delivery",
        "batch_size",
        50,
        "Deliveries claimed per batch; unsubscribes are re-checked before each batch. A crash leaves at most one batch's unsent part as `unknown`.",
        _positive_int,
    ),
    Setting(
        "delivery",
        "max_attempts",
        3,
        "Tries per message for temporary failures (4xx replies, dropped connections), with exponential backoff and jitter.",
        _positive_int,
    ),
    Setting(
        "delivery",
        "retry_backoff",
        1.0,
        "Seconds before the second try; doubled for each further one.",
        _non_negative_number,
    ),
    Setting(
        "delivery",
        "pause_after_failures",
        10,
        "Pause the issue (the rest stays queued for a rerun) after this many failed deliveries in a row.",
        _positive_int,
    ),
    Setting("delivery.smtp", "host", "localhost", "SMTP server host name.", _nonempty_str),
    Setting("delivery.smtp", "port", 587, "SMTP server port (587 STARTTLS, 465 implicit TLS).", _port),
    Setting(
        "delivery.smtp",
        "starttls",
        True,
        "Upgrade the connection with STARTTLS (certificate verified); a server without STARTTLS is then an error.",
        _bool,
    ),
    Setting(
        "delivery.smtp",
        "ssl",
        False,
        "Implicit TLS from the first byte (port 465); excludes `starttls`.",
        _bool,
    ),
    Setting(
        "delivery.smtp",
        "username_env",
        "",
        "Name of the environment variable holding the SMTP user name; empty: no login.",
        _env_name,
    ),
    Setting(
        "delivery.smtp",
        "password_env",
        "",
        "Name of the environment variable holding the SMTP password.",
        _env_name,
    ),
    Setting(
        "delivery.smtp",
        "connections",
        1,
        "Parallel SMTP connections, each reused for many messages"
        " (`newsletter send`: one sending process each).",
        _positive_int,
    ),
    Setting(
        "delivery.smtp",
        "rate",
        0,
        "At most this many messages per second over all connections; 0 is unlimited.",
        _non_negative_number,
    ),
    Setting("delivery.smtp", "timeout", 30, "Seconds to wait for the server.", _positive_number),
    Setting(
        "store",
        "url",
        "sqlite:///newsletter.db",
        "Database of subscribers, issues and deliveries: a SQLite file (a relative path is relative to config.toml) or PostgreSQL, `postgresql+psycopg://user@host/db` after `pip install -e '.[postgresql]'`.",
        _store_url,
    ),
    Setting("web", "host", "127.0.0.1", "Address `newsletter serve` listens on.", _nonempty_str),
    Setting("web", "port", 8080, "Port `newsletter serve` listens on.", _port),
    Setting(
        "web",
        "preview_user",
        "redactie",
        "User name for the editors' preview pages (HTTP Basic over HTTPS in production).",
        _nonempty_str,
    ),
    Setting(
        "web",
        "preview_password_env",
        "NEWSLETTER_PREVIEW_PASSWORD",
        "Name of the environment variable holding the preview password; unset: the preview is closed.",
        _env_name,
    ),
    Setting(
        "web",
        "confirm_hours",
        48,
        "Hours a double opt-in confirmation link stays valid.",
        _positive_int,
    ),
    Setting(
        "web",
        "subscribe_limit",
        5,
        "Subscribe requests allowed per client address per 10 minutes.",
        _positive_int,
    ),
    Setting(
        "schedule",
        "misfire_grace",
        "3h",
        "How late a scheduled send may still start (after downtime): `30m`, `3h`, `1d`. A run missed by more is not sent automatically but shown by `newsletter plan`.",
        _duration,
    ),
    Setting(
        "web",
        "public_url",
        "",
        "Base URL of the web service the mails link to (unsubscribe, view in browser); defaults to `site.url`. Must be https to send: one-click unsubscribe (RFC 8058) takes only https links.",
        _optional_url,
    ),
)


def _audience_id(path: str, value: Any) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ConfigError(
            path, "must be lower-case letters, digits, '-' or '_', starting with a letter", value
        )
    return value


def _jinja(path: str, value: Any) -> str:
    from jinja2 import Environment, TemplateSyntaxError

    text = _str(path, value)
    try:
        Environment().parse(text)
    except TemplateSyntaxError as exc:
        raise ConfigError(path, f"is not a valid Jinja template: {exc.message}", value) from None
    return text


def _template_name(path: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", value):
        raise ConfigError(path, "must be a template name such as 'digest' (no folder, no suffix)", value)
    return value


def _utm(path: str, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigError(path, "must be a table of text values, e.g. { utm_source = \"nieuwsbrief\" }", value)
    return tuple(value.items())


def _schedule(path: str, value: Any) -> str:
    text = _str(path, value).strip()
    if text:
        from .schedules import ScheduleError, parse_schedule

        try:
            parse_schedule(text)
        except ScheduleError as exc:
            raise ConfigError(path, str(exc), value) from None
    return text


_ID_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
# The lead title is cut so the whole subject stays under ~78 characters (EM QA warning).
DEFAULT_SUBJECT = "{{ audience.title }} – week {{ week }}: {{ lead.title | truncate(44, false, '…', 0) }}"

# The keys of one [[audiences]] table; their README rows are under "### [[audiences]]".
AUDIENCE_SETTINGS: tuple[Setting, ...] = (
    Setting("audiences", "id", _REQUIRED, "Stable id of the audience (`beslissers`); used in commands, URLs and the send ledger.", _audience_id),
    Setting("audiences", "title", _REQUIRED, "Name readers see, e.g. `Voor beslissers`.", _nonempty_str),
    Setting("audiences", "labels", [], "Article labels this audience gets (any of them); empty: every label.", _str_list),
    Setting("audiences", "tags", [], "Optional tag filter on top of the labels.", _str_list),
    Setting("audiences", "tag_mode", "any", "`any`: an article needs one of `tags`; `all`: every one.", _choice("any", "all")),
    Setting("audiences", "description", "", "Intro text under the digest header and on the subscribe page.", _str),
    Setting("audiences", "window", "7d", "Look-back of the first issue (`7d`, `36h`, `2w`); later issues take everything published since the previous issue.", _window),
    Setting("audiences", "max_items", 10, "Most articles in one digest, newest first after the lead.", _positive_int),
    Setting("audiences", "subject", DEFAULT_SUBJECT, "Subject line, a Jinja template with `audience`, `week`, `year`, `lead`, `count`, `date_range`, `site_title`.", _jinja),
    Setting("audiences", "preheader", "", "Preview text after the subject (Jinja, same names plus `subject`); empty: the lead article's summary.", _jinja),
    Setting("audiences", "template", "digest", "Template name: `email/<template>.html` and `.txt`, from `email.templates_dir` or the built-in ones.", _template_name),
    Setting("audiences", "utm", {}, "Query parameters added to every article link, e.g. `{ utm_source = \"nieuwsbrief\", utm_campaign = \"beslissers\" }`.", _utm),
    Setting("audiences", "highlight_section", "", "A `## ` heading whose text the digest quotes under each article that has it, e.g. `Wat kun je hier morgen mee?`.", _str),
    Setting("audiences", "skip_if_empty", True, "Send nothing (and record the issue as skipped) when no article is new; `false`: an empty issue is reported as an error (exit 1), so someone notices.", _bool),
    Setting("audiences", "schedule", "", "When the digest goes out, in `site.timezone`: `mon 08:00`, `daily 07:30`, `weekdays 07:30`, `monthly 1 09:00`, `monthly last 09:00`, or a cron expression with day names; empty: only sent by hand.", _schedule),
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
class EmailConfig:
    templates_dir: Path | None  # None: only the built-in templates
    sender_line: str
    sender: str  # the `from` key
    reply_to: str
    unsubscribe_mailto: str


@dataclass(frozen=True)
class SMTPConfig:
    host: str = "localhost"
    port: int = 587
    starttls: bool = True
    ssl: bool = False
    username_env: str = ""
    password_env: str = ""
    connections: int = 1
    rate: float = 0.0
    timeout: float = 30.0


@dataclass(frozen=True)
class DeliveryConfig:
    transport: str
    outbox_dir: Path
    batch_size: int
    max_attempts: int
    retry_backoff: float
    pause_after_failures: int
    smtp: SMTPConfig


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    preview_user: str = "redactie"
    preview_password_env: str = "NEWSLETTER_PREVIEW_PASSWORD"
    confirm_hours: int = 48
    subscribe_limit: int = 5


@dataclass(frozen=True)
class AudienceConfig:
    id: str
    title: str
    labels: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tag_mode: str = "any"
    description: str = ""
    window: timedelta = timedelta(days=7)
    max_items: int = 10
    subject: str = DEFAULT_SUBJECT
    preheader: str = ""
    template: str = "digest"
    utm: tuple[tuple[str, str], ...] = ()
    highlight_section: str = ""
    skip_if_empty: bool = True
    schedule: str = ""


@dataclass(frozen=True)
class Config:
    path: Path
    site: SiteConfig
    feeds: FeedsConfig
    email: EmailConfig
    delivery: DeliveryConfig
    store_url: str
    public_url: str  # base of the links in mails (web.public_url, else site.url)
    web: WebConfig
    misfire_grace: timedelta
    audiences: tuple[AudienceConfig, ...] = field(default=())

    def audience(self, audience_id: str) -> AudienceConfig:
        """The audience with this id; ConfigError listing the known ids otherwise."""
        for audience in self.audiences:
            if audience.id == audience_id:
                return audience
        known = ", ".join(a.id for a in self.audiences) or "none configured"
        raise ConfigError("audiences", f"no audience '{audience_id}' (known: {known})")


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
    tables = {name for name in sections if "." not in name}
    for name, value in raw.items():
        if name == "audiences":
            continue
        if name not in tables:
            hint = _closest(name, [*tables, "audiences"])
            raise ConfigError(
                name,
                "unknown section"
                + (f"; did you mean '{hint}'?" if hint else "")
                + f"; known sections: {', '.join(sorted([*tables, 'audiences']))}",
            )
        if not isinstance(value, dict):
            raise ConfigError(name, "must be a table ([" + name + "])", value)
    values = {name: _section(_table(raw, name), name, SETTINGS, sections) for name in sections}
    site = values["site"]
    for key in ("content_dir", "output_dir", "cache_dir"):
        site[key] = (base_dir / site[key]).resolve()
    site["description"] = site["description"] or site["title"]
    site["author"] = site["author"] or site["title"]
    site_config = SiteConfig(**site)
    host = urlsplit(site_config.url).hostname or "localhost"

    email = values["email"]
    templates_dir = (base_dir / email["templates_dir"]).resolve()
    if not templates_dir.is_dir():
        if "templates_dir" in raw.get("email", {}):
            raise ConfigError("email.templates_dir", f"folder {templates_dir} does not exist")
        templates_dir = None
    delivery = values["delivery"]
    smtp = SMTPConfig(**values["delivery.smtp"])
    if smtp.ssl and smtp.starttls and "starttls" in raw.get("delivery", {}).get("smtp", {}):
        raise ConfigError("delivery.smtp.starttls", "cannot be combined with ssl = true", True)
    if smtp.ssl:  # implicit TLS already encrypts; STARTTLS would be refused by the server
        smtp = SMTPConfig(**{**values["delivery.smtp"], "starttls": False})
    store_url = values["store"]["url"]
    if store_url.startswith("sqlite:///") and store_url != "sqlite:///:memory:":
        db = Path(store_url.removeprefix("sqlite:///"))
        store_url = f"sqlite:///{(base_dir / db).resolve()}"
    return Config(
        path=path or base_dir / "config.toml",
        site=site_config,
        feeds=FeedsConfig(**values["feeds"]),
        email=EmailConfig(
            templates_dir=templates_dir,
            sender_line=email["sender_line"] or site_config.title,
            sender=email["from"] or f"{site_config.title} <nieuwsbrief@{host}>",
            reply_to=email["reply_to"],
            unsubscribe_mailto=email["unsubscribe_mailto"] or f"unsubscribe@{host}",
        ),
        delivery=DeliveryConfig(
            transport=delivery["transport"],
            outbox_dir=(base_dir / delivery["outbox_dir"]).resolve(),
            batch_size=delivery["batch_size"],
            max_attempts=delivery["max_attempts"],
            retry_backoff=delivery["retry_backoff"],
            pause_after_failures=delivery["pause_after_failures"],
            smtp=smtp,
        ),
        store_url=store_url,
        public_url=values["web"]["public_url"] or site_config.url,
        web=WebConfig(**{k: v for k, v in values["web"].items() if k != "public_url"}),
        misfire_grace=values["schedule"]["misfire_grace"],
        audiences=_audiences(raw.get("audiences", [])),
    )


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """The table at a dotted section name (`delivery.smtp`); {} when absent."""
    given: Any = raw
    for part in name.split("."):
        given = given.get(part, {})
        if not isinstance(given, dict):
            raise ConfigError(name, "must be a table ([" + name + "])", given)
    table: dict[str, Any] = given
    return table


def _section(
    given: dict[str, Any], name: str, settings: tuple[Setting, ...], subsections: set[str]
) -> dict[str, Any]:
    """Validated values of one table, defaults filled in; unknown keys are errors."""
    known = {s.key: s for s in settings if s.section == name}
    children = {sub.rsplit(".", 1)[1] for sub in subsections if sub.startswith(name + ".")}
    values: dict[str, Any] = {}
    for key in given:
        if key in children:
            continue
        if key not in known:
            hint = _closest(key, list(known) + sorted(children))
            raise ConfigError(
                f"{name}.{key}", "unknown key" + (f"; did you mean '{hint}'?" if hint else "")
            )
    for key, setting in known.items():
        path = f"{name}.{key}"
        if key in given:
            values[key] = setting.check(path, given[key])
        elif setting.default is _REQUIRED:
            raise ConfigError(path, "is required")
        else:
            values[key] = setting.check(path, setting.default)
    return values


def _audiences(raw: Any) -> tuple[AudienceConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError("audiences", "must be an array of tables ([[audiences]])", raw)
    audiences: list[AudienceConfig] = []
    for index, table in enumerate(raw):
        # Name the audience by its id in errors when it has a usable one.
        ident = table.get("id")
        name = f"audiences.{ident}" if isinstance(ident, str) and _ID_RE.match(ident) else f"audiences[{index}]"
        values = _section(table, name, _rename(name), set())
        if any(a.id == values["id"] for a in audiences):
            raise ConfigError(f"{name}.id", "is used by two audiences", values["id"])
        audiences.append(AudienceConfig(**values))
    return tuple(audiences)


@functools.lru_cache(maxsize=64)
def _rename(section: str) -> tuple[Setting, ...]:
    return tuple(replace(s, section=section) for s in AUDIENCE_SETTINGS)


def _closest(key: str, known: list[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, known, n=1)
    return match[0] if match else None
