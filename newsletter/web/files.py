"""Published files (feeds, OPML, the archive) from `site.output_dir`, with conditional GET.

Only names that `newsletter build` and the archive write are served (a fixed list and shapes,
checked before the file system is touched), each resolved with `output.safe_target`, so no path
leaves the folder. Responses carry the feed's own content type (standards HTTP-03), a strong
ETag from the file's mtime and size and its Last-Modified; since a build never rewrites a file
whose bytes did not change (HTTP-01), both stay stable and `If-None-Match` /
`If-Modified-Since` are answered with 304 (HTTP-02, RFC 9110 §13.1).
"""

from __future__ import annotations

import os
import re
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response

from ..errors import OutputError
from ..output import safe_target
from .security import CSP_PUBLISHED

RSS = "application/rss+xml; charset=utf-8"
ATOM = "application/atom+xml; charset=utf-8"
JSON_FEED = "application/feed+json"
HTML = "text/html; charset=utf-8"
OPML = "text/x-opml; charset=utf-8"

SITE_FILES = {
    "index.xml": RSS,
    "atom.xml": ATOM,
    "feed.json": JSON_FEED,
    "feeds.opml": OPML,
    "feeds.html": HTML,
}
GROUP_FILES = {"index.xml": RSS, "atom.xml": ATOM, "feed.json": JSON_FEED}  # labels/, tags/
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
AUDIENCE_ID = re.compile(r"[a-z][a-z0-9_-]{0,99}")
ARCHIVE_PAGE = re.compile(r"\d{4}-(?:W\d{2}|\d{2}(?:-\d{2})?)\.html")
CACHE_CONTROL = "public, max-age=300"


def media_type(name: str, folder: str = "") -> str | None:
    """The content type of a servable file name in a folder kind ("", "labels", "tags",
    "archive"); None when the name is not one we publish there."""
    if folder == "":
        return SITE_FILES.get(name)
    if folder in ("labels", "tags"):
        return GROUP_FILES.get(name)
    if folder == "archive":
        if name == "index.xml":
            return RSS
        if name == "index.html" or ARCHIVE_PAGE.fullmatch(name):
            return HTML
    return None


def file_response(root: Path, relpath: str, content_type: str, headers: Headers, method: str) -> Response | None:
    """The file at root/relpath as a response (304 when the request's validators match), or
    None when there is no such file."""
    try:
        target = safe_target(root, relpath)
        stat = os.stat(target)
    except (OutputError, OSError):
        return None
    if not target.is_file():
        return None
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    last_modified = formatdate(stat.st_mtime, usegmt=True)
    extra = {"etag": etag, "last-modified": last_modified, "cache-control": CACHE_CONTROL}
    if content_type.startswith("text/html"):
        extra["content-security-policy"] = CSP_PUBLISHED
    if not_modified(headers, etag, stat.st_mtime, method):
        return Response(status_code=304, headers=extra)
    return FileResponse(target, media_type=content_type, headers=extra, stat_result=stat)


def not_modified(headers: Headers, etag: str, mtime: float, method: str) -> bool:
    """RFC 9110 §13.2.2: If-None-Match decides when present (weak comparison, `*` matches any
    current file); otherwise If-Modified-Since, for GET and HEAD only."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags
    if method not in ("GET", "HEAD"):
        return False
    since = headers.get("if-modified-since")
    if since is None:
        return False
    try:
        moment = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False  # an unreadable date is ignored (RFC 9110 §13.1.3)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Last-Modified has whole seconds; compare at that precision.
    return int(mtime) <= moment.timestamp()
