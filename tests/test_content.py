"""content.py: one article file -> Article (+ Markdown body) -> sanitized HTML.

Everything goes through the public entry points `parse_article` and `render_body`, with real bytes
as they would be read from disk.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter import content as content_module
from newsletter.content import (
    ContentSettings,
    ParsedArticle,
    markdown_html,
    parse_article,
    render_body,
    sanitize,
)
from newsletter.errors import ArticleError

SITE = ContentSettings("https://example.nl")
PATH = "2026/11/x.md"
URL = "https://example.nl/2026/11/x/"
AMS = ZoneInfo("Europe/Amsterdam")
SEED = Path(__file__).parents[2] / "shared" / "seed" / "000_726bf43770dbc9b9.txt"


def parse(raw: bytes | str, path: str = PATH, site: ContentSettings = SITE) -> ParsedArticle:
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    return parse_article(raw, path, site)


def yaml_doc(front: str, body: str = "Body text.\n") -> bytes:
    """A YAML front matter article; `front` holds the lines between the --- lines."""
    return f"---\n{front.strip(chr(10))}\n---\n\n{body}".encode()


def minimal(extra: str = "", body: str = "Body text.\n") -> bytes:
    return yaml_doc(f'title: "T"\ndate: 2026-02-24T10:00:00Z\n{extra}', body)


def error_of(raw: bytes, path: str = PATH) -> ArticleError:
    with pytest.raises(ArticleError) as info:
        parse_article(raw, path, SITE)
    return info.value


class _Attrs(HTMLParser):
    """Every tag and attribute of an HTML fragment, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []  # (tag, name, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((tag, name, value or "") for name, value in attrs)

    handle_startendtag = handle_starttag


def html_parts(fragment: str) -> _Attrs:
    parser = _Attrs()
    parser.feed(fragment)
    parser.close()
    return parser


# --- the real article ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seed() -> ParsedArticle:
    return parse_article(SEED.read_bytes(), PATH, SITE)


def test_seed_metadata(seed: ParsedArticle) -> None:
    a = seed.article
    assert a.title == (
        "Meta investeert tot 100 miljard dollar in AMD AI-chips voor eigen superintelligentie"
    )
    assert a.date == datetime(2026, 2, 24, 15, 58, 28, 484000, tzinfo=UTC)
    assert a.date.utcoffset() == timedelta(0)
    assert a.tags == ("meta", "amd", "ai hardware", "datacenters")
    assert a.labels == ("BESLISSER",)
    assert a.summary.startswith("Meta sluit een deal van mogelijk 100 miljard dollar met AMD")
    assert a.draft is False
    assert a.source == "The Information"
    assert a.id == a.url == URL
    assert a.slug == "x"
    assert a.path == PATH


def test_seed_cover(seed: ParsedArticle) -> None:
    cover = seed.article.cover
    assert cover is not None
    assert cover.image == (
        "https://images.pexels.com/photos/4313857/pexels-photo-4313857.jpeg"
        "?auto=compress&cs=tinysrgb&dpr=2&h=650&w=940"
    )
    assert cover.alt == (
        "Close-up of hands holding a foldable smartphone showing a butterfly on the screen."
    )
    assert cover.caption == "Foto: Zana Latif via Pexels"
    assert cover.mime_type == "image/jpeg"


def test_seed_sections(seed: ParsedArticle) -> None:
    expected = (
        "Een strategische verschuiving in de chipmarkt",
        "Investering in de toekomst: 'Personal Superintelligence'",
        "Financiële en operationele implicaties",
        "Wat kun je hier morgen mee?",
    )
    rendered = render_body(seed.body, seed.article.url, seed.article.source)
    assert tuple(s.heading for s in rendered.sections) == expected
    assert rendered.intro_html.startswith("<p>Meta heeft een overeenkomst gesloten")


def test_seed_takeaway_section_and_source_line(seed: ParsedArticle) -> None:
    rendered = render_body(seed.body, seed.article.url, seed.article.source)
    takeaway = rendered.section("  wat kun je HIER morgen mee? ")  # lookup ignores case/space
    assert takeaway is not None
    assert takeaway.anchor == "wat-kun-je-hier-morgen-mee"
    assert takeaway.text.startswith(
        "Voor beslissers in Nederland die afhankelijk zijn van cloud-AI"
    )
    assert takeaway.text.endswith(
        "aangezien afhankelijkheid van één leverancier risico's met zich meebrengt."
    )
    # The "Bron:" line sat directly under the last paragraph; it must not be glued into it.
    assert "Bron" not in takeaway.text
    assert "Bron" not in takeaway.html
    assert "The Information" not in seed.body
    assert takeaway.html.count("<p>") == 1
    assert rendered.source == "The Information"
    assert rendered.html.rstrip().endswith("<p>Bron: The Information</p>")
    assert rendered.html.count("Bron:") == 1


# --- encodings and line ends ---------------------------------------------------------------------
def test_utf8_bom_parses_like_without() -> None:
    raw = minimal('summary: "Café"')
    assert parse(b"\xef\xbb\xbf" + raw) == parse(raw)
    assert parse(b"\xef\xbb\xbf" + raw).article.summary == "Café"


def test_crlf_gives_identical_result_to_lf() -> None:
    lf = SEED.read_bytes().replace(b"\r\n", b"\n")
    crlf = lf.replace(b"\n", b"\r\n")
    assert b"\r\n" in crlf
    assert parse(crlf) == parse(lf)
    assert "\r" not in parse(crlf).body


# --- the three front matter formats and every date shape -------------------------------------
def test_toml_front_matter() -> None:
    raw = (
        b'+++\ntitle = "TOML article"\ndate = 2026-02-24T15:58:28+02:00\n'
        b'lastmod = 2026-03-01\ntags = ["a", "b"]\n[cover]\nimage = "/img/c.png"\n+++\n\nBody.\n'
    )
    a = parse(raw).article
    assert a.title == "TOML article"
    assert a.date == datetime(2026, 2, 24, 13, 58, 28, tzinfo=UTC)
    assert a.date.utcoffset() == timedelta(hours=2)
    assert a.lastmod == datetime(2026, 3, 1, tzinfo=AMS)  # local date: midnight, site zone
    assert a.lastmod.utcoffset() == timedelta(hours=1)
    assert a.tags == ("a", "b")
    assert a.cover is not None and a.cover.image == "https://example.nl/img/c.png"


def test_json_front_matter() -> None:
    raw = (
        b'{\n  "title": "JSON article",\n  "date": "2026-02-24T15:58:28Z",\n'
        b'  "tags": ["x"],\n  "draft": true\n}\n\nBody.\n'
    )
    a = parse(raw).article
    assert (a.title, a.tags, a.draft) == ("JSON article", ("x",), True)
    assert a.date == datetime(2026, 2, 24, 15, 58, 28, tzinfo=UTC)


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        pytest.param(
            "date: 2026-02-24T15:58:28.484Z",
            datetime(2026, 2, 24, 15, 58, 28, 484000, tzinfo=UTC),
            id="Z-with-ms",
        ),
        pytest.param(
            "date: 2026-02-24T15:58:28+02:00",
            datetime(2026, 2, 24, 15, 58, 28, tzinfo=timezone(timedelta(hours=2))),
            id="offset",
        ),
        pytest.param(
            'date: "2026-02-24T15:58:28Z"',
            datetime(2026, 2, 24, 15, 58, 28, tzinfo=UTC),
            id="quoted-string",
        ),
        pytest.param(
            "date: 2026-02-24", datetime(2026, 2, 24, 0, 0, tzinfo=AMS), id="date-only-midnight"
        ),
        pytest.param(
            "date: 2026-07-24", datetime(2026, 7, 24, 0, 0, tzinfo=AMS), id="date-only-summer"
        ),
        pytest.param(
            "date: 2026-02-24 15:58:28",
            datetime(2026, 2, 24, 15, 58, 28, tzinfo=AMS),
            id="naive-space",
        ),
        pytest.param(
            "date: 2026-07-24T15:58:28",
            datetime(2026, 7, 24, 15, 58, 28, tzinfo=AMS),
            id="naive-T-summer",
        ),
    ],
)
def test_yaml_date_shapes(front: str, expected: datetime) -> None:
    d = parse(yaml_doc(f"title: T\n{front}")).article.date
    assert d.tzinfo is not None and d.utcoffset() is not None
    assert d == expected
    assert d.utcoffset() == expected.utcoffset()


def test_toml_local_datetime_is_read_in_site_zone() -> None:
    d = parse(b'+++\ntitle = "T"\ndate = 2026-07-24T15:58:28\n+++\nBody.\n').article.date
    assert d == datetime(2026, 7, 24, 15, 58, 28, tzinfo=AMS)
    assert d.utcoffset() == timedelta(hours=2)


def test_site_timezone_setting_is_used() -> None:
    site = ContentSettings("https://example.nl", timezone="America/New_York")
    d = parse(yaml_doc("title: T\ndate: 2026-02-24"), site=site).article.date
    assert d.utcoffset() == timedelta(hours=-5)


def test_expiry_lastmod_publishdate_parsed() -> None:
    a = parse(
        yaml_doc(
            "title: T\ndate: 2026-02-24\npublishDate: 2026-02-26T08:00:00Z\n"
            "expiryDate: 2026-03-01T00:00:00+01:00\nlastmod: 2026-02-25"
        )
    ).article
    assert a.date == datetime(2026, 2, 24, tzinfo=AMS)
    assert a.publish_date == datetime(2026, 2, 26, 8, tzinfo=UTC)
    assert a.expiry_date == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert a.lastmod == datetime(2026, 2, 25, tzinfo=AMS)
    assert a.published == a.publish_date
    assert a.updated == a.lastmod


# --- bad input: each case names the file and the field -------------------------------------------
BAD_INPUT = [
    pytest.param(
        b"---\ntitle: [unclosed\ndate: 2026-02-24\n---\nBody\n", "front matter", id="broken-yaml"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\n\nBody without end\n",
        "front matter",
        id="no-closing-yaml",
    ),
    pytest.param(b'+++\ntitle = "T"\nBody\n', "front matter", id="no-closing-toml"),
    pytest.param(b"+++\ntitle = \n+++\nBody\n", "front matter", id="broken-toml"),
    pytest.param(b'{\n"title": "T",\n}\nBody\n', "front matter", id="broken-json"),
    pytest.param(b"---\ndate: 2026-02-24\n---\nBody\n", "title", id="missing-title"),
    pytest.param(b'---\ntitle: ""\ndate: 2026-02-24\n---\nBody\n', "title", id="empty-title"),
    pytest.param(b"---\ntitle: '   '\ndate: 2026-02-24\n---\nBody\n", "title", id="blank-title"),
    pytest.param(b"---\ntitle:\ndate: 2026-02-24\n---\nBody\n", "title", id="null-title"),
    pytest.param(b"---\ntitle: T\n---\nBody\n", "date", id="missing-date"),
    pytest.param(b"---\ntitle: T\ndate: 2026-02-30\n---\nBody\n", "date", id="impossible-date"),
    pytest.param(b'---\ntitle: T\ndate: "tomorrow"\n---\nBody\n', "date", id="word-date"),
    pytest.param(b"---\ntitle: T\ndate: 20260224\n---\nBody\n", "date", id="number-date"),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nexpiryDate: 2026-13-01\n---\nB\n",
        "expirydate",
        id="bad-expiry",
    ),
    pytest.param(b"---\n- a\n- b\n---\nBody\n", "front matter", id="yaml-list"),
    pytest.param(b"---\njust a scalar\n---\nBody\n", "front matter", id="yaml-scalar"),
    pytest.param(b"---\n---\nBody\n", "front matter", id="empty-block"),
    pytest.param(b"# Just Markdown\n\nNo front matter.\n", "front matter", id="no-front-matter"),
    pytest.param(b"", None, id="empty-file"),
    pytest.param(b"\n  \n\t\n", None, id="whitespace-file"),
    pytest.param(b"---\ntitle: T\x00\n---\n", None, id="binary-nul"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", None, id="png"),
    pytest.param(
        "---\ntitle: Café\ndate: 2026-02-24\n---\nBody\n".encode("latin-1"), None, id="latin-1"
    ),
    pytest.param(
        b"---\ntitle: 1.10\ndate: 2026-02-24\n---\nBody\n", "title", id="yaml-float-title"
    ),
    pytest.param(b"---\ntitle: true\ndate: 2026-02-24\n---\nBody\n", "title", id="yaml-bool-title"),
    pytest.param(b"---\ntitle: [a, b]\ndate: 2026-02-24\n---\nBody\n", "title", id="list-title"),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\ndraft: yes\n---\nBody\n", "draft", id="draft-yes"
    ),
    pytest.param(
        b'---\ntitle: T\ndate: 2026-02-24\ndraft: "false"\n---\nBody\n', "draft", id="draft-string"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\ntags: [a, 1.5]\n---\nBody\n", "tags", id="float-tag"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\ntags: [a, '']\n---\nBody\n", "tags", id="empty-tag"
    ),
    pytest.param(
        b"---\ntitle: T\nTitle: U\ndate: 2026-02-24\n---\nBody\n", "Title", id="key-twice-case"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nslug: ../etc\n---\nBody\n",
        "slug",
        id="slug-dotdot-slash",
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nslug: a/b\n---\nBody\n", "slug", id="slug-slash"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nslug: /etc\n---\nBody\n", "slug", id="slug-absolute"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nslug: '..'\n---\nBody\n", "slug", id="slug-dotdot"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nslug: 'a\\\\b'\n---\nBody\n", "slug", id="slug-backslash"
    ),
    pytest.param(
        b'---\ntitle: T\ndate: 2026-02-24\nslug: "a\\0b"\n---\nBody\n', "slug", id="slug-nul"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nurl: /a/../../b/\n---\nBody\n", "url", id="url-dotdot"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nurl: /a/./b/\n---\nBody\n", "url", id="url-dot"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nurl: //evil.com/x\n---\nBody\n",
        "url",
        id="url-protocol-relative",
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nurl: https://evil.com/x\n---\nBody\n",
        "url",
        id="url-absolute",
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\nurl: relative/x\n---\nBody\n", "url", id="url-relative"
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\ncover:\n  image: 'javascript:alert(1)'\n---\nB\n",
        "cover.image",
        id="cover-javascript",
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\ncover:\n  image: 'data:image/png;base64,AAAA'\n---\nB\n",
        "cover.image",
        id="cover-data",
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\ncover:\n  image: 'https://[oops/x.jpg'\n---\nB\n",
        "cover.image",
        id="cover-invalid-url",
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\ncover:\n  alt: no image\n---\nB\n",
        "cover.image",
        id="cover-no-image",
    ),
    pytest.param(
        b"---\ntitle: T\ndate: 2026-02-24\ncover: [a.jpg]\n---\nB\n", "cover", id="cover-list"
    ),
]


@pytest.mark.parametrize(("raw", "field"), BAD_INPUT)
def test_bad_input_raises_article_error_naming_path_and_field(
    raw: bytes, field: str | None
) -> None:
    path = "2026/11/broken.md"
    err = error_of(raw, path)
    assert err.path == path
    assert err.field == field
    assert path in str(err)
    assert err.message


def test_missing_closing_delimiter_is_not_silently_empty_metadata() -> None:
    # python-frontmatter alone would return {} and the whole text as body (FM-08).
    err = error_of(b"---\ntitle: T\ndate: 2026-02-24\nBody\n")
    assert err.field == "front matter"
    assert "closing" in err.message


def test_non_utf8_error_names_the_byte() -> None:
    err = error_of("---\ntitle: Café\n---\n".encode("latin-1"))
    assert "0xe9" in err.message


# --- YAML 1.1 coercions are not applied --------------------------------------------------------
@pytest.mark.parametrize(
    ("front", "attr", "expected"),
    [
        ("title: no", "title", "no"),
        ("title: 'yes'", "title", "yes"),
        ("title: on", "title", "on"),
        ("title: 012345", "title", "012345"),
        ("title: 12:30", "title", "12:30"),
        ("title: 2026-02-24", "title", "2026-02-24"),
        ("title: 0x1F", "title", "0x1F"),
        ("title: 42", "title", "42"),
        ("title: null-ish", "title", "null-ish"),
        (
            "tags: [012345, no, on, off, y, n, 12:30]",
            "tags",
            ("012345", "no", "on", "off", "y", "n", "12:30"),
        ),
        ("tags: [ai, ai, ' ml ']", "tags", ("ai", "ml")),
    ],
)
def test_yaml_11_values_stay_text(front: str, attr: str, expected: object) -> None:
    if not front.startswith("title"):
        front = f"title: T\n{front}"
    a = parse(yaml_doc(f"{front}\ndate: 2026-02-24")).article
    assert getattr(a, attr) == expected


@pytest.mark.parametrize(
    "front",
    [
        "Title: T\nDate: 2026-02-24",
        "TITLE: T\nDATE: 2026-02-24",
        "title: T\npublishDate: 2026-02-24",
        "title: T\nPUBLISHDATE: 2026-02-24",
        "title: T\npublishdate: 2026-02-24",
    ],
)
def test_keys_are_case_insensitive(front: str) -> None:
    a = parse(yaml_doc(front)).article
    assert a.title == "T"
    assert a.date == datetime(2026, 2, 24, tzinfo=AMS)


def test_publishdate_key_case_insensitive_alongside_date() -> None:
    a = parse(yaml_doc("title: T\ndate: 2026-01-01\npublishDate: 2026-02-24")).article
    b = parse(yaml_doc("title: T\ndate: 2026-01-01\nPUBLISHDATE: 2026-02-24")).article
    assert a == b
    assert a.date == datetime(2026, 1, 1, tzinfo=AMS)
    assert a.publish_date == datetime(2026, 2, 24, tzinfo=AMS)


def test_nested_keys_twice_differing_in_case_is_an_error() -> None:
    err = error_of(minimal("cover:\n  image: /a.jpg\n  IMAGE: /b.jpg"))
    assert err.field == "cover.IMAGE"


# --- control characters ------------------------------------------------------------------------
def test_raw_control_characters_are_removed_everywhere() -> None:
    raw = b'---\ntitle: "A\x0bB\x1fC"\nsummary: "S\x0bum\x1f"\ndate: 2026-02-24\n---\n\nbo\x0bdy\x1f text\n'
    p = parse(raw)
    assert p.article.title == "ABC"
    assert p.article.summary == "Sum"
    assert p.body == "body text"
    html = render_body(p.body, p.article.url).html
    assert re.search("[\x00-\x08\x0b\x0c\x0e-\x1f]", html) is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'---\ntitle: "A\\vB\\x1fC"\ndate: 2026-02-24\n---\nBody\n', id="yaml-escape"),
        pytest.param(
            b'---\ntitle: "A\\u000bB\\u001fC"\ndate: 2026-02-24\n---\nBody\n', id="yaml-u-escape"
        ),
        pytest.param(
            b'{\n"title": "A\\u000bB\\u001fC",\n"date": "2026-02-24"\n}\nBody\n', id="json-escape"
        ),
        pytest.param(
            b'+++\ntitle = "A\\u000bB\\u001fC"\ndate = 2026-02-24\n+++\nBody\n', id="toml-escape"
        ),
    ],
)
def test_escaped_control_characters_in_title_are_removed_too(raw: bytes) -> None:
    # Regression: decode() strips XML-illegal characters from the raw text only; the same
    # characters written as escapes inside a quoted string must not reach the Article either
    # (one of them breaks lxml serialisation of a whole feed).
    assert parse(raw).article.title == "ABC"


# --- XSS and URLs ---------------------------------------------------------------------------------
XSS_BODY = """\
Intro <script>alert(1)</script> text.

<iframe src="https://evil.example/"></iframe>

<img src="a.png" onerror="alert(1)" style="position:fixed">

<p style="background:url(x)" onclick="steal()" onmouseover="x()">styled</p>

[js](javascript:alert(1)) [JS](JaVaScRiPt:alert(1)) [data](data:text/html;base64,PHNjcmlwdD4=)

![pixel](data:image/png;base64,iVBORw0KGgo=)

<a href="javascript:alert(2)">raw</a> <a href="&#106;avascript:alert(3)">entity</a>
<a href="java&#9;script:alert(4)">tab</a> <a href="data:text/html,<script>x</script>">d</a>
<a href="vbscript:msgbox(1)">vb</a> <img src="data:image/svg+xml;base64,PHN2Zz4=">

<svg onload="alert(1)"><script>alert(1)</script></svg>

<object data="x.swf"></object><embed src="x.swf">
<form action="javascript:1"><input onfocus="alert(1)" autofocus></form>
<style>body { display:none }</style>
<link rel="stylesheet" href="https://evil.example/x.css">
<meta http-equiv="refresh" content="0;url=javascript:alert(1)">
<base href="https://evil.example/">

## Section <script>alert(9)</script>

Text <b onclick="x()">bold</b>.
"""


def test_xss_never_survives_render_body() -> None:
    rendered = render_body(XSS_BODY, URL, "Src <script>")
    parts = html_parts(rendered.html)
    forbidden_tags = {
        "script",
        "iframe",
        "style",
        "object",
        "embed",
        "form",
        "input",
        "link",
        "meta",
        "base",
        "svg",
    }
    assert forbidden_tags.isdisjoint(parts.tags), parts.tags
    for tag, name, value in parts.attrs:
        assert not name.startswith("on"), (tag, name)
        assert name != "style", tag
        if name in ("href", "src", "srcset", "action", "data", "xlink:href"):
            assert re.match(r"(https?|mailto|tel):", value.strip(), re.I), (tag, name, value)
    low = rendered.html.lower()
    assert "<script" not in low
    assert 'href="javascript' not in low and 'src="data' not in low
    assert "onerror=" not in low and "onclick=" not in low and "style=" not in low
    # the text of an ordinary link/bold survives
    assert "<b>bold</b>" in rendered.html
    assert "styled" in rendered.html
    # every section is sanitized too
    for section in rendered.sections:
        assert "<script" not in section.html.lower()
    assert "&lt;script&gt;" in rendered.html  # the source line is escaped text


def test_xss_in_title_is_kept_as_text() -> None:
    title = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    a = parse(yaml_doc(f"title: {json.dumps(title)}\ndate: 2026-02-24")).article
    assert a.title == title  # escaping is the output layer's job


def test_relative_links_and_images_become_absolute() -> None:
    body = (
        "[sib](other/) [up](../y/) [root](/about/) [frag](#top) [ext](https://x.org/a?b=1&c=2)\n"
        '[mail](mailto:a@b.nl)\n\n![img](pic.jpg) <img src="img/p.png" alt="p">\n'
    )
    parts = html_parts(render_body(body, URL).html)
    urls = {value for _, name, value in parts.attrs if name in ("href", "src")}
    assert urls == {
        "https://example.nl/2026/11/x/other/",
        "https://example.nl/2026/11/y/",
        "https://example.nl/about/",
        "https://example.nl/2026/11/x/#top",
        "https://x.org/a?b=1&c=2",
        "mailto:a@b.nl",
        "https://example.nl/2026/11/x/pic.jpg",
        "https://example.nl/2026/11/x/img/p.png",
    }
    assert all(value == "noopener noreferrer" for _, name, value in parts.attrs if name == "rel")


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("/img/a.jpg", "https://example.nl/img/a.jpg"),
        ("img/a.jpg", "https://example.nl/img/a.jpg"),
        ("https://cdn.example.com/a.png", "https://cdn.example.com/a.png"),
        ("//cdn.example.com/a.png", "https://cdn.example.com/a.png"),
    ],
)
def test_cover_image_becomes_absolute(image: str, expected: str) -> None:
    a = parse(minimal(f"cover:\n  image: {json.dumps(image)}\n  alt: A")).article
    assert a.cover is not None
    assert a.cover.image == expected
    assert a.cover.alt == "A"


@settings(max_examples=1000, deadline=None, database=None)
@given(
    base=st.sampled_from(["https://example.nl", "http://example.nl", "https://example.nl/sub"]),
    image=st.one_of(
        st.text(st.sampled_from("htps:/[]@%?#;=.ABab01 \\\t"), max_size=30),
        st.builds(
            "".join,
            st.tuples(
                st.sampled_from(["http://", "https://", "HTTPS://", "//", "/", "ftp://", ""]),
                st.text(st.sampled_from("ab.[]:@%?#;=/ 01\\\t\n\u00e9\uff1f"), max_size=25),
            ),
        ),
    ),
)
@example(base="https://example.nl", image="https://?0")
@example(base="https://example.nl", image="https://x.nl/a.jpg?")
@example(base="https://example.nl", image="https://x.nl/a.jpg?q=1#")
@example(base="https://example.nl", image="https://x.nl/a;b.jpg?c;d")
@example(base="https://example.nl", image="https://[::1/a.jpg")
@example(base="https://example.nl", image="http://x.nl/a\t.jpg")
@example(base="https://example.nl", image="https://x.nl?q=[1]")
def test_cover_url_is_what_urljoin_gives(base: str, image: str) -> None:
    try:
        joined = urljoin(base + "/", image)
        expected: tuple[str, str] | type[ValueError] = (joined, urlsplit(joined).scheme)
    except ValueError:
        expected = ValueError
    try:
        got: tuple[str, str] | type[ValueError] = content_module.cover_url(base, image)
    except ValueError:
        got = ValueError
    assert got == expected


@settings(max_examples=2000, deadline=None, database=None)
@given(st.text(st.sampled_from("ab \n\t\r*_:BronSource\u2028\x0b\x0c\x1c"), max_size=40))
def test_source_line_split_equals_splitting_every_line(body: str) -> None:
    # The reference: split into lines and look at the last (what _split_source did before it
    # learned to look at the last line alone).
    lines = body.rstrip().split("\n")
    match = content_module._SOURCE_LINE.match(lines[-1])
    expected = ("\n".join(lines[:-1]).rstrip(), match.group(1)) if match else (body.rstrip(), "")
    assert content_module._split_source(body) == expected


def test_cover_as_plain_string() -> None:
    a = parse(minimal('cover: "/img/a.webp"')).article
    assert a.cover is not None and a.cover.image == "https://example.nl/img/a.webp"
    assert a.cover.mime_type == "image/webp"


def test_template_syntax_in_body_stays_literal() -> None:
    p = parse(minimal(body="Compute {{ 7*7 }} and {% if x %}y{% endif %} ${name}.\n"))
    html = render_body(p.body, p.article.url).html
    assert "{{ 7*7 }}" in html
    assert "{% if x %}y{% endif %}" in html
    assert "49" not in html
    assert "${name}" in html
    assert p.article.summary == "Compute {{ 7*7 }} and {% if x %}y{% endif %} ${name}."


# --- labels, summary, bundles, permalinks ------------------------------------------------------
@pytest.mark.parametrize(
    ("front", "expected"),
    [
        ("labels: [BESLISSER, Techneut]", ("BESLISSER", "Techneut")),
        ("labels: BESLISSER", ("BESLISSER",)),
        ("label: BESLISSER", ("BESLISSER",)),
        ("label: [A, B]", ("A", "B")),
        ("Labels: [A]", ("A",)),
        ("", ()),
    ],
)
def test_labels_as_list_or_single_string(front: str, expected: tuple[str, ...]) -> None:
    assert parse(minimal(front)).article.labels == expected


def test_missing_summary_is_derived_from_first_paragraph() -> None:
    body = "## Heading first\n\nThe **first** paragraph with a [link](https://x.org).\n\nSecond.\n"
    assert parse(minimal(body=body)).article.summary == "The first paragraph with a link."


def test_derived_summary_is_cut_at_a_word() -> None:
    words = " ".join(f"woord{i}" for i in range(100))
    summary = parse(minimal(body=words + "\n")).article.summary
    assert summary.endswith("…")
    assert len(summary) <= 241
    assert words.startswith(summary[:-1])
    assert summary[:-1].split(" ")[-1] in words.split(" ")  # a whole word, not cut mid-word


def test_derived_summary_is_plain_text_without_emphasis_marks() -> None:
    # Regression: single * / _ emphasis and entities used to stay in the "plain text" summary.
    body = "Een *belangrijke* en _snelle_ stap &amp; meer, 3 * 4 en snake_case_naam.\n"
    assert parse(minimal(body=body)).article.summary == (
        "Een belangrijke en snelle stap & meer, 3 * 4 en snake_case_naam."
    )


@pytest.mark.parametrize(
    "first",
    ["![Foto van de chip](chip.jpg)", "[](https://example.org/)", "<!-- note -->"],
)
def test_derived_summary_skips_a_first_block_without_text(first: str) -> None:
    # An article that opens with an image must get its first real paragraph as summary, not "".
    body = f"{first}\n\nEchte eerste alinea.\n\nTweede.\n"
    assert parse(minimal(body=body)).article.summary == "Echte eerste alinea."


def test_explicit_summary_wins() -> None:
    assert parse(minimal('summary: "Given"', body="Other.\n")).article.summary == "Given"


def test_page_bundle_takes_folder_name() -> None:
    a = parse(minimal(), path="2026/11/foo/index.md").article
    assert a.slug == "foo"
    assert a.url == a.id == "https://example.nl/2026/11/foo/"


def test_explicit_slug_and_url() -> None:
    assert parse(minimal("slug: mijn-stuk")).article.url == "https://example.nl/2026/11/mijn-stuk/"
    a = parse(minimal("url: /speciaal/pagina/")).article
    assert a.url == a.id == "https://example.nl/speciaal/pagina/"


def test_permalink_patterns() -> None:
    flat = ContentSettings("https://example.nl", permalink="/{slug}/")
    assert parse(minimal(), site=flat).article.url == "https://example.nl/x/"
    dated = ContentSettings("https://example.nl", permalink="/{year}/{month}/{day}/{slug}/")
    # 23:30 UTC on 28 Feb is 1 March in Amsterdam: the permalink uses the site's local date.
    raw = yaml_doc("title: T\ndate: 2026-02-28T23:30:00Z")
    assert parse(raw, path="p.md", site=dated).article.url == "https://example.nl/2026/03/01/p/"
    assert parse(raw, path="p.md").article.url == "https://example.nl/p/"  # empty {dir}


def test_permalink_is_stable_when_the_title_changes() -> None:
    before = parse(yaml_doc("title: Oude titel\ndate: 2026-02-24")).article
    after = parse(yaml_doc("title: Geheel nieuwe titel!\ndate: 2026-02-24")).article
    assert before.title != after.title
    assert before.id == after.id == before.url == after.url == URL


@pytest.mark.parametrize(
    "front",
    [
        pytest.param("url: /a/%2e%2e/%2E%2e/b/", id="url-encoded-dotdot"),
        pytest.param("slug: '%2e%2e'", id="slug-encoded-dotdot"),
    ],
)
def test_percent_encoded_dot_segments_are_rejected(front: str) -> None:
    # Regression: %2e%2e is a ".." segment for every URL parser (WHATWG URL, RFC 3986 §2.3);
    # refusing only the literal ".." let the permalink silently point at a parent page.
    err = error_of(minimal(front))
    assert err.field in ("url", "slug")


def test_source_line_variants() -> None:
    for line, expected in [
        ("Bron: The Information", "The Information"),
        ("bron:The Information", "The Information"),
        ("Source: Reuters", "Reuters"),
        ("**Bron**: NOS", "NOS"),
    ]:
        p = parse(minimal(body=f"Last paragraph.\n{line}\n"))
        assert p.article.source == expected, line
        assert p.body == "Last paragraph."


@pytest.mark.parametrize("line", ["**Bron:** NOS", "__Bron:__ NOS"])
def test_source_line_with_colon_inside_bold(line: str) -> None:
    # Regression: the closing ** used to be allowed only before the colon, so the common
    # `**Bron:** NOS` gave source "** NOS".
    assert parse(minimal(body=f"Last paragraph.\n{line}\n")).article.source == "NOS"


def test_bron_in_the_middle_is_not_taken_as_source() -> None:
    p = parse(minimal(body="Bron: not last\n\nFinal words.\n"))
    assert p.article.source == ""
    assert "Bron: not last" in p.body


# --- section headings -----------------------------------------------------------------------------
def test_section_headings_ignore_fenced_code() -> None:
    body = (
        "Intro.\n\n## Een\n\n```markdown\n## not a heading\n```\n\n"
        "~~~~\n## nor this\n```\n## still code\n~~~~\n\n"
        "    ## indented code\n\n## Twee ##\n\n### Sub\n\n# H1\n"
    )
    rendered = render_body(body, URL)
    assert tuple(s.heading for s in rendered.sections) == ("Een", "Twee")
    een = rendered.section("Een")
    assert een is not None and "## not a heading" in een.text


def test_the_markdown_dialect_tables_strikethrough_no_autolinks() -> None:
    # What bodies are written in: CommonMark, GFM tables (alignment kept, as align=) and
    # ~~strikethrough~~ (two tildes only); bare URLs stay text, as with markdown-it's commonmark.
    body = (
        "| Links | Rechts |\n|:--|--:|\n| a | 1 |\n\n"
        "~~weg~~ en ~blijft~ en www.example.nl en https://example.nl/x\n"
    )
    html_out = render_body(body, URL).html
    assert '<th align="left">Links</th>' in html_out and '<td align="right">1</td>' in html_out
    assert "<del>weg</del> en ~blijft~" in html_out
    assert "<a " not in html_out


def test_section_heading_keeps_a_closing_hash_without_space() -> None:
    # A closing run of # only counts after a space (CommonMark): "## C#" is the section "C#".
    body = "## C#\n\ntext\n\n## F# ##\n\nmore\n"
    assert tuple(s.heading for s in render_body(body, URL).sections) == ("C#", "F#")


@pytest.mark.parametrize(
    ("between", "also"),
    [
        ("- item\n  ## in a list item", []),
        ("> quote\n> ## in a quote", []),
        ("<div>\n## in an HTML block\n</div>", []),
        ("```\n## in a fence\n```", []),
        ("- ```\n  ## in a fence in a list\n  ```", []),
        ("``` `not a fence`\n## after a broken fence", ["after a broken fence"]),
        ("<!--newsletter:section-->\n\n## after a quoted marker", ["after a quoted marker"]),
        ("para\n## right under a paragraph", ["right under a paragraph"]),
        ("| a |\n|---|\n| 1 |\n## right under a table", ["right under a table"]),
    ],
)
def test_only_top_level_headings_are_sections(between: str, also: list[str]) -> None:
    body = f"Intro.\n\n## Een\n\n{between}\n\n## Twee\n\nend\n"
    rendered = render_body(body, URL)
    assert [s.heading for s in rendered.sections] == ["Een", *also, "Twee"]
    # Splitting changes nothing: the parts are the whole body's HTML, cut before each <h2>.
    assert rendered.html == sanitize(markdown_html(body), URL)


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Markdown of every render (`markdown_html` call) the test makes through the module."""
    calls: list[str] = []

    def counting(markdown: str) -> str:
        calls.append(markdown)
        return markdown_html(markdown)

    monkeypatch.setattr(content_module, "markdown_html", counting)
    return calls


def test_many_heading_lines_in_code_cost_a_few_renders_not_one_each(renders: list[str]) -> None:
    # Each '## ' line used to be checked with a render of its own: 2,000 of them in a code
    # block made one article cost 2,000 renders (quadratic in its length).
    body = "Intro.\n\n## Een\n\n```\n" + "## in code\n" * 2000 + "```\n\n## Twee\n\nend\n"
    assert [s.heading for s in render_body(body, URL).sections] == ["Een", "Twee"]
    assert len(renders) <= 4


def test_a_body_without_raw_html_or_fences_is_rendered_once(renders: list[str]) -> None:
    body = (
        "Intro with [a link](https://x.nl).\n\n## Een\n\n- item\n\n## Twee\npara\n## Drie\n\n> q\n"
    )
    rendered = render_body(body, URL)
    assert [s.heading for s in rendered.sections] == ["Een", "Twee", "Drie"]
    assert len(renders) == 1
    assert rendered.html == sanitize(markdown_html(body), URL)  # the test's own, uncounted


def test_heading_markup_is_rendered_in_html() -> None:
    # Regression: the raw inline source of a heading used to be escaped into the <h2>, so
    # "## Wat is `nh3`?" showed literal backticks and "## A &amp; B" was double-escaped.
    body = "## Wat is `nh3`?\n\ntext\n\n## A &amp; B\n\nmore\n\n## **Vet** en [link](x)\n\nend\n"
    rendered = render_body(body, URL)
    assert "`" not in rendered.html and "**" not in rendered.html
    assert "<h2>Wat is <code>nh3</code>?</h2>" in rendered.html
    assert "&amp;amp;" not in rendered.html
    # Section names are plain text.
    names = ("Wat is nh3?", "A & B", "Vet en link")
    assert tuple(s.heading for s in rendered.sections) == names
    assert rendered.section("a & b") is not None


def test_section_heading_with_leading_inline_html_is_stripped() -> None:
    body = '## <a id="morgen"></a> Wat kun je hier morgen mee? ![x](y.png)\n\nTekst.\n'
    headings = tuple(s.heading for s in render_body(body, URL).sections)
    assert headings == ("Wat kun je hier morgen mee?",)


# --- properties -----------------------------------------------------------------------------------
_XML_ILLEGAL = (
    "".join(chr(c) for c in [*range(0, 9), 0x0B, 0x0C, *range(0x0E, 0x20)]) + "\ufffe\uffff"
)
_titles = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters=_XML_ILLEGAL),
    min_size=1,
    max_size=60,
).filter(lambda t: t == t.strip() and t != "")


def _yaml_double_quoted(text: str) -> str:
    """A YAML double-quoted scalar: printable ASCII literal, everything else as \\u/\\U escapes."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(title=_titles)
def test_property_title_round_trips_through_yaml(title: str) -> None:
    raw = f"---\ntitle: {_yaml_double_quoted(title)}\ndate: 2026-02-24\n---\nBody.\n".encode()
    assert parse(raw).article.title == title


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(title=_titles, ascii_only=st.booleans())
def test_property_title_round_trips_through_json(title: str, ascii_only: bool) -> None:
    front = json.dumps({"title": title, "date": "2026-02-24T10:00:00Z"}, ensure_ascii=ascii_only)
    raw = ("{\n" + front[1:-1] + "\n}\nBody.\n").encode()
    assert parse(raw).article.title == title


_heading_texts = st.text(
    st.sampled_from("abcXYZ 019?:'é-*_`&;[]()<>!#"), min_size=1, max_size=12
).filter(lambda h: h.strip() != "" and not h.strip().startswith(("#", "-", "+", "*")))
# Blocks with a `## ` line that is not a top-level heading, and blocks a heading may follow.
_decoys = st.sampled_from(
    [
        "```\n## code\n```",
        "~~~~\n## code\n```\n~~~~",
        "- item\n  ## nested",
        "> ## quoted",
        "<div>\n## raw\n</div>",
        "    ## indented code",
        "Para with *emphasis*.",
        "| a | b |\n|:--|--:|\n| 1 | 2 |",
        "1. one\n2. two",
        "[ref]: https://example.nl/ref",
        "Uses [ref].",
    ]
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    blocks=st.lists(
        st.one_of(_heading_texts.map(lambda h: ("h", h)), _decoys.map(lambda d: ("d", d))),
        max_size=8,
    )
)
@example(blocks=[("h", "` `")])  # found by Hypothesis: a heading that is only a code span
@example(blocks=[("h", "<a>"), ("h", "0")])
def test_property_sections_are_the_top_level_headings(blocks: list[tuple[str, str]]) -> None:
    body = "Intro.\n\n" + "\n".join(
        f"## {text}\n" if kind == "h" else text + "\n" for kind, text in blocks
    )
    rendered = render_body(body, URL)
    headings = [text for kind, text in blocks if kind == "h"]
    assert len(rendered.sections) == len(headings)
    for section, text in zip(rendered.sections, headings, strict=True):
        if not re.search(r"[*_`&\[<\\#]", text):  # without markup the text is kept as written
            assert section.heading == text.strip()
    if not any("<" in text for text in headings):
        # Cutting changes nothing (raw HTML left open in a heading is closed within it, as each
        # part is sanitized alone: found by Hypothesis with "## <a>").
        assert rendered.html == sanitize(markdown_html(body), URL)


def test_parse_is_deterministic_and_frozen() -> None:
    raw = SEED.read_bytes()
    a, b = parse(raw), parse(raw)
    assert a == b
    with pytest.raises(AttributeError):
        a.article.title = "x"  # type: ignore[misc]
    assert replace(a.article, title="y").title == "y"


def test_section_text_is_the_text_of_the_sanitized_html() -> None:
    # Section.text used to come from the Markdown tokens: inline <script> text leaked into it
    # and the content of HTML blocks was dropped.
    body = (
        "## Kop\n\nEen <script>alert(1)</script>zin met [een link](https://x.nl/a).\n\n"
        "<div>Tekst in een blok</div>\n\n- een\n- twee\n"
    )
    section = render_body(body, URL).section("Kop")
    assert section is not None
    assert "alert" not in section.text and "<" not in section.text
    assert "Tekst in een blok" in section.text
    assert "een link (https://x.nl/a)" in section.text
    assert "- een\n- twee" in section.text


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(
        alphabet=st.characters(
            exclude_categories=["Cs"],
            include_characters="\x00\x01\x08\x0b\x0c\x0e\x1f\r\n\t\ufffe\uffff\ufeffé",
        ),
        max_size=200,
    )
)
def test_property_decode_strips_exactly_what_xml_forbids(text: str) -> None:
    """decode() looks for XML-illegal characters in the bytes (fast) before running the regex:
    the result must be what the regex alone gives."""
    from newsletter.content import _ILLEGAL_XML, decode

    raw = text.encode("utf-8")
    if b"\x00" in raw[:8192]:
        return  # a binary file: an error, tested elsewhere
    expected = _ILLEGAL_XML.sub(
        "", raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    )
    assert decode(raw, "x.md") == expected


@pytest.mark.parametrize(
    "markdown",
    ['<a href="//[oops">x</a>', '<img src="http://[::1/x.png" alt="i">', "[x](//[oops/y)"],
)
def test_a_link_no_url_parser_accepts_is_dropped_not_fatal(markdown: str) -> None:
    # Regression: urljoin() raised ValueError ("Invalid IPv6 URL") for a raw-HTML href that nh3
    # lets through as relative, and one such article stopped the whole build.
    rendered = render_body(f"Tekst {markdown} eind.", URL)
    assert "[oops" not in rendered.html and "[::1" not in rendered.html
    assert "Tekst" in rendered.html and "eind." in rendered.html


@settings(max_examples=300, deadline=None, database=None)
@given(url=st.text(st.sampled_from("htps:/[]@%?#.:x1 \\"), max_size=20))
def test_property_any_link_url_renders(url: str) -> None:
    for markdown in (f'<a href="{url}">x</a>', f"[x](<{url}>)", f'<img src="{url}" alt="a">'):
        render_body(markdown, URL)  # never raises


# Anything JSON front matter can hold, in every field: a bad value is an ArticleError naming
# the file, never another exception (which used to stop the whole build; see the cover URL).
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "2026-02-24",
            "2026-02-24T10:00:00Z",
            "2026-13-45",
            "9999-12-31T23:59:59+14:00",
            "0001-01-01",
            "https://[x",
            "//x/y",
            "/a/../b",
            "..",
            "a/b",
            "javascript:x",
            "%2e%2e",
            "\\",
            " ",
            "24 feb 2026",
            "T",
            "1e400",
        ]
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["image", "alt", "caption", "name", "x"]), inner, max_size=3
        ),
    ),
    max_leaves=6,
)
_FIELDS = [
    "title",
    "date",
    "publishdate",
    "expirydate",
    "lastmod",
    "draft",
    "slug",
    "url",
    "tags",
    "label",
    "labels",
    "summary",
    "cover",
    "author",
]


@settings(max_examples=400, deadline=None, database=None)
@given(
    fields=st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=6),
    keep_required=st.booleans(),
)
def test_property_any_front_matter_value_is_an_article_error_or_an_article(
    fields: dict[str, Any], keep_required: bool
) -> None:
    meta: dict[str, Any] = {"title": "T", "date": "2026-02-24T10:00:00Z"} if keep_required else {}
    meta.update(fields)
    raw = ("{\n" + json.dumps(meta)[1:-1] + "\n}\nBody [x](/y).\n").encode()
    try:
        parsed = parse(raw)
    except ArticleError as exc:
        assert exc.path == PATH
        return
    render_body(parsed.body, parsed.article.url, parsed.article.source)


@settings(max_examples=300, deadline=None, database=None)
@given(
    lines=st.lists(
        st.text(st.sampled_from("## >-*`~|<div>!-[]()\\:/ab1"), max_size=10), max_size=12
    )
)
def test_property_any_markdown_renders(lines: list[str]) -> None:
    body = "\n".join(lines)
    rendered = render_body(body, URL)  # never raises
    assert len(rendered.sections) <= sum(1 for line in lines if "##" in line)


@settings(max_examples=1000, deadline=None, database=None)
@given(
    st.text(
        st.sampled_from(
            [
                "a",
                "Z",
                " ",
                "é",
                "ß",
                "😀",
                "&",
                "<",
                ">",
                '"',
                "'",
                "\xa0",
                "\x00",
                "\r",
                "\t",
                "\x0c",
                "\u2028",
                "\ufdd0",
                "\u200b",
                "\u0301",
                "\U000e0001",
            ]
        )
        | st.characters(exclude_categories=("Cs",)),  # decoded UTF-8 has no surrogates
        max_size=12,
    )
)
def test_a_plain_heading_skips_the_cleaner_only_where_it_changes_nothing(text: str) -> None:
    heading = f"<h2>{text}</h2>\n"
    assert content_module._sanitized_heading(heading, "https://example.nl/a/") == (
        content_module.sanitize(heading, "https://example.nl/a/")
    )


_boundary_texts = st.lists(
    st.sampled_from(
        ["---", "----", "-", "\n", " ", "\t", "\x0b", "\x1c", "\u2028", "a: 1", "x", ":", "---x"]
    ),
    max_size=14,
).map("".join)
_boundary_texts = st.one_of(_boundary_texts, _boundary_texts.map("---\n".__add__))  # the fast path


@settings(max_examples=3000, deadline=None, database=None)
@given(text=_boundary_texts)
@example(text="---\na: 1\n---\nbody")
@example(text="---\n\n---\n")
@example(text="---\na\n---  \n  \nbody")
@example(text="---\na\n---x\n---\nb")
@example(text="---\n---")
def test_the_yaml_split_is_python_frontmatters(text: str) -> None:
    """The fast path of the YAML boundary gives what python-frontmatter's regex split gives
    (or fails the same way), for any text, so front matter, body and error lines stay put."""
    from frontmatter.default_handlers import YAMLHandler

    ours = content_module._YAML()
    try:
        expected: tuple[str, str] | str = YAMLHandler().split(text)
    except ValueError:
        expected = "no closing line"
    try:
        got: tuple[str, str] | str = ours.split(text)
    except ValueError:
        got = "no closing line"
    assert got == expected
