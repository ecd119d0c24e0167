"""Plain, frozen data shared by every module. Datetimes are always timezone-aware."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from .htmltext import html_to_text


class WireSafe(bytes):
    """Message bytes that SMTP can send as they are: every line ends in CRLF and none starts
    with "." (so no dot-stuffing is needed and no bare CR or LF can end the data early).
    Only `MessageTemplate.compose` makes them; transports trust the type instead of scanning
    30 KB per message."""

    __slots__ = ()

@dataclass(frozen=True)
class Cover:
    """The lead image of an article."""

    image: str  # absolute URL
    alt: str = ""
    caption: str = ""

    @property
    def mime_type(self) -> str:
        return image_mime_type(self.image)


@dataclass(frozen=True)
class Article:
    """One article's metadata. The Markdown body is kept out, so that 100k of these fit in memory;
    `collector.Catalog.body()` reads it back when an output needs it."""

    id: str  # the permalink: stable across title edits, used as feed guid/id and by the send ledger
    path: str  # relative to the content dir, POSIX separators
    slug: str
    url: str  # absolute permalink (same as id)
    title: str
    date: datetime
    publish_date: datetime | None = None
    expiry_date: datetime | None = None
    lastmod: datetime | None = None
    draft: bool = False
    tags: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    summary: str = ""
    cover: Cover | None = None
    author: str = ""
    source: str = ""  # the closing "Bron: ..." line

    @property
    def published(self) -> datetime:
        """When the article goes public: publishDate, else date (Hugo semantics)."""
        return self.publish_date or self.date

    @property
    def updated(self) -> datetime:
        """Last significant change: lastmod, else the publication time."""
        return max(self.lastmod, self.date) if self.lastmod else self.date


@dataclass(frozen=True)
class Section:
    """A `## ` section of an article body, addressable by its heading."""

    heading: str
    anchor: str
    html: str  # sanitized, absolute URLs; without the heading itself

    @property
    def text(self) -> str:
        """Plain text, for text/plain mail parts; derived on demand, as feeds never need it."""
        return html_to_text(self.html)


@dataclass(frozen=True)
class RenderedBody:
    """An article body rendered to sanitized HTML."""

    html: str  # the whole body, including the source line
    intro_html: str  # what precedes the first section
    sections: tuple[Section, ...]
    source: str

    def section(self, heading: str) -> Section | None:
        """The section whose heading matches, ignoring case and surrounding space."""
        wanted = heading.strip().casefold()
        for section in self.sections:
            if section.heading.strip().casefold() == wanted:
                return section
        return None


_MIME_BY_SUFFIX = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".svg": "image/svg+xml",
}


def image_mime_type(url: str) -> str:
    """MIME type guessed from the URL path's suffix (query string ignored); JPEG when unknown."""
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    for suffix, mime in _MIME_BY_SUFFIX.items():
        if path.endswith(suffix):
            return mime
    return "image/jpeg"


# --- Subscribers, issues and deliveries (persisted by `store.py`) -----------------------------
# Statuses are plain strings; these tuples are the allowed values (the store checks them, and the
# database has CHECK constraints on them).

SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
MEMBERSHIP_STATUSES = ("active", "unsubscribed")
ISSUE_STATUSES = ("draft", "sending", "sent", "skipped", "failed")
DELIVERY_STATUSES = ("queued", "sending", "sent", "failed", "unknown", "suppressed")


@dataclass(frozen=True)
class Subscriber:
    """One address. `email` is normalised (domain lower-cased, local part as given); `email_key`
    is its lower-cased form, unique in the store, so addresses differing only in case are one."""

    id: int
    email: str
    email_key: str
    name: str
    status: str  # one of SUBSCRIBER_STATUSES
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None = None
    attributes: dict[str, object] | None = None  # free-form JSON object from imports


@dataclass(frozen=True)
class SubscriberChange:
    """What adding, importing or removing one address did."""

    email: str  # normalised when valid, else as given
    action: str  # "created" | "updated" | "unchanged" | "skipped"
    reason: str = ""  # why skipped (or what an update left out), e.g. "unsubscribed"
    subscriber_id: int | None = None
    skipped_audiences: tuple[str, ...] = ()  # audiences not (re-)added: the address left them


@dataclass(frozen=True)
class ImportRow:
    """One row of a subscriber import. `audiences=None` means the import's default audiences."""

    email: str
    name: str = ""
    audiences: tuple[str, ...] | None = None
    attributes: dict[str, object] | None = None


@dataclass(frozen=True)
class ImportProblem:
    """A skipped import row: its 1-based position in the input, the address and the reason."""

    row: int
    email: str
    reason: str  # "invalid address: ...", "unsubscribed", "suppressed", ...


@dataclass(frozen=True)
class ImportResult:
    """Counts per input row; each row counts once, as if rows were added one by one in order."""

    added: int
    updated: int
    unchanged: int
    skipped: int
    problems: tuple[ImportProblem, ...] = ()  # one per skipped row

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged + self.skipped

    def skipped_by_reason(self) -> dict[str, int]:
        """Skipped rows counted by reason (the text before the first ':')."""
        counts: dict[str, int] = {}
        for problem in self.problems:
            key = problem.reason.split(":", 1)[0]
            counts[key] = counts.get(key, 0) + 1
        return counts


@dataclass(frozen=True)
class Issue:
    """One audience's digest for one period (e.g. "2026-W48"); unique per (audience, period)."""

    id: int
    audience_id: str
    period: str
    status: str  # one of ISSUE_STATUSES
    window_start: datetime
    window_end: datetime
    created_at: datetime
    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""
    article_ids: tuple[str, ...] = ()
    started_at: datetime | None = None
    finished_at: datetime | None = None
    recipients_frozen_at: datetime | None = None


class Claimed(NamedTuple):
    """A delivery just claimed for sending: what composing and sending its message need."""

    id: int
    subscriber_id: int
    email: str
    name: str


@dataclass(frozen=True)
class Delivery:
    """One issue to one subscriber; `email` and `name` are frozen when the recipients are."""

    id: int
    issue_id: int
    subscriber_id: int
    email: str
    name: str
    status: str  # one of DELIVERY_STATUSES
    attempts: int
    queued_at: datetime
    updated_at: datetime
    last_error: str = ""
    message_id: str = ""
    sent_at: datetime | None = None
