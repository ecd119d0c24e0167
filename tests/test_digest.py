"""digest.py: audience + articles -> RenderedDigest (subject, preheader, inlined HTML, text).

Real Jinja2, real premailer, real articles parsed from Markdown by `content.parse_article`; the
HTML is checked as a mail client would read it (parsed with lxml), not only as a string.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import lxml.html
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.content import ContentSettings, ParsedArticle, parse_article, render_body
from newsletter.digest import (
    PLACEHOLDERS,
    AudienceSpec,
    DigestSettings,
    RenderedDigest,
    format_date_range,
    personalize,
    render_digest,
    with_query,
)
from newsletter.errors import RenderError

AMS = ZoneInfo("Europe/Amsterdam")
CONTENT = ContentSettings("https://example.nl")
HIGHLIGHT = "Wat kun je hier morgen mee?"
SETTINGS = DigestSettings(
    site_title="AI-nieuws",
    site_url="https://example.nl",
    sender_line="AI-nieuws · Postbus 123 · 1000 AB Amsterdam",
)
UTM = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "beslissers"}
AUDIENCE = AudienceSpec(
    id="beslissers",
    title="Voor beslissers",
    description="Het belangrijkste AI-nieuws van de week, voor wie beslist.",
    highlight_section=HIGHLIGHT,
    utm=UTM,
)
START = datetime(2026, 11, 23, tzinfo=AMS)  # Monday of ISO week 48
END = datetime(2026, 11, 30, tzinfo=AMS)  # exclusive: the issue covers 23..29 November
SEED = Path(__file__).parents[2] / "shared" / "seed" / "000_726bf43770dbc9b9.txt"


def article(path: str, body: str = "Een alinea tekst.\n", **meta: Any) -> ParsedArticle:
    """An article with JSON front matter (so any string survives), parsed like a real file."""
    meta.setdefault("title", "Titel")
    meta.setdefault("date", "2026-11-24T08:00:00+01:00")
    return parse_article(f"{json.dumps(meta, indent=2)}\n\n{body}", path, CONTENT)


def render(
    parsed: Sequence[ParsedArticle],
    audience: AudienceSpec = AUDIENCE,
    site: DigestSettings = SETTINGS,
    start: datetime = START,
    end: datetime = END,
) -> RenderedDigest:
    bodies = {p.article.id: p.body for p in parsed}
    return render_digest(
        audience,
        [p.article for p in parsed],
        lambda a: render_body(bodies[a.id], a.url, a.source),
        start,
        end,
        site,
    )


def dom(document: str) -> Any:
    return lxml.html.document_fromstring(document)


LEAD = article(
    "2026/11/chips.md",
    title="Meta koopt AI-chips bij AMD & Nvidia",
    summary="Meta sluit een deal van 100 miljard dollar met AMD.",
    tags=["ai hardware", "meta"],
    cover={
        "image": "/images/chips.jpg",
        "alt": "Een serverrek vol chips",
        "caption": "Foto: redactie",
    },
    body=(
        "Meta heeft een overeenkomst gesloten. ![grafiek](/img/grafiek.png)\n\n"
        f"## {HIGHLIGHT}\n"
        "Onderzoek hoe <b>concurrentie</b> tussen AMD &amp; Nvidia de prijzen drukt.\n\n"
        "Bron: The Information\n"
    ),
)
SECOND = article(
    "2026/11/register.md",
    title="Overheid verplicht registratie in algoritmeregister",
    summary="Overheden moeten hun algoritmes registreren.",
    tags=["overheid"],
    date="2026-11-25T10:00:00+01:00",
    body="Een alinea.\n\n## Achtergrond\nMeer tekst.\n\nBron: NOS\n",
)
THIRD = article(
    "2026/11/sjabloon.md",
    title="Sjablonen in de praktijk",
    summary="Over sjablonen.",
    tags=["open source"],
    date="2026-11-26T10:00:00+01:00",
    body=(
        "Intro.\n\n"
        f"## {HIGHLIGHT}\n"
        "Schrijf {{ 7*7 }} en {% if x %} gewoon op; lees [de gids](https://docs.example.org/a?b=1&c=2).\n\n"
        "- eerste stap\n- tweede stap\n\n"
        "Bron: Tweakers\n"
    ),
)
ISSUE = [LEAD, SECOND, THIRD]


@pytest.fixture(scope="module")
def digest() -> RenderedDigest:
    return render(ISSUE)


@pytest.fixture(scope="module")
def doc(digest: RenderedDigest) -> Any:
    return dom(digest.html)


# --- structure and order -----------------------------------------------------------------------
def test_lead_first_and_order_preserved(digest: RenderedDigest, doc: Any) -> None:
    ids = tuple(p.article.id for p in ISSUE)
    assert digest.article_ids == ids
    assert digest.audience_id == "beslissers"
    assert doc.cssselect("h2.lead-title")[0].text_content() == LEAD.article.title
    others = [h.text_content() for h in doc.cssselect("h3.article-title")]
    assert others == [SECOND.article.title, THIRD.article.title]
    for part in (digest.html, digest.text):
        positions = [part.index(p.article.url) for p in ISSUE]
        assert positions == sorted(positions)


def test_lead_cover_image_with_alt_width_and_caption(doc: Any) -> None:
    (img,) = doc.cssselect("td.lead img")
    assert img.get("src") == "https://example.nl/images/chips.jpg"
    assert img.get("alt") == "Een serverrek vol chips"
    assert img.get("width") == "568"
    assert "Foto: redactie" in doc.cssselect("td.lead p.caption")[0].text_content()


def test_header_intro_footer_and_sender_line(digest: RenderedDigest, doc: Any) -> None:
    header = doc.cssselect("td.header")[0].text_content()
    assert "AI-nieuws" in header and "Voor beslissers" in header
    assert "23 – 29 november 2026" in header and "week 48" in header and "3 artikelen" in header
    assert AUDIENCE.description in doc.cssselect("td.intro")[0].text_content()
    footer = " ".join(doc.cssselect("td.footer")[0].text_content().split())
    assert (
        "Je ontvangt deze e-mail omdat je bent ingeschreven op Voor beslissers van AI-nieuws."
        in footer
    )
    assert "AI-nieuws · Postbus 123 · 1000 AB Amsterdam" in footer
    footer_links = {a.text_content(): a.get("href") for a in doc.cssselect("td.footer a")}
    assert footer_links["Uitschrijven"] == "%%UNSUBSCRIBE_URL%%"
    assert footer_links["Bekijk online"] == "%%VIEW_URL%%"
    assert "Hallo %%NAME%%," in digest.html and "Hallo %%NAME%%," in digest.text


def test_source_line_and_read_more_link_with_utm(doc: Any) -> None:
    query = "utm_source=newsletter&utm_medium=email&utm_campaign=beslissers"
    for parsed in ISSUE:
        url = f"{parsed.article.url}?{query}"
        links = [a for a in doc.cssselect("a") if a.get("href") == url]
        assert any("Lees verder" in a.text_content() for a in links), parsed.article.title
    sources = [p.text_content() for p in doc.cssselect("p.source")]
    assert sources == ["Bron: The Information", "Bron: NOS", "Bron: Tweakers"]


# --- dates -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("start", "end", "language", "expected", "week"),
    [
        (START, END, "nl", "23 – 29 november 2026", 48),
        (START, datetime(2026, 11, 29, 23, 59, 59, tzinfo=AMS), "nl", "23 – 29 november 2026", 48),
        # the same instants given in UTC: read in the site timezone
        (
            datetime(2026, 11, 22, 23, 0, tzinfo=UTC),
            datetime(2026, 11, 29, 23, 0, tzinfo=UTC),
            "nl",
            "23 – 29 november 2026",
            48,
        ),
        (
            datetime(2026, 11, 30, tzinfo=AMS),
            datetime(2026, 12, 7, tzinfo=AMS),
            "nl",
            "30 november – 6 december 2026",
            49,
        ),
        (
            datetime(2026, 12, 28, tzinfo=AMS),
            datetime(2027, 1, 4, tzinfo=AMS),
            "nl",
            "28 december 2026 – 3 januari 2027",
            53,
        ),
        (START, datetime(2026, 11, 23, 18, 0, tzinfo=AMS), "nl", "23 november 2026", 48),
        (START, END, "en", "23 – 29 November 2026", 48),
        (
            datetime(2026, 11, 30, tzinfo=AMS),
            datetime(2026, 12, 7, tzinfo=AMS),
            "en",
            "30 November – 6 December 2026",
            49,
        ),
    ],
)
def test_date_range_and_week(
    start: datetime, end: datetime, language: str, expected: str, week: int
) -> None:
    site = replace(SETTINGS, language=language)
    d = render([LEAD], start=start, end=end, site=site)
    assert expected in d.html and expected in d.text
    assert d.subject == f"Voor beslissers – week {week}"


def test_format_date_range_in_one_year() -> None:
    assert format_date_range(datetime(2026, 3, 2).date(), datetime(2026, 3, 8).date()) == (
        "2 – 8 maart 2026"
    )


# --- highlight section -------------------------------------------------------------------------
def test_highlight_quoted_only_where_present(doc: Any, digest: RenderedDigest) -> None:
    lead_box = doc.cssselect("td.lead td.highlight")
    assert len(lead_box) == 1
    assert HIGHLIGHT in lead_box[0].text_content()
    assert "concurrentie tussen AMD & Nvidia" in lead_box[0].text_content()
    second, third = doc.cssselect("td.article")
    assert second.cssselect("td.highlight") == []
    assert "eerste stap" in third.cssselect("td.highlight")[0].text_content()
    # the text part quotes it too, without the inline <b> of the Markdown
    assert "Onderzoek hoe concurrentie tussen AMD & Nvidia de prijzen drukt." in digest.text
    assert "- eerste stap\n- tweede stap" in digest.text
    assert "de gids (https://docs.example.org/a?b=1&c=2)" in " ".join(digest.text.split())


def test_no_highlight_configured_no_box() -> None:
    d = render(ISSUE, audience=replace(AUDIENCE, highlight_section=""))
    assert 'class="highlight"' not in d.html
    assert HIGHLIGHT not in d.text


def test_body_images_are_left_out_of_quoted_sections() -> None:
    parsed = article(
        "2026/11/img.md",
        body=f'## {HIGHLIGHT}\nZie ![kaart](/img/kaart.png "a > b") hier.\n',
    )
    d = render([parsed])
    assert "kaart.png" not in d.html
    assert "Zie hier." in " ".join(dom(d.html).cssselect("td.highlight")[0].text_content().split())


def test_real_seed_article_as_lead() -> None:
    seed = parse_article(SEED.read_bytes(), "2026/02/meta.md", CONTENT)
    d = render([seed, SECOND])
    box = dom(d.html).cssselect("td.lead td.highlight")[0].text_content()
    assert "Voor beslissers in Nederland die afhankelijk zijn van cloud-AI-diensten" in box
    assert "Bron: The Information" in d.text
    assert d.preheader.startswith("Meta sluit een deal van mogelijk 100 miljard dollar")
    assert len(d.preheader) <= 140 and d.preheader.endswith("…")


# --- escaping and template injection ------------------------------------------------------------
def test_template_syntax_in_articles_shows_literally(digest: RenderedDigest) -> None:
    assert "{{ 7*7 }}" in digest.html and "{% if x %}" in digest.html
    assert "{{ 7*7 }}" in digest.text
    titled = article("2026/11/t.md", title="Wat is {{ 7*7 }}?", summary="{{ config }}")
    d = render([titled])
    assert "Wat is {{ 7*7 }}?" in d.html and "{{ config }}" in d.html
    assert "Wat is {{ 7*7 }}?" in d.text


XSS_TITLE = "<script>alert(1)</script> & <img src=x onerror=alert(1)>"
XSS = article(
    "2026/11/xss.md",
    title=XSS_TITLE,
    summary='<a href="javascript:alert(2)">klik</a> <svg onload=alert(3)>',
    tags=["<b onmouseover=alert(4)>tag</b>", "javascript:alert(5)"],
    cover={
        "image": "https://cdn.example.nl/x.jpg",
        "alt": '"\' onerror=alert(6) x="',
        "caption": "</p><script>alert(7)</script>",
    },
    body=(
        f"## {HIGHLIGHT}\n"
        "<script>alert(8)</script> <img src=x onerror=alert(9)> [klik](javascript:alert(10))\n"
        '<iframe src="https://evil.example"></iframe>\n\n'
        "Bron: <script>alert(11)</script>\n"
    ),
)


def test_xss_payloads_never_become_markup() -> None:
    d = render([XSS, SECOND])
    assert "<script" not in d.html.lower()
    assert "<iframe" not in d.html.lower() and "<svg" not in d.html.lower()
    tree = dom(d.html)
    for el in tree.iter():
        if not isinstance(el.tag, str):
            continue  # comments, doctype
        for name, value in el.attrib.items():
            assert not name.lower().startswith("on"), (el.tag, name)
            assert not value.strip().lower().startswith("javascript:"), (el.tag, name, value)
    # shown as text, escaped in the source
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in d.html
    )
    assert tree.cssselect("h2.lead-title")[0].text_content() == XSS_TITLE
    (img,) = tree.cssselect("img")
    assert img.get("alt") == '"\' onerror=alert(6) x="'
    assert set(img.attrib) == {"class", "src", "width", "alt", "style"}
    assert tree.cssselect("p.caption")[0].text_content() == "</p><script>alert(7)</script>"
    assert "<b onmouseover=alert(4)>tag</b>" in tree.cssselect("td.lead p.meta")[0].text_content()
    assert d.subject == "Voor beslissers – week 48"
    assert tree.cssselect("title")[0].text_content() == d.subject


# --- placeholders and personalize ---------------------------------------------------------------
def test_placeholders_survive_inlining_byte_for_byte(digest: RenderedDigest) -> None:
    for token in PLACEHOLDERS.values():
        assert token in digest.html, token
        assert token in digest.text, token
    hrefs = {a.get("href") for a in dom(digest.html).cssselect("a")}
    assert {"%%UNSUBSCRIBE_URL%%", "%%VIEW_URL%%"} <= hrefs


def test_personalize_replaces_every_placeholder(digest: RenderedDigest) -> None:
    unsubscribe = "https://example.nl/afmelden?t=abc&u=42"
    view = "https://example.nl/archief/2026-48/beslissers/?s=1&t=x"
    html_part, text_part = personalize(
        digest, name="<b>Jan & co</b>", unsubscribe_url=unsubscribe, view_url=view
    )
    assert "%%" not in html_part and "%%" not in text_part
    assert "Hallo &lt;b&gt;Jan &amp; co&lt;/b&gt;," in html_part
    assert "<b>Jan" not in html_part
    assert "Hallo <b>Jan & co</b>," in text_part
    assert 'href="https://example.nl/afmelden?t=abc&amp;u=42"' in html_part
    assert unsubscribe in text_part and view in text_part
    links = {a.text_content(): a.get("href") for a in dom(html_part).cssselect("td.footer a")}
    assert links["Uitschrijven"] == unsubscribe and links["Bekijk online"] == view
    assert digest.html.count("%%") == html_part.count("%%") + 2 * sum(
        digest.html.count(t) for t in PLACEHOLDERS.values()
    )  # only the placeholders were touched


def test_placeholder_written_in_an_article_is_not_filled_in() -> None:
    parsed = article(
        "2026/11/tokens.md",
        title="Gebruik %%NAME%% in je mail",
        summary="Met %%UNSUBSCRIBE_URL%% erin.",
        body=f"## {HIGHLIGHT}\nSchrijf %%VIEW_URL%% op.\n",
    )
    d = render([parsed])
    html_part, text_part = personalize(
        d, name="Geheim", unsubscribe_url="https://e.nl/u", view_url="https://e.nl/v"
    )
    for part in (html_part, text_part):
        assert part.count("Geheim") == 1  # the greeting only
        assert "https://e.nl/u" in part and "%\u2060%UNSUBSCRIBE_URL%%" in part
    assert dom(html_part).cssselect("h2.lead-title")[0].text_content().startswith("Gebruik %")


@pytest.mark.parametrize(
    ("name", "html_greeting", "text_greeting"),
    [
        ("", "Hallo lezer,", "Hallo lezer,"),
        ("  \n ", "Hallo lezer,", "Hallo lezer,"),
        ("Anna\r\nBcc: x", "Hallo Anna Bcc: x,", "Hallo Anna Bcc: x,"),
        ("%%VIEW_URL%%", "Hallo %%VIEW_URL%%,", "Hallo %%VIEW_URL%%,"),  # one pass only
        ('O\'Brien "Ed"', "Hallo O&#x27;Brien &quot;Ed&quot;,", 'Hallo O\'Brien "Ed",'),
    ],
)
def test_personalize_name(
    digest: RenderedDigest, name: str, html_greeting: str, text_greeting: str
) -> None:
    html_part, text_part = personalize(
        digest, name=name, unsubscribe_url="https://e.nl/u", view_url="https://e.nl/v"
    )
    assert html_greeting in html_part
    assert text_greeting in text_part


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "/relative", "https://e.nl/a b"])
def test_personalize_rejects_bad_urls(digest: RenderedDigest, bad: str) -> None:
    with pytest.raises(ValueError, match="unsubscribe_url"):
        personalize(digest, name="", unsubscribe_url=bad, view_url="https://e.nl/v")


# --- email-safe HTML -----------------------------------------------------------------------------
def test_document_head(digest: RenderedDigest, doc: Any) -> None:
    assert digest.html.startswith("<!DOCTYPE html>")
    assert re.search(r"<html lang=\"nl\"[ >]", digest.html)
    assert doc.cssselect('meta[charset="utf-8"]')
    assert doc.cssselect('meta[name="viewport"]')
    assert doc.cssselect('meta[name="color-scheme"]')[0].get("content") == "light dark"
    assert doc.cssselect("title")[0].text_content() == digest.subject


def test_container_is_a_600px_table_with_inlined_styles(doc: Any) -> None:
    (container,) = doc.cssselect("table.container")
    assert container.get("role") == "presentation"
    assert container.get("width") == "600"
    style = container.get("style").replace(" ", "")
    assert "max-width:600px" in style and "width:100%" in style
    assert "background-color" in style  # came from the <style> block, inlined by premailer
    summary = doc.cssselect("td.article p.summary")[0]
    assert "font-size:15px" in summary.get("style").replace(" ", "")


def test_one_small_style_block_keeps_important_media_rules(doc: Any) -> None:
    styles = doc.xpath("//style")
    assert len(styles) == 1 and styles[0].getparent().tag == "head"
    css = styles[0].text
    assert len(css.encode("utf-8")) < 16 * 1024
    for query in ("@media (max-width: 620px)", "@media (prefers-color-scheme: dark)"):
        block = css[css.index(query) :]
        block = block[: block.index("\n}")]
        assert "!important" in block, query


def test_preheader_is_the_first_element_in_body(digest: RenderedDigest, doc: Any) -> None:
    first = doc.body[0]
    assert first.tag == "div" and "preheader" in first.get("class")
    style = first.get("style").replace(" ", "")
    for rule in ("display:none", "max-height:0", "overflow:hidden", "mso-hide:all"):
        assert rule in style
    assert first.text_content().startswith(digest.preheader)
    assert digest.preheader == LEAD.article.summary


def test_images_have_alt_width_and_https_src(doc: Any) -> None:
    images = doc.cssselect("img")
    assert images  # the cover
    for img in images:
        assert img.get("alt") is not None
        assert img.get("width", "").isdigit()
        assert img.get("src", "").startswith("https://")


def test_http_cover_is_left_out() -> None:
    plain = article("2026/11/http.md", cover={"image": "http://cdn.example.nl/a.jpg", "alt": "a"})
    assert dom(render([plain]).html).cssselect("img") == []


@pytest.mark.parametrize(
    "forbidden", ["http://", "data:", "<link", "display:flex", "var(--", "<svg", 'href="#']
)
def test_no_email_unsafe_constructs(digest: RenderedDigest, forbidden: str) -> None:
    assert forbidden.replace(" ", "") not in digest.html.replace(" ", "")


def test_html_stays_under_gmail_clipping_size() -> None:
    many = [
        article(f"2026/11/a{i}.md", title=f"Artikel {i}", summary="Samenvatting. " * 12,
                body=f"Tekst.\n\n## {HIGHLIGHT}\n{'Doe dit en dat. ' * 30}\n\nBron: NOS\n")
        for i in range(10)
    ]  # fmt: skip
    d = render(many)
    html_part, _ = personalize(
        d, name="Jan", unsubscribe_url="https://e.nl/u", view_url="https://e.nl/v"
    )
    assert len(html_part.encode("utf-8")) < 100_000


# --- text part -----------------------------------------------------------------------------------
def test_text_part_is_plain_text(digest: RenderedDigest) -> None:
    text = digest.text
    for parsed in ISSUE:
        assert parsed.article.title in text
        assert with_query(parsed.article.url, UTM) in text
    assert "Meta koopt AI-chips bij AMD & Nvidia" in text  # raw &, not &amp;
    assert "&amp;" not in text and "&nbsp;" not in text
    assert re.search(r"<[a-zA-Z/!]", text) is None
    assert "Bron: The Information" in text and "Bron: NOS" in text
    assert "23 – 29 november 2026" in text
    assert "Uitschrijven: %%UNSUBSCRIBE_URL%%" in text
    assert "%%VIEW_URL%%" in text
    assert "AI-nieuws · Postbus 123 · 1000 AB Amsterdam" in text
    assert text.endswith("\n") and not text.endswith("\n\n")


# --- language ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("language", "present", "absent"),
    [
        (
            "nl",
            ["Lees verder", "Bron: NOS", "Uitschrijven", "Hallo %%NAME%%", "Meer nieuws",
             "Je ontvangt deze e-mail omdat je bent ingeschreven op"],
            ["Read more", "Source:", "Unsubscribe"],
        ),
        (
            "en",
            ["Read more", "Source: NOS", "Unsubscribe", "Hello %%NAME%%", "More news",
             "You receive this e-mail because you subscribed to Voor beslissers from AI-nieuws."],
            ["Lees verder", "Bron:", "Uitschrijven", "Hallo", "Meer nieuws", "november"],
        ),
    ],
)  # fmt: skip
def test_fixed_strings_follow_the_language(
    language: str, present: list[str], absent: list[str]
) -> None:
    d = render(ISSUE, site=replace(SETTINGS, language=language))
    assert f'<html lang="{language}"' in d.html
    for part in (d.html, d.text):
        flat = " ".join(part.split()).casefold()  # the text part wraps lines and has CAPS labels
        for s in present:
            assert s.casefold() in flat, (language, s)
        for s in absent:
            assert s not in part, (language, s)
    greeting = "Hello reader," if language == "en" else "Hallo lezer,"
    _, text = personalize(d, name="", unsubscribe_url="https://e.nl/u", view_url="https://e.nl/v")
    assert greeting in text


# --- subject and preheader -----------------------------------------------------------------------
def test_subject_variables() -> None:
    template = (
        "{{ site_title }} | {{ audience.title }} | week {{ week }} {{ year }} | {{ count }} | "
        "{{ lead.title }} | {{ date_range }}"
    )
    d = render(ISSUE, audience=replace(AUDIENCE, subject=template))
    assert d.subject == (
        "AI-nieuws | Voor beslissers | week 48 2026 | 3 | Meta koopt AI-chips bij AMD & Nvidia"
        " | 23 – 29 november 2026"
    )
    assert "<title>Voor beslissers" not in d.html
    assert "Meta koopt AI-chips bij AMD &amp; Nvidia | 23" in d.html  # escaped in <title> only


@pytest.mark.parametrize(
    "template",
    ["Week {{ week }}\r\nBcc: victim@example.nl", "Week {{ week }}\n\n", "{{ audience.title }}"],
)
def test_subject_is_one_line(template: str) -> None:
    audience = replace(AUDIENCE, subject=template, title="Voor\nbeslissers")
    subject = render([LEAD], audience=audience).subject
    assert "\r" not in subject and "\n" not in subject
    assert subject == subject.strip()


def test_preheader_template_and_default_truncation() -> None:
    custom = replace(AUDIENCE, preheader="{{ count }} artikelen,\nvoorop: {{ lead.title }}")
    assert render(ISSUE, audience=custom).preheader == (
        "3 artikelen, voorop: Meta koopt AI-chips bij AMD & Nvidia"
    )
    long = article("2026/11/lang.md", summary="woord " * 60)
    pre = render([long]).preheader
    assert len(pre) <= 140 and pre.endswith("woord…")


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "template", "message"),
    [
        ("subject", "{{ unknown }} week", r"subject.*'unknown' is undefined"),
        ("subject", "{{ audience.nope }}", r"subject.*nope"),
        ("subject", "{% if %}", r"subject.*syntax error"),
        ("subject", "{{ week + 'x' }}", r"subject.*TypeError"),
        ("subject", "{{ '' }}", r"subject.*empty"),
        ("preheader", "{{ lead.nope }}", r"preheader.*nope"),
    ],
)
def test_bad_subject_or_preheader_raises_render_error(
    field: str, template: str, message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        render([LEAD], audience=replace(AUDIENCE, **{field: template}))


def test_no_articles_raises() -> None:
    with pytest.raises(RenderError, match="no articles"):
        render([])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"site_url": "http://example.nl"}, "https"),
        ({"site_url": "https://example.nl/"}, "trailing slash"),
        ({"timezone": "Europe/Nergens"}, "timezone"),
        ({"templates_dir": Path("/nonexistent/templates")}, "not a folder"),
    ],
)
def test_bad_settings_raise(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render([LEAD], site=replace(SETTINGS, **change))


@pytest.mark.parametrize(("name", "message"), [("weekly", "weekly.html"), ("../x", "plain name")])
def test_bad_template_name(name: str, message: str) -> None:
    with pytest.raises(RenderError, match=re.escape(message)):
        render([LEAD], audience=replace(AUDIENCE, template=name))


def test_naive_period_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        render([LEAD], start=datetime(2026, 11, 23))


# --- site templates ------------------------------------------------------------------------------
def test_site_text_template_overrides_only_the_text(tmp_path: Path) -> None:
    (tmp_path / "digest.txt").write_text(
        "EIGEN {{ audience.title }} {{ placeholders.unsubscribe_url }}\n", encoding="utf-8"
    )
    d = render(ISSUE, site=replace(SETTINGS, templates_dir=tmp_path))
    assert d.text == "EIGEN Voor beslissers %%UNSUBSCRIBE_URL%%\n"
    assert d.html == render(ISSUE).html  # the html still comes from the package


def test_site_css_and_blocks_override_the_package(tmp_path: Path) -> None:
    (tmp_path / "digest.css").write_text(".container { background-color: #123456; }\n")
    (tmp_path / "digest.html").write_text(
        '{% extends "default/digest.html" %}'
        '{% block intro %}<tr><td class="intro">EIGEN INTRO {{ audience.title }}</td></tr>'
        "{% endblock %}",
        encoding="utf-8",
    )
    d = render(ISSUE, site=replace(SETTINGS, templates_dir=tmp_path))
    tree = dom(d.html)
    assert tree.cssselect("td.intro")[0].text_content() == "EIGEN INTRO Voor beslissers"
    assert "#123456" in tree.cssselect("table.container")[0].get("style")
    assert "prefers-color-scheme" not in d.html  # the package CSS was replaced as a whole
    assert tree.cssselect("td.footer")  # everything else from the package template


def test_site_template_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "digest.txt").write_text("ok\n{% for %}\n", encoding="utf-8")
    with pytest.raises(RenderError, match=r"digest\.txt, line 2: syntax error"):
        render([LEAD], site=replace(SETTINGS, templates_dir=tmp_path))
    (tmp_path / "digest.txt").write_text("{{ subscriber.email }}\n", encoding="utf-8")
    with pytest.raises(RenderError, match=r"digest\.txt: 'subscriber' is undefined"):
        render([LEAD], site=replace(SETTINGS, templates_dir=tmp_path))


# --- determinism, imports ------------------------------------------------------------------------
def test_deterministic(digest: RenderedDigest) -> None:
    again = render(ISSUE)
    assert again.html.encode() == digest.html.encode()
    assert again.text.encode() == digest.text.encode()
    assert again == digest


def test_importing_digest_does_not_import_premailer() -> None:
    code = "import sys, newsletter.digest; sys.exit('premailer' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(
    ("url", "params", "expected"),
    [
        ("https://x.nl/a/", {"utm_source": "n"}, "https://x.nl/a/?utm_source=n"),
        ("https://x.nl/a/?p=1", {"utm_source": "n"}, "https://x.nl/a/?p=1&utm_source=n"),
        ("https://x.nl/a/#top", {"utm_source": "n"}, "https://x.nl/a/?utm_source=n#top"),
        ("https://x.nl/a/", {"utm_campaign": "week 48 & meer"},
         "https://x.nl/a/?utm_campaign=week%2048%20%26%20meer"),
        ("https://x.nl/a/", {}, "https://x.nl/a/"),
    ],
)  # fmt: skip
def test_with_query(url: str, params: dict[str, str], expected: str) -> None:
    assert with_query(url, params) == expected


# --- property: no title breaks out of escaping ---------------------------------------------------
_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("<>&\"'{}%/=!- ;:`"),
        st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Co", "Zl", "Zp")),
    ),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() != "")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=_TEXT, summary=_TEXT)
def test_any_title_and_summary_stay_text(title: str, summary: str) -> None:
    parsed = article("2026/11/p.md", title=title, summary=summary, body="Tekst.\n")
    tree = dom(render([parsed]).html)
    assert tree.cssselect("h2.lead-title")[0].text_content() == parsed.article.title
    assert tree.cssselect("td.lead p.summary")[0].text_content() == parsed.article.summary
    assert not tree.xpath("//script | //@*[starts-with(name(), 'on')]")


def test_a_cover_without_alt_text_is_described_by_the_title() -> None:
    bare = article("2026/11/kaal.md", title="Kale foto", cover={"image": "https://cdn.example.nl/a.jpg"})
    img = dom(render([bare]).html).xpath("//img[contains(@class, 'cover')]")[0]
    assert img.get("alt") == "Kale foto"


def test_personalize_preferences_link_and_its_fallback(digest: RenderedDigest) -> None:
    unsubscribe = "https://example.nl/unsubscribe/t1"
    view = "https://example.nl/archive/beslissers/2026-W48.html"
    html_part, _ = personalize(
        digest, name="", unsubscribe_url=unsubscribe, view_url=view,
        preferences_url="https://example.nl/preferences/t2",
    )
    links = {a.text_content(): a.get("href") for a in dom(html_part).cssselect("td.footer a")}
    assert links["Je voorkeuren"] == "https://example.nl/preferences/t2"
    html_part, _ = personalize(digest, name="", unsubscribe_url=unsubscribe, view_url=view)
    links = {a.text_content(): a.get("href") for a in dom(html_part).cssselect("td.footer a")}
    assert links["Je voorkeuren"] == unsubscribe  # whose page links to the preferences
