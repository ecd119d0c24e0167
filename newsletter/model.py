"""Plain, frozen data shared by every module. Datetimes are always timezone-aware."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .htmltext import html_to_text


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
    sections: tuple[str, ...] = ()  # the `## ` headings, in order

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
