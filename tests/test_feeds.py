"""Feeds parsed back by feedparser and checked element by element against standards.md."""

from __future__ import annotations

import email.utils
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import feedparser
import pytest
from conftest import NOW, copy_site
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from newsletter.builder import BuildResult, build, feed_settings
from newsletter.collector import is_published, newest_first
from newsletter.config import load_config
from newsletter.content import ContentSettings, parse_article, render_body, slugify
from newsletter.errors import FeedError
from newsletter.feeds import FeedSettings, FeedSpec, build_feed_files, feed_fingerprint, plan_feeds
from newsletter.model import Article, Cover, RenderedBody

NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "content": "http://purl.org/rss/1.0/modules/content/",
    "media": "http://search.yahoo.com/mrss/",
    "dc": "http://purl.org/dc/elements/1.1/",
}
SITE = "https://ai-nieuws.example.nl"
RFC822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$"
)
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
UNSAFE_HTML = re.compile(r"<(script|embed|object|link|meta|noscript|iframe|style)\b|\son\w+=|style=", re.I)


def xml_feeds(result: BuildResult, suffix: str) -> dict[str, bytes]:
    return {rel: data for rel, data in result.files.items() if rel.endswith(suffix)}


def articles_by_id(result: BuildResult) -> dict[str, object]:
    return {a.id: a for a in result.catalog.articles}


# --- every feed of the sample site, read back as a reader would --------------------------------
def test_sample_site_has_site_label_and_tag_feeds(sample_build: BuildResult) -> None:
    files = sample_build.files
    for rel in ("index.xml", "atom.xml", "feed.json", "feeds.opml", "feeds.html"):
        assert rel in files
    for label in ("beslisser", "bouwer", "onderzoeker", "algemeen"):
        for name in ("index.xml", "atom.xml", "feed.json"):
            assert f"labels/{label}/{name}" in files
    assert any(rel.startswith("tags/") for rel in files)
    assert len(sample_build.published) >= 12


@pytest.mark.parametrize("suffix", ["index.xml", "atom.xml"])
def test_feedparser_round_trip(sample_build: BuildResult, suffix: str) -> None:
    by_id = articles_by_id(sample_build)
    specs = plan_feeds(
        [by_id[i] for i in sample_build.published], feed_settings(load_config_of(sample_build))
    )
    for spec in specs:
        rel = spec.path("rss" if suffix == "index.xml" else "atom")
        parsed = feedparser.parse(sample_build.files[rel])
        assert not parsed.bozo, (rel, parsed.get("bozo_exception"))
        assert [e.id for e in parsed.entries] == [a.id for a in spec.articles]
        assert [e.title for e in parsed.entries] == [a.title for a in spec.articles]
        assert [e.link for e in parsed.entries] == [a.url for a in spec.articles]
        for entry, article in zip(parsed.entries, spec.articles, strict=True):
            published = _aware(entry.published)
            assert published.tzinfo is not None
            # RSS has whole seconds (RFC 822); Atom keeps the milliseconds.
            expected = article.date if suffix == "atom.xml" else article.date.replace(microsecond=0)
            assert published == expected
            assert article.title in entry.title
            body = sample_build.catalog.rendered(article)
            assert entry.content[0].value.rstrip().endswith(body.html.rstrip())
            assert entry.summary == article.summary


def load_config_of(result: BuildResult):  # type: ignore[no-untyped-def]
    # The catalog root is <site>/content; its config sits beside it.
    return load_config(result.catalog.root.parent / "config.toml")


def _aware(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return email.utils.parsedate_to_datetime(text)


def test_drafts_future_and_expired_are_in_no_feed(sample_build: BuildResult) -> None:
    hidden = [a for a in sample_build.catalog.articles if not is_published(a, NOW)]
    assert any(a.draft for a in hidden) and any(a.date > NOW for a in hidden)
    everything = b"".join(sample_build.files.values())
    for article in hidden:
        assert article.id.encode() not in everything


# --- RSS 2.0 -----------------------------------------------------------------------------------
@pytest.fixture
def rss_docs(sample_build: BuildResult) -> dict[str, etree._Element]:
    return {rel: etree.fromstring(data) for rel, data in xml_feeds(sample_build, "index.xml").items()}


def test_rss_channel(rss_docs: dict[str, etree._Element], sample_build: BuildResult) -> None:
    for rel, doc in rss_docs.items():
        assert doc.tag == "rss" and doc.get("version") == "2.0"
        channels = doc.findall("channel")
        assert len(channels) == 1  # RSS-01
        ch = channels[0]
        for name in ("title", "link", "description"):
            assert (ch.findtext(name) or "").strip(), (rel, name)
        assert ch.findtext("link") == SITE + "/"  # RSS-02: the site, not the feed
        assert ch.findtext("language") == "nl"  # RSS-16
        assert ch.findtext("ttl") == "60"  # RSS-18
        selfs = ch.findall("atom:link[@rel='self']", NS)
        assert len(selfs) == 1  # RSS-20
        assert selfs[0].get("type") == "application/rss+xml"
        assert selfs[0].get("href") == f"{SITE}/{rel}"  # RSS-21: where the file is written
        items = ch.findall("item")
        dates = [email.utils.parsedate_to_datetime(i.findtext("pubDate")) for i in items]
        assert dates == sorted(dates, reverse=True)  # RSS-23, FG-01
        # RSS-07: lastBuildDate is the newest content, not the clock
        last_build = email.utils.parsedate_to_datetime(ch.findtext("lastBuildDate"))
        assert last_build == max(dates) and last_build < NOW
        assert all(d <= NOW for d in dates)  # RSS-22


def test_rss_items(rss_docs: dict[str, etree._Element]) -> None:
    for rel, doc in rss_docs.items():
        guids = []
        for item in doc.iter("item"):
            assert item.findtext("title") or item.findtext("description")  # RSS-03
            pub = item.findtext("pubDate")
            assert RFC822.match(pub), pub  # RSS-04
            # RSS-05: the weekday matches the date
            assert email.utils.parsedate_to_datetime(pub).strftime("%a") == pub[:3]
            guid = item.find("guid")
            assert guid is not None and guid.text.startswith(SITE + "/")  # RSS-08/09
            assert guid.get("isPermaLink") == "true"
            assert not guid.text.rstrip("/").isdigit()  # RSS-10
            guids.append(guid.text)
            children = [c.tag for c in item]
            content_tag = f"{{{NS['content']}}}encoded"
            assert children.index("description") < children.index(content_tag)  # RSS-12
            html = item.findtext("content:encoded", namespaces=NS)
            assert not UNSAFE_HTML.search(html)  # RSS-15
            for url in re.findall(r'(?:href|src)="([^"]*)"', html):
                assert url.startswith(("https://", "http://", "mailto:")), url  # RSS-14
            for cat in item.findall("category"):
                assert (cat.text or "").strip()  # RSS-17
            enclosures = item.findall("enclosure")
            assert len(enclosures) <= 1  # RSS-11
            for enc in enclosures:
                assert enc.get("url").startswith("https://")
                assert enc.get("length").isdigit()  # FG-06: never "None"
                assert enc.get("type", "").startswith("image/")
            assert item.find("author") is None or "@" in item.findtext("author")  # RSS-19
            assert item.findall("media:group", NS) == []  # MRSS-02, FG-11
        assert len(guids) == len(set(guids)), rel


def test_rss_pubdate_of_the_real_article_keeps_utc_and_drops_ms(sample_build: BuildResult) -> None:
    doc = etree.fromstring(sample_build.files["labels/beslisser/index.xml"])
    dates = {i.findtext("link"): i.findtext("pubDate") for i in doc.iter("item")}
    assert dates[f"{SITE}/2026/02/meta-investeert-in-amd-ai-chips/"] == "Tue, 24 Feb 2026 15:58:28 +0000"


def test_cover_in_enclosure_media_and_content(sample_build: BuildResult) -> None:
    doc = etree.fromstring(sample_build.files["index.xml"])
    by_link = {i.findtext("link"): i for i in doc.iter("item")}
    for article in sample_build.catalog.articles:
        item = by_link.get(article.url)
        if item is None or article.cover is None:
            continue
        assert item.find("enclosure").get("url") == article.cover.image
        media = item.findall("media:content", NS)
        assert len(media) == 1
        assert media[0].get("url") == article.cover.image
        assert media[0].get("medium") == "image"
        assert media[0].findtext("media:description", namespaces=NS) == article.cover.alt
        content = item.findtext("content:encoded", namespaces=NS)
        assert f'<img src="{article.cover.image.replace("&", "&amp;")}"' in content


# --- Atom 1.0 ----------------------------------------------------------------------------------
def test_atom_feed_and_entries(sample_build: BuildResult) -> None:
    for rel, data in xml_feeds(sample_build, "atom.xml").items():
        doc = etree.fromstring(data)
        a = f"{{{NS['atom']}}}"
        assert doc.tag == a + "feed"
        assert doc.get("{http://www.w3.org/XML/1998/namespace}lang") == "nl"  # ATOM-13
        for name in ("id", "title", "updated"):
            assert len(doc.findall(a + name)) == 1  # ATOM-01
        assert doc.find(f"{a}author/{a}name").text  # ATOM-02
        links = doc.findall(a + "link")
        selfs = [x for x in links if x.get("rel") == "self"]
        alternates = [x for x in links if x.get("rel", "alternate") == "alternate"]
        assert [x.get("href") for x in selfs] == [f"{SITE}/{rel}"]  # ATOM-03
        assert len(alternates) == 1 and alternates[0].get("type") == "text/html"
        assert RFC3339.match(doc.findtext(a + "updated"))
        ids = []
        for entry in doc.findall(a + "entry"):
            for name in ("id", "title", "updated"):
                assert len(entry.findall(a + name)) == 1  # ATOM-04
            assert RFC3339.match(entry.findtext(a + "updated"))  # ATOM-07
            assert RFC3339.match(entry.findtext(a + "published"))
            ids.append(entry.findtext(a + "id"))
            alt = [x for x in entry.findall(a + "link") if x.get("rel", "alternate") == "alternate"]
            assert len(alt) == 1  # ATOM-05/06, FG-07
            for enc in entry.findall(a + "link[@rel='enclosure']"):
                assert enc.get("type") and enc.get("length").isdigit()  # ATOM-15
            content = entry.find(a + "content")
            assert content.get("type") == "html"  # ATOM-10/11, FG-08: never CDATA
            assert len(content) == 0  # escaped, no child elements
            assert entry.find(a + "summary").get("type") == "html"
            for cat in entry.findall(a + "category"):
                assert cat.get("term")  # ATOM-14
            assert entry.findall("media:group", NS) == []
        assert len(ids) == len(set(ids)) and all(i.startswith(SITE + "/") for i in ids)  # ATOM-08


# --- JSON Feed 1.1 -----------------------------------------------------------------------------
def test_json_feed(sample_build: BuildResult) -> None:
    for rel, data in sample_build.files.items():
        if not rel.endswith("feed.json"):
            continue
        feed = json.loads(data)
        assert feed["version"] == "https://jsonfeed.org/version/1.1"  # JSONF-01
        assert feed["title"] and feed["home_page_url"] == SITE + "/"
        assert feed["feed_url"] == f"{SITE}/{rel}"
        assert feed["language"] == "nl" and feed["authors"][0]["name"]  # JSONF-03
        assert "author" not in feed
        dates = []
        for item in feed["items"]:
            assert isinstance(item["id"], str) and item["content_html"]  # JSONF-02
            assert RFC3339.match(item["date_published"])
            dates.append(datetime.fromisoformat(item["date_published"]))
        assert dates == sorted(dates, reverse=True)


def test_opml_and_discovery_page_list_every_feed(sample_build: BuildResult) -> None:
    feeds = {f"{SITE}/{rel}" for rel in sample_build.files if rel.endswith((".xml", ".json"))}
    opml = etree.fromstring(sample_build.files["feeds.opml"])
    assert {o.get("xmlUrl") for o in opml.iter("outline") if o.get("xmlUrl")} == feeds
    page = etree.fromstring(sample_build.files["feeds.html"], etree.HTMLParser())
    links = page.findall(".//head/link[@rel='alternate']")
    hrefs = [x.get("href") for x in links]
    assert set(hrefs) == feeds and len(hrefs) == len(feeds)  # DISC-01: one per feed, distinct
    types = {x.get("type") for x in links}
    assert types == {"application/rss+xml", "application/atom+xml", "application/feed+json"}
    assert page.find(".").get("lang") == "nl"


# --- item limit, tags, labels ------------------------------------------------------------------
def test_corpus_feeds_respect_limit_and_filters(tmp_path: Path, corpus_dir: Path) -> None:
    config = load_config(copy_site(tmp_path, content=corpus_dir))
    result = build(config, NOW)
    by_id = articles_by_id(result)
    assert not result.catalog.problems
    expected_site = newest_first(a for a in result.catalog.articles if is_published(a, NOW))[:50]
    site = feedparser.parse(result.files["index.xml"])
    assert [e.id for e in site.entries] == [a.id for a in expected_site]
    for rel, data in result.files.items():
        if not rel.endswith("atom.xml") or rel == "atom.xml":
            continue
        parsed = feedparser.parse(data)
        assert not parsed.bozo and 0 < len(parsed.entries) <= 50
        kind, slug = rel.split("/")[:2]
        for entry in parsed.entries:
            article = by_id[entry.id]
            names = article.labels if kind == "labels" else article.tags
            assert slug in {re.sub(r"[^a-z0-9]+", "-", n.lower()).strip("-") for n in names}


def test_summary_is_html_escaped_and_control_chars_never_break_xml(tmp_path: Path) -> None:
    raw = (
        b'---\ntitle: "A & B <3 \x0b"\ndate: 2026-11-20T10:00:00Z\nsummary: "A & B <3"\n'
        b"label: ALGEMEEN\n---\nTekst met \x0b controle\x1f tekens.\n"
    )
    settings = ContentSettings(SITE)
    parsed = parse_article(raw, "2026/11/x.md", settings)
    files = build_feed_files(
        [parsed.article],
        FeedSettings(SITE, "T", "D"),
        lambda a: render_body(parsed.body, a.url, a.source),
    )
    rss = feedparser.parse(files["index.xml"])
    assert not rss.bozo
    assert rss.entries[0].summary == "A &amp; B &lt;3"  # feedparser shows the HTML; readers show "A & B <3"
    assert rss.entries[0].title == "A & B <3"
    atom = feedparser.parse(files["atom.xml"])
    assert atom.entries[0].title == "A & B <3"


def test_same_content_gives_identical_bytes_whatever_the_clock(tmp_path: Path) -> None:
    config = load_config(copy_site(tmp_path))
    first = build(config, NOW).files
    # A week later nothing new was published (the future article is for 2027): same bytes.
    second = build(config, NOW + timedelta(days=7), use_index=False).files
    assert first == second


def test_feed_without_full_content_uses_summaries(tmp_path: Path) -> None:
    config = load_config(copy_site(tmp_path, extra=""))
    text = config.path.read_text().replace("full_content = true", "full_content = false")
    config.path.write_text(text)
    result = build(load_config(config.path), NOW)
    doc = etree.fromstring(result.files["index.xml"])
    assert doc.find(".//item/content:encoded", NS) is None
    assert all(i.findtext("description") for i in doc.iter("item"))
    atom = feedparser.parse(result.files["atom.xml"])
    assert not atom.bozo and all(e.link for e in atom.entries)
    assert all("content_html" not in i for i in json.loads(result.files["feed.json"])["items"])


# --- planning: the grouping shortcut against the plain algorithm ---------------------------------
def _plain_plan(published: list[Article], settings: FeedSettings) -> list[tuple[object, ...]]:
    """plan_feeds as first written: group every article, cut each group at max_items."""
    limit = settings.max_items
    plan: list[tuple[object, ...]] = [("site", "", "", [a.id for a in published[:limit]])]
    for kind, enabled in (("label", settings.per_label), ("tag", settings.per_tag)):
        if not enabled:
            continue
        groups: dict[str, list[Article]] = {}
        names: dict[str, str] = {}
        for article in published:
            for name in article.labels if kind == "label" else article.tags:
                slug = slugify(name)
                if not slug:
                    continue
                group = groups.setdefault(slug, [])
                if not group or group[-1] is not article:
                    group.append(article)
                names[slug] = min(names.get(slug, name), name)
        for slug in sorted(groups):
            plan.append((kind, names[slug], slug, [a.id for a in groups[slug][:limit]]))
    return plan


_SPELLINGS = ["AI Hardware", "ai hardware", "AI-hardware", "Chips", "chips!", "!!!", "Ünï", "uni", "x"]


@settings(max_examples=200, deadline=None, database=None)
@given(
    names=st.lists(
        st.tuples(st.lists(st.sampled_from(_SPELLINGS), max_size=3), st.lists(st.sampled_from(_SPELLINGS), max_size=4)),
        max_size=40,
    ),
    limit=st.integers(1, 5),
    per_label=st.booleans(),
    per_tag=st.booleans(),
)
def test_plan_feeds_equals_the_plain_grouping(
    names: list[tuple[list[str], list[str]]], limit: int, per_label: bool, per_tag: bool
) -> None:
    start = datetime(2026, 1, 1, tzinfo=NOW.tzinfo)
    published = [
        Article(
            id=f"{SITE}/p{n}/", path=f"p{n}.md", slug=f"p{n}", url=f"{SITE}/p{n}/", title=f"P{n}",
            date=start - timedelta(hours=n), labels=tuple(labels), tags=tuple(tags),
        )
        for n, (labels, tags) in enumerate(names)
    ]
    settings_ = FeedSettings(SITE, "T", "D", max_items=limit, per_label=per_label, per_tag=per_tag)
    got = [
        (s.kind, s.name, s.directory.rpartition("/")[2], [a.id for a in s.articles])
        for s in plan_feeds(published, settings_)
    ]
    assert got == _plain_plan(published, settings_)


def test_fingerprint_changes_with_any_item_version_or_place() -> None:
    spec = FeedSpec("tag", "AI", "T – AI", "tags/ai", ())
    base = feed_fingerprint(spec, "rss", [b"a" * 16, b"b" * 16])
    assert base == feed_fingerprint(spec, "rss", [b"a" * 16, b"b" * 16])
    assert base != feed_fingerprint(spec, "rss", [b"b" * 16, b"a" * 16])  # order counts
    assert base != feed_fingerprint(spec, "rss", [b"a" * 16])
    assert base != feed_fingerprint(spec, "atom", [b"a" * 16, b"b" * 16])
    assert base != feed_fingerprint(FeedSpec("tag", "Ai", "T – Ai", "tags/ai", ()), "rss", [b"a" * 16, b"b" * 16])


@given(st.text(alphabet=st.sampled_from("ab &<>\"'\n\r\t\u00e9;#")) | st.text())
def test_quoteattr_gives_the_bytes_of_the_standard_library_one(value: str) -> None:
    from xml.sax.saxutils import quoteattr as standard

    from newsletter.feeds import quoteattr

    assert quoteattr(value) == standard(value)


def test_building_imports_no_http_email_or_ssl_modules() -> None:
    """xml.sax.saxutils pulled in urllib.request, http.client, email and ssl (~20 ms of a build's
    start-up), and checking the empty default mail addresses imported email.utils (~5 ms)."""
    import subprocess
    import sys

    code = (
        "import sys, newsletter.builder\n"
        "from newsletter.config import parse_config\n"
        "from pathlib import Path\n"
        "parse_config({'site': {'url': 'https://example.nl', 'title': 'T'}}, base_dir=Path('.'))\n"
        "print(sorted(m for m in ('xml.sax.saxutils', 'urllib.request', 'http.client',"
        " 'email.parser', 'email.utils', 'ssl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entries_shared_between_feeds_give_the_bytes_of_fresh_ones(sample_build: BuildResult) -> None:
    """FeedItems makes an article's entry once per build (RSS and Atom) and splices its bytes
    into every feed it is in; each feed must come out as feedgen makes it with all its entries,
    in every format."""
    from newsletter.feeds import FeedItems, render_feed

    by_id = articles_by_id(sample_build)
    settings = feed_settings(load_config_of(sample_build))
    specs = plan_feeds([by_id[i] for i in sample_build.published], settings)
    render = sample_build.catalog.rendered
    items = FeedItems()
    shared = {
        (spec.path(fmt)): render_feed(spec, fmt, settings, render, items)
        for fmt in ("rss", "atom", "json")
        for spec in specs
    }
    alone = {
        (spec.path(fmt)): render_feed(spec, fmt, settings, render)
        for fmt in ("rss", "atom", "json")
        for spec in specs
    }
    assert shared == alone
    assert len(shared) == 3 * len(specs)
    # the entries really were shared: one per article and XML format, fewer than the feeds hold
    made = len(items)
    assert made == 2 * len({a.id for spec in specs for a in spec.articles})
    assert made < 2 * sum(len(spec.articles) for spec in specs)


# Any text, with what XML escapes or refuses (control characters, a lone surrogate) over-represented.
_FEED_TEXT = st.text(max_size=16) | st.sampled_from(["", "A & B <3 \"q\" 'a' ]]>", "é\u2028x", "a\x0bb", "\udcff"])
_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=1)), timezone(-timedelta(hours=5, minutes=30)), ZoneInfo("Europe/Amsterdam")]
)
_MOMENTS = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2100, 12, 30)),
    _ZONES,
)


@st.composite
def _feed_articles(draw: st.DrawFn) -> Article:
    slug = draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True))
    url = f"{SITE}/{slug}/{draw(_FEED_TEXT)}"
    cover = draw(
        st.none()
        | st.builds(Cover, image=st.sampled_from([f"{SITE}/a.jpg", f"{SITE}/b.png?x=1&y=2", "x"]), alt=_FEED_TEXT, caption=_FEED_TEXT)
    )
    return Article(
        id=draw(st.sampled_from([url, ""])), path=f"{slug}.md", slug=slug, url=draw(st.sampled_from([url, ""])),
        title=draw(_FEED_TEXT), date=draw(_MOMENTS), lastmod=draw(st.none() | _MOMENTS),
        tags=tuple(draw(st.lists(_FEED_TEXT, max_size=3))), labels=tuple(draw(st.lists(_FEED_TEXT, max_size=2))),
        summary=draw(_FEED_TEXT), cover=cover, author=draw(_FEED_TEXT), source=draw(_FEED_TEXT),
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    # a build's ids are unique (the collector drops duplicate permalinks)
    articles=st.lists(_feed_articles(), min_size=1, max_size=3, unique_by=(lambda a: a.id, lambda a: a.path)),
    bodies=st.lists(_FEED_TEXT, min_size=3, max_size=3),
    full_content=st.booleans(),
    fmt=st.sampled_from(["rss", "atom"]),
)
def test_spliced_entries_give_the_bytes_feedgen_gives(
    articles: list[Article], bodies: list[str], full_content: bool, fmt: str
) -> None:
    """The build makes each entry once (`FeedItems`, our own lxml calls) and splices its bytes
    into every feed: for any article, the feed must be what feedgen makes with all its entries,
    or fail with the same error."""
    from newsletter.feeds import FeedItems, render_feed

    settings_ = FeedSettings(SITE, "T & t", "D", full_content=full_content, ttl=30)
    spec = FeedSpec("site", "", "T & t", "", tuple(articles))
    by_path = {a.path: RenderedBody(body, "", (), "") for a, body in zip(articles, bodies, strict=False)}

    def render(article: Article) -> RenderedBody:
        return by_path[article.path]

    def made(items: FeedItems | None) -> bytes | str:
        try:
            return render_feed(spec, fmt, settings_, render, items)
        except FeedError as exc:
            return str(exc)

    items = FeedItems()
    assert made(items) == made(None)
    assert made(items) == made(None)  # entries made before: taken as they are


@pytest.mark.parametrize("fmt", ["rss", "atom"])
def test_an_entry_xml_cannot_hold_fails_its_feed_and_leaves_the_next_ones_right(fmt: str) -> None:
    from newsletter.feeds import FeedItems, render_feed

    good = Article(id=f"{SITE}/a/", path="a.md", slug="a", url=f"{SITE}/a/", title="Goed", date=NOW)
    bad = Article(id=f"{SITE}/b/", path="b.md", slug="b", url=f"{SITE}/b/", title="Fout \x00", date=NOW)
    settings_ = FeedSettings(SITE, "T", "D")

    def render(article: Article) -> RenderedBody:
        return RenderedBody("<p>x</p>", "<p>x</p>", (), "")

    later = Article(id=f"{SITE}/c/", path="c.md", slug="c", url=f"{SITE}/c/", title="Later", date=NOW)
    items = FeedItems()
    with pytest.raises(FeedError, match=r"^tags/x/.*: All strings must be XML compatible"):
        render_feed(FeedSpec("tag", "x", "X", "tags/x", (good, bad)), fmt, settings_, render, items)
    spec = FeedSpec("site", "", "T", "", (later, good))  # an entry made after the refused one
    assert render_feed(spec, fmt, settings_, render, items) == render_feed(spec, fmt, settings_, render)
