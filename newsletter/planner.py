"""What goes out when: per audience the next fire times, the next issue's period, articles,
subject, recipients and whether it would be skipped; plus past runs that were missed. Changes no
state (`newsletter plan`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import takewhile
from typing import Any

from .campaign import audience_spec, digest_settings, plan_issue
from .config import AudienceConfig, Config
from .digest import subject_and_preheader
from .model import Article, Issue
from .schedules import parse_schedule


@dataclass(frozen=True)
class PlannedArticle:
    id: str
    title: str
    published: datetime


@dataclass(frozen=True)
class PastRun:
    fire_time: datetime
    period: str
    state: str  # "due" (within grace: the scheduler sends it on start) or "missed" (send by hand)


@dataclass(frozen=True)
class AudiencePlan:
    audience: str
    title: str
    schedule: str  # "" when only sent by hand
    next_fires: tuple[datetime, ...]  # local (site timezone)
    period: str  # of the next fire
    window_start: datetime | None
    articles: tuple[PlannedArticle, ...]
    subject: str
    preheader: str
    recipients: int
    outcome: str  # "send", "skip (empty)", "fail (empty, skip_if_empty = false)", "not scheduled"
    past: tuple[PastRun, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["next_fires"] = [
            {"local": t.isoformat(), "utc": t.astimezone(UTC).isoformat()} for t in self.next_fires
        ]
        data["window_start"] = self.window_start.isoformat() if self.window_start else None
        for article in data["articles"]:
            article["published"] = article["published"].isoformat()
        for run in data["past"]:
            run["fire_time"] = run["fire_time"].isoformat()
        return data


def plan_audience(
    config: Config,
    audience: AudienceConfig,
    articles: Sequence[Article],
    at: datetime,
    recipients: int,
    issues: Sequence[Issue],
    count: int = 3,
) -> AudiencePlan:
    """The plan of one audience as of `at`; `issues` are its issues in the store (any status)."""
    if not audience.schedule:
        return AudiencePlan(
            audience.id, audience.title, "", (), "", None, (), "", "", recipients, "not scheduled"
        )
    from .schedule import fire_times, last_fire_time

    tz = config.site.tz
    schedule = parse_schedule(audience.schedule)
    upcoming: list[datetime] = []
    for fire in fire_times(schedule, tz, at):
        upcoming.append(fire)
        if len(upcoming) == count:
            break
    nxt = upcoming[0]
    finished = [i for i in issues if i.status in ("sent", "skipped")]
    since = max((i.window_end for i in finished), default=None)
    plan = plan_issue(audience, articles, nxt, since)
    subject = preheader = ""
    existing = next((i for i in issues if i.period == schedule.period_key(nxt)), None)
    if existing is not None and existing.status != "draft":
        subject, preheader = existing.subject, existing.preheader
        outcome = f"already {existing.status}" if existing.status != "sending" else "being sent"
    elif plan.articles:
        subject, preheader = subject_and_preheader(
            audience_spec(audience), plan.articles, plan.period_start, plan.period_end,
            digest_settings(config),
        )
        outcome = "send"
    else:
        outcome = "skip (empty)" if audience.skip_if_empty else "fail (empty, skip_if_empty = false)"
    known = {i.period for i in issues}
    past: list[PastRun] = []
    if since is not None:
        candidates = list(takewhile(lambda fire: fire <= at, fire_times(schedule, tz, since)))
    else:  # a new audience: only its latest fire can still be due
        latest = last_fire_time(schedule, tz, at, config.misfire_grace)
        candidates = [latest] if latest else []
    for fire in candidates:
        period = schedule.period_key(fire)
        if period in known or any(p.period == period for p in past):
            continue
        state = "due" if at - fire <= config.misfire_grace else "missed"
        past.append(PastRun(fire, period, state))
    return AudiencePlan(
        audience=audience.id,
        title=audience.title,
        schedule=audience.schedule,
        next_fires=tuple(upcoming),
        period=schedule.period_key(nxt),
        window_start=plan.period_start.astimezone(tz),
        articles=tuple(PlannedArticle(a.id, a.title, a.published.astimezone(tz)) for a in plan.articles),
        subject=subject,
        preheader=preheader,
        recipients=recipients,
        outcome=outcome,
        past=tuple(past),
    )


def format_plan(plan: AudiencePlan, show: Callable[[datetime], str]) -> list[str]:
    """Readable lines for one audience."""
    lines = [f"{plan.audience} ({plan.title})"]
    if not plan.schedule:
        lines.append(f"  not scheduled (send by hand); {plan.recipients} active subscriber(s)")
        return lines
    lines.append(f"  schedule: {plan.schedule}")
    for fire in plan.next_fires:
        lines.append(f"  next: {show(fire)}  ({fire.astimezone(UTC):%Y-%m-%d %H:%M} UTC)")
    lines.append(f"  period {plan.period}: {plan.outcome}, {plan.recipients} active subscriber(s)")
    if plan.subject:
        lines.append(f"  subject: {plan.subject}")
    for article in plan.articles:
        lines.append(f"    {show(article.published)}  {article.title}")
    for run in plan.past:
        hint = "the scheduler sends it on start" if run.state == "due" else (
            f"beyond the grace time; send by hand: newsletter send {plan.audience} --period {run.period}"
        )
        lines.append(f"  {run.state}: {run.period} (scheduled {show(run.fire_time)}): {hint}")
    return lines
