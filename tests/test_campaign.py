"""campaign.py: which articles an issue holds, and rendering it from config."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import AMSTERDAM, NOW
from test_digest import article

from newsletter.campaign import digest_settings, plan_issue, render_issue
from newsletter.config import AudienceConfig, Config
from newsletter.errors import RenderError
from newsletter.model import Article


def at(day: int, hour: int = 10, label: str = "BESLISSER", tags: tuple[str, ...] = ()) -> Article:
    when = datetime(2026, 11, day, hour, tzinfo=AMSTERDAM)
    return article(
        f"2026/11/{label.lower()}-{day}-{hour}.md",
        title=f"{label} {day} {hour}",
        date=when.isoformat(),
        label=label,
        tags=list(tags),
    ).article


AUDIENCE = AudienceConfig(id="beslissers", title="Voor beslissers", labels=("BESLISSER",))


def test_first_issue_uses_the_window_and_is_newest_first() -> None:
    articles = [at(20), at(22), at(25), at(27), at(27, label="BOUWER")]
    plan = plan_issue(AUDIENCE, articles, NOW)
    assert plan.period_start == NOW - timedelta(days=7)
    assert [a.title for a in plan.articles] == ["BESLISSER 27 10", "BESLISSER 25 10", "BESLISSER 22 10"]


def test_consecutive_issues_neither_miss_nor_repeat() -> None:
    """Each issue takes (previous end, this end]: an article exactly at a boundary goes in the
    earlier issue only."""
    boundary = datetime(2026, 11, 23, 8, tzinfo=AMSTERDAM)
    articles = [at(day, hour) for day in range(16, 29) for hour in (7, 8, 9)]
    audience = AudienceConfig(id="b", title="B", labels=("BESLISSER",), max_items=100)
    first = plan_issue(audience, articles, boundary)
    second = plan_issue(audience, articles, boundary + timedelta(days=7), since=first.period_end)
    ids_first = {a.id for a in first.articles}
    ids_second = {a.id for a in second.articles}
    assert not ids_first & ids_second
    assert "BESLISSER 23 8" in {a.title for a in first.articles}
    covered = {a.id for a in articles if first.period_start < a.published <= second.period_end}
    assert ids_first | ids_second == covered
    assert len(ids_second) == 16  # 23 Nov 09:00 and 24..28 Nov at 7, 8 and 9


def test_filters_and_limit() -> None:
    articles = [at(27, h, tags=("ai", "cloud") if h % 2 else ("ai",)) for h in range(8, 20)]
    audience = AudienceConfig(
        id="cloud", title="Cloud", labels=("beslisser",), tags=("AI", "cloud"), tag_mode="all", max_items=3
    )
    plan = plan_issue(audience, articles, NOW)
    assert [a.title for a in plan.articles] == ["BESLISSER 27 19", "BESLISSER 27 17", "BESLISSER 27 15"]


def test_drafts_and_future_articles_never_go_out() -> None:
    future = article("2026/11/later.md", title="Later", date="2026-11-28T12:00:00+01:00", label="BESLISSER").article
    draft = article("2026/11/draft.md", title="Concept", draft=True, label="BESLISSER").article
    assert plan_issue(AUDIENCE, [future, draft], NOW).empty


def test_an_empty_plan_is_a_render_error(sample_config: Config) -> None:
    plan = plan_issue(AUDIENCE, [], NOW)
    with pytest.raises(RenderError, match="audience 'beslissers': no articles published between"):
        render_issue(plan, lambda a: pytest.fail("no body needed"), digest_settings(sample_config))


def test_sample_config_renders_each_audience(sample_config: Config, tmp_path: Path) -> None:
    from newsletter.collector import load_catalog

    catalog = load_catalog(sample_config)
    for audience in sample_config.audiences:
        plan = plan_issue(audience, catalog.articles, NOW)
        digest = render_issue(plan, catalog.rendered, digest_settings(sample_config))
        assert digest.article_ids == tuple(a.id for a in plan.articles)
        assert len(digest.subject) <= 78
    beslissers = render_issue(
        plan_issue(sample_config.audience("beslissers"), catalog.articles, NOW),
        catalog.rendered,
        digest_settings(sample_config),
    )
    assert "Wat kun je hier morgen mee?" in beslissers.html
    assert "utm_campaign=beslissers" in beslissers.html
    assert "Postbus 1234" in beslissers.html and "Postbus 1234" in beslissers.text


def test_site_templates_override_file_by_file(sample_config: Config) -> None:
    from dataclasses import replace

    from newsletter.collector import load_catalog

    assert sample_config.email.templates_dir is not None
    email = sample_config.email.templates_dir / "email"
    email.mkdir()
    (email / "digest.txt").write_text("EIGEN TEKST {{ lead.title }}\n%%UNSUBSCRIBE_URL%%\n")
    catalog = load_catalog(sample_config)
    plan = plan_issue(sample_config.audience("beslissers"), catalog.articles, NOW)
    digest = render_issue(plan, catalog.rendered, digest_settings(sample_config))
    assert digest.text.startswith("EIGEN TEKST ")
    assert "<table" in digest.html  # the html template still comes from the package
    config = replace(sample_config, email=replace(sample_config.email, templates_dir=None))
    assert not render_issue(plan, catalog.rendered, digest_settings(config)).text.startswith("EIGEN")
