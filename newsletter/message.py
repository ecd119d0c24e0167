"""Compose one subscriber's MIME message from a per-issue template, in microseconds.

`MessageTemplate.build` runs once per (audience, issue): it encodes the whole message (headers,
both quoted-printable bodies, MIME boundaries) into bytes, leaving holes ("slots") only for what
differs per subscriber: To, Message-ID, Date, List-Unsubscribe and the three body placeholders of
`digest.PLACEHOLDERS`. `MessageTemplate.compose` validates and encodes those few short values and
joins the pieces; nothing is parsed or re-encoded per subscriber. `personal_values` makes the
same values from the issue's links, checked once by `personal_links`, and the subscriber's
tokens, and `assemble` joins them into the pieces: the sending loop's way, about half the work
per message, split so that the values can be made away from the connection.

The quoted-printable slot trick: a QP encoder wraps text at 76 characters, so a value pasted into
already-encoded text would break the line limit (and could split an "=XX" escape). Instead every
slot sits on a line of its own: the encoded text before a slot ends with a soft line break
("=" CRLF), and each value is QP-encoded by itself, wrapped with its own soft breaks and ends with
one too. Soft breaks vanish when decoding, so the decoded body is exactly what
`digest.personalize` returns, and no line of the message ever exceeds 76 characters.

Message shape (standards MAIL-01..09, UNSUB-01/02, BULK-04): multipart/alternative, text/plain
first and text/html last, both UTF-8 and quoted-printable (7-bit clean), CRLF line ends. Header
values from content or subscriber data that contain control characters (CR, LF, TAB, ...) raise
`ValueError` naming the header, so no data can add a header. Non-ASCII subjects and display names
become RFC 2047 encoded-words (via `email.charset`); ASCII ones are folded at spaces and never
encoded, except text containing "=?" (a reader would decode it as an encoded-word) or a word too
long for a 998-octet line.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from datetime import datetime
from email.charset import Charset
from email.utils import format_datetime, parseaddr
from urllib.parse import urlsplit

from .digest import PLACEHOLDERS, RenderedDigest
from .model import WireSafe

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322 §2.1.1: SHOULD; the hard limit is 998
_HARD_LINE = 998
_QP_LINE = 76  # RFC 2045 §6.7 (5)

# Slot numbers: the index into a subscriber's values (`Personal`).
_SLOT_DATE, _SLOT_TO, _SLOT_MESSAGE_ID, _SLOT_LIST_UNSUBSCRIBE = 0, 1, 2, 3
_TEXT_BASE, _HTML_BASE = 4, 8
_BODY_SLOTS = {"name": 0, "unsubscribe_url": 1, "view_url": 2, "preferences_url": 3}
_TOKEN_SLOT = {PLACEHOLDERS[key]: offset for key, offset in _BODY_SLOTS.items()}
# One subscriber's values, in slot order: the four header slots, then each body slot's value
# for the text part, then for the HTML part (`MessageTemplate.personal_values`).
Personal = tuple[bytes, ...]
_PERSONAL_COUNT = _HTML_BASE + len(_BODY_SLOTS)
_TOKEN_RE = re.compile("|".join(re.escape(token) for token in PLACEHOLDERS.values()))

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: any of them in a
# header value could end the line for some parser.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
# ASCII addresses with a dot-atom local part; quoted local parts and SMTPUTF8 are not supported.
_ADDRESS = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@{_DOMAIN}")
_DOMAIN_RE = re.compile(_DOMAIN)
_MESSAGE_ID = re.compile(r"<[!-;=?A-~]{1,200}@[!-;=?A-~]{1,200}>")
_LIST_ID = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)+")
# A URI in List-Unsubscribe: printable ASCII without the delimiters of that header.
_HEADER_URI = re.compile(r"[!#-+\--;=?-~]+")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_QUOTE_ESCAPE = re.compile(r'([\\"])')

# Quoted-printable: printable ASCII except "=" stays, as do space and tab (trailing ones are
# escaped separately); every other byte becomes "=XX". Used via str.translate on the UTF-8 bytes
# read as Latin-1, so the per-byte work happens in C.
_QP_MAP: dict[int, str] = {
    byte: chr(byte) if (33 <= byte <= 126 and byte != 61) or byte in (9, 32) else f"={byte:02X}"
    for byte in range(256)
}
# Text made only of characters _QP_MAP keeps as they are: its QP encoding is itself.
_QP_PLAIN = re.compile(r"[\t !-<>-~]*")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")  # base64url: plain in QP, HTML and header URIs
# A URL _check_url accepts at a glance: http(s), printable ASCII, no space.
_PLAIN_URL = re.compile(r"https?://[!-~]*")
_UTF8 = Charset("utf-8")
# UTF-8 bytes per encoded-word: base64 of 42 bytes is 56 chars, plus "=?utf-8?b?" and "?=" = 68,
# under the 75-character limit of RFC 2047 §2 and short enough that "Reply-To: " and the first
# word still fit in 78 characters; Q is chosen only when shorter.
_WORD_BYTES = 42


class MessageTemplate:
    """One issue's message, pre-encoded; `compose` fills in one subscriber."""

    __slots__ = (
        "_pieces", "_slots", "_default_name", "subject", "sender_address", "boundary", "_date",
        "_view",
    )

    def __init__(
        self,
        pieces: Sequence[bytes],
        slots: Sequence[tuple[int, int]],
        default_name: str,
        subject: str,
        sender_address: str,
        boundary: str,
    ) -> None:
        self._pieces = list(pieces)
        self._slots = tuple(slots)
        self._default_name = default_name
        self.subject = subject  # as it will be shown, prefix included
        self.sender_address = sender_address  # the From address: use it as the envelope sender
        self.boundary = boundary
        self._date: tuple[datetime, object, bytes] | None = None  # the last Date header made
        self._view: tuple[str, bytes, bytes] = ("", b"", b"")  # the last view URL, as _body_value

    @classmethod
    def build(
        cls,
        digest: RenderedDigest,
        *,
        sender: str,
        reply_to: str | None,
        list_id: str,
        list_name: str,
        subject_prefix: str = "",
    ) -> MessageTemplate:
        """Encode everything that is the same for every subscriber of this issue.

        Args:
            digest: the rendered issue, still holding `PLACEHOLDERS`.
            sender: the From mailbox, e.g. 'Redactie AI-nieuws <nieuwsbrief@ai-nieuws.example.nl>'.
            reply_to: a Reply-To mailbox, or None.
            list_id: RFC 2919 list id, e.g. 'beslissers.ai-nieuws.example.nl'.
            list_name: the list's display name for the List-Id header.
            subject_prefix: put before the digest's subject as is (e.g. '[AI-nieuws] ').

        Raises:
            ValueError: a header value with control characters or a malformed address or list
                id; the message names the header.
        """
        sender_name, sender_address = _mailbox("From", sender)
        subject = subject_prefix + digest.subject
        _check_text("Subject", subject)
        if not subject.strip():
            raise ValueError("Subject: must not be empty")
        _check_text("List-Id", list_name)
        if not _LIST_ID.fullmatch(list_id):
            raise ValueError(f"List-Id: {list_id!r} is not a list id like 'name.example.nl'")

        text_pieces = _encode_body(digest.text)
        html_pieces = _encode_body(digest.html)
        boundary = (
            "=_"
            + hashlib.sha256(
                "\x00".join((digest.subject, digest.text, digest.html)).encode("utf-8")
            ).hexdigest()[:40]
        )
        # "=_" can never occur in quoted-printable output ("=" is always followed by two hex
        # digits or a line break), so the boundary cannot collide with either body.

        skeleton = _Skeleton()
        skeleton.add(_fold_header("From", _address_tokens(sender_name, sender_address)))
        skeleton.add("To: ")
        skeleton.slot(_SLOT_TO)
        skeleton.add(CRLF + _fold_header("Subject", _text_tokens(subject)))
        skeleton.add("Date: ")
        skeleton.slot(_SLOT_DATE)
        skeleton.add(CRLF + "Message-ID: ")
        skeleton.slot(_SLOT_MESSAGE_ID)
        skeleton.add(CRLF)
        if reply_to:
            skeleton.add(_fold_header("Reply-To", _address_tokens(*_mailbox("Reply-To", reply_to))))
        skeleton.add(_fold_header("List-Id", _list_name_tokens(list_name) + [f"<{list_id}>"]))
        skeleton.add("List-Unsubscribe: ")
        skeleton.slot(_SLOT_LIST_UNSUBSCRIBE)
        skeleton.add(
            CRLF
            + "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            + "MIME-Version: 1.0\r\n"
            + f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'
            + "\r\n"
        )
        for base, body, subtype in (
            (_TEXT_BASE, text_pieces, "plain"),
            (_HTML_BASE, html_pieces, "html"),
        ):
            skeleton.add(
                f"--{boundary}\r\n"
                f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
                "Content-Transfer-Encoding: quoted-printable\r\n"
                "\r\n"
            )
            for piece in body:
                if isinstance(piece, str):
                    skeleton.add(piece)
                else:
                    skeleton.slot(base + piece)
            skeleton.add(CRLF)
        skeleton.add(f"--{boundary}--\r\n")
        pieces, slots = skeleton.finish()
        return cls(
            pieces,
            slots,
            digest.default_name,
            subject,
            sender_address,
            boundary,
        )

    def compose(
        self,
        *,
        to_email: str,
        to_name: str,
        message_id: str,
        date: datetime,
        unsubscribe_url: str,
        unsubscribe_mailto: str,
        view_url: str,
        preferences_url: str | None = None,
    ) -> WireSafe:
        """The message for one subscriber, as bytes ready for SMTP (CRLF, 7-bit, no line
        starting with ".").

        Args:
            to_email: the recipient address (ASCII).
            to_name: the display name; also the greeting (empty: the digest's default name).
            message_id: '<left@right>', see `make_message_id`.
            date: aware datetime for the Date header.
            unsubscribe_url: https one-click URL, in List-Unsubscribe and the bodies.
            unsubscribe_mailto: 'mailto:...' for List-Unsubscribe.
            view_url: http(s) URL of the web version, in the bodies.
            preferences_url: http(s) URL of the subscriber's settings, in the bodies
                (default: the unsubscribe URL, whose page links to them).

        Raises:
            ValueError: a value that is malformed or carries control characters (names the
                header or placeholder).
        """
        _check_recipient(to_email, to_name, message_id, date)
        preferences_url = preferences_url or unsubscribe_url
        _check_links(unsubscribe_url, unsubscribe_mailto, view_url, preferences_url)
        return self.assemble(self._personal(
            to_email,
            to_name,
            message_id,
            date,
            f"<{unsubscribe_url}>,\r\n <{unsubscribe_mailto}>",
            _body_value(unsubscribe_url),
            self._view_value(view_url),
            _body_value(preferences_url),
        ))

    def personal_links(
        self,
        *,
        unsubscribe_prefix: str,
        unsubscribe_mailto_prefix: str,
        view_url: str,
        preferences_prefix: str,
    ) -> PersonalLinks:
        """An issue's links for `personal_values`: each personal one is a prefix and a token.

        Checked here once, as `compose` checks whole links: a token of base64url characters
        cannot make a valid prefix invalid (every check is on the scheme at the start or on
        each character), so `personal_values` checks only the tokens and the lengths.

        Raises:
            ValueError: a prefix that does not make a valid link (names the link).
        """
        sample = "A"
        _check_links(
            unsubscribe_prefix + sample,
            unsubscribe_mailto_prefix + sample,
            view_url,
            preferences_prefix + sample,
        )
        return PersonalLinks(
            unsubscribe_prefix, unsubscribe_mailto_prefix, view_url, preferences_prefix
        )

    def personal_values(
        self,
        links: PersonalLinks,
        *,
        to_email: str,
        to_name: str,
        message_id: str,
        date: datetime,
        unsubscribe_token: str,
        preferences_token: str,
    ) -> Personal:
        """One subscriber's values for this template from the links of `personal_links` and
        the subscriber's tokens, checked and encoded: `assemble(personal_values(...))` is the
        message `compose` makes given the whole links, for a sending loop that builds
        thousands (the values can be made in another process than the one that sends).

        Raises:
            ValueError: a recipient value as in `compose`, or a token that is not base64url.
        """
        _check_recipient(to_email, to_name, message_id, date)
        for token in (unsubscribe_token, preferences_token):
            if not _TOKEN.fullmatch(token):
                raise ValueError(f"a link token must be base64url text, got {token!r}")
        return self._personal(
            to_email,
            to_name,
            message_id,
            date,
            f"<{links.unsubscribe}{unsubscribe_token}>,\r\n"
            f" <{links.unsubscribe_mailto}{unsubscribe_token}>",
            links.body_value(links.unsubscribe, unsubscribe_token),
            self._view_value(links.view_url),
            links.body_value(links.preferences, preferences_token),
        )

    def assemble(self, values: Personal) -> WireSafe:
        """The message: the pre-encoded pieces with one subscriber's values (from this
        template's `personal_values`) in their places. One join, ~2 µs.

        Raises:
            ValueError: values of another length than `personal_values` makes.
        """
        if len(values) != _PERSONAL_COUNT:
            raise ValueError(f"expected {_PERSONAL_COUNT} personal values, got {len(values)}")
        out = self._pieces.copy()
        for index, slot in self._slots:
            out[index] = values[slot]
        return WireSafe(b"".join(out))

    def _personal(
        self,
        to_email: str,
        to_name: str,
        message_id: str,
        date: datetime,
        list_unsubscribe: str,
        unsubscribe: tuple[bytes, bytes],
        view: tuple[bytes, bytes],
        preferences: tuple[bytes, bytes],
    ) -> Personal:
        """The encoded values from checked ones; the body ones as (text part, HTML part)."""
        if len(list_unsubscribe) > _HARD_LINE - 20:
            raise ValueError("List-Unsubscribe: the URIs are too long for one header line")
        shown = " ".join(to_name.split())
        if (
            len(shown) + len(to_email) < 60
            and shown.isascii()
            and not _SPECIALS.search(shown)
            and "=?" not in shown
        ):
            # The common case needs no quoting or folding: skip the general path.
            to = f"{shown} <{to_email}>" if shown else to_email
        else:
            to = _fold_value(4, _address_tokens(shown, to_email))
        greeting = _body_value(shown or self._default_name)
        return (
            self._date_header(date),
            to.encode("ascii"),
            message_id.encode("ascii"),
            list_unsubscribe.encode("ascii"),
            greeting[0],
            unsubscribe[0],
            view[0],
            preferences[0],
            greeting[1],
            unsubscribe[1],
            view[1],
            preferences[1],
        )

    def _view_value(self, view_url: str) -> tuple[bytes, bytes]:
        # The same for every subscriber of an issue: encoded once.
        view = self._view
        if view[0] != view_url:
            view = self._view = (view_url, *_body_value(view_url))
        return view[1], view[2]

    def _date_header(self, date: datetime) -> bytes:
        # A send stamps thousands of messages within the same second: format it once.
        last = self._date
        second, offset = date.replace(microsecond=0), date.utcoffset()
        if last is None or last[0] != second or last[1] != offset:
            last = (second, offset, format_datetime(date).encode("ascii"))
            self._date = last
        return last[2]


def make_message_id(issue_id: int, subscriber_id: int, domain: str) -> str:
    """A deterministic Message-ID for (issue, subscriber), so a retry carries the same id.

    '<issue.subscriber.hash@domain>'; the short hash marks the id as ours and makes two
    installations that reuse issue numbers on one domain unlikely to look alike at a glance.
    """
    for name, number in (("issue_id", issue_id), ("subscriber_id", subscriber_id)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError(f"{name} must be an int of 0 or more, got {number!r}")
    if not _DOMAIN_RE.fullmatch(domain) or len(domain) > 200:
        raise ValueError(f"Message-ID: {domain!r} is not a domain name")
    digest = hashlib.sha256(f"newsletter:{issue_id}:{subscriber_id}:{domain}".encode()).hexdigest()
    return f"<{issue_id}.{subscriber_id}.{digest[:12]}@{domain}>"


class PersonalLinks:
    """An issue's links as `MessageTemplate.personal_links` checked them: the personal ones
    are a prefix to which each subscriber's token is appended."""

    __slots__ = ("unsubscribe", "unsubscribe_mailto", "view_url", "preferences", "_plain")

    def __init__(
        self, unsubscribe: str, unsubscribe_mailto: str, view_url: str, preferences: str
    ) -> None:
        self.unsubscribe = unsubscribe
        self.unsubscribe_mailto = unsubscribe_mailto
        self.view_url = view_url
        self.preferences = preferences
        # Prefixes that quoted-printable and HTML escaping leave as they are (a token's
        # characters always are): their links need no encoding beyond wrapping.
        self._plain = {
            prefix
            for prefix in (unsubscribe, preferences)
            if _QP_PLAIN.fullmatch(prefix) and html.escape(prefix, quote=True) == prefix
        }

    def body_value(self, prefix: str, token: str) -> tuple[bytes, bytes]:
        """The link prefix + token for the text and the HTML part, as `_body_value` makes it."""
        if prefix in self._plain:
            encoded = _qp_plain(prefix + token)
            return encoded, encoded
        return _body_value(prefix + token)


# --- header helpers ----------------------------------------------------------------------------
def _check_recipient(to_email: str, to_name: str, message_id: str, date: datetime) -> None:
    if _CONTROL.search(to_name):
        raise ValueError(f"To: display name contains a control character: {to_name!r}")
    if not _ADDRESS.fullmatch(to_email) or len(to_email) > 254:
        raise ValueError(f"To: {to_email!r} is not a supported e-mail address")
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"Message-ID: {message_id!r} is not of the form <left@right>")
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("Date: the datetime must be timezone-aware")


def _check_links(
    unsubscribe_url: str, unsubscribe_mailto: str, view_url: str, preferences_url: str
) -> None:
    _check_url("unsubscribe_url", unsubscribe_url)
    _check_url("view_url", view_url)
    _check_url("preferences_url", preferences_url)
    if not unsubscribe_url.startswith("https://") or not _HEADER_URI.fullmatch(unsubscribe_url):
        raise ValueError(
            f"List-Unsubscribe: {unsubscribe_url!r} must be an https URL of printable ASCII"
            " without spaces, commas or angle brackets (RFC 8058)"
        )
    if not unsubscribe_mailto.startswith("mailto:") or not _HEADER_URI.fullmatch(
        unsubscribe_mailto
    ):
        raise ValueError(
            f"List-Unsubscribe: {unsubscribe_mailto!r} must be a mailto: URI of printable"
            " ASCII without spaces, commas or angle brackets"
        )


def _check_text(header: str, value: str) -> None:
    if _CONTROL.search(value):
        raise ValueError(f"{header}: contains a control character (CR, LF, ...): {value!r}")


def _check_url(label: str, url: str) -> None:
    # The same rule as digest.personalize, so compose() accepts exactly what it accepts
    # (urlsplit only when the scheme is not plainly there: it costs 10 µs a call).
    if _PLAIN_URL.fullmatch(url):
        return
    if any(c in url for c in "\r\n\t ") or (
        not url.startswith(("https://", "http://"))
        and urlsplit(url).scheme not in ("https", "http")
    ):
        raise ValueError(f"{label} must be an absolute http(s) URL, got {url!r}")
    if _CONTROL.search(url):
        raise ValueError(f"{label} contains a control character: {url!r}")


def _mailbox(header: str, value: str) -> tuple[str, str]:
    _check_text(header, value)
    name, address = parseaddr(value)
    if not _ADDRESS.fullmatch(address):
        raise ValueError(f"{header}: {value!r} is not a mailbox like 'Name <name@example.nl>'")
    return " ".join(name.split()), address


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 encoded-words for text, each under 76 characters, split between characters."""
    words: list[str] = []
    start = size = 0
    for index, char in enumerate(text):
        code = ord(char)
        width = 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
        if size + width > _WORD_BYTES:
            words.append(_UTF8.header_encode(text[start:index]))
            start, size = index, 0
        size += width
    words.append(_UTF8.header_encode(text[start:]))
    return words


def _phrase_tokens(text: str, *, always_quote: bool = False) -> list[str]:
    """A display name as foldable tokens: plain or quoted ASCII, else encoded-words."""
    if not text:
        return []
    if text.isascii() and "=?" not in text:
        if always_quote or _SPECIALS.search(text):
            text = '"' + _QUOTE_ESCAPE.sub(r"\\\1", text) + '"'
        tokens = text.split(" ")
        # Only a word that cannot fit on a 998-octet line is worth encoding.
        if max(map(len, tokens)) <= _HARD_LINE - 40:
            return tokens
    return _encoded_words(text)


def _address_tokens(name: str, address: str) -> list[str]:
    if not name:
        return [address]
    return [*_phrase_tokens(name), f"<{address}>"]


def _list_name_tokens(name: str) -> list[str]:
    return _phrase_tokens(" ".join(name.split()), always_quote=True)


def _text_tokens(text: str) -> list[str]:
    if text.isascii() and "=?" not in text:
        tokens = text.split(" ")
        if max(map(len, tokens)) <= _HARD_LINE - 40:
            return tokens
    return _encoded_words(text)


def _fold_value(start: int, tokens: list[str]) -> str:
    """Tokens joined by spaces; a line that would pass 78 characters continues on the next
    line at a space (the space becomes the folding white space, so unfolding restores it)."""
    lines: list[str] = []
    line = ""
    width = start
    for token in tokens:
        if not line:
            line = token
            width += len(token)
        elif token and width + 1 + len(token) > MAX_LINE:
            lines.append(line)
            line = " " + token
            width = len(line)
        else:
            line += " " + token
            width += 1 + len(token)
    lines.append(line)
    return CRLF.join(lines)


def _fold_header(name: str, tokens: list[str]) -> str:
    return f"{name}: {_fold_value(len(name) + 2, tokens)}{CRLF}"


# --- body helpers ------------------------------------------------------------------------------
def _encode_body(text: str) -> list[str | int]:
    """The body as QP-encoded text with the body-slot number wherever a placeholder was.

    Line breaks (LF, CRLF or a lone CR) become CRLF: the canonical form of text/* (RFC 2046).
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    pieces: list[str | int] = []
    position = 0
    for match in _TOKEN_RE.finditer(text):
        pieces.append(_qp_segment(text[position : match.start()], before_slot=True))
        pieces.append(_TOKEN_SLOT[match.group(0)])
        position = match.end()
    pieces.append(_qp_segment(text[position:], before_slot=False))
    return pieces


def _qp_segment(text: str, *, before_slot: bool) -> str:
    """QP for text that starts at the beginning of a line; if a slot follows, the last
    (unfinished) line ends with a soft line break so the slot starts a fresh line."""
    *complete, last = text.split("\n")
    out: list[str] = []
    for line in complete:
        out.extend(_wrap(_qp_hard_line(line), _QP_LINE))
        out.append(CRLF)
    if last:
        if before_slot:
            out.extend(_wrap(_qp_translate(last), _QP_LINE - 1))
            out.append("=" + CRLF)
        else:
            out.extend(_wrap(_qp_hard_line(last), _QP_LINE))
    return "".join(out)


def _qp_translate(text: str) -> str:
    return text.encode("utf-8").decode("latin-1").translate(_QP_MAP)


def _qp_hard_line(line: str) -> str:
    encoded = _qp_translate(line)
    # RFC 2045 rule 3: white space at the end of an encoded line must be escaped.
    if encoded.endswith(" "):
        encoded = encoded[:-1] + "=20"
    elif encoded.endswith("\t"):
        encoded = encoded[:-1] + "=09"
    return encoded


def _wrap(encoded: str, last_limit: int) -> list[str]:
    """Split one encoded line with soft breaks; the final part is at most last_limit long.

    No part starts with ".": such a dot is written "=2E", so the message never needs SMTP
    dot-stuffing (it is `WireSafe`)."""
    parts: list[str] = []
    start = 0
    while True:
        lead = ""
        if encoded.startswith(".", start):
            lead, start = "=2E", start + 1
        if len(encoded) - start + len(lead) <= last_limit:
            parts.append(lead + encoded[start:])
            return parts
        stop = start + _QP_LINE - 1 - len(lead)
        # Never split an "=XX" escape ("=" only ever starts one).
        if encoded[stop - 1] == "=":
            stop -= 1
        elif encoded[stop - 2] == "=":
            stop -= 2
        parts.append(lead + encoded[start:stop] + "=" + CRLF)
        start = stop


def _qp_value(value: str) -> bytes:
    """A slot value: QP-encoded on lines of its own, ending with a soft line break."""
    if _QP_PLAIN.fullmatch(value):
        return _qp_plain(value)
    return ("".join(_wrap(_qp_translate(value), _QP_LINE - 1)) + "=\r\n").encode("ascii")


def _qp_plain(value: str) -> bytes:
    """`_qp_value` of text matching _QP_PLAIN: its encoding is itself, so only the wrapping
    is left, at every 75 characters unless a line would start with a dot."""
    if "." not in value[:: _QP_LINE - 1]:
        step = _QP_LINE - 1
        lines = [value[start : start + step] for start in range(0, len(value), step)]
        return ("=\r\n".join(lines) + "=\r\n").encode("ascii")
    return ("".join(_wrap(value, _QP_LINE - 1)) + "=\r\n").encode("ascii")


def _body_value(value: str) -> tuple[bytes, bytes]:
    """A body slot's value for the text part, and HTML-escaped for the HTML part."""
    text = _qp_value(value)
    escaped = html.escape(value, quote=True)
    return text, text if escaped == value else _qp_value(escaped)


class _Skeleton:
    """Collects constant text (as bytes) and the positions of the slots between it."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.slots: list[tuple[int, int]] = []
        self._buffer: list[str] = []

    def add(self, text: str) -> None:
        self._buffer.append(text)

    def slot(self, slot: int) -> None:
        self._flush()
        self.slots.append((len(self.pieces), slot))
        self.pieces.append(b"")

    def finish(self) -> tuple[list[bytes], list[tuple[int, int]]]:
        self._flush()
        return self.pieces, self.slots

    def _flush(self) -> None:
        if self._buffer:
            self.pieces.append("".join(self._buffer).encode("ascii"))
            self._buffer.clear()


__all__ = ["MessageTemplate", "PersonalLinks", "make_message_id"]
