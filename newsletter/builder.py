"""The `build` job: scan content, apply the publishing rule, write every feed.

Two paths that must give the same bytes (tests/test_build_equivalence.py holds them to it):

- without the index (`--no-index`): parse every file, render every feed, compare with disk;
- with the index (the default): parse only new or changed files (in worker processes when there
  are many), plan the feeds over the index's lean entries, and render only the feeds whose
  inputs changed since the last build of the same output folder. When no content file changed
  at all and `now` is still inside the window where the published set stays the same, nothing
  is parsed or rendered.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from pathlib import Path

import feedgen.version
import lxml.etree

from . import builder as _self
from . import feeds as _feeds
from . import output as _output
from .collector import (
    INDEX_FILE,
    Catalog,
    LazyList,
    content_settings,
    is_published,
    micros,
    newest_first,
    publication_window,
    published_entries,
    scan,
    scan_signature,
    walk,
)
from .config import Config
from .content import ContentSettings
from .errors import FeedError
from .feeds import (
    FeedItems,
    FeedSettings,
    FeedSpec,
    build_feed_files,
    feed_fingerprint,
    plan_groups,
    render_discovery_page,
    render_feed,
    render_opml,
)
from .index import ID, KEY, LABELS, TAGS, Entry, Found, code_fingerprint, index_key
from .model import Article, RenderedBody
from .output import (
    MANIFEST,
    BuildState,
    OutputFiles,
    OutputWriter,
    Stamp,
    WriteReport,
    load_state,
    safe_target,
    save_state,
    stamp,
    write_changed,
    write_outputs,
)
from .workers import Workers, inherited

PARALLEL_MIN_FEEDS = 24  # fewer changed feed files are rendered in this process


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


@dataclass(frozen=True)
class BuildResult:
    catalog: Catalog
    published: Sequence[str]  # article ids, newest first
    files: Mapping[str, bytes]  # every output by relative path (kept ones read on demand)
    report: WriteReport
    rendered: Sequence[str] = ()  # the feed files this build rendered; the others were kept


def build(
    config: Config,
    now: datetime,
    output_dir: Path | None = None,
    use_index: bool = True,
    workers: int | None = None,
) -> BuildResult:
    """Build every feed for `now`.

    Args:
        use_index: False parses every file and renders every feed (the reference path).
        workers: processes for parsing and rendering; None uses every available CPU.

    Raises:
        FeedError: nothing is published, so there is nothing to build.
        OutputError: a file could not be written.
    """
    out = output_dir or config.site.output_dir
    if not use_index:
        catalog = scan(config.site.content_dir, content_settings(config))
        published = newest_first(a for a in catalog.articles if is_published(a, now))
        files = build_feed_files(published, feed_settings(config), catalog.rendered)
        report = write_outputs(out, files)
        return BuildResult(catalog, [a.id for a in published], files, report, list(files))
    with Workers(workers) as pool:
        return _indexed_build(config, now, out, pool)


# --- the indexed build ---------------------------------------------------------------------------
def _state_path(config: Config, out: Path) -> Path:
    where = hashlib.blake2b(str(out.resolve()).encode(), digest_size=8).hexdigest()
    return config.site.cache_dir / f"build-{where}.state"


def _state_key(content: ContentSettings, feeds: FeedSettings, out: Path) -> bytes:
    """Everything besides the articles that the output bytes depend on."""
    code = code_fingerprint(_feeds, _output, _self)
    libraries = f"feedgen {feedgen.version.version_str} lxml {lxml.etree.__version__}"
    return b"|".join(
        [index_key(content), f"{code}|{libraries}|{sys.version}|{feeds!r}|{out.resolve()}".encode()]
    )


def _indexed_build(config: Config, now: datetime, out: Path, workers: Workers) -> BuildResult:
    site = config.site
    content, feeds = content_settings(config), feed_settings(config)
    index_path = site.cache_dir / INDEX_FILE
    # With no index every file is parsed anyway: the stats are taken from the files as they are
    # read (`walk(stat=False)`), and the shortcut through the last build's state, which needs them
    # first, is not taken (without its index such a build is rare: a deleted cache).
    cold = not index_path.exists()
    found = walk(site.content_dir, stat=not cold)
    state_path = _state_path(config, out)
    key = _state_key(content, feeds, out)
    state = load_state(state_path, key)
    if not cold:
        signature = scan_signature(found)
        if state is not None and _still_valid(state, signature, now, out):
            return _unchanged(site.content_dir, content, index_path, found, state, out, now)

    catalog = scan(site.content_dir, content, index_path, found=found, workers=workers)
    if cold:
        signature = scan_signature(found)  # the stats were filled in by the scan
    del found  # 100k paths and stats: their memory is reused for what follows
    writer = OutputWriter(out)
    try:
        published = published_entries(catalog.entries, now)
        if not published:
            catalog.save_index()
            raise FeedError("no published articles: nothing to put in a feed")
        specs = plan_groups(published, feeds, itemgetter(LABELS), itemgetter(TAGS))
        previous = state.outputs if state is not None else {}
        fingerprints: dict[str, bytes] = {}
        stale: list[tuple[FeedSpec[Entry], str, str]] = []
        for spec in specs:
            for fmt in feeds.formats:
                rel = spec.path(fmt)
                fingerprint = feed_fingerprint(spec, fmt, (e[KEY] for e in spec.articles))
                fingerprints[rel] = fingerprint
                before = previous.get(rel)
                if (
                    before is not None
                    and before[0] == fingerprint
                    and stamp(safe_target(out, rel)) == before[1]
                ):
                    writer.keep(rel)
                else:
                    stale.append((spec, fmt, rel))
        _write_stale(catalog, stale, feeds, workers, writer)
        lists = {"feeds.opml": render_opml(specs, feeds), "feeds.html": render_discovery_page(specs, feeds)}
        for rel, data in lists.items():
            writer.write(rel, data)
        report = writer.finish()
        catalog.save_index()
    except BaseException:
        catalog.close()
        raise

    names = [*fingerprints, *lists]
    outputs: dict[str, tuple[bytes, Stamp]] = {}
    for rel in [*names, MANIFEST]:
        current = stamp(out / MANIFEST if rel == MANIFEST else safe_target(out, rel))
        if current is not None:
            # The lists and the manifest are made every time: recorded for the intact check only.
            made_of = fingerprints.get(rel) or hashlib.blake2b(lists.get(rel, b"")).digest()[:16]
            outputs[rel] = (made_of, current)
    save_state(
        state_path,
        key,
        BuildState(
            outputs=outputs,
            inputs=signature if catalog.settled else None,
            window=publication_window(catalog.entries, now),
            articles=len(catalog.entries),
            published=len(published),
            problems=catalog.problems,
        ),
    )
    ids = LazyList(len(published), lambda: [e[ID] for e in published])
    rendered = [rel for _, _, rel in stale] + list(lists)
    return BuildResult(catalog, ids, OutputFiles(out, names, lists), report, rendered)


def _write_stale(
    catalog: Catalog,
    stale: list[tuple[FeedSpec[Entry], str, str]],
    feeds: FeedSettings,
    workers: Workers,
    writer: OutputWriter,
) -> None:
    """Render and write the feed files whose inputs changed; only their articles are loaded and
    only their bodies rendered. Each file is written as it is made, so a cold build never holds
    every feed in memory. Many feeds (a cold build) are rendered and written by forked workers
    that share the articles and bodies with this process instead of receiving them, and send
    back only whether they wrote: sending 16 MB of feeds back at 10k articles kept this process
    busy enough to slow the workers down (issue 7)."""
    needed = {e[KEY]: e for spec, _, _ in stale for e in spec.articles}
    catalog.prefetch(needed.values(), workers)
    full: dict[int, FeedSpec[Article]] = {}
    for spec, _, _ in stale:
        if id(spec) not in full:
            full[id(spec)] = spec.with_articles(catalog.article(e) for e in spec.articles)
    specs = list(full.values())
    index = {key: n for n, key in enumerate(full)}
    jobs = [(index[id(spec)], fmt, rel) for spec, fmt, rel in stale]
    done = 0
    if len(jobs) >= PARALLEL_MIN_FEEDS and workers.can_inherit:
        bodies = {a.path: catalog.rendered(a) for spec in specs for a in spec.articles}
        # Each worker fills its own copy of the (empty) FeedItems.
        shared = (specs, bodies, feeds, writer.out_dir, FeedItems())
        try:
            for rel, written in workers.map(_write_jobs, jobs, 4, inherit=shared):
                writer.record(rel, written)
                done += 1
        except (BrokenProcessPool, OSError) as exc:
            workers.failed(exc)
    items = FeedItems()
    for n, fmt, rel in jobs[done:]:
        writer.write(rel, render_feed(specs[n], fmt, feeds, catalog.rendered, items))


def _write_jobs(jobs: list[tuple[int, str, str]]) -> list[tuple[str, bool]]:
    """Worker side of `_write_stale`: (path, written) per feed file."""
    shared: tuple[list[FeedSpec[Article]], dict[str, RenderedBody], FeedSettings, Path, FeedItems]
    shared = inherited()  # type: ignore[assignment]
    specs, bodies, feeds, out, items = shared

    def body(article: Article) -> RenderedBody:
        return bodies[article.path]

    return [
        (rel, write_changed(out, rel, render_feed(specs[n], fmt, feeds, body, items)))
        for n, fmt, rel in jobs
    ]


def _still_valid(state: BuildState, signature: bytes, now: datetime, out: Path) -> bool:
    """No content file changed, `now` gives the same published set, and every output is as the
    last build left it."""
    if state.inputs != signature or not state.window[0] <= micros(now) < state.window[1]:
        return False
    return state.intact(out)


def _unchanged(
    root: Path,
    content: ContentSettings,
    index_path: Path,
    found: list[Found],
    state: BuildState,
    out: Path,
    now: datetime,
) -> BuildResult:
    """The result of a build that has nothing to do; the index is read only if asked for."""
    catalog = Catalog.deferred(root, content, index_path, found, state.articles, state.problems)
    published = LazyList(
        state.published, lambda: [e[ID] for e in published_entries(catalog.entries, now)]
    )
    names = [rel for rel in state.outputs if rel != MANIFEST]
    report = WriteReport(unchanged=sorted(names))
    return BuildResult(catalog, published, OutputFiles(out, names, {}), report)
