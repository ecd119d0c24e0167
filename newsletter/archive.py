"""The public archive of sent issues: `archive/<audience>/<period>.html` (the view-in-browser
target), an index page and an RSS feed per audience, under the site's output folder.

An archived issue is the mailed HTML with the per-subscriber placeholders filled with neutral
values: no name, no personal unsubscribe token. Pure rendering (`archive_files`) and one write
step (`write_archive`); files that did not change are not rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from babel.dates import format_date
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from . import links
from .config import AudienceConfig, Config
from .digest import PACKAGE_TEMPLATES, default_name_for, language_of, personalize
from .model import Issue
from .output import safe_target, write_atomic
from .store import Store

_STRINGS = {
    "nl": {"archive": "Archief", "subscribe": "Inschrijven", "empty": "Nog geen verzonden nummers.",
           "one": "1 artikel", "many": "{n} artikelen"},
    "en": {"archive": "Archive", "subscribe": "Subscribe", "empty": "No issues sent yet.",
           "one": "1 article", "many": "{n} articles"},
}


def archive_files(config: Config, audience: AudienceConfig, issues: Sequence[Issue]) -> dict[str, bytes]:
    """Relative path -> bytes for the audience's sent issues (newest first in index and feed)."""
    from .digest import RenderedDigest
    from .feeds import render_archive_feed

    language = language_of(config.site.language)
    strings = _STRINGS[language]
    sent = sorted((i for i in issues if i.status == "sent"), key=lambda i: (i.window_end, i.period), reverse=True)
    folder = f"archive/{audience.id}"
    home = f"{config.public_url}/"
    files: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    for issue in sent:
        url = links.archive_url(config.site.url, audience.id, issue.period)
        digest = RenderedDigest(issue.audience_id, issue.subject, issue.preheader, issue.html, issue.text,
                                issue.article_ids, default_name=default_name_for(config.site.language))
        page, _ = personalize(digest, name="", unsubscribe_url=home, view_url=url)
        files[f"{folder}/{issue.period}.html"] = page.encode("utf-8")
        count = len(issue.article_ids)
        sent_at = issue.finished_at or issue.window_end
        entries.append({
            "url": url,
            "period": issue.period,
            "subject": issue.subject,
            "preheader": issue.preheader,
            "sent_at": sent_at,
            "date_label": format_date(sent_at.astimezone(config.site.tz), "d MMMM y", locale=language),
            "count_label": strings["one"] if count == 1 else strings["many"].format(n=count),
        })
    feed_url = f"{config.site.url}/{folder}/index.xml"
    env = Environment(loader=FileSystemLoader(PACKAGE_TEMPLATES.parent / "archive"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    files[f"{folder}/index.html"] = env.get_template("index.html").render(
        lang=config.site.language, t=strings, audience=audience, site_title=config.site.title,
        site_url=config.site.url, feed_url=feed_url, subscribe_url=home, issues=entries,
    ).encode("utf-8")
    files[f"{folder}/index.xml"] = render_archive_feed(
        title=f"{config.site.title}: {audience.title}",
        description=audience.description or audience.title,
        language=config.site.language,
        home_url=f"{config.site.url}/{folder}/",
        feed_url=feed_url,
        entries=[(e["url"], e["subject"], e["preheader"], e["sent_at"]) for e in entries],
        updated=max((e["sent_at"] for e in entries), default=datetime(2000, 1, 1).astimezone(config.site.tz)),
    )
    return files


def write_archive(config: Config, store: Store, audience_id: str) -> list[str]:
    """(Re)write one audience's archive; returns the paths that changed."""
    audience = config.audience(audience_id)
    changed = []
    for rel, data in archive_files(config, audience, store.list_issues(audience_id)).items():
        target = safe_target(config.site.output_dir, rel)
        if target.exists() and target.read_bytes() == data:
            continue
        write_atomic(target, data)
        changed.append(rel)
    return changed
