"""message.py: one subscriber's MIME message from a per-issue template (standards MAIL-01..09,
UNSUB-01, UNSUB-02, UNSUB-09, BULK-04).

Every message is parsed back with the standard library (`policy.default`, and a copy that raises
on any defect) and checked as a mail client would see it: decoded headers, part order, and decoded
bodies equal to what `digest.personalize` returns for the same values.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_digest import AUDIENCE, CONTENT
from test_digest import SETTINGS as SITE

from newsletter import message as message_module
from newsletter.content import ParsedArticle, parse_article, render_body
from newsletter.digest import (
    PLACEHOLDERS,
    AudienceSpec,
    RenderedDigest,
    personalize,
    render_digest,
)
from newsletter.message import MessageTemplate, make_message_id
from newsletter.model import WireSafe

AMS = ZoneInfo("Europe/Amsterdam")
STRICT = email.policy.default.clone(raise_on_defect=True)
SENDER = "Redactie AI-nieuws <nieuwsbrief@ai-nieuws.example.nl>"
LIST_ID = "beslissers.ai-nieuws.example.nl"
DATE = datetime(2026, 11, 30, 8, 0, tzinfo=AMS)
UNSUBSCRIBE = "https://ai-nieuws.example.nl/afmelden/AQEAAAAAAAAAKmsNHvA?x=1&y=%20"
MAILTO = "mailto:afmelden@ai-nieuws.example.nl?subject=unsubscribe"
VIEW = "https://ai-nieuws.example.nl/bekijk/48?t=abc&u=%%NAME%%"

# --- a real digest, from the same articles, site and audience as tests/test_digest.py --------


def article(path: str, body: str = "Een alinea tekst.\n", **meta: Any) -> ParsedArticle:
    meta.setdefault("title", "Titel")
    meta.setdefault("date", "2026-11-24T08:00:00+01:00")
    return parse_article(f"{json.dumps(meta, indent=2)}\n\n{body}", path, CONTENT)


def render(parsed: Sequence[ParsedArticle], audience: AudienceSpec = AUDIENCE) -> RenderedDigest:
    bodies = {p.article.id: p.body for p in parsed}
    return render_digest(
        audience,
        [p.article for p in parsed],
        lambda a: render_body(bodies[a.id], a.url, a.source),
        datetime(2026, 11, 23, tzinfo=AMS),
        datetime(2026, 11, 30, tzinfo=AMS),
        SITE,
    )


ARTICLES = [
    article(
        "2026/11/chips.md",
        title="Meta koopt AI-chips bij AMD & Nvidia — “een deal van één keer”",
        summary="Meta sluit een deal van 100 miljard dollar met AMD.",
        tags=["ai hardware", "meta"],
        cover={"image": "https://example.nl/images/chips.jpg", "alt": "Chips", "caption": "Foto"},
        body=(
            "Meta heeft een overeenkomst gesloten. " * 20 + "\n\n"
            "## Wat kun je hier morgen mee?\n"
            "Onderzoek hoe concurrentie tussen AMD &amp; Nvidia de prijzen drukt.\n\n"
            "Bron: The Information\n"
        ),
    ),
    article(
        "2026/11/register.md",
        title="Overheid verplicht registratie in algoritmeregister",
        summary="Wie %%NAME%% schrijft, krijgt geen naam te zien.",
        date="2026-11-25T10:00:00+01:00",
        body=".Een regel die met een punt begint.\n\nFrom the start = 1.\n\nBron: NOS\n",
    ),
]


@pytest.fixture(scope="module")
def digest() -> RenderedDigest:
    return render(ARTICLES)


@pytest.fixture(scope="module")
def template(digest: RenderedDigest) -> MessageTemplate:
    return MessageTemplate.build(
        digest,
        sender=SENDER,
        reply_to="Redactie <redactie@ai-nieuws.example.nl>",
        list_id=LIST_ID,
        list_name="Voor beslissers",
    )


def compose(template: MessageTemplate, **overrides: Any) -> bytes:
    values: dict[str, Any] = {
        "to_email": "jan@example.nl",
        "to_name": "Jan de Vries",
        "message_id": make_message_id(48, 42, "ai-nieuws.example.nl"),
        "date": DATE,
        "unsubscribe_url": UNSUBSCRIBE,
        "unsubscribe_mailto": MAILTO,
        "view_url": VIEW,
    }
    values.update(overrides)
    return template.compose(**values)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=STRICT)  # any defect raises
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def bodies(message: EmailMessage) -> tuple[str, str]:
    """(html, text) decoded; CRLF (the canonical line end of text/*) read back as LF."""
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html = html_part.get_content().replace("\r\n", "\n")
    text = text_part.get_content().replace("\r\n", "\n")
    return html, text


def expected(
    digest: RenderedDigest, name: str, unsubscribe: str = UNSUBSCRIBE, view: str = VIEW
) -> tuple[str, str]:
    return personalize(digest, name=name, unsubscribe_url=unsubscribe, view_url=view)


def check_lines(raw: bytes) -> None:
    """MAIL-07 and RFC 2045: CRLF only, 7-bit, no line over 998 octets, QP body lines <= 76."""
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    assert raw.isascii()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = raw.split(b"\r\n")
    assert max(map(len, lines)) <= 998
    assert all(len(line) <= 76 for line in body.split(b"\r\n")), "QP line over 76"
    for line in head.split(b"\r\n"):
        assert line.strip(), "a header line made of white space only"
    # WireSafe: SMTP sends it without dot-stuffing, so no line may start with "."
    assert isinstance(raw, WireSafe)
    assert not any(line.startswith(b".") for line in lines)


# --- structure (MAIL-01, MAIL-02, MAIL-04, MAIL-05) ----------------------------------------------
def test_mail04_multipart_alternative_text_first_html_last(template: MessageTemplate) -> None:
    message = parse(compose(template))
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert message["MIME-Version"] == "1.0"


def test_mail01_mail02_date_from_and_message_id(template: MessageTemplate) -> None:
    message = parse(compose(template))
    assert parsedate_to_datetime(message["Date"]) == DATE
    assert message["Date"] == "Mon, 30 Nov 2026 08:00:00 +0100"
    (sender,) = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        "Redactie AI-nieuws",
        "nieuwsbrief@ai-nieuws.example.nl",
    )
    assert message["Message-ID"] == make_message_id(48, 42, "ai-nieuws.example.nl")
    assert message["Reply-To"].addresses[0].addr_spec == "redactie@ai-nieuws.example.nl"
    assert template.sender_address == "nieuwsbrief@ai-nieuws.example.nl"


def test_date_keeps_the_offset_of_the_given_datetime(template: MessageTemplate) -> None:
    summer = datetime(2026, 7, 6, 8, 0, tzinfo=AMS)
    assert parse(compose(template, date=summer))["Date"] == format_datetime(summer)
    assert "+0200" in parse(compose(template, date=summer))["Date"]
    utc = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    assert parsedate_to_datetime(parse(compose(template, date=utc))["Date"]) == utc
    with pytest.raises(ValueError, match="Date"):
        compose(template, date=datetime(2026, 11, 30, 8, 0))


def test_mail05_unsub09_bodies_are_the_personalized_digest(
    template: MessageTemplate, digest: RenderedDigest
) -> None:
    html, text = bodies(parse(compose(template)))
    assert (html, text) == expected(digest, "Jan de Vries")
    assert "Hallo Jan de Vries," in text
    assert UNSUBSCRIBE in text and VIEW in text  # UNSUB-09: a visible link in the text part
    assert 'href="https://ai-nieuws.example.nl/afmelden/AQEAAAAAAAAAKmsNHvA?x=1&amp;y=%20"' in html
    # The placeholder-looking text in the view URL and in the article stays as written.
    assert "u=%%NAME%%" in text
    assert "%%NAME%%" not in text.replace("u=%%NAME%%", "")


def test_empty_name_greets_with_the_default_name(
    template: MessageTemplate, digest: RenderedDigest
) -> None:
    message = parse(compose(template, to_name="   "))
    assert bodies(message) == expected(digest, "")
    assert "Hallo lezer," in bodies(message)[1]
    assert message["To"] == "jan@example.nl"


def test_mail07_line_lengths_crlf_and_7bit(
    template: MessageTemplate, digest: RenderedDigest
) -> None:
    assert max(len(line) for line in digest.html.splitlines()) > 200  # premailer's long lines
    raw = compose(template, to_name="Ééntje " * 40, view_url="https://x.nl/" + "a=1&" * 300)
    check_lines(raw)
    html, text = bodies(parse(raw))
    assert (html, text) == expected(digest, "Ééntje " * 40, view="https://x.nl/" + "a=1&" * 300)


def test_boundary_never_occurs_in_the_bodies(template: MessageTemplate) -> None:
    raw = compose(template)
    assert raw.count(template.boundary.encode()) == 4  # Content-Type + 2 parts + closing
    assert template.boundary.startswith("=_")


def test_build_and_compose_are_deterministic(
    digest: RenderedDigest, template: MessageTemplate
) -> None:
    again = MessageTemplate.build(
        digest,
        sender=SENDER,
        reply_to="Redactie <redactie@ai-nieuws.example.nl>",
        list_id=LIST_ID,
        list_name="Voor beslissers",
    )
    assert compose(again) == compose(template) == compose(template)


# --- List headers (UNSUB-01, UNSUB-02, BULK-04) ---------------------------------------------------
def test_unsub01_unsub02_list_unsubscribe_headers(template: MessageTemplate) -> None:
    raw = compose(template)
    message = parse(raw)
    value = " ".join(str(message["List-Unsubscribe"]).split())
    assert value == f"<{UNSUBSCRIBE}>, <{MAILTO}>"
    assert re.findall(r"<(https://[^>]*)>", value) == [UNSUBSCRIBE]
    assert message.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unsubscribe_url", "http://ai-nieuws.example.nl/afmelden/x"),  # RFC 8058: https only
        ("unsubscribe_url", "https://x.nl/a,b"),
        ("unsubscribe_url", "https://x.nl/a>b"),
        ("unsubscribe_url", "https://x.nl/é"),
        ("unsubscribe_mailto", "https://x.nl/"),
        ("unsubscribe_mailto", "mailto:a@b.nl>, <https://evil.example/"),
    ],
)
def test_unsub02_list_unsubscribe_values_are_checked(
    template: MessageTemplate, field: str, value: str
) -> None:
    with pytest.raises(ValueError, match="List-Unsubscribe"):
        compose(template, **{field: value})


def test_bulk04_list_id(digest: RenderedDigest, template: MessageTemplate) -> None:
    raw = compose(template)
    assert f'\r\nList-Id: "Voor beslissers" <{LIST_ID}>\r\n'.encode() in raw
    other = MessageTemplate.build(
        digest, sender=SENDER, reply_to=None, list_id=LIST_ID, list_name="Één “lijst”"
    )
    message = parse(compose(other))
    assert str(message["List-Id"]) == f"Één “lijst” <{LIST_ID}>"
    assert "Reply-To" not in message
    with pytest.raises(ValueError, match="List-Id"):
        MessageTemplate.build(
            digest, sender=SENDER, reply_to=None, list_id="no dots", list_name="x"
        )


# --- Subject (MAIL-06) ----------------------------------------------------------------------------
def subject_of(
    digest: RenderedDigest, subject: str, prefix: str = ""
) -> tuple[bytes, EmailMessage]:
    plain = RenderedDigest(
        audience_id=digest.audience_id,
        subject=subject,
        preheader=digest.preheader,
        html=digest.html,
        text=digest.text,
        article_ids=digest.article_ids,
        default_name=digest.default_name,
    )
    built = MessageTemplate.build(
        plain, sender=SENDER, reply_to=None, list_id=LIST_ID, list_name="x", subject_prefix=prefix
    )
    raw = compose(built)
    return raw, parse(raw)


def raw_header(raw: bytes, name: str) -> bytes:
    match = re.search(rb"\r\n" + name.encode() + rb": (.*?)\r\n(?! )", raw, re.S)
    assert match, name
    return match.group(1)


@pytest.mark.parametrize(
    "subject",
    [
        "Voor beslissers – week 48",
        "Één “digest” voor jou: 10 % korting?",
        "Emoji 🚀🤖 en = tekens _ vraag? =?utf-8?q?geen?=",
        "Lange Nederlandse onderwerpregel met één accent " * 6,
    ],
)
def test_mail06_non_ascii_subject_round_trips(digest: RenderedDigest, subject: str) -> None:
    subject = " ".join(subject.split())
    raw, message = subject_of(digest, subject)
    assert message["Subject"] == subject
    assert raw_header(raw, "Subject").startswith(b"=?utf-8?")
    check_lines(raw)
    assert all(
        len(line) <= 78
        for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")
        if not line.startswith((b"List-Unsubscribe:", b" <"))
    )


def test_mail06_ascii_subject_is_never_encoded_even_when_folded(digest: RenderedDigest) -> None:
    subject = "Weekly AI digest: what decision makers need to know about models, chips and law " * 3
    subject = subject.strip()
    raw, message = subject_of(digest, subject, prefix="[AI-nieuws] ")
    header = raw_header(raw, "Subject")
    assert b"=?" not in header
    assert b"\r\n " in header  # folded
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    assert message["Subject"] == "[AI-nieuws] " + subject


@pytest.mark.parametrize(
    "bad",
    ["Week 48\r\nBcc: everyone@example.nl", "a\nb", "a\rb", "a\x00b", "a\tb", "a\u2028b", "a\x85b"],
)
def test_mail08_control_characters_in_subject_are_refused(digest: RenderedDigest, bad: str) -> None:
    with pytest.raises(ValueError, match="Subject"):
        subject_of(digest, bad)
    with pytest.raises(ValueError, match="Subject"):
        subject_of(digest, "Week 48", prefix=bad)


# --- To and hostile names (MAIL-06, MAIL-08, MAIL-09) ---------------------------------------------
HOSTILE_NAMES = [
    "Jan de Vries",
    'Jan "de Baas" Jansen',
    "Vries, Jan de",
    "van 't Hoff; <script>alert(1)</script> & co",
    "José Ñúñez-Çelik",
    "Zoë 🚀 de 👩🏽‍💻 Programmeur",
    "a = b == =3D",
    "%%NAME%% %%UNSUBSCRIBE_URL%% %%VIEW_URL%%",
    "=?utf-8?q?Nep=20naam?=",
    "back\\slash (comment) [x]",
    "  veel    spaties  ",
    "Heel lange naam " * 30,
    "Ëën-heel-lang-woord-zonder-spaties-" * 20,
    "x" * 1200,
    "@",
]


def to_display_name(raw: bytes, message: EmailMessage) -> str:
    """The To display name as an RFC 2047 reader shows it.

    A name longer than one encoded-word (42 bytes of UTF-8) needs several; RFC 2047 §6.2 says
    the white space between adjacent encoded-words is not displayed, but CPython's address
    parser (policy.default) keeps it as a space, for its own folder's output too. For those
    names the legacy, conforming decoder is the reference.
    """
    value = re.sub(rb"\r\n(?= )", b"", raw_header(raw, "To")).decode("ascii")
    phrase = value.rpartition(" <")[0]
    if phrase.startswith("=?") and phrase.count("=?") > 1:
        return str(make_header(decode_header(phrase)))
    return str(message["To"].addresses[0].display_name)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_mail09_hostile_names_round_trip_in_to_and_bodies(
    template: MessageTemplate, digest: RenderedDigest, name: str
) -> None:
    raw = compose(template, to_name=name)
    check_lines(raw)
    message = parse(raw)
    (address,) = message["To"].addresses
    assert address.addr_spec == "jan@example.nl"
    assert to_display_name(raw, message) == " ".join(name.split())
    assert bodies(message) == expected(digest, name)


def test_mail09_comma_in_name_is_quoted_not_a_second_address(template: MessageTemplate) -> None:
    raw = compose(template, to_name="Vries, Jan de")
    assert b'\r\nTo: "Vries, Jan de" <jan@example.nl>\r\n' in raw
    assert len(parse(raw)["To"].addresses) == 1


def test_mail06_non_ascii_name_is_encoded_and_ascii_name_is_not(template: MessageTemplate) -> None:
    assert b"\r\nTo: Jan de Vries <jan@example.nl>\r\n" in compose(template)
    raw = compose(template, to_name="Zoë 🚀 de Vries-Çelik")
    to = raw_header(raw, "To")
    assert to.startswith(b"=?utf-8?") and to.endswith(b"<jan@example.nl>")
    # One encoded-word: CPython's own parser reads it back exactly.
    assert parse(raw)["To"].addresses[0].display_name == "Zoë 🚀 de Vries-Çelik"


def test_html_part_escapes_the_name_and_text_part_does_not(template: MessageTemplate) -> None:
    html, text = bodies(parse(compose(template, to_name='<b>"Tom" & Jerry\'s</b>')))
    assert "Hallo &lt;b&gt;&quot;Tom&quot; &amp; Jerry&#x27;s&lt;/b&gt;," in html
    assert 'Hallo <b>"Tom" & Jerry\'s</b>,' in text


@pytest.mark.parametrize(
    "bad",
    [
        "Jan\r\nBcc: everyone@example.nl",
        "Jan\nX-Evil: 1",
        "Jan\rX",
        "Jan\x00",
        "Jan\tJansen",
        "Jan\x1b[31m",
        "Jan\u2028X",
        "Jan\x85X",
    ],
)
def test_mail08_control_characters_in_to_name_are_refused(
    template: MessageTemplate, bad: str
) -> None:
    with pytest.raises(ValueError, match="To"):
        compose(template, to_name=bad)


@pytest.mark.parametrize(
    "bad",
    [
        "jan@example.nl\r\nBcc: x@y.nl",
        "jan@example.nl>",
        "Jan <jan@example.nl>",
        "jan",
        "jan @example.nl",
        "jän@example.nl",
        "",
    ],
)
def test_mail08_bad_recipient_addresses_are_refused(template: MessageTemplate, bad: str) -> None:
    with pytest.raises(ValueError, match="To"):
        compose(template, to_email=bad)


@pytest.mark.parametrize(
    "bad", ["<a@b>\r\nBcc: x@y.nl", "a@b", "<ab>", "<a b@c>", "<a@b@c>", "<a@b>x"]
)
def test_mail08_bad_message_ids_are_refused(template: MessageTemplate, bad: str) -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        compose(template, message_id=bad)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("view_url", "javascript:alert(1)"),
        ("view_url", "https://x.nl/\r\nBcc: a@b.nl"),
        ("view_url", "https://x.nl/a b"),
        ("unsubscribe_url", "https://x.nl/\nX-Evil: 1"),
    ],
)
def test_urls_are_checked_like_personalize(template: MessageTemplate, field: str, bad: str) -> None:
    with pytest.raises(ValueError, match=field):
        compose(template, **{field: bad})


@pytest.mark.parametrize(
    ("header", "keyword", "bad"),
    [
        ("From", "sender", "Redactie\r\nBcc: x@y.nl <nieuwsbrief@example.nl>"),
        ("From", "sender", "Redactie <nieuwsbrief@example.nl>\nX-Evil: 1"),
        ("From", "sender", "geen adres"),
        ("Reply-To", "reply_to", "Redactie\r\n <redactie@example.nl>"),
        ("List-Id", "list_name", "Beslissers\r\nBcc: x@y.nl"),
        ("List-Id", "list_id", "beslissers.example.nl>\r\nX: 1"),
    ],
)
def test_mail08_content_headers_with_line_breaks_are_refused(
    digest: RenderedDigest, header: str, keyword: str, bad: str
) -> None:
    arguments: dict[str, Any] = {
        "sender": SENDER,
        "reply_to": None,
        "list_id": LIST_ID,
        "list_name": "Voor beslissers",
    }
    arguments[keyword] = bad
    with pytest.raises(ValueError, match=header):
        MessageTemplate.build(digest, **arguments)


def test_non_ascii_sender_name_is_encoded(digest: RenderedDigest) -> None:
    built = MessageTemplate.build(
        digest,
        sender="Redactie AI-nieuws · één <nieuwsbrief@ai-nieuws.example.nl>",
        reply_to=None,
        list_id=LIST_ID,
        list_name="x",
    )
    message = parse(compose(built))
    assert message["From"].addresses[0].display_name == "Redactie AI-nieuws · één"


# --- Message-ID (MAIL-03) -------------------------------------------------------------------------
def test_mail03_message_id_is_deterministic_and_unique_per_issue_and_subscriber() -> None:
    first = make_message_id(48, 42, "ai-nieuws.example.nl")
    assert first == make_message_id(48, 42, "ai-nieuws.example.nl")
    assert re.fullmatch(r"<48\.42\.[0-9a-f]{12}@ai-nieuws\.example\.nl>", first)
    others = {make_message_id(i, s, "ai-nieuws.example.nl") for i in range(20) for s in range(20)}
    assert len(others) == 400
    assert make_message_id(48, 42, "other.example.nl") != first


@pytest.mark.parametrize(
    ("issue", "subscriber", "domain"),
    [(-1, 1, "a.nl"), (1, True, "a.nl"), (1, 1, "bad domain"), (1, 1, "a.nl>\r\nX: 1"), (1, 1, "")],
)
def test_mail03_message_id_arguments_are_checked(issue: Any, subscriber: Any, domain: str) -> None:
    with pytest.raises(ValueError):
        make_message_id(issue, subscriber, domain)


# --- the QP slot trick under stress ------------------------------------------------------------------
def tricky_digest() -> RenderedDigest:
    """Placeholders where a QP encoder is most likely to go wrong."""
    n, u, v = PLACEHOLDERS["name"], PLACEHOLDERS["unsubscribe_url"], PLACEHOLDERS["view_url"]
    long_line = '<td style="padding:0">' + "é=x " * 400 + f'<a href="{u}">{n}</a>' + "y" * 500
    html = (
        f"{n}<html>\n{long_line}\n"
        f"<p>{n}{v}{u}</p>\n"  # adjacent slots
        f"   \t\n"  # a line of white space only
        f"trailing space before a slot {n} \n"
        f".dot at line start\nFrom the start\n"
        + "x" * 74
        + f"{n}\n"  # slot right at the QP line limit
        + "=" * 30
        + f"{v}=\n"
        + f"end {u}"  # ends with a slot, no final newline
    )
    text = f"{v}\n\nHallo {n},\n  \nUitschrijven: {u} \nlaatste regel zonder newline"
    return RenderedDigest(
        audience_id="x",
        subject="Week 48",
        preheader="",
        html=html,
        text=text,
        article_ids=("a",),
        default_name="lezer",
    )


@pytest.mark.parametrize("name", ["Jan", "", "é" * 100, "=" * 80, "a " * 60, ".", "." * 200])
def test_qp_slots_survive_awkward_positions(name: str) -> None:
    digest = tricky_digest()
    built = MessageTemplate.build(
        digest, sender=SENDER, reply_to=None, list_id=LIST_ID, list_name="x"
    )
    raw = compose(built, to_name=name)
    check_lines(raw)
    assert bodies(parse(raw)) == expected(digest, name)


@pytest.mark.parametrize("body", [".wrapper { color: red; }", "..\n.\n", "." * 300, "x" * 74 + ".y" * 80])
def test_lines_starting_with_a_dot_are_encoded_not_stuffed(body: str) -> None:
    digest = tricky_digest()
    digest = RenderedDigest(**{**digest.__dict__, "html": body + digest.html, "text": body})
    built = MessageTemplate.build(digest, sender=SENDER, reply_to=None, list_id=LIST_ID, list_name="x")
    raw = compose(built, to_name=".punt")
    check_lines(raw)
    assert b"\r\n=2E" in raw
    assert bodies(parse(raw)) == expected(digest, ".punt")


printable_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=120
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=printable_names)
def test_property_any_printable_name_round_trips(
    template: MessageTemplate, digest: RenderedDigest, name: str
) -> None:
    raw = compose(template, to_name=name)
    check_lines(raw)
    message = parse(raw)
    assert bodies(message) == expected(digest, name)
    assert message["To"].addresses[0].addr_spec == "jan@example.nl"
    assert to_display_name(raw, message) == " ".join(name.split())


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=printable_names)
def test_property_mail06_any_printable_subject_round_trips(
    digest: RenderedDigest, subject: str
) -> None:
    subject = " ".join(subject.split()) or "x"  # digest subjects are one line (digest._one_line)
    raw, message = subject_of(digest, subject)
    assert message["Subject"] == subject
    assert all(
        len(line) <= 78 for line in (b"Subject: " + raw_header(raw, "Subject")).split(b"\r\n")
    )


body_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"), max_size=300
)


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(
        st.tuples(body_text, st.sampled_from(sorted(PLACEHOLDERS.values()))), max_size=5
    ),
    tail=body_text,
    name=printable_names,
    view_path=st.text(alphabet="abc=&%?é/ ", max_size=200),
)
def test_property_any_body_round_trips_with_short_lines(
    chunks: list[tuple[str, str]], tail: str, name: str, view_path: str
) -> None:
    body = "".join(text + token for text, token in chunks) + tail
    digest = RenderedDigest(
        audience_id="x",
        subject="Week 48",
        preheader="",
        html=body,
        text=body[::-1],
        article_ids=(),
        default_name="lezer",
    )
    view = "https://x.nl/" + view_path.replace(" ", "%20")
    built = MessageTemplate.build(
        digest, sender=SENDER, reply_to=None, list_id=LIST_ID, list_name="x"
    )
    raw = compose(built, to_name=name, view_url=view)
    check_lines(raw)
    assert bodies(parse(raw)) == expected(digest, name, view=view)


def test_offset_timezones_other_than_amsterdam(template: MessageTemplate) -> None:
    moment = datetime(2026, 11, 30, 8, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert parse(compose(template, date=moment))["Date"].endswith("+0530")


def test_the_preferences_link_has_its_own_slot(
    template: MessageTemplate, digest: RenderedDigest
) -> None:
    preferences = "https://ai-nieuws.example.nl/preferences/AQQAAAAA-voorkeuren?a=1&b=2"
    html, text = bodies(parse(compose(template, preferences_url=preferences)))
    expected_html, expected_text = personalize(
        digest, name="Jan de Vries", unsubscribe_url=UNSUBSCRIBE, view_url=VIEW,
        preferences_url=preferences,
    )
    assert (html, text) == (expected_html, expected_text)
    assert f"Je voorkeuren: {preferences}" in text
    assert 'href="https://ai-nieuws.example.nl/preferences/AQQAAAAA-voorkeuren?a=1&amp;b=2"' in html


def test_one_template_composes_each_view_url_it_is_given(
    template: MessageTemplate, digest: RenderedDigest
) -> None:
    # The template keeps the last view URL encoded: a different one must never reuse it.
    for view in (VIEW, "https://ai-nieuws.example.nl/archief/2026-W49/", VIEW):
        assert bodies(parse(compose(template, view_url=view))) == expected(digest, "Jan de Vries", view=view)


@settings(max_examples=300)
@given(
    value=st.text(max_size=300)
    | st.text(alphabet="\t" + "".join(map(chr, range(32, 127))), max_size=300)
    | st.text(alphabet="ab.", max_size=300)
)
def test_property_qp_shortcuts_give_the_general_encoding(value: str) -> None:
    # `_qp_value` leaves text matching _QP_PLAIN untranslated and cuts it every 75 characters
    # when no line would start with a dot: the bytes must not depend on which path was taken.
    general = "".join(message_module._wrap(message_module._qp_translate(value), 75)) + "=\r\n"
    assert message_module._qp_value(value) == general.encode("ascii")


base64url = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=120)
url_path = st.text(alphabet="abc.-_~/%=&?;:@+$!*'()", max_size=120)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    unsubscribe_path=url_path,
    preferences_path=url_path,
    unsubscribe_token=base64url,
    preferences_token=base64url,
    name=printable_names,
)
def test_property_personal_values_assembled_are_compose_with_the_whole_links(
    template: MessageTemplate,
    unsubscribe_path: str,
    preferences_path: str,
    unsubscribe_token: str,
    preferences_token: str,
    name: str,
) -> None:
    unsubscribe = "https://ai-nieuws.example.nl/" + unsubscribe_path
    preferences = "https://ai-nieuws.example.nl/" + preferences_path
    mailto = "mailto:afmelden@ai-nieuws.example.nl?subject=unsubscribe%20"
    try:
        links = template.personal_links(
            unsubscribe_prefix=unsubscribe, unsubscribe_mailto_prefix=mailto, view_url=VIEW,
            preferences_prefix=preferences,
        )
    except ValueError:  # a prefix compose refuses too, whatever the token
        with pytest.raises(ValueError):
            compose(template, unsubscribe_url=unsubscribe + unsubscribe_token,
                    preferences_url=preferences + preferences_token)
        return
    common = {"to_email": "jan@example.nl", "to_name": name,
              "message_id": make_message_id(48, 42, "ai-nieuws.example.nl"), "date": DATE}
    personal = template.assemble(template.personal_values(
        links, unsubscribe_token=unsubscribe_token, preferences_token=preferences_token, **common
    ))
    whole = template.compose(
        unsubscribe_url=unsubscribe + unsubscribe_token, unsubscribe_mailto=mailto + unsubscribe_token,
        view_url=VIEW, preferences_url=preferences + preferences_token, **common,
    )
    assert personal == whole and type(personal) is WireSafe


@pytest.mark.parametrize("token", ["", "a b", "a.b", "a=b", "a/b", "é", "a\r\nBcc: x@y.nl"])
def test_personal_values_take_only_base64url_tokens(template: MessageTemplate, token: str) -> None:
    links = template.personal_links(
        unsubscribe_prefix="https://ai-nieuws.example.nl/afmelden/",
        unsubscribe_mailto_prefix="mailto:afmelden@ai-nieuws.example.nl?subject=unsubscribe%20",
        view_url=VIEW, preferences_prefix="https://ai-nieuws.example.nl/voorkeuren/",
    )
    common = {"to_email": "jan@example.nl", "to_name": "Jan",
              "message_id": make_message_id(48, 42, "ai-nieuws.example.nl"), "date": DATE}
    for tokens in ({"unsubscribe_token": token, "preferences_token": "ok"},
                   {"unsubscribe_token": "ok", "preferences_token": token}):
        with pytest.raises(ValueError, match="base64url"):
            template.personal_values(links, **tokens, **common)


def test_personal_links_are_checked_as_compose_checks_links(template: MessageTemplate) -> None:
    good = {"unsubscribe_prefix": "https://x.nl/u/", "view_url": VIEW,
            "unsubscribe_mailto_prefix": "mailto:u@x.nl?subject=unsubscribe%20",
            "preferences_prefix": "https://x.nl/p/"}
    template.personal_links(**good)
    for key, bad, named in (
        ("unsubscribe_prefix", "http://x.nl/u/", "List-Unsubscribe"),
        ("unsubscribe_prefix", "https://x.nl/a,b/", "List-Unsubscribe"),
        ("unsubscribe_mailto_prefix", "u@x.nl?subject=", "mailto"),
        ("preferences_prefix", "ftp://x.nl/p/", "preferences_url"),
        ("view_url", "https://x.nl/a b", "view_url"),
    ):
        with pytest.raises(ValueError, match=named):
            template.personal_links(**{**good, key: bad})
