"""Pure: published articles -> RSS 2.0, Atom 1.0, JSON Feed 1.1, OPML and an autodiscovery page.

The only module that uses feedgen. Its traps (standards.md FG-01..FG-16) are handled here:
entries appended in order, every date explicit, enclosures and media written by our own
extension (feedgen drops rel/type on Atom entry links and wraps media in a media:group), HTML
content typed `html` (never CDATA).
"""

from __future__ import annotations

import copy
import hashlib
import html
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any, Generic, TypeVar

from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem

from .content import slugify
from .errors import FeedError
from .model import Article, RenderedBody

MEDIA_NS = "http://search.yahoo.com/mrss/"
FORMAT_FILES = {"rss": "index.xml", "atom": "atom.xml", "json": "feed.json"}
FORMAT_TYPES = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}
FORMAT_NAMES = {"rss": "RSS", "atom": "Atom", "json": "JSON Feed"}
GENERATOR = "newsletter"


@dataclass(frozen=True)
class FeedSettings:
    site_url: str  # no trailing slash
    title: str
    description: str
    language: str = "nl"
    author: str = ""
    author_email: str = ""
    formats: tuple[str, ...] = ("rss", "atom", "json")
    max_items: int = 50
    full_content: bool = True
    per_label: bool = True
    per_tag: bool = False
    ttl: int = 0


T = TypeVar("T")


@dataclass(frozen=True)
class FeedSpec(Generic[T]):
    """One logical feed (site-wide, a label or a tag), written in every configured format.

    Planned over full `Article`s, or over the index's lean entries (whose articles are then
    loaded only for feeds that changed); `with_articles` swaps one for the other.
    """

    kind: str  # "site", "label" or "tag"
    name: str  # the label or tag as written in the articles; "" for the site
    title: str
    directory: str  # relative to the output folder, "" or "labels/beslisser"
    articles: tuple[T, ...]

    def path(self, fmt: str) -> str:
        return f"{self.directory}/{FORMAT_FILES[fmt]}" if self.directory else FORMAT_FILES[fmt]

    def with_articles(self, articles: Iterable[Article]) -> FeedSpec[Article]:
        return FeedSpec(self.kind, self.name, self.title, self.directory, tuple(articles))


BodyRenderer = Callable[[Article], RenderedBody]
NamesOf = Callable[[T], tuple[str, ...]]


def _labels(article: Article) -> tuple[str, ...]:
    return article.labels


def _tags(article: Article) -> tuple[str, ...]:
    return article.tags


def plan_feeds(published: Sequence[Article], settings: FeedSettings) -> list[FeedSpec[Article]]:
    """Which feeds to write. `published` must already pass the publishing rule, newest first.

    Labels and tags are grouped by their slug, so `AI Hardware` and `ai hardware` share one feed;
    a name that slugifies to nothing (e.g. only punctuation) gets no feed.
    """
    return plan_groups(published, settings, _labels, _tags)


def plan_groups(
    published: Sequence[T], settings: FeedSettings, labels_of: NamesOf[T], tags_of: NamesOf[T]
) -> list[FeedSpec[T]]:
    """`plan_feeds` for any kind of item, given how to read its labels and its tags."""
    limit = settings.max_items
    specs = [FeedSpec("site", "", settings.title, "", tuple(published[:limit]))]
    for kind, folder, names_of, enabled in (
        ("label", "labels", labels_of, settings.per_label),
        ("tag", "tags", tags_of, settings.per_tag),
    ):
        if not enabled:
            continue
        groups, slug_of = _group(published, names_of, limit)
        # The name shown in titles: the smallest spelling, so it does not depend on order.
        shown: dict[str, str] = {}
        for name, slug in slug_of.items():
            if slug:
                shown[slug] = min(shown.get(slug, name), name)
        for slug in sorted(groups):
            specs.append(
                FeedSpec(
                    kind,
                    shown[slug],
                    f"{settings.title} – {shown[slug]}",
                    f"{folder}/{slug}",
                    tuple(groups[slug]),
                )
            )
    return specs


def _group(
    items: Sequence[T], names_of: NamesOf[T], limit: int
) -> tuple[dict[str, list[T]], dict[str, str]]:
    """The newest `limit` items per slug, and the slug of every name met.

    Groups fill up within the newest few thousand of 100k items; after that the rest is only
    searched (at C speed) for names not met yet, and grouping resumes where one first appears.
    """
    groups: dict[str, list[T]] = {}
    slug_of: dict[str, str] = {}  # slugify once per distinct spelling
    open_groups = 0  # groups holding fewer than `limit` items
    count = len(items)
    start = 0
    while start < count:
        position = start
        while position < count:
            item = items[position]
            position += 1
            for name in names_of(item):
                slug = slug_of.get(name)
                if slug is None:
                    slug = slug_of[name] = slugify(name)
                if not slug:
                    continue
                group = groups.get(slug)
                if group is None:
                    group = groups[slug] = []
                    open_groups += 1
                # `group[-1]` guards against one item carrying two spellings of one slug.
                if len(group) < limit and (not group or group[-1] is not item):
                    group.append(item)
                    if len(group) == limit:
                        open_groups -= 1
            if not open_groups:
                break
        rest = items[position:]
        unseen = set(chain.from_iterable(map(names_of, rest))).difference(slug_of)
        if not unseen:
            break
        start = next(
            i for i, item in enumerate(rest, position) if not unseen.isdisjoint(names_of(item))
        )
    return groups, slug_of


def feed_fingerprint(spec: FeedSpec[Any], fmt: str, item_versions: Iterable[bytes]) -> bytes:
    """What one feed file is made of, apart from the settings and the code: its place and title
    and the exact version of every item, in order. Equal fingerprints give equal bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((spec.kind, spec.name, spec.title, spec.directory, fmt)).encode())
    for version in item_versions:
        digest.update(len(version).to_bytes(4, "big"))
        digest.update(version)
    return digest.digest()


def build_feed_files(
    published: Sequence[Article], settings: FeedSettings, render: BodyRenderer
) -> dict[str, bytes]:
    """Every feed file, the OPML list and the autodiscovery page, keyed by relative path."""
    if not published:
        raise FeedError("no published articles: nothing to put in a feed")
    specs = plan_feeds(published, settings)
    files: dict[str, bytes] = {}
    items = FeedItems()
    for spec in specs:
        for fmt in settings.formats:
            files[spec.path(fmt)] = render_feed(spec, fmt, settings, render, items)
    files["feeds.opml"] = render_opml(specs, settings)
    files["feeds.html"] = render_discovery_page(specs, settings)
    return files


def feed_url(settings: FeedSettings, spec: FeedSpec[Any], fmt: str) -> str:
    return f"{settings.site_url}/{spec.path(fmt)}"


class _SharedEntry(FeedEntry):  # type: ignore[misc]
    """A feedgen entry that builds its RSS item or Atom entry once; every feed gets a copy."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, Any] = {}

    def rss_entry(self, extensions: bool = True) -> Any:
        return self._copy("rss", extensions)

    def atom_entry(self, extensions: bool = True) -> Any:
        return self._copy("atom", extensions)

    def _copy(self, fmt: str, extensions: bool) -> Any:
        make = super().rss_entry if fmt == "rss" else super().atom_entry
        if not extensions:  # feedgen itself always asks with them
            return make(extensions)
        made = self._made.get(fmt)
        if made is None:
            made = self._made[fmt] = make(extensions)
        # A copy: an lxml element has one parent, and the one kept here must never get one, so
        # that every copy is placed in its feed exactly as a freshly built element would be.
        return copy.deepcopy(made)


class FeedItems:
    """The feed entries of one build's articles, by article id, made once and shared by every
    feed an article is in (at 10k articles each sits in about two of the 65 feeds, and its
    entry is most of a feed's cost). Only for one build: an id is one version of an article
    within a build, not across builds."""

    def __init__(self) -> None:
        self._entries: dict[str, _SharedEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, article_id: str) -> _SharedEntry | None:
        return self._entries.get(article_id)

    def add(self, article_id: str, entry: _SharedEntry) -> None:
        self._entries[article_id] = entry


def render_feed(
    spec: FeedSpec[Article],
    fmt: str,
    settings: FeedSettings,
    render: BodyRenderer,
    items: FeedItems | None = None,
) -> bytes:
    """One feed in one format, as bytes. `items`: the entries made so far in this build."""
    if fmt == "json":
        return _json_feed(spec, settings, render)
    if fmt not in ("rss", "atom"):
        raise FeedError(f"unknown feed format {fmt!r}")
    return _xml_feed(spec, fmt, settings, render, items)


def _newest(spec: FeedSpec[Article]) -> datetime:
    # The feed changes when its content changes, not when it is built (RSS-07, FG-03).
    return max(a.updated for a in spec.articles)


_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
)


def quoteattr(value: str) -> str:
    """`xml.sax.saxutils.quoteattr`, the same bytes: that module imports urllib.request, and
    with it http.client, email and ssl, ~20 ms of every build's start-up (more after a
    page-cache drop) for one function."""
    value = value.translate(_ATTR_ESCAPES)
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return '"{}"'.format(value.replace('"', "&quot;"))


def _content_html(article: Article, body: RenderedBody) -> str:
    """Full article HTML: the cover figure (with alt and caption), then the body."""
    if article.cover is None:
        return body.html
    cover = article.cover
    caption = (
        f"<figcaption>{html.escape(cover.caption, quote=False)}</figcaption>"
        if cover.caption
        else ""
    )
    figure = (
        f"<figure><img src={quoteattr(cover.image)} alt={quoteattr(cover.alt)}>{caption}</figure>\n"
    )
    return figure + body.html


class _MediaFeedExt(BaseExtension):  # type: ignore[misc]
    def extend_ns(self) -> dict[str, str]:
        return {"media": MEDIA_NS}


class _MediaEntryExt(BaseEntryExtension):  # type: ignore[misc]
    """RSS <enclosure>, Atom <link rel="enclosure">, and a bare <media:content> with the alt text.

    feedgen's own enclosure ends up as a second rel-less Atom link (DuplicateAtomLink, FG-07)
    and its media extension wraps one image in a media:group (FG-11), so we write them here.
    """

    def __init__(self) -> None:
        self.article: Article | None = None

    def extend_ns(self) -> dict[str, str]:
        return {"media": MEDIA_NS}

    def _media(self, entry: Any) -> None:
        assert self.article is not None and self.article.cover is not None
        cover = self.article.cover
        media = xml_elem(f"{{{MEDIA_NS}}}content", entry)
        media.set("url", cover.image)
        media.set("medium", "image")
        media.set("type", cover.mime_type)
        if cover.alt:
            description = xml_elem(f"{{{MEDIA_NS}}}description", media)
            description.set("type", "plain")
            description.text = cover.alt
        if cover.caption:
            credit = xml_elem(f"{{{MEDIA_NS}}}credit", media)
            credit.text = cover.caption

    def extend_rss(self, item: Any) -> Any:
        if self.article is not None and self.article.cover is not None:
            enclosure = xml_elem("enclosure", item)
            enclosure.set("url", self.article.cover.image)
            # Length is unknown without fetching the image; the spec says use 0 (RSS-11, FG-06).
            enclosure.set("length", "0")
            enclosure.set("type", self.article.cover.mime_type)
            self._media(item)
        return item

    def extend_atom(self, entry: Any) -> Any:
        if self.article is not None and self.article.cover is not None:
            # Unqualified like feedgen's own elements: the root declares Atom as default namespace.
            link = xml_elem("link", entry)
            link.set("rel", "enclosure")
            link.set("type", self.article.cover.mime_type)
            link.set("length", "0")
            link.set("href", self.article.cover.image)
            self._media(entry)
        return entry


def _xml_feed(
    spec: FeedSpec[Article],
    fmt: str,
    settings: FeedSettings,
    render: BodyRenderer,
    items: FeedItems | None,
) -> bytes:
    fg = FeedGenerator()
    fg.load_extension("dc")
    fg.register_extension("newsletter_media", _MediaFeedExt, _MediaEntryExt)
    self_url = feed_url(settings, spec, fmt)
    home = settings.site_url + "/"
    fg.id(self_url)
    fg.title(spec.title)
    fg.description(settings.description)
    fg.subtitle(settings.description)
    fg.language(settings.language)
    author: dict[str, str] = {"name": settings.author or settings.title}
    if settings.author_email:
        author["email"] = settings.author_email
    fg.author(author)
    fg.generator(GENERATOR)
    # feedgen puts the href of the LAST link() call in RSS <link> (FG-05): self first, site last.
    fg.link(href=self_url, rel="self", type=FORMAT_TYPES[fmt])
    fg.link(href=home, rel="alternate", type="text/html")
    newest = _newest(spec)
    fg.lastBuildDate(newest)
    fg.updated(newest)
    if settings.ttl:
        fg.ttl(settings.ttl)
    for article in spec.articles:
        shared = items.get(article.id) if items is not None else None
        if shared is not None:
            fg.add_entry(shared, order="append")
            continue
        # order: the default 'prepend' reverses the order (FG-01)
        fe = fg.add_entry(_SharedEntry() if items is not None else None, order="append")
        fe.id(article.id)
        fe.guid(article.id, permalink=True)
        fe.title(article.title)
        fe.link(href=article.url)
        fe.published(article.date)
        fe.updated(article.updated)
        if article.summary:
            # RSS readers treat description as HTML: escape plain text first (RSS-13).
            fe.summary(html.escape(article.summary, quote=False), type="html")
        if settings.full_content:
            fe.content(_content_html(article, render(article)), type="html")
        elif not article.summary:
            fe.summary(html.escape(article.title, quote=False), type="html")
        # All in one call: feedgen rebuilds its RSS list of every category on each call.
        categories = [
            {"term": name, "scheme": f"{settings.site_url}/{kind}/{slugify(name)}/"}
            for kind, names in (("tags", article.tags), ("labels", article.labels))
            for name in names
        ]
        if categories:
            fe.category(categories)
        if article.author:
            fe.author(name=article.author)
            fe.dc.dc_creator(article.author)  # RSS <author> needs an e-mail address (FG-10)
        fe.newsletter_media.article = article
        if items is not None:
            items.add(article.id, fe)
    try:
        data: bytes = fg.rss_str(pretty=True) if fmt == "rss" else fg.atom_str(pretty=True)
    except ValueError as exc:
        raise FeedError(f"{spec.path(fmt)}: {exc}") from exc
    return data


def _json_feed(spec: FeedSpec[Article], settings: FeedSettings, render: BodyRenderer) -> bytes:
    author: dict[str, str] = {"name": settings.author or settings.title}
    feed: dict[str, Any] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": spec.title,
        "home_page_url": settings.site_url + "/",
        "feed_url": feed_url(settings, spec, "json"),
        "description": settings.description,
        "language": settings.language,
        "authors": [author],
        "items": [],
    }
    for article in spec.articles:
        item: dict[str, Any] = {
            "id": article.id,
            "url": article.url,
            "title": article.title,
        }
        if settings.full_content:
            item["content_html"] = _content_html(article, render(article))
        else:
            item["content_text"] = article.summary or article.title
        if article.summary:
            item["summary"] = article.summary
        if article.cover is not None:
            item["image"] = article.cover.image
        item["date_published"] = _rfc3339(article.date)
        item["date_modified"] = _rfc3339(article.updated)
        if article.author:
            item["authors"] = [{"name": article.author}]
        if article.tags:
            item["tags"] = list(article.tags)
        extension: dict[str, Any] = {"labels": list(article.labels)}
        if article.source:
            extension["source"] = article.source
        if article.cover is not None:
            extension["cover"] = {
                "image": article.cover.image,
                "alt": article.cover.alt,
                "caption": article.cover.caption,
            }
        item["_newsletter"] = extension
        feed["items"].append(item)
    return (json.dumps(feed, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _rfc3339(moment: datetime) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _feed_links(
    specs: Sequence[FeedSpec[Any]], settings: FeedSettings
) -> list[tuple[str, str, str, str]]:
    """(format, MIME type, title, absolute URL) for every feed file, in a stable order."""
    return [
        (
            fmt,
            FORMAT_TYPES[fmt],
            f"{spec.title} ({FORMAT_NAMES[fmt]})",
            feed_url(settings, spec, fmt),
        )
        for spec in specs
        for fmt in settings.formats
    ]


def render_opml(specs: Sequence[FeedSpec[Any]], settings: FeedSettings) -> bytes:
    """OPML 2.0 subscription list of every feed, grouped site / labels / tags."""
    home = settings.site_url + "/"
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<opml version="2.0">',
        "  <head>",
        f"    <title>{html.escape(settings.title, quote=False)}</title>",
        "  </head>",
        "  <body>",
    ]
    titles = {"site": settings.title, "label": "Labels", "tag": "Tags"}
    for kind in ("site", "label", "tag"):
        group = [s for s in specs if s.kind == kind]
        if not group:
            continue
        lines.append(f"    <outline text={quoteattr(titles[kind])}>")
        for spec in group:
            for fmt in settings.formats:
                title = f"{spec.title} ({FORMAT_NAMES[fmt]})"
                lines.append(
                    f'      <outline type="rss" text={quoteattr(title)} title={quoteattr(title)}'
                    f" xmlUrl={quoteattr(feed_url(settings, spec, fmt))} htmlUrl={quoteattr(home)}/>"
                )
        lines.append("    </outline>")
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines).encode("utf-8")


def render_discovery_page(specs: Sequence[FeedSpec[Any]], settings: FeedSettings) -> bytes:
    """A small HTML page whose head advertises every feed (RSS autodiscovery) and lists them."""
    esc = html.escape
    head_links = "\n".join(
        f'  <link rel="alternate" type="{mime}" title="{esc(title)}" href="{esc(url)}">'
        for _fmt, mime, title, url in _feed_links(specs, settings)
    )
    items = "\n".join(
        f'    <li><a href="{esc(url)}" type="{mime}">{esc(title)}</a></li>'
        for _fmt, mime, title, url in _feed_links(specs, settings)
    )
    heading = "Feeds" if not settings.language.startswith("nl") else "Feeds van deze site"
    page = f"""<!DOCTYPE html>
<html lang="{esc(settings.language)}">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{esc(settings.title)} – {heading}</title>
{head_links}
</head>
<body>
  <h1>{esc(settings.title)} – {heading}</h1>
  <ul>
{items}
  </ul>
  <p><a href="{esc(settings.site_url)}/feeds.opml">OPML</a></p>
</body>
</html>
"""
    return page.encode("utf-8")


def render_archive_feed(
    *,
    title: str,
    description: str,
    language: str,
    home_url: str,
    feed_url: str,
    entries: Sequence[tuple[str, str, str, datetime]],
    updated: datetime,
) -> bytes:
    """RSS 2.0 of an audience's past issues: (url, subject, preheader, sent_at), newest first."""
    fg = FeedGenerator()
    fg.id(feed_url)
    fg.title(title)
    fg.description(description)
    fg.language(language)
    fg.generator(GENERATOR)
    fg.link(href=feed_url, rel="self", type=FORMAT_TYPES["rss"])  # self first, home last (FG-05)
    fg.link(href=home_url, rel="alternate", type="text/html")
    fg.lastBuildDate(updated)
    for url, subject, preheader, sent_at in entries:
        fe = fg.add_entry(order="append")
        fe.id(url)
        fe.guid(url, permalink=True)
        fe.title(subject)
        fe.link(href=url)
        fe.published(sent_at)
        fe.updated(sent_at)
        if preheader:
            fe.summary(html.escape(preheader, quote=False), type="html")
    data: bytes = fg.rss_str(pretty=True)
    return data
