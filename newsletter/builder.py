"""The `build` job: scan content, apply the publishing rule, write every feed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .collector import Catalog, is_published, newest_first, scan
from .config import Config
from .content import ContentSettings
from .feeds import FeedSettings, build_feed_files
from .output import WriteReport, write_outputs

INDEX_FILE = "index.pickle"


def content_settings(config: Config) -> ContentSettings:
    site = config.site
    return ContentSettings(base_url=site.url, timezone=site.timezone, permalink=site.permalink)


def feed_settings(config: Config) -> FeedSettings:
    site, feeds = config.site, config.feeds
    return FeedSettings(
        site_url=site.url,
        title=site.title,
        description=site.description,
        language=site.language,
        author=site.author,
        author_email=site.author_email,
        formats=feeds.formats,
        max_items=feeds.max_items,
        full_content=feeds.full_content,
        per_label=feeds.per_label,
        per_tag=feeds.per_tag,
        ttl=feeds.ttl,
    )


def load_catalog(config: Config, use_index: bool = True) -> Catalog:
    index = config.site.cache_dir / INDEX_FILE if use_index else None
    return scan(config.site.content_dir, content_settings(config), index)


@dataclass(frozen=True)
class BuildResult:
    catalog: Catalog
    published: list[str]  # article ids, newest first
    files: dict[str, bytes]
    report: WriteReport


def build(
    config: Config, now: datetime, output_dir: Path | None = None, use_index: bool = True
) -> BuildResult:
    """Build every feed for `now`.

    Raises:
        FeedError: nothing is published, so there is nothing to build.
        OutputError: a file could not be written.
    """
    catalog = load_catalog(config, use_index)
    published = newest_first(a for a in catalog.articles if is_published(a, now))
    files = build_feed_files(published, feed_settings(config), catalog.rendered)
    report = write_outputs(output_dir or config.site.output_dir, files)
    catalog.save_index()
    return BuildResult(catalog, [a.id for a in published], files, report)
