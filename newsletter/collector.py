"""Walk the content folder into a `Catalog` (with an index cache), and select articles.

One bad file never aborts the rest: it becomes an `ArticleError` in `Catalog.problems`.
The publishing rule (`is_published`) is the one rule every channel uses.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from . import __version__
from .content import ContentSettings, parse_article, read_body, render_body
from .errors import ArticleError
from .model import Article, RenderedBody

log = logging.getLogger(__name__)

ARTICLE_SUFFIXES = (".md", ".markdown")
# Files touched this close to the index being written may change again within the same mtime
# tick; they are not trusted from the index next time (the "racy git" problem).
_RACY_NS = 2_000_000_000
_INDEX_MAGIC = b"newsletter-index\n"
_INDEX_FORMAT = 3  # bump whenever the layout of an index entry changes


IndexEntry = tuple[int, int, "Article | ArticleError", "RenderedBody | None"]


@dataclass
class Catalog:
    """Every readable article (sorted by path) and every problem, from one scan."""

    root: Path
    settings: ContentSettings
    articles: list[Article]
    problems: list[ArticleError]
    parsed: int = 0  # files parsed in this scan (the rest came from the index)
    index_path: Path | None = None
    _entries: dict[str, IndexEntry] = field(default_factory=dict, repr=False)
    _bodies: dict[str, RenderedBody] = field(default_factory=dict, repr=False)
    _dirty: bool = field(default=True, repr=False)  # False: the index on disk is still exact

    def markdown(self, article: Article) -> str:
        """The Markdown body (without the source line), read back from the file."""
        return read_body((self.root / article.path).read_bytes(), article.path)

    def rendered(self, article: Article) -> RenderedBody:
        """The sanitized HTML body; rendered once, only for articles that land in an output,
        and kept in the index so an unchanged file is not rendered again next build."""
        body = self._bodies.get(article.path)
        if body is None:
            entry = self._entries.get(article.path)
            if entry is not None and entry[3] is not None and entry[2] == article:
                body = entry[3]
            else:
                body = render_body(self.markdown(article), article.url, article.source)
                self._dirty = True
            self._bodies[article.path] = body
        return body

    def save_index(self) -> None:
        """Write the index: every trusted entry, with the bodies this build rendered (bodies of
        articles that dropped out of every output are not kept)."""
        if self.index_path is None or not self._dirty:
            return
        entries = {
            rel: (mtime, size, result, self._bodies.get(rel))
            for rel, (mtime, size, result, _) in self._entries.items()
        }
        _save_index(self.index_path, self.settings, entries)


def scan(root: Path, settings: ContentSettings, index_path: Path | None = None) -> Catalog:
    """Read every article under root; reuse the index for files whose mtime and size match.

    Two files with the same permalink: the first by path keeps it, the others are reported.
    Call `Catalog.save_index()` after the build to store what was parsed and rendered.
    """
    index = _load_index(index_path, settings) if index_path else {}
    entries: dict[str, IndexEntry] = {}
    articles: list[Article] = []
    problems: list[ArticleError] = []
    parsed = 0
    started_ns = time.time_ns()
    for rel, full in _discover(root):
        try:
            st = os.stat(full)
        except OSError as exc:
            problems.append(ArticleError(rel, None, f"cannot be read: {exc.strerror}"))
            continue
        cached = index.get(rel)
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            result, body = cached[2], cached[3]
        else:
            parsed += 1
            result, body = _parse_file(full, rel, settings), None
        if started_ns - st.st_mtime_ns > _RACY_NS:
            entries[rel] = (st.st_mtime_ns, st.st_size, result, body)
        if isinstance(result, ArticleError):
            problems.append(result)
        else:
            articles.append(result)
    articles, duplicates = _drop_duplicate_ids(articles)
    problems.extend(duplicates)
    problems.sort(key=lambda p: p.path)
    dirty = parsed > 0 or entries.keys() != index.keys()
    return Catalog(root, settings, articles, problems, parsed, index_path, entries, _dirty=dirty)


def _discover(root: Path) -> list[tuple[str, str]]:
    """(relative POSIX path, full path) of the article files below root, sorted; dot-files and
    dot-folders skipped, linked folders not entered, linked files only if they stay in root.

    os.scandir rather than pathlib: at 100k files pathlib's per-file objects and extra lstat
    calls cost seconds."""
    real_root = root.resolve()
    found: list[tuple[str, str]] = []
    stack = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, f"{prefix}{name}/"))
                    continue
                if not name.endswith(ARTICLE_SUFFIXES) or name.startswith("_index."):
                    continue  # _index.md: Hugo section list pages, not articles
                if entry.is_symlink() and not Path(entry.path).resolve().is_relative_to(real_root):
                    log.warning("skipping %s: a link out of the content folder", entry.path)
                    continue
                found.append((prefix + name, entry.path))
    found.sort()
    return found


def _parse_file(full: str, rel: str, settings: ContentSettings) -> Article | ArticleError:
    try:
        return parse_article(Path(full).read_bytes(), rel, settings).article
    except ArticleError as exc:
        return exc
    except OSError as exc:
        return ArticleError(rel, None, f"cannot be read: {exc.strerror}")


def _drop_duplicate_ids(articles: list[Article]) -> tuple[list[Article], list[ArticleError]]:
    owners: dict[str, Article] = {}
    kept: list[Article] = []
    problems: list[ArticleError] = []
    for article in articles:  # sorted by path, so the winner does not depend on the file system
        first = owners.setdefault(article.id, article)
        if first is article:
            kept.append(article)
        else:
            problems.append(
                ArticleError(
                    article.path,
                    "slug",
                    f"permalink {article.id} is already used by {first.path}; give one a "
                    "different slug or url",
                )
            )
    return kept, problems


# --- the index cache ---------------------------------------------------------------------------
def _index_key(settings: ContentSettings) -> bytes:
    # Anything that changes parse results invalidates the whole index.
    return f"{_INDEX_FORMAT}|{__version__}|{settings!r}".encode()


def _load_index(path: Path, settings: ContentSettings) -> dict[str, IndexEntry]:
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    try:
        magic_len = len(_INDEX_MAGIC)
        if data[:magic_len] != _INDEX_MAGIC:
            raise ValueError("bad magic")
        digest, key_len = (
            data[magic_len : magic_len + 32],
            int(data[magic_len + 32 : magic_len + 40]),
        )
        key = data[magic_len + 40 : magic_len + 40 + key_len]
        payload = data[magic_len + 40 + key_len :]
        if key != _index_key(settings):
            log.info("index %s is for other settings or another version; rebuilding", path)
            return {}
        # The digest guards against a truncated or corrupted file: only intact data is unpickled.
        if hashlib.sha256(key + payload).digest() != digest:
            raise ValueError("checksum mismatch")
        index = pickle.loads(payload)  # noqa: S301 - our own file, checksummed
        if not isinstance(index, dict) or not all(map(_valid_entry, index.values())):
            raise ValueError("unexpected layout")
        return index
    except Exception as exc:  # any damage means: start over, never build from bad data
        log.warning("index %s is damaged (%s); rebuilding it", path, exc)
        return {}


def _valid_entry(entry: object) -> bool:
    return (
        isinstance(entry, tuple)
        and len(entry) == 4
        and isinstance(entry[0], int)
        and isinstance(entry[1], int)
        and isinstance(entry[2], Article | ArticleError)
        and (entry[3] is None or isinstance(entry[3], RenderedBody))
    )


def _save_index(path: Path, settings: ContentSettings, index: dict[str, IndexEntry]) -> None:
    key = _index_key(settings)
    payload = pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(key + payload).digest()
    data = _INDEX_MAGIC + digest + f"{len(key):08d}".encode() + key + payload
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:  # a cache that cannot be written only costs time
        log.warning("cannot write index %s: %s", path, exc)


# --- the publishing rule and selection --------------------------------------------------------
def is_published(article: Article, now: datetime) -> bool:
    """Hugo's rule, for every channel: not a draft, not in the future, not expired."""
    if article.draft or article.published > now:
        return False
    return article.expiry_date is None or article.expiry_date > now


def newest_first(articles: Iterable[Article]) -> list[Article]:
    """Newest first; equal dates ordered by id so the output never depends on input order."""
    return sorted(articles, key=lambda a: (-a.date.timestamp(), a.id))


def select(
    articles: Iterable[Article],
    now: datetime,
    *,
    labels: Sequence[str] = (),
    tags: Sequence[str] = (),
    tag_mode: Literal["any", "all"] = "any",
    since: datetime | None = None,
    limit: int | None = None,
) -> list[Article]:
    """Published articles matching the filters, newest first.

    Args:
        labels: keep articles with any of these labels (case-insensitive); empty keeps all.
        tags: keep articles with any (or, with tag_mode="all", every) of these tags.
        since: keep articles published after this moment (exclusive); `now` is the upper bound.
        limit: at most this many.
    """
    if now.tzinfo is None or (since is not None and since.tzinfo is None):
        raise ValueError("now and since must be timezone-aware")
    want_labels = {label.casefold() for label in labels}
    want_tags = {tag.casefold() for tag in tags}
    match_tags = all if tag_mode == "all" else any
    chosen = []
    for article in articles:
        if not is_published(article, now):
            continue
        if since is not None and article.published <= since:
            continue
        if want_labels and not want_labels & {label.casefold() for label in article.labels}:
            continue
        if want_tags:
            have = {tag.casefold() for tag in article.tags}
            if not match_tags(tag in have for tag in want_tags):
                continue
        chosen.append(article)
    result = newest_first(chosen)
    return result[:limit] if limit is not None else result
