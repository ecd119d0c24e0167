"""The editors' preview: each audience's current issue as it would be mailed now.

If the issue of the current period already exists with its rendered digest (being sent, or
prepared), that stored version is shown, since it is exactly what goes out. Otherwise the issue
is planned as `newsletter send` would plan it at this moment (articles since the previous sent or
skipped issue, else the audience's look-back window) and rendered once. The per-subscriber
values are the same sample values `newsletter digest` uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from ..campaign import SampleLinks, digest_settings, period_of, render_issue
from ..collector import INDEX_FILE, Catalog, content_settings, scan
from ..config import AudienceConfig, Config
from ..errors import NewsletterError
from ..model import Article, RenderedBody
from ..schedules import parse_schedule
from ..sending import plan_next, stored_digest
from ..store import Store


@dataclass(frozen=True)
class AudiencePreview:
    audience: AudienceConfig
    period: str
    recipients: int
    next_send: datetime | None  # None: no schedule (sent by hand)
    subject: str = ""
    preheader: str = ""
    html: str = ""  # personalized with the sample values
    text: str = ""
    articles: int = 0
    issue_status: str = ""  # the stored issue's status, "" when planned now
    problem: str = ""  # "empty", or why it could not be rendered

    @property
    def ready(self) -> bool:
        return not self.problem


def load_articles(config: Config) -> Catalog:
    """The content, read with the build's index. In this process (no worker processes: forking
    a threaded server is unsafe); the index makes it cheap after a build."""
    return scan(config.site.content_dir, content_settings(config), config.site.cache_dir / INDEX_FILE)


def next_send(config: Config, audience: AudienceConfig, now: datetime) -> datetime | None:
    """The next scheduled send after now, in the site timezone; None without a schedule."""
    if not audience.schedule:
        return None
    from ..schedule import fire_times

    return next(fire_times(parse_schedule(audience.schedule), config.site.tz, now), None)


def audience_preview(
    config: Config,
    store: Store,
    audience: AudienceConfig,
    articles: list[Article],
    body: Callable[[Article], RenderedBody],
    now: datetime,
) -> AudiencePreview:
    period = period_of(config, audience, now)
    base = AudiencePreview(
        audience=audience,
        period=period,
        recipients=store.count_by_audience().get(audience.id, 0),
        next_send=next_send(config, audience, now),
    )
    issue = store.get_issue(audience.id, period)
    if issue is not None and issue.html:
        digest = stored_digest(config, issue)
        status = issue.status
    else:
        plan = plan_next(store, audience, articles, now)
        if plan.empty:
            return replace(base, problem="empty")
        try:
            digest = render_issue(plan, body, digest_settings(config))
        except NewsletterError as exc:
            return replace(base, problem=str(exc))
        status = ""
    html, text = SampleLinks.for_issue(config, audience.id, period).personalize(digest)
    return AudiencePreview(
        audience=audience,
        period=period,
        recipients=base.recipients,
        next_send=base.next_send,
        subject=digest.subject,
        preheader=digest.preheader,
        html=html,
        text=text,
        articles=len(digest.article_ids),
        issue_status=status,
    )

