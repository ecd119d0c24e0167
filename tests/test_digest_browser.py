"""The sample digest in a real browser: headless Chromium, served over HTTP on 127.0.0.1.

The `beslissers` issue of week 48 (23–29 November 2026) is rendered from the repository's own
content/ articles, personalized for one subscriber and opened at 600 px (the container width)
and 375 px (a phone). The cover images are https URLs that cannot load here: every request off
127.0.0.1 is aborted, so the layout is checked with broken images, as a reader who blocks
images sees it. Screenshots: see tests/browser.py (NEWSLETTER_ARTIFACTS).

A missing Chromium fails these tests (never skips): run `bash scripts/test.sh`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from browser import BrowserPage, serve_folder
from conftest import REPO
from playwright.sync_api import Page

from newsletter.content import ContentSettings, ParsedArticle, parse_article, render_body
from newsletter.digest import (
    AudienceSpec,
    DigestSettings,
    RenderedDigest,
    personalize,
    render_digest,
)

AMS = ZoneInfo("Europe/Amsterdam")
START = datetime(2026, 11, 23, tzinfo=AMS)  # Monday of ISO week 48
END = datetime(2026, 11, 30, tzinfo=AMS)  # exclusive
CONTENT = ContentSettings(base_url="https://ai-nieuws.example.nl")
SETTINGS = DigestSettings(
    site_title="AI-nieuws",
    site_url="https://ai-nieuws.example.nl",
    sender_line="AI-nieuws · Postbus 123 · 1000 AB Amsterdam",
)
AUDIENCE = AudienceSpec(
    id="beslissers",
    title="Voor beslissers",
    description="Het belangrijkste AI-nieuws van de week, voor wie beslist.",
    highlight_section="Wat kun je hier morgen mee?",
    utm={"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "beslissers"},
)
SUBSCRIBER = {
    "name": "Anne-Marie van den Berg-de Vries",
    "unsubscribe_url": "https://ai-nieuws.example.nl/afmelden/?token=c2FtcGxlLXRva2VuLTEyMw",
    "view_url": "https://ai-nieuws.example.nl/archief/2026-48/beslissers/",
}
WIDTHS = (600, 375)

# Every element whose box sticks out of the viewport (left of 0 or right of innerWidth).
OFFENDERS_JS = """() => {
  const vw = window.innerWidth;
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.right > vw + 0.5 || r.left < -0.5) {
      const cls = typeof el.className === 'string' && el.className.trim()
        ? '.' + el.className.trim().split(/\\s+/).join('.') : '';
      const label = (el.getAttribute('alt') || el.textContent || '').trim().replace(/\\s+/g, ' ');
      out.push(`<${el.tagName.toLowerCase()}${cls}> x=${Math.round(r.left)}..${Math.round(r.right)}`
               + ` (width ${Math.round(r.width)}): ${label.slice(0, 60)}`);
    }
  }
  return out;
}"""


def week_48_beslissers() -> list[ParsedArticle]:
    """The BESLISSER articles published 23–29 November 2026, newest first (the lead)."""
    parsed = [
        parse_article(path.read_bytes(), path.relative_to(REPO / "content").as_posix(), CONTENT)
        for path in sorted((REPO / "content").rglob("*.md"))
    ]
    chosen = [
        p for p in parsed
        if "BESLISSER" in p.article.labels and not p.article.draft
        and START <= p.article.published < END
    ]
    return sorted(chosen, key=lambda p: p.article.published, reverse=True)


def render(articles: list[ParsedArticle]) -> RenderedDigest:
    bodies = {p.article.id: p.body for p in articles}
    return render_digest(
        AUDIENCE,
        [p.article for p in articles],
        lambda a: render_body(bodies[a.id], a.url, a.source),
        START,
        END,
        SETTINGS,
    )


def write_personalized(digest: RenderedDigest, folder: Path) -> Path:
    html, _ = personalize(digest, **SUBSCRIBER)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(html, encoding="utf-8")
    return folder


def open_at(tab: BrowserPage, url: str, width: int) -> None:
    tab.page.set_viewport_size({"width": width, "height": 900})
    response = tab.page.goto(url, wait_until="load")
    assert response is not None and response.ok, f"GET {url}: {response and response.status}"


def assert_fits(page: Page, width: int) -> None:
    """No horizontal scrolling, and no element box outside the viewport (offenders listed)."""
    sizes: dict[str, Any] = page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth})"
    )
    offenders: list[str] = page.evaluate(OFFENDERS_JS)
    assert sizes["inner"] == width
    assert sizes["scroll"] <= sizes["inner"] and not offenders, (
        f"at {width} px: scrollWidth {sizes['scroll']} > innerWidth {sizes['inner']}"
        if sizes["scroll"] > sizes["inner"] else f"at {width} px, elements outside the viewport:"
    ) + "".join(f"\n  {line}" for line in offenders)


@pytest.fixture(scope="module")
def issue() -> tuple[RenderedDigest, list[ParsedArticle]]:
    articles = week_48_beslissers()
    assert len(articles) >= 2, "content/ should hold BESLISSER articles for 23–29 Nov 2026"
    return render(articles), articles


@pytest.fixture(scope="module")
def site(
    issue: tuple[RenderedDigest, list[ParsedArticle]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The personalized digest as index.html, served on 127.0.0.1; yields its URL."""
    with serve_folder(write_personalized(issue[0], tmp_path_factory.mktemp("digest"))) as base:
        yield base + "index.html"


@pytest.mark.parametrize("width", WIDTHS)
def test_digest_layout_in_chromium(
    width: int,
    site: str,
    issue: tuple[RenderedDigest, list[ParsedArticle]],
    browser_page: BrowserPage,  # noqa: F811 - the fixture imported above
) -> None:
    digest, articles = issue
    page = browser_page.page
    open_at(browser_page, site, width)
    browser_page.screenshot(f"digest-beslissers-{width}")

    # No horizontal scrolling, and no box wider than the screen, even with broken images.
    assert_fits(page, width)

    # Images: alt text, a width attribute, an https source, and (network closed) not loaded.
    images: list[dict[str, Any]] = page.evaluate(
        """() => Array.from(document.images, i => ({src: i.getAttribute('src'),
              alt: i.getAttribute('alt'), width: i.getAttribute('width'),
              natural: i.naturalWidth, complete: i.complete}))"""
    )
    assert images, "the lead article has a cover: expected at least one <img>"
    for image in images:
        assert (image["alt"] or "").strip(), f"<img src={image['src']!r}> has no alt text"
        assert (image["width"] or "").isdigit(), f"<img src={image['src']!r}> has no width"
        assert image["src"].startswith("https://"), image["src"]
        assert image["complete"] and image["natural"] == 0, f"{image['src']} loaded?"
        assert image["src"] in browser_page.blocked, f"{image['src']} was not requested+blocked"
    assert all(not url.startswith(site) for url in browser_page.blocked)

    # The preheader is the body's first element, and hidden.
    preheader: dict[str, Any] = page.evaluate(
        """() => { const el = document.body.firstElementChild;
                   const r = el.getBoundingClientRect();
                   return {cls: el.className, text: el.textContent,
                           display: getComputedStyle(el).display,
                           visible: el.checkVisibility(), area: r.width * r.height}; }"""
    )
    assert preheader["cls"] == "preheader", preheader
    assert preheader["text"].startswith(digest.preheader), preheader["text"][:200]
    assert preheader["display"] == "none" and not preheader["visible"], preheader
    assert preheader["area"] == 0, preheader

    # The lead title is visible, on screen, and is the newest article's title.
    lead = page.locator(".lead-title a")
    assert lead.is_visible()
    assert lead.inner_text().strip() == articles[0].article.title
    box = lead.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    assert SUBSCRIBER["name"] in page.locator(".greeting").inner_text()


# Dutch compounds, bare URLs, a code block and a table: none of them may widen the mail on a
# phone (they used to: the auto-layout tables grew to the longest word, 1164 px at 375).
LONG_WORD = "Aansprakelijkheidsverzekeringsmaatschappijvoorwaardenonderzoekscommissie"
LONG_URL = "https://example.org/rapporten/2026/algoritmeregister-jaarverslag-definitief.pdf?versie=3"
STRESS_META = {
    "title": f"{LONG_WORD} stelt vragen over AI",
    "date": "2026-11-27T08:00:00+01:00",
    "labels": ["BESLISSER"],
    "tags": [LONG_WORD.lower()],
    "summary": f"Het rapport staat op {LONG_URL} en is {LONG_WORD.lower()}-proof.",
    "cover": {"image": "https://images.example.org/cover.jpg", "alt": "Een stapel rapporten"},
}
STRESS_BODY = f"""Intro.

## {AUDIENCE.highlight_section}
Lees {LONG_URL} en `een_heel_lange_configuratiesleutel_zonder_spaties_of_streepjes_erin`.

| kolom een | kolom twee | kolom drie | kolom vier |
|---|---|---|---|
| waardeeenwaardeeen | waardetweewaardetwee | waardedriewaardedrie | waardevierwaardevier |

```
curl --fail --silent --show-error --header "Authorization: Bearer $TOKEN" {LONG_URL}
```

Bron: Rijksoverheid
"""


def test_long_words_urls_and_code_do_not_widen_the_mail_at_375(
    tmp_path: Path,
    browser_page: BrowserPage,  # noqa: F811 - the fixture imported above
) -> None:
    text = f"{json.dumps(STRESS_META, indent=2)}\n\n{STRESS_BODY}"
    stress = parse_article(text, "2026/11/lange-woorden.md", CONTENT)
    digest = render([stress, *week_48_beslissers()])
    with serve_folder(write_personalized(digest, tmp_path / "site")) as base:
        open_at(browser_page, base + "index.html", 375)
        browser_page.screenshot("digest-long-words-375")
        assert LONG_WORD in browser_page.page.locator(".lead-title").inner_text()
        assert browser_page.page.locator(".highlight pre").count() == 1
        assert_fits(browser_page.page, 375)
