"""The web service end to end: a real uvicorn server on 127.0.0.1, driven by headless Chromium.

The journey of one reader, with the database checked after each step: the home page, the
subscribe form, the confirmation mail read from the outbox folder, the confirm link (its GET
changes nothing, its button confirms), a real digest sent with `sending.deliver_period` through
the outbox, the mail's List-Unsubscribe https URL opened (nothing changes) and then POSTed the
way a mail client does it (no cookies, RFC 8058: 200, no redirect; standards UNSUB-04/05/06),
the archive; then the unsubscribe page's own button, the preferences page, the editors' preview
with its sandboxed iframe, and the refusals: a tampered and an expired link, a form without its
CSRF cookie, and 304 answers from the real server (HTTP-02).

Every page is opened at 375 px (a phone) and must not scroll sideways; each gets a screenshot
(tests/browser.py: NEWSLETTER_ARTIFACTS keeps them). The mails link to https://ai-nieuws.example.nl
(the site's public URL, as in production behind a TLS proxy); the test maps that origin onto the
local server. A missing Chromium fails these tests (never skips): run `bash scripts/test.sh`.
"""

from __future__ import annotations

import base64
import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
import uvicorn
from browser import BrowserPage
from conftest import NOW, copy_site
from playwright.sync_api import ViewportSize

from newsletter import links
from newsletter.builder import build
from newsletter.collector import load_catalog
from newsletter.config import Config, load_config
from newsletter.sending import SendOptions, deliver_period
from newsletter.services import make_transport
from newsletter.store import Store
from newsletter.tokens import make_token, read_token
from newsletter.web import create_app

KEY = "s" * 48
PASSWORD = "redactie-wachtwoord-voor-de-test"
PUBLIC = "https://ai-nieuws.example.nl"
PHONE: ViewportSize = {"width": 375, "height": 800}


@dataclass
class Site:
    base: str  # http://127.0.0.1:PORT
    config: Config
    store: Store  # the test's own connection to the server's database
    seen: set[Path]  # outbox files already read

    def local(self, url: str) -> str:
        """A link from a mail (https://ai-nieuws.example.nl/...) on the local server."""
        assert url.startswith(PUBLIC + "/"), url
        return self.base + url.removeprefix(PUBLIC)

    def new_mails(self, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait for `count` new .eml files in the outbox (the server mails after answering)."""
        deadline = time.monotonic() + timeout
        while True:
            fresh = sorted(set(self.config.delivery.outbox_dir.glob("*.eml")) - self.seen)
            if len(fresh) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(fresh) == count, f"expected {count} new mail(s) in the outbox, found {len(fresh)}"
        self.seen.update(fresh)
        return [parse(path.read_bytes()) for path in fresh]


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_PREVIEW_PASSWORD", PASSWORD)
    config = load_config(copy_site(tmp_path))
    build(config, NOW)
    # The real app: its store from config.store_url, the configured outbox transport. Its clock
    # is fixed at the sample site's reference moment, so the sample articles make a digest.
    app = create_app(config, now=lambda: NOW)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    store = Store.open(config.store_url)
    try:
        yield Site(f"http://127.0.0.1:{listener.getsockname()[1]}", config, store, set())
    finally:
        store.close()
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def open_page(tab: BrowserPage, url: str, shot: str) -> None:
    tab.page.set_viewport_size(PHONE)
    response = tab.page.goto(url, wait_until="load")
    assert response is not None, url
    settle(tab, shot)


def settle(tab: BrowserPage, shot: str) -> None:
    """After a navigation: the stylesheet applied under the CSP, no sideways scrolling at
    375 px, and a screenshot."""
    page = tab.page
    page.wait_for_load_state("load")
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(242, 239, 232)", f"{page.url}: web.css not applied"
    sizes: dict[str, int] = page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth})"
    )
    assert sizes["inner"] == PHONE["width"]
    assert sizes["scroll"] <= sizes["inner"], f"{page.url}: scrolls sideways at 375 px: {sizes}"
    tab.screenshot(f"web-{shot}")


def watch_console(tab: BrowserPage) -> list[str]:
    """Console errors (a CSP violation shows up here)."""
    errors: list[str] = []
    tab.page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def one_click(url: str) -> httpx.Response:
    """What a mail client does for RFC 8058: a bare POST, no cookies, no redirects followed."""
    with httpx.Client(follow_redirects=False) as client:
        return client.post(url, content=b"List-Unsubscribe=One-Click",
                           headers={"content-type": "application/x-www-form-urlencoded"})


def test_subscribe_confirm_receive_and_one_click_unsubscribe_in_chromium(
    site: Site, browser_page: BrowserPage  # noqa: F811
) -> None:
    page = browser_page.page
    console = watch_console(browser_page)
    store = site.store

    # 1. The home page: audiences, their feeds, autodiscovery.
    open_page(browser_page, site.base + "/", "home")
    assert page.locator("h1").inner_text() == "Nieuwsbrieven en feeds"
    assert page.locator('head link[rel="alternate"]').count() >= 12
    feed = page.locator('#audience-beslissers a[type="application/rss+xml"]').get_attribute("href")
    assert feed == "/labels/beslisser/index.xml"

    # 2. Subscribe through the form.
    page.locator('#audience-beslissers a.button').click()
    settle(browser_page, "subscribe")
    assert page.locator('input[value="beslissers"]').is_checked()
    assert not page.locator('input[value="bouwers"]').is_checked()
    page.fill("#email", "anna.de.vries@example.nl")
    page.fill("#name", "Anna de Vries")
    page.locator('button[type="submit"]').click()
    page.wait_for_selector("text=Kijk in je mailbox")
    settle(browser_page, "check-your-mailbox")
    subscriber = store.get_subscriber("anna.de.vries@example.nl")
    assert subscriber is not None and subscriber.status == "pending" and subscriber.name == "Anna de Vries"
    assert store.memberships(subscriber.id) == {"beslissers": "active"}
    assert store.count_by_audience() == {}

    # 3. The confirmation mail, from the outbox.
    (confirmation,) = site.new_mails()
    assert confirmation["To"].addresses[0].addr_spec == "anna.de.vries@example.nl"
    assert confirmation["Subject"] == "Bevestig je inschrijving bij AI-nieuws"
    confirm_url = next(w for w in text_of(confirmation).split() if w.startswith(PUBLIC + "/confirm/"))

    # 4. The confirm link: GET shows a button and changes nothing; the button confirms.
    open_page(browser_page, site.local(confirm_url), "confirm")
    assert page.locator("h1").inner_text() == "Inschrijving bevestigen"
    assert store.get_subscriber(subscriber.id).status == "pending"  # type: ignore[union-attr]
    page.locator('button[type="submit"]').click()
    page.wait_for_selector("text=Je inschrijving is bevestigd")
    settle(browser_page, "confirmed")
    assert "Voor beslissers" in page.locator("main").inner_text()
    assert store.get_subscriber(subscriber.id).status == "active"  # type: ignore[union-attr]
    assert store.count_by_audience() == {"beslissers": 1}

    # 5. A digest goes out (the real sending path, into the outbox).
    catalog = load_catalog(site.config)
    report = deliver_period(
        site.config, site.config.audience("beslissers"), "2026-W48", NOW, store, catalog.articles,
        catalog.rendered, KEY.encode(), SendOptions(), lambda: make_transport(site.config), now=NOW,
    )
    assert report.status == "sent" and report.counts["sent"] == 1
    (digest,) = site.new_mails()
    assert digest["To"].addresses[0].addr_spec == "anna.de.vries@example.nl"
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https = next(p.strip(" <>") for p in digest["List-Unsubscribe"].split(",") if "https://" in p)
    assert https.startswith(PUBLIC + "/unsubscribe/")
    claims = read_token(KEY.encode(), https.rsplit("/", 1)[1], "unsubscribe", NOW)
    assert (claims.subscriber_id, claims.audience_id) == (subscriber.id, "beslissers")

    # 6. Opening the unsubscribe link (or a scanner prefetching it) changes nothing.
    open_page(browser_page, site.local(https), "unsubscribe")
    assert "afmelden voor Voor beslissers" in page.locator("main").inner_text()
    assert store.memberships(subscriber.id) == {"beslissers": "active"}

    # 7. The mail client's one-click POST: 200, no redirect, no cookie; unsubscribed; again: fine.
    for _ in range(2):
        answer = one_click(site.local(https))
        assert answer.status_code == 200 and "location" not in answer.headers
        assert "set-cookie" not in answer.headers and "Je bent afgemeld" in answer.text
        assert store.memberships(subscriber.id) == {"beslissers": "unsubscribed"}
    assert store.count_by_audience() == {}

    # 8. The sent issue is in the public archive.
    open_page(browser_page, f"{site.base}/archive/beslissers/", "archive-index")
    assert page.locator("li a").first.get_attribute("href") == links.archive_url(PUBLIC, "beslissers", "2026-W48")
    issue = page.locator("li a").first.get_attribute("href") or ""
    open_page(browser_page, site.local(issue), "archive-issue")
    assert "anna" not in page.content().lower()

    assert not [e for e in console if "Content Security Policy" in e], console


def test_unsubscribe_button_preferences_and_preview_in_chromium(
    site: Site, browser_page: BrowserPage  # noqa: F811
) -> None:
    page = browser_page.page
    console = watch_console(browser_page)
    store = site.store
    change = store.add_subscriber("bert@example.nl", "Bert", ["beslissers", "bouwers"], NOW - timedelta(days=9))
    bert = change.subscriber_id
    assert bert is not None
    unsubscribe = make_token(KEY.encode(), bert, "bouwers", "unsubscribe", NOW - timedelta(days=3))

    # The unsubscribe page's own button.
    open_page(browser_page, site.base + links.UNSUBSCRIBE.format(token=unsubscribe), "unsubscribe-button")
    manage = page.locator("main a", has_text="Je instellingen wijzigen").get_attribute("href") or ""
    assert manage.startswith("/preferences/")
    page.locator('button[type="submit"]').click()
    page.wait_for_selector("text=Je bent afgemeld")
    settle(browser_page, "unsubscribed")
    assert store.memberships(bert) == {"beslissers": "active", "bouwers": "unsubscribed"}

    # Preferences: swap beslissers for onderzoekers, then leave everything.
    open_page(browser_page, site.base + manage, "preferences")
    assert page.locator('input[value="beslissers"]').is_checked()
    assert not page.locator('input[value="bouwers"]').is_checked()  # left: shown, may be ticked again
    page.locator('input[value="beslissers"]').uncheck()
    page.locator('input[value="onderzoekers"]').check()
    page.locator('button[value="save"]').click()
    page.wait_for_selector("text=Je instellingen zijn opgeslagen.")
    settle(browser_page, "preferences-saved")
    assert store.memberships(bert) == {
        "beslissers": "unsubscribed", "bouwers": "unsubscribed", "onderzoekers": "active"}
    page.locator('button[value="unsubscribe_all"]').click()
    page.wait_for_selector("text=is afgemeld voor alle nieuwsbrieven")
    settle(browser_page, "preferences-all-off")
    assert store.get_subscriber(bert).status == "unsubscribed"  # type: ignore[union-attr]

    # The editors' preview: Basic auth, the digest in a sandboxed iframe, the text part.
    store.add_subscriber("carla@example.nl", "Carla", ["beslissers"], NOW - timedelta(days=9))
    credentials = base64.b64encode(f"redactie:{PASSWORD}".encode()).decode()
    page.set_extra_http_headers({"Authorization": f"Basic {credentials}"})
    open_page(browser_page, site.base + "/preview", "preview-index")
    assert page.locator("#preview-beslissers").inner_text().count("maandag 30 november 2026, 08:00") == 1
    open_page(browser_page, site.base + "/preview/beslissers", "preview-beslissers")
    assert page.locator("dd.recipients").inner_text() == "1"
    assert page.locator("iframe.digest").get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    frame = page.frame_locator("iframe.digest")
    frame.locator(".lead-title").wait_for()
    lead = frame.locator(".lead-title").inner_text().strip()
    assert lead and page.locator("dd.subject").inner_text().startswith("AI voor beslissers – week 48: ")
    assert "Voorbeeld Lezer" in page.locator("pre.text").inner_text()
    settle(browser_page, "preview-beslissers-loaded")
    assert not [e for e in console if "Content Security Policy" in e or "frame" in e.lower()], console


def test_refusals_in_chromium_and_304_from_the_real_server(
    site: Site, browser_page: BrowserPage  # noqa: F811
) -> None:
    page = browser_page.page
    page.set_viewport_size(PHONE)
    store = site.store
    change = store.add_subscriber("dirk@example.nl", "Dirk", ["beslissers"], NOW - timedelta(days=9))
    dirk = change.subscriber_id
    assert dirk is not None

    # A tampered unsubscribe link: the Dutch 400 page, nothing changes.
    good = make_token(KEY.encode(), dirk, "beslissers", "unsubscribe", NOW)
    bad = good[:12] + ("B" if good[12] == "A" else "A") + good[13:]
    response = page.goto(site.base + links.UNSUBSCRIBE.format(token=bad))
    assert response is not None and response.status == 400
    settle(browser_page, "error-tampered-link")
    assert page.locator("h1").inner_text() == "Deze link werkt niet"
    assert one_click(site.base + links.UNSUBSCRIBE.format(token=bad)).status_code == 400
    assert store.memberships(dirk) == {"beslissers": "active"}

    # An expired confirm link.
    expired = make_token(KEY.encode(), dirk, "beslissers", "confirm", NOW - timedelta(hours=49),
                         timedelta(hours=48))
    response = page.goto(site.base + links.CONFIRM.format(token=expired))
    assert response is not None and response.status == 400
    settle(browser_page, "error-expired-link")
    assert "Deze link is verlopen" in page.locator("main").inner_text()

    # A form whose CSRF cookie is gone (another site posting, or a stale tab): refused.
    open_page(browser_page, site.base + "/subscribe", "subscribe-again")
    page.context.clear_cookies()
    page.fill("#email", "erik@example.nl")
    page.locator('input[value="bouwers"]').check()
    page.locator('button[type="submit"]').click()
    page.wait_for_selector("text=Het formulier is verlopen")
    settle(browser_page, "error-csrf")
    assert store.get_subscriber("erik@example.nl") is None

    # 404 in Dutch.
    response = page.goto(site.base + "/bestaat/niet")
    assert response is not None and response.status == 404
    settle(browser_page, "error-404")

    # Conditional GET against the real server.
    with httpx.Client(base_url=site.base) as client:
        for path, kind in (("/index.xml", "application/rss+xml"), ("/labels/bouwer/atom.xml", "application/atom+xml"),
                           ("/feed.json", "application/feed+json")):
            first = client.get(path)
            assert first.status_code == 200 and first.headers["content-type"].startswith(kind)
            by_tag = client.get(path, headers={"if-none-match": first.headers["etag"]})
            by_date = client.get(path, headers={"if-modified-since": first.headers["last-modified"]})
            assert (by_tag.status_code, by_date.status_code) == (304, 304) and by_tag.content == b""

