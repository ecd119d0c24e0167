"""web/: the rules of the web service, tested against the app (Starlette's TestClient) with a real
SQLite store, a fixed clock and the honest in-memory transport.

Standards items: UNSUB-04 (one-click POST, no cookies, 2xx, no redirect), UNSUB-05 (GET changes
nothing), UNSUB-06 (repeated POSTs harmless), UNSUB-07/SEC-10 (HMAC tokens, purpose-bound,
expiring confirm tokens), HTTP-02 (304 on If-None-Match / If-Modified-Since), HTTP-03 (feed
content types), DISC-01 (autodiscovery links), MAIL-01/MAIL-04/MAIL-07 (the confirmation mail).
The whole journey in a real browser against a real server is tests/test_web_browser.py.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import NOW, copy_site
from starlette.exceptions import StarletteDeprecationWarning

from newsletter import links
from newsletter.builder import build
from newsletter.cli_web import serve
from newsletter.collector import load_catalog
from newsletter.config import Config, load_config
from newsletter.delivery import MemoryTransport
from newsletter.errors import ConfigError
from newsletter.sending import SendOptions, deliver_period
from newsletter.store import Store
from newsletter.tokens import make_token, read_token
from newsletter.web import create_app
from newsletter.web.security import CSRF_COOKIE, RateLimiter
from newsletter.web.strings import EN, NL

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its TestClient and warns at import when it
    # only finds httpx (which this project installs); the client works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

KEY = "k" * 40
PASSWORD = "geheim-voorbeeld-wachtwoord"
BASE = "https://ai-nieuws.example.nl"  # the app is addressed as the site (https: Secure cookies)


class Clock:
    """The app's clock; a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Web:
    client: TestClient
    store: Store
    transport: MemoryTransport
    clock: Clock
    config: Config

    def mails(self) -> list[EmailMessage]:
        return [parse(sent.message) for sent in self.transport.sent]


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The sample site with its feeds built, shared read-only by the tests of this module."""
    config = load_config(copy_site(tmp_path_factory.mktemp("site")))
    build(config, NOW)
    return config


@pytest.fixture
def config(built_site: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_PREVIEW_PASSWORD", PASSWORD)
    return replace(built_site, store_url=f"sqlite:///{tmp_path / 'web.db'}")


def start(config: Config, **client: Any) -> Iterator[Web]:
    store = Store.open(config.store_url)
    transport = MemoryTransport()
    clock = Clock(NOW)
    app = create_app(config, now=clock, store=store, transport=transport)
    with TestClient(app, base_url=BASE, follow_redirects=False, **client) as test_client:
        yield Web(test_client, store, transport, clock, config)
    store.close()


@pytest.fixture
def web(config: Config) -> Iterator[Web]:
    yield from start(config)


def csrf_field(web: Web, path: str = "/subscribe") -> str:
    response = web.client.get(path)
    assert response.status_code == 200
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', response.text)
    assert match, response.text
    return match.group(1)


def subscribe(web: Web, address: str, audiences: list[str], name: str = "", **extra: Any) -> httpx.Response:
    data = {"csrf_token": csrf_field(web), "email": address, "name": name, "audience": audiences, **extra}
    response: httpx.Response = web.client.post("/subscribe", data=data)
    return response


def link_in(message: EmailMessage, shape: str) -> str:
    text = message.get_body(("plain",))
    assert text is not None
    match = re.search(re.escape(BASE) + shape + r"[A-Za-z0-9_-]+", text.get_content())
    assert match, text.get_content()
    return match.group(0)


def path_of(url: str) -> str:
    assert url.startswith(BASE + "/")
    return url.removeprefix(BASE)


def active(store: Store, address: str, audiences: list[str]) -> int:
    change = store.add_subscriber(address, "Lezer", audiences, NOW - timedelta(days=30))
    assert change.subscriber_id is not None
    return change.subscriber_id


def token(subscriber_id: int, audience: str, purpose: str, ttl: timedelta | None = None,
          issued: datetime = NOW) -> str:
    return make_token(KEY.encode(), subscriber_id, audience, purpose, issued, ttl)


# --- home, language, headers --------------------------------------------------------------------


def test_home_lists_audiences_with_feeds_and_autodiscovery_DISC_01(web: Web) -> None:
    response = web.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert '<html lang="nl">' in page and 'name="viewport"' in page
    for audience in web.config.audiences:
        assert audience.title in page and audience.description in page
        assert f'href="/subscribe?audience={audience.id}"' in page
    assert 'href="/labels/beslisser/index.xml" type="application/rss+xml"' in page
    assert 'href="/labels/beslisser/atom.xml" type="application/atom+xml"' in page
    assert 'href="/labels/beslisser/feed.json" type="application/feed+json"' in page
    alternates = re.findall(r'<link rel="alternate" type="([^"]+)" title="([^"]+)" href="([^"]+)">', page)
    hrefs = [href for _, _, href in alternates]
    assert f"{BASE}/index.xml" in hrefs and f"{BASE}/labels/onderzoeker/feed.json" in hrefs
    assert len(set(hrefs)) == len(hrefs) and len({t for _, t, _ in alternates}) == len(alternates)
    assert all(href.startswith("https://") for href in hrefs)  # absolute, as DISC-01 recommends
    for kind, _, href in alternates:  # each one is served here with its own type
        served = web.client.get(path_of(href))
        assert served.status_code == 200 and served.headers["content-type"].startswith(kind)


def test_every_ui_string_exists_in_dutch_and_english() -> None:
    assert set(NL) == set(EN)
    assert all(NL[key].strip() and EN[key].strip() for key in NL)


def test_pages_and_error_pages_are_english_when_the_site_is(config: Config) -> None:
    english = replace(config, site=replace(config.site, language="en"))
    for web in start(english):
        home = web.client.get("/")
        assert '<html lang="en">' in home.text and "Newsletters and feeds" in home.text
        assert "Subscribe" in web.client.get("/subscribe").text
        missing = web.client.get("/nowhere")
        assert missing.status_code == 404 and "Page not found" in missing.text
        broken = web.client.get("/unsubscribe/AAAA")
        assert broken.status_code == 400 and "This link does not work" in broken.text
        wrong = web.client.post("/subscribe", data={"email": "a@example.nl"})
        assert wrong.status_code == 403 and "The form has expired" in wrong.text


def test_every_error_page_is_dutch_html_with_security_headers(web: Web) -> None:
    cases = {
        "/bestaat-niet": (404, "Pagina niet gevonden"),
        "/unsubscribe/kapot": (400, "Deze link werkt niet"),
        "/preview": (401, "Inloggen vereist"),
    }
    for path, (status, title) in cases.items():
        response = web.client.get(path)
        assert response.status_code == status and title in response.text, path
        assert '<html lang="nl">' in response.text
        assert_security_headers(response)
    not_allowed = web.client.put("/subscribe")
    assert not_allowed.status_code == 405 and "Methode niet toegestaan" in not_allowed.text
    assert set(not_allowed.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert_security_headers(not_allowed)


def test_a_crash_answers_the_dutch_500_page_with_security_headers(config: Config) -> None:
    for web in start(config, raise_server_exceptions=False):
        def broken(*args: object) -> dict[str, str]:
            raise RuntimeError("database on fire")

        web.client.app.state.service.store.memberships = broken  # type: ignore[attr-defined]
        subscriber = active(web.store, "anna@example.nl", ["beslissers"])
        response = web.client.get(f"/unsubscribe/{token(subscriber, 'beslissers', 'unsubscribe')}")
        assert response.status_code == 500
        assert "Er ging iets mis" in response.text and "database on fire" not in response.text
        assert_security_headers(response)


def assert_security_headers(response: httpx.Response, frameable: bool = False) -> None:
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # no scripts at all
    assert ("frame-ancestors 'self'" if frameable else "frame-ancestors 'none'") in csp
    assert response.headers["x-frame-options"] == ("SAMEORIGIN" if frameable else "DENY")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["strict-transport-security"].startswith("max-age=")


def test_security_headers_on_pages_forms_and_files(web: Web) -> None:
    for path in ("/", "/subscribe", "/index.xml", "/labels/bouwer/atom.xml", "/static/web.css"):
        response = web.client.get(path)
        assert response.status_code == 200, path
        assert_security_headers(response)
    assert web.client.get("/static/web.css").headers["content-type"] == "text/css; charset=utf-8"


# --- subscribe: double opt-in -------------------------------------------------------------------


def test_subscribe_stores_pending_and_mails_a_signed_expiring_confirm_link_SEC_10(web: Web) -> None:
    response = subscribe(web, "Anna@Example.NL", ["beslissers", "bouwers"], name="Anna de Vries")
    assert response.status_code == 200 and "Kijk in je mailbox" in response.text
    subscriber = web.store.get_subscriber("anna@example.nl")
    assert subscriber is not None and subscriber.status == "pending" and subscriber.name == "Anna de Vries"
    assert web.store.memberships(subscriber.id) == {"beslissers": "active", "bouwers": "active"}
    assert web.store.count_by_audience() == {}  # pending: nobody gets a digest yet

    (sent,) = web.transport.sent
    assert sent.recipient == "Anna@example.nl" and sent.sender == "nieuwsbrief@ai-nieuws.example.nl"
    message = parse(sent.message)
    assert message["From"] == "Redactie AI-nieuws <nieuwsbrief@ai-nieuws.example.nl>"
    assert message["To"].addresses[0].addr_spec == "Anna@example.nl"
    assert message["Subject"] == "Bevestig je inschrijving bij AI-nieuws"
    assert message["Message-ID"] == sent.message_id and message["Date"]  # MAIL-01
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]  # MAIL-04
    assert all(len(line) <= 78 for line in sent.message.split(b"\r\n"))  # MAIL-07
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Voor beslissers" in text and "Voor bouwers" in text and "30 november 2026 09:00" in text
    # what was typed into the form never reaches an unconfirmed mailbox (no spam relay)
    assert text.startswith("Hallo,") and "Vries" not in sent.message.decode("ascii")
    url = link_in(message, "/confirm/")
    assert url in message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    claims = read_token(KEY.encode(), url.rsplit("/", 1)[1], "confirm", NOW)
    assert claims.subscriber_id == subscriber.id and claims.audience_id == "beslissers,bouwers"
    assert claims.expires_at == NOW + timedelta(hours=web.config.web.confirm_hours)


def test_confirm_link_GET_changes_nothing_and_its_button_activates_UNSUB_05(web: Web) -> None:
    subscribe(web, "anna@example.nl", ["beslissers"])
    path = path_of(link_in(web.mails()[0], "/confirm/"))
    for _ in range(2):  # a link scanner fetching the link twice
        page = web.client.get(path)
        assert page.status_code == 200 and "Inschrijving bevestigen" in page.text
        assert f'<form method="post" action="{path}">' in page.text
        assert web.client.head(path).status_code == 200
    assert web.store.get_subscriber("anna@example.nl").status == "pending"  # type: ignore[union-attr]
    web.clock.now = NOW + timedelta(hours=47)
    done = web.client.post(path)
    assert done.status_code == 200 and "Je inschrijving is bevestigd" in done.text and "Voor beslissers" in done.text
    subscriber = web.store.get_subscriber("anna@example.nl")
    assert subscriber is not None and subscriber.status == "active"
    assert subscriber.confirmed_at == NOW + timedelta(hours=47)
    assert web.store.count_by_audience() == {"beslissers": 1}
    assert web.client.post(path).status_code == 200  # confirming twice is harmless
    assert web.store.count_by_audience() == {"beslissers": 1}


def test_an_expired_confirm_link_is_refused_and_a_new_subscribe_sends_a_fresh_one(web: Web) -> None:
    subscribe(web, "anna@example.nl", ["beslissers"])
    path = path_of(link_in(web.mails()[0], "/confirm/"))
    web.clock.now = NOW + timedelta(hours=48)
    for response in (web.client.get(path), web.client.post(path)):
        assert response.status_code == 400 and "Deze link is verlopen" in response.text
    assert web.store.get_subscriber("anna@example.nl").status == "pending"  # type: ignore[union-attr]
    subscribe(web, "anna@example.nl", ["beslissers"])
    fresh = path_of(link_in(web.mails()[1], "/confirm/"))
    assert web.client.post(fresh).status_code == 200
    assert web.store.get_subscriber("anna@example.nl").status == "active"  # type: ignore[union-attr]


def test_repeated_subscribes_make_no_duplicates_and_answer_identically(web: Web) -> None:
    """The answer never tells whether an address is known: same status, same bytes, same
    headers (apart from Date), for a new, a pending, an active, an unsubscribed and a
    suppressed address."""
    active(web.store, "actief@example.nl", ["beslissers"])
    gone = active(web.store, "weg@example.nl", ["beslissers"])
    web.store.remove_subscriber("weg@example.nl", NOW)
    web.store.suppress("geblokkeerd@example.nl", "complaint", NOW)
    answers = []
    for address in ("nieuw@example.nl", "nieuw@example.nl", "NIEUW@example.nl", "actief@example.nl",
                    "weg@example.nl", "geblokkeerd@example.nl"):
        web.clock.now += timedelta(minutes=2)  # stay under the rate limit (5 per 10 minutes)
        answers.append(subscribe(web, address, ["beslissers"]))
    first = answers[0]
    for answer in answers:
        assert (answer.status_code, answer.content) == (first.status_code, first.content)
        assert {k: v for k, v in answer.headers.items() if k != "date"} == {
            k: v for k, v in first.headers.items() if k != "date"}
        assert "set-cookie" not in answer.headers
    assert len([s for s in web.store.list_subscribers() if s.email_key == "nieuw@example.nl"]) == 1
    assert web.store.get_subscriber(gone).status == "unsubscribed"  # type: ignore[union-attr]
    assert web.store.get_subscriber("geblokkeerd@example.nl") is None
    recipients = [sent.recipient for sent in web.transport.sent]
    # the pending address gets a fresh link each time; the active one a note with its settings
    # link; the one that left a confirm link to come back (nothing changes until it is used);
    # nothing goes to a suppressed address
    assert recipients == ["nieuw@example.nl"] * 3 + ["actief@example.nl", "weg@example.nl"]
    note = web.mails()[3]
    assert note["Subject"] == "Je inschrijving bij AI-nieuws"
    assert "/confirm/" not in note.as_string() and link_in(note, "/preferences/")


def test_an_active_subscriber_asking_for_more_changes_nothing_until_confirmed(web: Web) -> None:
    subscriber = active(web.store, "anna@example.nl", ["beslissers"])
    subscribe(web, "anna@example.nl", ["beslissers", "bouwers"], name="Xander Reclame")
    assert web.store.memberships(subscriber) == {"beslissers": "active"}
    assert web.store.get_subscriber(subscriber).name == "Lezer"  # type: ignore[union-attr]
    message = web.mails()[0]
    claims = read_token(KEY.encode(), link_in(message, "/confirm/").rsplit("/", 1)[1], "confirm", NOW)
    assert claims.audience_id == "bouwers"
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert "Je bent al ingeschreven voor:\n\n- Voor beslissers\n" in text
    assert text.startswith("Hallo Lezer,") and "Xander" not in text  # the stored name, not the form's
    web.client.post(path_of(link_in(message, "/confirm/")))
    assert web.store.memberships(subscriber) == {"beslissers": "active", "bouwers": "active"}


def test_subscribe_form_errors_are_shown_in_dutch_and_store_nothing(web: Web) -> None:
    cases = [
        ("geen-adres", ["beslissers"], "", "Vul een geldig e-mailadres in."),
        ("anna@example.nl", [], "", "Kies minstens één nieuwsbrief."),
        ("anna@example.nl", ["bestaat-niet"], "", "Kies minstens één nieuwsbrief."),
        ("anna@example.nl", ["beslissers"], "Anna\nBcc: x@example.nl", "Je naam mag hoogstens"),
        ("anna@example.nl", ["beslissers"], "A" * 101, "Je naam mag hoogstens"),
    ]
    for address, audiences, name, message in cases:
        response = subscribe(web, address, audiences, name=name)
        assert response.status_code == 400 and message in response.text, (address, audiences, name)
        assert 'name="csrf_token"' in response.text  # the form again, ready to resubmit
    assert list(web.store.list_subscribers()) == [] and web.transport.sent == []


def test_subscribe_and_preferences_forms_reject_a_missing_or_forged_csrf_token(web: Web) -> None:
    field = csrf_field(web)
    forged = {
        "no field": {},
        "wrong field": {"csrf_token": "0" * 64},
        "field of another browser": {"csrf_token": make_other_browser_field(web)},
    }
    for label, extra in forged.items():
        data = {"email": "anna@example.nl", "audience": "beslissers", **extra}
        response = web.client.post("/subscribe", data=data)
        assert response.status_code == 403, label
        assert "Het formulier is verlopen" in response.text
    web.client.cookies.clear()
    no_cookie = web.client.post("/subscribe", data={"csrf_token": field, "email": "a@example.nl",
                                                    "audience": "beslissers"})
    assert no_cookie.status_code == 403
    subscriber = active(web.store, "anna@example.nl", ["beslissers"])
    prefs = f"/preferences/{token(subscriber, '*', 'preferences')}"
    refused = web.client.post(prefs, data={"action": "unsubscribe_all"})
    assert refused.status_code == 403
    assert web.store.get_subscriber(subscriber).status == "active"  # type: ignore[union-attr]
    assert [s.email for s in web.store.list_subscribers()] == ["anna@example.nl"]
    assert web.transport.sent == []


def make_other_browser_field(web: Web) -> str:
    """A valid field, but for another browser's cookie."""
    other = TestClient(web.client.app, base_url=BASE)
    page = other.get("/subscribe").text
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert match and other.cookies.get(CSRF_COOKIE) != web.client.cookies.get(CSRF_COOKIE)
    return match.group(1)


def test_subscribe_is_rate_limited_per_client_with_a_dutch_429(web: Web) -> None:
    limit = web.config.web.subscribe_limit
    for number in range(limit):
        assert subscribe(web, f"lezer{number}@example.nl", ["beslissers"]).status_code == 200
    refused = subscribe(web, "nog-een@example.nl", ["beslissers"])
    assert refused.status_code == 429 and "Te veel verzoeken" in refused.text
    assert refused.headers["retry-after"] == "600" and "10 minuten" in refused.text
    assert web.store.get_subscriber("nog-een@example.nl") is None
    web.clock.now = NOW + timedelta(minutes=10)  # the window slides on
    assert subscribe(web, "nog-een@example.nl", ["beslissers"]).status_code == 200


def test_rate_limiter_is_a_sliding_window() -> None:
    limiter = RateLimiter(2, timedelta(minutes=10))
    assert limiter.hit("a", NOW) is None and limiter.hit("a", NOW + timedelta(minutes=5)) is None
    assert limiter.hit("a", NOW + timedelta(minutes=6)) == timedelta(minutes=4)
    assert limiter.hit("b", NOW + timedelta(minutes=6)) is None  # per key
    assert limiter.hit("a", NOW + timedelta(minutes=10)) is None  # the first hit has expired


def test_forms_refuse_bodies_without_length_or_too_large(web: Web) -> None:
    csrf_field(web)
    big = web.client.post("/subscribe", content=b"email=" + b"a" * 20000,
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413 and "Te groot" in big.text

    def chunks() -> Iterator[bytes]:
        yield b"email=a%40example.nl"

    unknown = web.client.post("/subscribe", content=chunks(),
                              headers={"content-type": "application/x-www-form-urlencoded"})
    assert unknown.status_code == 411


# --- unsubscribe (RFC 8058) ---------------------------------------------------------------------


def test_unsubscribe_GET_shows_a_confirm_page_and_changes_nothing_UNSUB_05(web: Web) -> None:
    subscriber = active(web.store, "anna@example.nl", ["beslissers", "bouwers"])
    before = web.store.get_subscriber(subscriber)
    path = links.UNSUBSCRIBE.format(token=token(subscriber, "beslissers", "unsubscribe"))
    for _ in range(3):
        page = web.client.get(path)
        assert page.status_code == 200 and "Wil je an…@example.nl afmelden voor Voor beslissers?" in page.text
        assert web.client.head(path).status_code == 200
    assert f'<form method="post" action="{path}">' in page.text
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page.text
    assert "set-cookie" not in page.headers and page.headers["cache-control"] == "no-store"
    assert web.store.memberships(subscriber) == {"beslissers": "active", "bouwers": "active"}
    assert web.store.get_subscriber(subscriber) == before


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_POST_without_cookies_unsubscribes_200_no_redirect_UNSUB_04_06(
    web: Web, encoding: str
) -> None:
    subscriber = active(web.store, "anna@example.nl", ["beslissers", "bouwers"])
    url = links.unsubscribe_url(BASE, token(subscriber, "beslissers", "unsubscribe"))
    web.client.cookies.clear()
    web.clock.now = NOW + timedelta(days=200)  # unsubscribe links do not expire (UNSUB-07)
    if encoding == "urlencoded":
        def post() -> httpx.Response:
            response: httpx.Response = web.client.post(
                url, content=b"List-Unsubscribe=One-Click",
                headers={"content-type": "application/x-www-form-urlencoded"})
            return response
    else:
        def post() -> httpx.Response:
            response: httpx.Response = web.client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
            return response
    first = post()
    assert first.status_code == 200 and "Je bent afgemeld" in first.text
    assert "location" not in first.headers and "set-cookie" not in first.headers
    assert web.store.memberships(subscriber) == {"beslissers": "unsubscribed", "bouwers": "active"}
    changed_at = web.store.get_subscriber(subscriber).updated_at  # type: ignore[union-attr]
    web.clock.now += timedelta(minutes=1)
    again = post()  # a mail client or scanner repeating it
    assert again.status_code == 200 and "location" not in again.headers
    assert web.store.get_subscriber(subscriber).updated_at == changed_at  # type: ignore[union-attr]
    assert web.store.memberships(subscriber) == {"beslissers": "unsubscribed", "bouwers": "active"}
    assert not web.client.cookies


def test_the_pages_own_button_unsubscribes_too(web: Web) -> None:
    subscriber = active(web.store, "anna@example.nl", ["beslissers"])
    path = links.UNSUBSCRIBE.format(token=token(subscriber, "beslissers", "unsubscribe"))
    csrf_field(web)  # the browser holds a CSRF cookie from another page: that is fine too
    done = web.client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "Je ontvangt Voor beslissers niet meer." in done.text
    assert web.store.memberships(subscriber) == {"beslissers": "unsubscribed"}
    page = web.client.get(path)
    assert "is al afgemeld voor Voor beslissers" in page.text and "<form" not in page.text


def tampered(good: str) -> list[str]:
    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    return [flipped, good[:-1], good + "A", "bm9wZQ", "%2e%2e", "a" * 400]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_tampered_expired_and_wrong_purpose_tokens_get_a_dutch_400_and_change_nothing(
    web: Web, method: str
) -> None:
    subscriber = active(web.store, "anna@example.nl", ["beslissers"])
    good = token(subscriber, "beslissers", "unsubscribe")
    bad_paths = [links.UNSUBSCRIBE.format(token=t) for t in tampered(good)]
    bad_paths += [
        links.UNSUBSCRIBE.format(token=token(subscriber, "beslissers", "confirm")),
        links.UNSUBSCRIBE.format(token=token(subscriber, "beslissers", "view")),
        links.CONFIRM.format(token=good),
        links.PREFERENCES.format(token=good),
        links.CONFIRM.format(token=token(subscriber, "beslissers", "confirm", ttl=timedelta(hours=1),
                                         issued=NOW - timedelta(hours=2))),
        links.UNSUBSCRIBE.format(token=make_token(b"x" * 40, subscriber, "beslissers", "unsubscribe", NOW)),
    ]
    for path in bad_paths:
        response = web.client.request(method, path, data={"List-Unsubscribe": "One-Click"})
        assert response.status_code in (400, 404), path
        if response.status_code == 400:
            assert "Deze link werkt niet" in response.text, path
            assert "set-cookie" not in response.headers
    expired = links.CONFIRM.format(token=token(subscriber, "beslissers", "confirm", ttl=timedelta(hours=1),
                                               issued=NOW - timedelta(hours=2)))
    assert "Deze link is verlopen" in web.client.request(method, expired).text
    assert web.store.memberships(subscriber) == {"beslissers": "active"}
    assert web.store.get_subscriber(subscriber).status == "active"  # type: ignore[union-attr]


def test_links_of_a_removed_subscriber_or_audience_are_handled(web: Web) -> None:
    unknown = links.UNSUBSCRIBE.format(token=token(999, "beslissers", "unsubscribe"))
    assert web.client.post(unknown).status_code == 200  # nothing to do: still 2xx (UNSUB-04)
    assert "Bij deze link hoort geen inschrijving meer" in web.client.get(unknown).text
    confirm = links.CONFIRM.format(token=token(999, "beslissers", "confirm", ttl=timedelta(hours=1)))
    assert web.client.get(confirm).status_code == 400


# --- preferences --------------------------------------------------------------------------------


def test_preferences_choose_audiences_and_unsubscribe_from_all(web: Web) -> None:
    subscriber = active(web.store, "anna@example.nl", ["beslissers", "onderzoekers"])
    web.store.unsubscribe(subscriber, "onderzoekers", NOW)
    path = links.PREFERENCES.format(token=token(subscriber, "*", "preferences", ttl=timedelta(days=30)))
    page = web.client.get(path)
    assert page.status_code == 200 and "Kies welke nieuwsbrieven an…@example.nl ontvangt." in page.text
    assert re.search(r'value="beslissers" checked>', page.text)
    assert re.search(r'value="onderzoekers">\s*<span><strong>Voor onderzoekers</strong> <small>\(eerder afgemeld\)', page.text)
    assert web.store.memberships(subscriber) == {"beslissers": "active", "onderzoekers": "unsubscribed"}
    field = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text).group(1)  # type: ignore[union-attr]
    saved = web.client.post(path, data={"csrf_token": field, "action": "save",
                                        "audience": ["bouwers", "onderzoekers"]})
    assert saved.status_code == 200 and "Je instellingen zijn opgeslagen." in saved.text
    # the signed preferences link proves the mailbox: ticking a left audience is a fresh opt-in
    assert web.store.memberships(subscriber) == {
        "beslissers": "unsubscribed", "bouwers": "active", "onderzoekers": "active"}
    off = web.client.post(path, data={"csrf_token": field, "action": "unsubscribe_all"})
    assert off.status_code == 200 and "is afgemeld voor alle nieuwsbrieven" in off.text
    assert web.store.get_subscriber(subscriber).status == "unsubscribed"  # type: ignore[union-attr]
    assert set(web.store.memberships(subscriber).values()) == {"unsubscribed"}
    web.clock.now = NOW + timedelta(days=31)
    assert "Deze link is verlopen" in web.client.get(path).text


# --- preview ------------------------------------------------------------------------------------


def test_preview_is_closed_without_a_password(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_PREVIEW_PASSWORD")
    for web in start(config):
        response = web.client.get("/preview", auth=("redactie", ""))
        assert response.status_code == 403
        assert "De voorbeeldpagina's zijn gesloten" in html.unescape(response.text)
        assert "NEWSLETTER_PREVIEW_PASSWORD" in response.text


def test_preview_needs_the_editors_credentials(web: Web) -> None:
    for auth in (None, ("redactie", "fout"), ("iemand", PASSWORD), ("redactie", PASSWORD + "x")):
        for path in ("/preview", "/preview/beslissers", "/preview/beslissers/digest.html"):
            response = web.client.get(path, auth=auth)
            assert response.status_code == 401, (path, auth)
            assert response.headers["www-authenticate"].startswith('Basic realm="newsletter preview"')
            assert "Voor beslissers" not in response.text


def test_preview_shows_each_digest_as_it_would_be_mailed(web: Web) -> None:
    active(web.store, "anna@example.nl", ["beslissers"])
    active(web.store, "bert@example.nl", ["beslissers", "bouwers"])
    auth = ("redactie", PASSWORD)
    index = web.client.get("/preview", auth=auth)
    assert index.status_code == 200 and index.headers["cache-control"] == "no-store"
    for audience in web.config.audiences:
        assert f'href="/preview/{audience.id}"' in index.text
    page = web.client.get("/preview/beslissers", auth=auth)
    assert page.status_code == 200
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    assert_security_headers(page)
    body = page.text
    assert '<dd class="subject">AI voor beslissers – week 48: ' in body
    assert '<dd class="preheader">' in body and "artikelen over AI, geselecteerd voor wie beslist" in body
    assert '<dd class="recipients">2</dd>' in body
    assert '<dd class="next-send">maandag 30 november 2026, 08:00</dd>' in body  # mon 08:00, Amsterdam
    assert re.search(r'<iframe class="digest" src="/preview/beslissers/digest.html" sandbox="[^"]*"', body)
    assert "allow-scripts" not in body
    text = re.search(r'<pre class="text">(.*?)</pre>', body, re.S)  # the text part, as mailed
    assert text and "Voorbeeld Lezer" in text.group(1)
    assert f"{BASE}/unsubscribe/VOORBEELD" in text.group(1) and "<a " not in text.group(1)
    assert "%%" not in body
    digest = web.client.get("/preview/beslissers/digest.html", auth=auth)
    assert digest.status_code == 200 and digest.text.lstrip().lower().startswith("<!doctype html")
    assert_security_headers(digest, frameable=True)
    assert "style-src 'unsafe-inline'" in digest.headers["content-security-policy"]
    assert web.client.get("/preview/onbekend", auth=auth).status_code == 404
    monthly = web.client.get("/preview/onderzoekers", auth=auth).text
    assert '<dd class="next-send">dinsdag 1 december 2026, 09:00</dd>' in monthly


# --- feeds and archive: content types, validators, 304 ------------------------------------------

FEEDS = {
    "/index.xml": "application/rss+xml; charset=utf-8",
    "/atom.xml": "application/atom+xml; charset=utf-8",
    "/feed.json": "application/feed+json",
    "/feeds.opml": "text/x-opml; charset=utf-8",
    "/feeds.html": "text/html; charset=utf-8",
    "/labels/beslisser/index.xml": "application/rss+xml; charset=utf-8",
    "/labels/beslisser/atom.xml": "application/atom+xml; charset=utf-8",
    "/tags/ai-hardware/feed.json": "application/feed+json",
}


@pytest.mark.parametrize("path", FEEDS)
def test_feeds_have_their_content_type_validators_and_answer_304_HTTP_02_HTTP_03(web: Web, path: str) -> None:
    response = web.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == FEEDS[path]
    on_disk = web.config.site.output_dir / path.lstrip("/")
    assert response.content == on_disk.read_bytes()
    etag, modified = response.headers["etag"], response.headers["last-modified"]
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', etag)
    assert modified == format_datetime(datetime.fromtimestamp(int(on_disk.stat().st_mtime), UTC), usegmt=True)
    assert_not_modified(web, path, etag, modified)


def assert_not_modified(web: Web, path: str, etag: str, modified: str) -> None:
    for headers in ({"if-none-match": etag}, {"if-none-match": f'"x", W/{etag}'}, {"if-none-match": "*"},
                    {"if-modified-since": modified}, {"if-modified-since": "Fri, 01 Jan 2100 00:00:00 GMT"}):
        again = web.client.get(path, headers=headers)
        assert again.status_code == 304, headers
        assert again.content == b"" and again.headers["etag"] == etag
        assert again.headers["last-modified"] == modified
    assert web.client.head(path, headers={"if-none-match": etag}).status_code == 304
    for headers in ({"if-none-match": '"anders"'}, {"if-modified-since": "Sat, 01 Jan 2000 00:00:00 GMT"},
                    {"if-modified-since": "geen datum"},
                    # If-None-Match decides when both are given (RFC 9110 §13.2.2)
                    {"if-none-match": '"anders"', "if-modified-since": modified}):
        assert web.client.get(path, headers=headers).status_code == 200, headers


def test_a_rebuild_without_changes_keeps_the_validators_HTTP_01(config: Config, web: Web) -> None:
    first = web.client.get("/atom.xml")
    build(config, NOW)  # nothing changed: no file is rewritten
    assert web.client.get("/atom.xml", headers={"if-none-match": first.headers["etag"]}).status_code == 304


def test_the_archive_is_served_with_validators_and_no_personal_data(
    config: Config, tmp_path: Path
) -> None:
    output = tmp_path / "public"
    shutil.copytree(config.site.output_dir, output)
    site = replace(config, site=replace(config.site, output_dir=output))
    for web in start(site):
        active(web.store, "anna@example.nl", ["beslissers"])
        catalog = load_catalog(site)
        report = deliver_period(
            site, site.audience("beslissers"), "2026-W48", NOW, web.store, catalog.articles,
            catalog.rendered, KEY.encode(), SendOptions(), MemoryTransport, now=NOW,
        )
        assert report.status == "sent"
        index = web.client.get("/archive/beslissers/")
        assert index.status_code == 200 and index.headers["content-type"] == "text/html; charset=utf-8"
        assert links.archive_url(site.site.url, "beslissers", "2026-W48") in index.text
        assert web.client.get("/archive/beslissers").status_code == 200  # no redirect either way
        feed = web.client.get("/archive/beslissers/index.xml")
        assert feed.headers["content-type"] == "application/rss+xml; charset=utf-8"
        issue = web.client.get("/archive/beslissers/2026-W48.html")
        assert issue.status_code == 200 and "anna" not in issue.text.lower()
        csp = issue.headers["content-security-policy"]  # the mail's inline styles, still no scripts
        assert "style-src 'unsafe-inline'" in csp and "frame-ancestors 'none'" in csp and "script" not in csp
        assert_not_modified(web, "/archive/beslissers/2026-W48.html", issue.headers["etag"],
                            issue.headers["last-modified"])
        home = web.client.get("/").text
        assert 'href="/archive/beslissers/"' in home and 'href="/archive/beslissers/index.xml"' in home
        assert f'href="{BASE}/archive/beslissers/index.xml"' in home  # autodiscovery
        assert web.client.get("/archive/bouwers/").status_code == 404


@pytest.mark.parametrize("path", [
    "/labels/..%2f..%2fconfig.toml", "/labels/beslisser/..%2f..%2f..%2fconfig.toml",
    "/archive/beslissers/..%2f..%2fconfig.toml", "/archive/..%2f..%2fconfig.toml/index.html",
    "/labels/%2e%2e/index.xml", "/tags/ai-hardware/index.html", "/labels/beslisser/.newsletter-manifest",
    "/.newsletter-manifest", "/config.toml", "/archive/beslissers/2026-W48.eml", "/labels/Beslisser/index.xml",
    "/static/../config.toml", "/static/%2e%2e/config.toml",
])
def test_no_path_leaves_the_published_files(web: Web, path: str) -> None:
    response = web.client.get(path)
    assert response.status_code == 404, path
    assert "[site]" not in response.text and "Pagina niet gevonden" in response.text


@pytest.mark.parametrize("path", [
    "//evil.example/", "/subscribe?next=https://evil.example/", "/subscribe/", "/archive/beslissers",
    "/unsubscribe/x?redirect=https://evil.example/", "/%2F%2Fevil.example", "/\\evil.example",
    "/preview/", "/labels/beslisser/",
])
def test_nothing_redirects_so_nothing_redirects_elsewhere(web: Web, path: str) -> None:
    response = web.client.get(path)
    assert not response.is_redirect and "location" not in response.headers, path
    assert "evil.example" not in response.text


# --- startup and the serve command --------------------------------------------------------------


def test_the_secret_key_is_required_to_start(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY"):
        create_app(config)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "kort")
    with pytest.raises(ConfigError, match="too short"):
        create_app(config)


def test_serve_runs_uvicorn_on_the_configured_or_given_address(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    calls: list[dict[str, Any]] = []

    def run(app: Any, **options: Any) -> None:
        calls.append({"app": app, **options})
        app.state.service.store.close()  # what the app's shutdown would do

    monkeypatch.setattr(uvicorn, "run", run)
    runner = CliRunner()
    result = runner.invoke(serve, ["--config", str(config.path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(serve, ["--config", str(config.path), "--host", "0.0.0.0", "--port", "9090"])
    assert result.exit_code == 0, result.output
    assert [(c["host"], c["port"]) for c in calls] == [("127.0.0.1", 8080), ("0.0.0.0", 9090)]
    assert all(c["timeout_graceful_shutdown"] > 0 and c["app"].routes for c in calls)
    assert all(c["access_log"] is False for c in calls)  # paths carry tokens
    assert "--port PORT" in runner.invoke(serve, ["--help"]).output
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    missing = runner.invoke(serve, ["--config", str(config.path)])
    assert missing.exit_code == 2 and "NEWSLETTER_SECRET_KEY" in missing.output
    assert runner.invoke(serve, ["--config", str(config.path), "--port", "0"]).exit_code == 2
