"""archive.py: sent issues published without personal data, with an index and an RSS feed."""

from __future__ import annotations

from datetime import datetime, timedelta

import feedparser
import lxml.html
from conftest import AMSTERDAM

from newsletter.archive import archive_files, write_archive
from newsletter.config import Config
from newsletter.digest import PLACEHOLDERS
from newsletter.store import Store

HTML = (
    "<!DOCTYPE html><html lang='nl'><body><p>Hallo %%NAME%%,</p>"
    "<a href='%%VIEW_URL%%'>online</a> <a href='%%UNSUBSCRIBE_URL%%'>uitschrijven</a></body></html>"
)


def sent_issue(store: Store, period: str, end: datetime, subject: str) -> None:
    issue, _ = store.create_issue("beslissers", period, end - timedelta(days=7), end, end)
    store.save_rendered(issue.id, subject, f"Preheader {period}", HTML, "tekst", ["a", "b"])
    store.set_issue_status(issue.id, "sending", end)
    store.set_issue_status(issue.id, "sent", end + timedelta(minutes=5))


def test_archive_pages_index_and_feed(sample_config: Config) -> None:
    store = Store.open(sample_config.store_url)
    sent_issue(store, "2026-W48", datetime(2026, 11, 23, 8, tzinfo=AMSTERDAM), "Week 48 & meer")
    sent_issue(store, "2026-W49", datetime(2026, 11, 30, 8, tzinfo=AMSTERDAM), "Week 49")
    draft, _ = store.create_issue("beslissers", "2026-W50", datetime(2026, 11, 30, tzinfo=AMSTERDAM),
                                  datetime(2026, 12, 7, tzinfo=AMSTERDAM), datetime(2026, 12, 7, tzinfo=AMSTERDAM))
    changed = write_archive(sample_config, store, "beslissers")
    assert sorted(changed) == [
        "archive/beslissers/2026-W48.html", "archive/beslissers/2026-W49.html",
        "archive/beslissers/index.html", "archive/beslissers/index.xml",
    ]
    assert write_archive(sample_config, store, "beslissers") == []  # unchanged files are kept
    folder = sample_config.site.output_dir / "archive" / "beslissers"
    page = (folder / "2026-W49.html").read_text(encoding="utf-8")
    assert not any(token in page for token in PLACEHOLDERS.values())
    assert "Hallo lezer," in page  # the neutral greeting, no subscriber's name
    assert "https://ai-nieuws.example.nl/archive/beslissers/2026-W49.html" in page
    index = lxml.html.fromstring((folder / "index.html").read_bytes())
    assert [a.text for a in index.xpath("//main//a")] == ["Week 49", "Week 48 & meer"]  # newest first
    assert index.xpath("//link[@rel='alternate']/@type") == ["application/rss+xml"]
    feed = feedparser.parse((folder / "index.xml").read_bytes())
    assert not feed.bozo, feed.bozo_exception
    assert [e.title for e in feed.entries] == ["Week 49", "Week 48 & meer"]
    assert feed.entries[0].link == "https://ai-nieuws.example.nl/archive/beslissers/2026-W49.html"
    assert feed.entries[0].published_parsed[:3] == (2026, 11, 30)
    assert "2026-W50" not in " ".join(archive_files(sample_config, sample_config.audience("beslissers"), store.list_issues("beslissers")))
    assert draft.status == "draft"
    store.close()


def test_an_empty_archive_says_so_in_the_site_language(sample_config: Config) -> None:
    files = archive_files(sample_config, sample_config.audience("bouwers"), [])
    assert "Nog geen verzonden nummers." in files["archive/bouwers/index.html"].decode()
    feed = feedparser.parse(files["archive/bouwers/index.xml"])
    assert not feed.bozo and feed.entries == []
