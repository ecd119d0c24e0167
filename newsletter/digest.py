"""Pure: one audience + its articles -> a `RenderedDigest` (subject, preheader, HTML, text).

Jinja2 renders the templates, premailer inlines the CSS ONCE per call; per-subscriber values are
placeholders (`PLACEHOLDERS`) that `personalize` substitutes afterwards with a plain string
replacement, so a 50 000-subscriber send never re-renders or re-inlines (standards PM-04, PM-08).
No clock, no network, no database: the same inputs give byte-identical output.

Templates (`newsletter/templates/email/`): `<name>.html` (autoescaped), `<name>.txt` (not
escaped) and `digest.css` (included into the html head). A site folder
(`DigestSettings.templates_dir`) overrides them file by file; a site template can also extend the
package one as `default/<file>` and override only its blocks.

Template context (html and txt alike):
    site_title, site_url, sender_line, lang, t (the fixed strings in the site language),
    audience (AudienceSpec), subject, preheader, date_range ("23 – 29 november 2026"), week, year,
    count, lead (DigestItem), others (list of DigestItem), items (all DigestItems),
    placeholders (name, unsubscribe_url, view_url tokens), period_start, period_end (local).
"""

from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
)
from markupsafe import Markup

from .errors import RenderError
from .model import Article, Cover, RenderedBody

PACKAGE_TEMPLATES = Path(__file__).parent / "templates" / "email"

# Tokens that premailer, lxml's serializer (which %-escapes href/src but keeps "%"), HTML
# escaping and URL handling all leave byte-for-byte unchanged.
PLACEHOLDERS: Mapping[str, str] = {
    "name": "%%NAME%%",
    "unsubscribe_url": "%%UNSUBSCRIBE_URL%%",
    "view_url": "%%VIEW_URL%%",
    "preferences_url": "%%PREFERENCES_URL%%",
}
_PLACEHOLDER_RE = re.compile("|".join(re.escape(token) for token in PLACEHOLDERS.values()))

PREHEADER_LIMIT = 140
CONTENT_WIDTH = 568  # the 600 px container minus 2 x 16 px padding
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_IMG_TAG = re.compile(r'<img\b(?:[^>"]|"[^"]*")*>', re.I)  # nh3 double-quotes every attribute


def language_of(site_language: str) -> str:
    """The language of the built-in texts for a site language tag: "en" for en, en-GB, ...;
    otherwise "nl"."""
    return "en" if site_language.lower().startswith("en") else "nl"


@dataclass(frozen=True)
class DigestSettings:
    """What rendering needs to know about the site."""

    site_title: str
    site_url: str  # no trailing slash, https
    language: str = "nl"  # "nl" (default) or "en"; any "en-*" gets the English strings
    timezone: str = "Europe/Amsterdam"
    sender_line: str = ""  # postal/sender line in the footer
    templates_dir: Path | None = None  # overrides the package templates file by file


@dataclass(frozen=True)
class AudienceSpec:
    """One audience's mailing: its texts and template."""

    id: str
    title: str  # e.g. "Voor beslissers"
    description: str = ""  # intro under the header
    highlight_section: str = ""  # a `## ` heading quoted under each article that has it
    subject: str = "{{ audience.title }} – week {{ week }}"  # a Jinja template string
    preheader: str = ""  # a Jinja template string; empty: the lead article's summary
    template: str = "digest"  # <template>.html and <template>.txt
    utm: Mapping[str, str] = field(default_factory=dict)  # appended to article links


@dataclass(frozen=True)
class RenderedDigest:
    """One audience's issue, inlined once; per-subscriber values are still placeholders."""

    audience_id: str
    subject: str
    preheader: str
    html: str  # premailer-inlined; contains PLACEHOLDERS
    text: str  # text/plain part; contains PLACEHOLDERS
    article_ids: tuple[str, ...]
    default_name: str = ""  # what `personalize` greets a subscriber without a name with


@dataclass(frozen=True)
class Highlight:
    """The quoted audience section of one article."""

    heading: str
    html: Markup  # sanitized article HTML, passed as data (never compiled as a template)
    text: str


@dataclass(frozen=True)
class DigestItem:
    """One article as the templates see it."""

    article: Article
    title: str
    url: str  # the permalink with the audience's UTM parameters
    summary: str
    tags: tuple[str, ...]
    source: str
    date_label: str  # "dinsdag 24 november"
    cover: Cover | None  # only an https cover; None otherwise
    highlight: Highlight | None


_STRINGS: dict[str, dict[str, str]] = {
    "nl": {
        "greeting": "Hallo",
        "default_name": "lezer",
        "lead_label": "Uitgelicht",
        "more_news": "Meer nieuws",
        "read_more": "Lees verder",
        "source": "Bron",
        "week": "week",
        "article_one": "1 artikel",
        "articles_many": "{count} artikelen",
        "view_in_browser": "Bekijk deze e-mail in je browser",
        "view_short": "Bekijk online",
        "unsubscribe": "Uitschrijven",
        "preferences": "Je voorkeuren",
        "why": "Je ontvangt deze e-mail omdat je bent ingeschreven op {audience} van {site}.",
        "unsubscribe_note": "Geen interesse meer? Je kunt je met één klik uitschrijven.",
        "to_site": "Naar de website",
    },
    "en": {
        "greeting": "Hello",
        "default_name": "reader",
        "lead_label": "Featured",
        "more_news": "More news",
        "read_more": "Read more",
        "source": "Source",
        "week": "week",
        "article_one": "1 article",
        "articles_many": "{count} articles",
        "view_in_browser": "View this e-mail in your browser",
        "view_short": "View online",
        "unsubscribe": "Unsubscribe",
        "preferences": "Preferences",
        "why": "You receive this e-mail because you subscribed to {audience} from {site}.",
        "unsubscribe_note": "No longer interested? You can unsubscribe with one click.",
        "to_site": "Visit the website",
    },
}


def default_name_for(site_language: str) -> str:
    """Whom a digest greets when the subscriber gave no name ("lezer", "reader")."""
    return _STRINGS[language_of(site_language)]["default_name"]


def render_digest(
    audience: AudienceSpec,
    articles: Sequence[Article],
    body: Callable[[Article], RenderedBody],
    period_start: datetime,
    period_end: datetime,
    settings: DigestSettings,
) -> RenderedDigest:
    """Render one audience's digest: the first article is the lead, the order is kept.

    Args:
        audience: texts, template and UTM parameters of the mailing.
        articles: the selected articles, lead first.
        body: the rendered body of an article (for the highlight section).
        period_start, period_end: the period the issue covers (aware). An end at exactly
            midnight (local) is exclusive: the last day shown is the day before.
        settings: site title, URL, language, timezone, sender line, template folder.

    Raises:
        RenderError: no articles, a bad setting, or a template that fails (named in the message).
    """
    if not articles:
        raise RenderError("no articles")
    for name, moment in (("period_start", period_start), ("period_end", period_end)):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware")
    if period_end < period_start:
        raise RenderError(f"period_end {period_end.isoformat()} is before period_start")
    if not _TEMPLATE_NAME.match(audience.template):
        raise RenderError(
            f"audience '{audience.id}': template must be a plain name like 'digest'"
            f" (got {audience.template!r})"
        )
    if not settings.site_url.startswith("https://") or settings.site_url.endswith("/"):
        raise RenderError(
            f"site_url must be an https URL without a trailing slash (got {settings.site_url!r})"
        )
    tz = _zone(settings.timezone)
    locale = _locale(settings.language)
    strings = _STRINGS[language_of(settings.language)]

    items = [_item(a, body, audience, tz, locale) for a in articles]
    base, subject, preheader = _headline(audience, articles, period_start, period_end, settings)
    html_env, text_env = _environments(_templates_key(settings.templates_dir))

    context: dict[str, Any] = {
        **base,
        "lead": items[0],
        "others": items[1:],
        "items": items,
        "subject": subject,
        "preheader": preheader,
        "site_url": settings.site_url,
        "sender_line": settings.sender_line,
        "lang": settings.language.replace("_", "-"),
        "t": strings,
        "count_label": (
            strings["article_one"]
            if len(items) == 1
            else strings["articles_many"].format(count=len(items))
        ),
        "placeholders": PLACEHOLDERS,
        "period_start": period_start.astimezone(tz),
        "period_end": period_end.astimezone(tz),
        "content_width": CONTENT_WIDTH,
    }
    html_name = f"{audience.template}.html"
    text_name = f"{audience.template}.txt"
    raw_html = _render(html_env.get_template, html_name, context, html_name)
    text = _render(text_env.get_template, text_name, context, text_name)
    return RenderedDigest(
        audience_id=audience.id,
        subject=subject,
        preheader=preheader,
        html=inline_css(raw_html, html_name),
        text=_tidy_text(text),
        article_ids=tuple(a.id for a in articles),
        default_name=strings["default_name"],
    )


def subject_and_preheader(
    audience: AudienceSpec,
    articles: Sequence[Article],
    period_start: datetime,
    period_end: datetime,
    settings: DigestSettings,
) -> tuple[str, str]:
    """The subject and preheader `render_digest` would give, without rendering or inlining the
    body (cheap: for `newsletter plan`)."""
    if not articles:
        raise RenderError("no articles")
    _, subject, preheader = _headline(audience, articles, period_start, period_end, settings)
    return subject, preheader


def _headline(
    audience: AudienceSpec,
    articles: Sequence[Article],
    period_start: datetime,
    period_end: datetime,
    settings: DigestSettings,
) -> tuple[dict[str, Any], str, str]:
    """(the context the subject and preheader templates see, subject, preheader)."""
    tz = _zone(settings.timezone)
    locale = _locale(settings.language)
    first_day = period_start.astimezone(tz).date()
    last_day = _last_day(period_end.astimezone(tz), first_day)
    iso = last_day.isocalendar()
    date_range = format_date_range(first_day, last_day, locale)
    lead = articles[0]

    base: dict[str, Any] = {
        "audience": audience,
        "week": iso.week,
        "year": iso.year,
        "lead": lead,
        "count": len(articles),
        "date_range": date_range,
        "site_title": settings.site_title,
    }
    _, text_env = _environments(_templates_key(settings.templates_dir))
    subject = _one_line(
        _render(text_env.from_string, audience.subject, base, f"audience '{audience.id}' subject")
    )
    if not subject:
        raise RenderError(f"audience '{audience.id}' subject: renders as empty text")
    if audience.preheader:
        preheader = _one_line(
            _render(
                text_env.from_string,
                audience.preheader,
                {**base, "subject": subject},
                f"audience '{audience.id}' preheader",
            )
        )
    else:
        preheader = _defuse(_one_line(lead.summary or lead.title))
    preheader = _truncate(preheader, PREHEADER_LIMIT)

    return base, subject, preheader


def personalize(
    digest: RenderedDigest,
    *,
    name: str,
    unsubscribe_url: str,
    view_url: str,
    preferences_url: str | None = None,
) -> tuple[str, str]:
    """(html, text) for one subscriber: the placeholders replaced, nothing re-rendered.

    The values are HTML-escaped in the html part and raw in the text part. An empty name greets
    with `digest.default_name` ("lezer"). The replacement is one pass, so a value that itself
    looks like a placeholder is never substituted again. Without a preferences URL the
    preferences link goes to the unsubscribe page (which links to the preferences itself).
    """
    preferences_url = preferences_url or unsubscribe_url
    for label, url in (
        ("unsubscribe_url", unsubscribe_url),
        ("view_url", view_url),
        ("preferences_url", preferences_url),
    ):
        if urlsplit(url).scheme not in ("https", "http") or any(c in url for c in "\r\n\t "):
            raise ValueError(f"{label} must be an absolute http(s) URL, got {url!r}")
    shown = " ".join(name.split()) or digest.default_name
    raw = {
        PLACEHOLDERS["name"]: shown,
        PLACEHOLDERS["unsubscribe_url"]: unsubscribe_url,
        PLACEHOLDERS["view_url"]: view_url,
        PLACEHOLDERS["preferences_url"]: preferences_url,
    }
    escaped = {token: html.escape(value, quote=True) for token, value in raw.items()}
    html_part = _PLACEHOLDER_RE.sub(lambda m: escaped[m.group(0)], digest.html)
    text_part = _PLACEHOLDER_RE.sub(lambda m: raw[m.group(0)], digest.text)
    return html_part, text_part


def inline_css(document: str, name: str = "html") -> str:
    """Inline the `<style>` rules into style attributes, keeping the block for @media rules.

    No base_url (it would rewrite the placeholders, PM-03), no network (PM-01), `!important`
    kept for the media queries (PM-02).
    """
    from premailer import Premailer  # type: ignore[import-untyped]  # slow import: only here

    try:
        inlined = Premailer(
            document,
            allow_network=False,
            strip_important=False,
            keep_style_tags=True,
            remove_classes=False,
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
            # premailer copies CSS width/height into attributes and, for inline styles, even
            # overwrites them: `width:100%` would replace the container's width="600".
            disable_basic_attributes=["width", "height"],
        ).transform()
    except Exception as exc:  # premailer/cssutils raise assorted types on bad CSS
        raise RenderError(f"{name}: CSS inlining failed: {type(exc).__name__}: {exc}") from exc
    return str(inlined)


def format_date_range(first: date, last: date, locale: Locale | str = "nl") -> str:
    """A date range as a Dutch (or other locale's) reader writes it, month names from Babel.

    "23 – 29 november 2026", "30 november – 6 december 2026",
    "28 december 2026 – 3 januari 2027"; a single day: "23 november 2026".
    """
    if first > last:
        first, last = last, first
    end = format_date(last, "d MMMM y", locale=locale)
    if first == last:
        return end
    if (first.year, first.month) == (last.year, last.month):
        start = format_date(first, "d", locale=locale)
    elif first.year == last.year:
        start = format_date(first, "d MMMM", locale=locale)
    else:
        start = format_date(first, "d MMMM y", locale=locale)
    return f"{start} – {end}"


def with_query(url: str, params: Mapping[str, str]) -> str:
    """The URL with params appended to its query (after ? or &), before any #fragment."""
    if not params:
        return url
    parts = urlsplit(url)
    extra = urlencode(list(params.items()), quote_via=quote)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


# --- helpers -----------------------------------------------------------------------------------
def _last_day(end: datetime, first_day: date) -> date:
    # A period [Mon 00:00, next Mon 00:00) covers Mon..Sun: an end at midnight is exclusive.
    day = end.date()
    if end.time() == datetime.min.time() and day > first_day:
        day -= timedelta(days=1)
    return day


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RenderError(f"unknown timezone {name!r}") from None


@functools.lru_cache(maxsize=8)
def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise RenderError(f"unknown language {language!r}") from None


def _item(
    article: Article,
    body: Callable[[Article], RenderedBody],
    audience: AudienceSpec,
    tz: ZoneInfo,
    locale: Locale,
) -> DigestItem:
    highlight = None
    if audience.highlight_section:
        section = body(article).section(audience.highlight_section)
        if section is not None and section.html.strip():
            fragment = _IMG_TAG.sub("", section.html)  # images need a width we do not know
            highlight = Highlight(
                heading=_defuse(section.heading),
                html=Markup(_defuse(fragment)),  # noqa: S704 - nh3-sanitized by render_body
                text=_defuse(section.text),
            )
    cover = article.cover
    if cover is not None:
        if cover.image.startswith("https://"):
            # A cover without alt text is described by the title: screen readers and clients
            # that block images show the alt (EM QA requires one on every image).
            alt = cover.alt.strip() or article.title
            cover = Cover(cover.image, _defuse(alt), _defuse(cover.caption))
        else:
            cover = None  # an http:// image is blocked or warned about by mail clients
    return DigestItem(
        article=article,
        title=_defuse(article.title),
        url=with_query(article.url, audience.utm),
        summary=_defuse(article.summary),
        tags=tuple(_defuse(tag) for tag in article.tags),
        source=_defuse(article.source),
        date_label=format_date(article.published.astimezone(tz), "EEEE d MMMM", locale=locale),
        cover=cover,
        highlight=highlight,
    )


def _defuse(text: str) -> str:
    """Break a placeholder token written in an article (a WORD JOINER after its first "%"), so
    `personalize` never puts a subscriber's data into article text."""
    return _PLACEHOLDER_RE.sub(lambda m: m.group(0)[0] + "\u2060" + m.group(0)[1:], text)


def _templates_key(templates_dir: Path | None) -> str | None:
    if templates_dir is None:
        return None
    if not templates_dir.is_dir():
        raise RenderError(f"templates_dir {str(templates_dir)!r} is not a folder")
    return str(templates_dir.resolve())


@functools.lru_cache(maxsize=16)
def _environments(templates_dir: str | None) -> tuple[Environment, Environment]:
    """(html env, text env) over the site folder first, then the package templates."""
    package = FileSystemLoader(PACKAGE_TEMPLATES)
    loaders: list[BaseLoader] = [package, PrefixLoader({"default": package})]
    if templates_dir is not None:
        loaders.insert(0, FileSystemLoader(templates_dir))
    loader = ChoiceLoader(loaders)
    options: dict[str, Any] = {
        "loader": loader,
        "undefined": StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
    }
    # autoescape is forced, not chosen by file suffix (select_autoescape misses *.html.j2, JJ-02)
    return Environment(autoescape=True, **options), Environment(autoescape=False, **options)


def _render(
    load: Callable[[str], Template], source: str, context: Mapping[str, Any], label: str
) -> str:
    try:
        return load(source).render(context)
    except TemplateSyntaxError as exc:
        where = exc.name or exc.filename or label
        raise RenderError(f"{where}, line {exc.lineno}: syntax error: {exc.message}") from exc
    except TemplateNotFound as exc:
        raise RenderError(f"{label}: template {exc.name!r} not found") from exc
    except TemplateError as exc:  # UndefinedError and friends
        raise RenderError(f"{label}: {exc.message or type(exc).__name__}") from exc
    except Exception as exc:  # a site template doing arithmetic on text, etc.
        raise RenderError(f"{label}: {type(exc).__name__}: {exc}") from exc


def _one_line(text: str) -> str:
    """All whitespace runs (CR, LF, tabs, U+2028...) -> one space: safe for a mail header."""
    return " ".join(text.split())


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-–") + "…"


def _tidy_text(text: str) -> str:
    """No trailing spaces, at most one blank line in a row, one final newline."""
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


__all__ = [
    "PLACEHOLDERS",
    "AudienceSpec",
    "DigestItem",
    "DigestSettings",
    "Highlight",
    "RenderedDigest",
    "format_date_range",
    "inline_css",
    "personalize",
    "render_digest",
    "subject_and_preheader",
    "with_query",
]
