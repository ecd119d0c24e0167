"""Pure: published articles -> RSS 2.0, Atom 1.0, JSON Feed 1.1, OPML and an autodiscovery page.

The only module that uses feedgen. Its traps (standards.md FG-01..FG-16) are handled here:
entries appended in order, every date explicit, enclosures and media written by our own
extension (feedgen drops rel/type on Atom entry links and wraps media in a media:group), HTML
content typed `html` (never CDATA).

feedgen makes every feed's channel. A build makes each article's RSS item and Atom entry once,
with lxml calls that write what feedgen's entries write (`FeedItems`), and splices their bytes
into every feed that holds the article; `build_feed_files` (the `--no-index` reference) lets
feedgen make every entry, and tests hold the two to the same bytes.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any, Generic, TypeVar

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree
from lxml.etree import SubElement

from .content import slugify
from .errors import FeedError
from .model import Article, Cover, RenderedBody

MEDIA_NS = "http://search.yahoo.com/mrss/"
_CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
_DC_NS = "http://purl.org/dc/elements/1.1/"
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
    for spec in specs:
        for fmt in settings.formats:
            files[spec.path(fmt)] = render_feed(spec, fmt, settings, render)
    files["feeds.opml"] = render_opml(specs, settings)
    files["feeds.html"] = render_discovery_page(specs, settings)
    return files


def feed_url(settings: FeedSettings, spec: FeedSpec[Any], fmt: str) -> str:
    return f"{settings.site_url}/{spec.path(fmt)}"


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

    def extend_rss(self, item: Any) -> Any:
        if self.article is not None and self.article.cover is not None:
            _rss_enclosure(item, self.article.cover)
        return item

    def extend_atom(self, entry: Any) -> Any:
        if self.article is not None and self.article.cover is not None:
            _atom_enclosure(entry, self.article.cover)
        return entry


def _rss_enclosure(item: etree._Element, cover: Cover) -> None:
    enclosure = SubElement(item, "enclosure")
    enclosure.set("url", cover.image)
    # Length is unknown without fetching the image; the spec says use 0 (RSS-11, FG-06).
    enclosure.set("length", "0")
    enclosure.set("type", cover.mime_type)
    _media_content(item, cover)


def _atom_enclosure(entry: etree._Element, cover: Cover) -> None:
    # Unqualified like feedgen's own elements: the root declares Atom as default namespace.
    link = SubElement(entry, "link")
    link.set("rel", "enclosure")
    link.set("type", cover.mime_type)
    link.set("length", "0")
    link.set("href", cover.image)
    _media_content(entry, cover)


def _media_content(entry: etree._Element, cover: Cover) -> None:
    media = SubElement(entry, f"{{{MEDIA_NS}}}content")
    media.set("url", cover.image)
    media.set("medium", "image")
    media.set("type", cover.mime_type)
    if cover.alt:
        description = SubElement(media, f"{{{MEDIA_NS}}}description")
        description.set("type", "plain")
        description.text = cover.alt
    if cover.caption:
        credit = SubElement(media, f"{{{MEDIA_NS}}}credit")
        credit.text = cover.caption


def _xml_feed(
    spec: FeedSpec[Article],
    fmt: str,
    settings: FeedSettings,
    render: BodyRenderer,
    items: FeedItems | None,
) -> bytes:
    fg = _channel(spec, fmt, settings)
    try:
        if items is None:  # feedgen makes every entry: the reference the spliced feeds must equal
            for article in spec.articles:
                _add_entry(fg, article, settings, render)
            return _serialized(fg, fmt)
        return items.feed(_serialized(fg, fmt), fmt, spec.articles, settings, render)
    except ValueError as exc:  # e.g. a character XML cannot hold
        raise FeedError(f"{spec.path(fmt)}: {exc}") from exc


def _channel(spec: FeedSpec[Article], fmt: str, settings: FeedSettings) -> FeedGenerator:
    """The feed without its entries."""
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
    return fg


def _serialized(fg: FeedGenerator, fmt: str) -> bytes:
    data: bytes = fg.rss_str(pretty=True) if fmt == "rss" else fg.atom_str(pretty=True)
    return data


def _add_entry(fg: FeedGenerator, article: Article, settings: FeedSettings, render: BodyRenderer) -> None:
    """The article's entry made by feedgen (`_rss_item` and `_atom_entry` make the same)."""
    # order: the default 'prepend' reverses the order (FG-01)
    fe = fg.add_entry(order="append")
    fe.id(article.id)
    fe.guid(article.id, permalink=True)
    fe.title(article.title)
    fe.link(href=article.url)
    fe.published(article.date)
    fe.updated(article.updated)
    summary = _summary(article, settings)
    if summary is not None:
        fe.summary(summary, type="html")
    if settings.full_content:
        fe.content(_content_html(article, render(article)), type="html")
    # All in one call: feedgen rebuilds its RSS list of every category on each call.
    categories = [{"term": term, "scheme": scheme} for term, scheme in _categories(article, settings)]
    if categories:
        fe.category(categories)
    if article.author:
        fe.author(name=article.author)
        fe.dc.dc_creator(article.author)  # RSS <author> needs an e-mail address (FG-10)
    fe.newsletter_media.article = article


def _summary(article: Article, settings: FeedSettings) -> str | None:
    """The entry's summary (HTML): the article's, else without full content its title."""
    # RSS readers treat description as HTML: escape plain text first (RSS-13).
    if article.summary:
        return html.escape(article.summary, quote=False)
    if not settings.full_content:
        return html.escape(article.title, quote=False)
    return None


def _categories(article: Article, settings: FeedSettings) -> list[tuple[str, str]]:
    """(term, scheme) of the article's tags, then its labels."""
    return [
        (name, f"{settings.site_url}/{kind}/{slugify(name)}/")
        for kind, names in (("tags", article.tags), ("labels", article.labels))
        for name in names
    ]


class FeedItems:
    """The entries of one build's articles as the bytes they are in a feed file, by article id
    and format: made once each and spliced into every feed that holds the article (at 10k
    articles each sits in about two of the 65 feeds). feedgen still makes each feed's channel;
    the entries are made by `_rss_item` and `_atom_entry`, which write what feedgen's own
    entries (`_add_entry`) write, in a third of the time (tests hold the bytes equal), and
    are serialized inside a copy of the feed's root, so that their namespace prefixes and
    indentation are those of the feed. Only for one build: an id is one version of an article
    within a build, not across builds."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, str], bytes] = {}
        # per format: the element entries go in, and what its serialized copy holds before them
        self._holders: dict[str, tuple[etree._Element, bytes]] = {}

    def __len__(self) -> int:
        return len(self._made)

    def feed(
        self,
        channel: bytes,
        fmt: str,
        articles: Sequence[Article],
        settings: FeedSettings,
        render: BodyRenderer,
    ) -> bytes:
        """`channel` (a feed serialized without entries) with the entries of `articles`."""
        parts = [_before_end(channel, fmt)]
        for article in articles:
            entry = self._made.get((article.id, fmt))
            if entry is None:
                entry = self._made[article.id, fmt] = self._make(channel, fmt, article, settings, render)
            parts.append(entry)
        parts.append(_FEED_ENDS[fmt])
        return b"".join(parts)

    def _make(
        self, channel: bytes, fmt: str, article: Article, settings: FeedSettings, render: BodyRenderer
    ) -> bytes:
        holder = self._holders.get(fmt)
        if holder is None:
            # The feed's root as parsed (blank text dropped, or pretty printing would stop at
            # it): the same namespace declarations and depth as in every feed of the format.
            root = etree.fromstring(channel, etree.XMLParser(remove_blank_text=True))
            parent = root[0] if fmt == "rss" else root
            holder = self._holders[fmt] = (parent, _before_end(_tostring(root), fmt))
        parent, head = holder
        content = _content_html(article, render(article)) if settings.full_content else None
        make = _rss_item if fmt == "rss" else _atom_entry
        before = len(parent)
        try:
            make(parent, article, settings, content)
            text = _tostring(parent.getroottree().getroot())
        finally:
            del parent[before:]  # the entry, or what a refused value left of it
        if not text.startswith(head):  # pragma: no cover - lxml changed
            raise ValueError("an entry did not serialize in place")
        return _before_end(text, fmt)[len(head) :]


# How feedgen's pretty-printed feeds end: the entries go right before.
_FEED_ENDS = {"rss": b"  </channel>\n</rss>\n", "atom": b"</feed>\n"}


def _tostring(root: etree._Element) -> bytes:
    data: bytes = etree.tostring(
        root.getroottree(), pretty_print=True, encoding="UTF-8", xml_declaration=True
    )
    return data


def _before_end(data: bytes, fmt: str) -> bytes:
    """A serialized feed without its end (`_FEED_ENDS`), where entries go."""
    end = _FEED_ENDS[fmt]
    if not data.endswith(end):  # pragma: no cover - feedgen or lxml changed
        raise ValueError(f"a feed ended with {data[-40:]!r}, not {end!r}")
    return data[: -len(end)]


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _rfc2822(moment: datetime) -> str:
    """feedgen's `formatRFC2822` (strftime in the C locale) without switching this process's
    locale twice per date."""
    return moment.strftime(f"{_DAYS[moment.weekday()]}, %d {_MONTHS[moment.month - 1]} %Y %H:%M:%S %z")


def _rss_item(
    channel: etree._Element, article: Article, settings: FeedSettings, content: str | None
) -> etree._Element:
    """feedgen's `FeedEntry.rss_entry` for `_add_entry`'s entry, then its extensions (dc, ours)."""
    summary = _summary(article, settings)
    if not (article.title or summary or content is not None):
        raise ValueError("Required fields not set")
    item = SubElement(channel, "item")
    if article.title:
        SubElement(item, "title").text = article.title
    if article.url:
        SubElement(item, "link").text = article.url
    if summary and content is not None:
        SubElement(item, "description").text = summary
        SubElement(item, f"{{{_CONTENT_NS}}}encoded").text = content
    elif summary:
        SubElement(item, "description").text = summary
    elif content is not None:
        SubElement(item, "description").text = content
    if article.id:
        guid = SubElement(item, "guid")
        guid.text = article.id
        guid.set("isPermaLink", "true")
    for term, scheme in _categories(article, settings):
        category = SubElement(item, "category")
        category.text = term
        category.set("domain", scheme)
    SubElement(item, "pubDate").text = _rfc2822(article.date)
    if article.author:
        SubElement(item, f"{{{_DC_NS}}}creator").text = article.author
    if article.cover is not None:
        _rss_enclosure(item, article.cover)
    return item


def _atom_entry(
    feed: etree._Element, article: Article, settings: FeedSettings, content: str | None
) -> etree._Element:
    """feedgen's `FeedEntry.atom_entry` for `_add_entry`'s entry, then its extensions."""
    if not (article.id and article.title):
        raise ValueError("Required fields not set")
    entry = SubElement(feed, "entry")
    SubElement(entry, "id").text = article.id
    SubElement(entry, "title").text = article.title
    SubElement(entry, "updated").text = article.updated.isoformat()
    if article.author:
        SubElement(SubElement(entry, "author"), "name").text = article.author
    if content is not None:
        _typed_text(entry, "content", content)
    SubElement(entry, "link", href=article.url)  # feedgen drops the rel (FG-07): alternate by default
    summary = _summary(article, settings)
    if summary is not None:
        _typed_text(entry, "summary", summary)
    for term, scheme in _categories(article, settings):
        SubElement(entry, "category", term=term).set("scheme", scheme)
    SubElement(entry, "published").text = article.date.isoformat()
    if article.author:
        SubElement(entry, f"{{{_DC_NS}}}creator").text = article.author
    if article.cover is not None:
        _atom_enclosure(entry, article.cover)
    return entry


def _typed_text(entry: etree._Element, name: str, text: str) -> None:
    element = SubElement(entry, name)
    if text:
        element.text = text
    element.set("type", "html")


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
