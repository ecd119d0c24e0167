"""One audience's issue: which articles, which period, the rendered digest.

`plan_issue` is pure (articles and `now` in, a plan out); `render_issue` renders the plan once.
Sending (store + transport) builds on these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from . import links
from .collector import select
from .config import AudienceConfig, Config
from .digest import AudienceSpec, DigestSettings, RenderedDigest, personalize, render_digest
from .errors import RenderError
from .message import MessageTemplate, make_message_id
from .model import Article, RenderedBody
from .output import write_atomic
from .schedules import parse_schedule


def digest_settings(config: Config) -> DigestSettings:
    site_templates = config.email.templates_dir
    email_templates = site_templates / "email" if site_templates else None
    return DigestSettings(
        site_title=config.site.title,
        site_url=config.site.url,
        language=config.site.language,
        timezone=config.site.timezone,
        sender_line=config.email.sender_line,
        templates_dir=email_templates if email_templates and email_templates.is_dir() else None,
    )


def audience_spec(audience: AudienceConfig) -> AudienceSpec:
    return AudienceSpec(
        id=audience.id,
        title=audience.title,
        description=audience.description,
        highlight_section=audience.highlight_section,
        subject=audience.subject,
        preheader=audience.preheader,
        template=audience.template,
        utm=dict(audience.utm),
    )


@dataclass(frozen=True)
class IssuePlan:
    """What one issue of an audience would contain."""

    audience: AudienceConfig
    period_start: datetime  # exclusive: articles published after it
    period_end: datetime  # inclusive
    articles: tuple[Article, ...]  # lead first (newest), at most audience.max_items

    @property
    def empty(self) -> bool:
        return not self.articles


def plan_issue(
    audience: AudienceConfig,
    articles: Sequence[Article],
    end: datetime,
    since: datetime | None = None,
) -> IssuePlan:
    """The articles of an issue that closes at `end`: published after `since` (the end of the
    previous issue) or, for a first issue, within the audience's look-back window."""
    start = since if since is not None else end - audience.window
    chosen = select(
        articles,
        end,
        labels=audience.labels,
        tags=audience.tags,
        tag_mode="all" if audience.tag_mode == "all" else "any",
        since=start,
        limit=audience.max_items,
    )
    return IssuePlan(audience, start, end, tuple(chosen))


def render_issue(
    plan: IssuePlan, body: Callable[[Article], RenderedBody], settings: DigestSettings
) -> RenderedDigest:
    """Render (and inline, once) the plan's digest.

    Raises:
        RenderError: the plan is empty, or a template fails.
    """
    if plan.empty:
        raise RenderError(
            f"audience '{plan.audience.id}': no articles published between "
            f"{plan.period_start.isoformat()} and {plan.period_end.isoformat()}"
        )
    return render_digest(
        audience_spec(plan.audience),
        plan.articles,
        body,
        plan.period_start,
        plan.period_end,
        settings,
    )


SAMPLE_NAME = "Voorbeeld Lezer"
SAMPLE_EMAIL = "voorbeeld.lezer@example.nl"
SAMPLE_TOKEN = "VOORBEELD"  # a preview is not mailed: the links show their shape, not a real token


def message_template(
    config: Config, audience: AudienceConfig, digest: RenderedDigest, subject_prefix: str = ""
) -> MessageTemplate:
    """The issue's pre-encoded message (headers and both parts), built once per issue."""
    return MessageTemplate.build(
        digest,
        sender=config.email.sender,
        reply_to=config.email.reply_to or None,
        list_id=links.list_id(audience.id, site_host(config)),
        list_name=f"{config.site.title}: {audience.title}",
        subject_prefix=subject_prefix,
    )


def period_of(config: Config, audience: AudienceConfig, moment: datetime) -> str:
    """The period key of the issue that `moment` (local time) falls in: by the audience's
    schedule (ISO week, day or month); an audience without a schedule is weekly."""
    schedule = parse_schedule(audience.schedule or "mon 00:00")
    return schedule.period_key(moment.astimezone(config.site.tz))


def site_host(config: Config) -> str:
    return urlsplit(config.site.url).hostname or "localhost"


@dataclass(frozen=True)
class SampleLinks:
    """The per-subscriber links of a preview: their real shapes, with a sample token."""

    unsubscribe: str
    view: str
    preferences: str

    @classmethod
    def for_issue(cls, config: Config, audience_id: str, period: str) -> SampleLinks:
        return cls(
            unsubscribe=links.unsubscribe_url(config.public_url, SAMPLE_TOKEN),
            view=links.archive_url(config.site.url, audience_id, period),
            preferences=links.preferences_url(config.public_url, SAMPLE_TOKEN),
        )

    def personalize(self, digest: RenderedDigest) -> tuple[str, str]:
        """(html, text) as the sample subscriber gets them."""
        return personalize(
            digest, name=SAMPLE_NAME, unsubscribe_url=self.unsubscribe, view_url=self.view,
            preferences_url=self.preferences,
        )


def write_preview(
    config: Config, audience: AudienceConfig, digest: RenderedDigest, folder: Path, now: datetime
) -> list[Path]:
    """digest.html, digest.txt and digest.eml of one audience as a sample subscriber gets them,
    written atomically."""
    sample = SampleLinks.for_issue(config, audience.id, period_of(config, audience, now))
    html, text = sample.personalize(digest)
    eml = message_template(config, audience, digest).compose(
        to_email=SAMPLE_EMAIL,
        to_name=SAMPLE_NAME,
        message_id=make_message_id(0, 0, site_host(config)),
        date=now,
        unsubscribe_url=sample.unsubscribe,
        unsubscribe_mailto=links.unsubscribe_mailto(config.email.unsubscribe_mailto, SAMPLE_TOKEN),
        view_url=sample.view,
        preferences_url=sample.preferences,
    )
    files = {
        "digest.html": html.encode("utf-8"),
        "digest.txt": text.encode("utf-8"),
        "digest.eml": eml,
    }
    paths = []
    for name, data in files.items():
        path = folder / name
        write_atomic(path, data)
        paths.append(path)
    return paths
