"""Walk the content folder into a `Catalog` (with an index cache), and select articles.

One bad file never aborts the rest: it becomes an `ArticleError` in `Catalog.problems`.
The publishing rule (`is_published`) is the one rule every channel uses.

The index has two parts, so that a rebuild loads only what it needs (issue 7):

- a lean file (`index_path`): per article file its stat, a content hash and the few fields that
  decide which feeds it lands in (id, dates, draft, labels, tags), as plain tuples that load in
  about 0.1 s for 100k files; a small delta file beside it (`<index_path>.delta`) holds the
  entries changed since, so that one edit does not rewrite 30 MB;
- a SQLite file beside it (`<index_path>.db`) of records keyed by content hash: the full
  `Article` (or `ArticleError`) and its rendered body, each read only when an output needs it.

All parts are tied to the package version, the code that parses, the libraries' versions and
the content settings; a damaged or foreign part is deleted and rebuilt, never trusted.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import logging
import marshal
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Literal, TypeVar, overload

from .config import Config
from .content import ContentSettings, parse_article, read_body, render_body
from .errors import ArticleError, ConfigError
from .index import (
    _ERROR_FIELDS,
    DATE,
    DRAFT,
    ERROR,
    EXPIRY,
    ID,
    KEY,
    PATH,
    PUBLISHED,
    STAT,
    VERIFY,
    Entry,
    Found,
    Stat,
    _Fields,
    _Index,
    _row,
    _unrow,
    decode_record,
)
from .model import Article, RenderedBody
from .workers import Workers

log = logging.getLogger(__name__)

ARTICLE_SUFFIXES = (".md", ".markdown")
# Files touched this close to a scan may change again within the same timestamp tick; their index
# entries are re-hashed before they are trusted next time (the "racy git" problem).
_RACY_NS = 2_000_000_000
# Fewer files than this are parsed in-process: starting a worker costs about 20 ms.
PARALLEL_MIN_FILES = 1000
PARALLEL_MIN_BODIES = 300
_CHUNK = 100  # files: the smallest parse chunk, about 8 ms of work

_NO_STAT: Stat = (0, 0, 0, 0)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

T = TypeVar("T")
J = TypeVar("J")
R = TypeVar("R")


def micros(moment: datetime) -> int:
    """An aware datetime as exact integer microseconds since the epoch."""
    return (moment - _EPOCH) // _MICROSECOND


INDEX_FILE = "index"  # in cache_dir: the lean index; its record database is "index.db" beside it


def content_settings(config: Config) -> ContentSettings:
    site = config.site
    return ContentSettings(base_url=site.url, timezone=site.timezone, permalink=site.permalink)


def load_catalog(config: Config, use_index: bool = True) -> Catalog:
    """Scan the content folder (parsing in worker processes when many files changed). Here
    rather than in builder.py, so that the mail commands do not import the feed writers."""
    index = config.site.cache_dir / INDEX_FILE if use_index else None
    with Workers() as workers:
        return scan(config.site.content_dir, content_settings(config), index, workers=workers)


# --- discovery ---------------------------------------------------------------------------------
def walk(root: Path, stat: bool = True) -> list[Found]:
    """Every article file below root with its stat, sorted by relative path; dot-files and
    dot-folders skipped, linked folders not entered, linked files only if they stay in root.
    A file or folder that cannot be read is listed with the reason instead of a stat.

    One os.scandir pass with one stat per file: at 100k files pathlib's per-file objects and
    extra lstat calls cost seconds, and this stat is all a rebuild with nothing changed needs.
    With stat=False files get None instead, for `scan` to fill in from the files it reads
    (fstat of the open descriptor): with no index to compare them with, the stats are not
    needed first, and they are most of the walk (75 of 95 ms at 10k files after a page-cache
    drop)."""
    real_root = root.resolve()
    found: list[Found] = []
    append = found.append
    stack = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if not prefix:
                raise ConfigError("site.content_dir", f"cannot be read: {reason}", str(root)) from None
            append((prefix, reason))  # the folder, with its trailing slash
            continue
        with it:
            for entry in it:
                name = entry.name
                if name[0] == ".":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, f"{prefix}{name}/"))
                    continue
                if not name.endswith(ARTICLE_SUFFIXES) or name.startswith("_index."):
                    continue  # _index.md: Hugo section list pages, not articles
                if entry.is_symlink() and not Path(entry.path).resolve().is_relative_to(real_root):
                    log.warning("skipping %s: a link out of the content folder", entry.path)
                    continue
                if not stat:
                    append((prefix + name, None))
                    continue
                try:
                    st = entry.stat()
                except OSError as exc:
                    append((prefix + name, exc.strerror or str(exc)))
                    continue
                append((prefix + name, _stat_of(st)))
    found.sort()
    return found


def _stat_of(st: os.stat_result) -> Stat:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _stat_path(path: str) -> Stat | str:
    """A file's stat as `walk` takes it, or why it has none."""
    try:
        return _stat_of(os.stat(path))
    except OSError as exc:
        return exc.strerror or str(exc)


def scan_signature(found: list[Found]) -> bytes:
    """A digest of every path and stat: equal signatures mean no file was added, removed or
    touched (given the racy-window rule, which the caller checks)."""
    # marshal version 2 writes no back-references, so equal lists give equal bytes.
    data = marshal.dumps(found, 2)
    return hashlib.blake2b(data, digest_size=32).digest()


# --- reading one file (in-process or in a worker) ----------------------------------------------
def _content_key(rel: str, raw: bytes) -> bytes:
    digest = hashlib.blake2b(rel.encode("utf-8", "surrogateescape"), digest_size=16)
    digest.update(b"\0")
    digest.update(raw)
    return digest.digest()


def _fields(result: Article | ArticleError) -> _Fields:
    if isinstance(result, ArticleError):
        return _ERROR_FIELDS
    expiry = result.expiry_date
    return (
        False,
        result.id,
        micros(result.date),
        micros(result.published),
        None if expiry is None else micros(expiry),
        result.draft,
        result.labels,
        result.tags,
    )


def _load_one(
    rel: str,
    full: str,
    expected: bytes | None,
    settings: ContentSettings,
    opened: int | OSError | None = None,
) -> tuple[bytes, Stat | str, Article | ArticleError | None]:
    """(content key, stat, parse result); the result is None when the key equals `expected`.
    The stat is `walk`'s kind of stat, of the descriptor the bytes were read from (or of the
    path, or why there is none, when the file cannot be read). `opened` is the file already
    opened by `_opened_ahead` (closed here), or why it could not be."""
    try:
        raw, st = _read_stat(full if opened is None else opened)
    except OSError as exc:
        message = f"cannot be read: {exc.strerror}"
        key = _content_key(rel, b"\0unreadable\0" + message.encode())
        return key, _stat_path(full), None if key == expected else ArticleError(rel, None, message)
    key = _content_key(rel, raw)
    if key == expected:
        return key, st, None
    try:
        return key, st, parse_article(raw, rel, settings).article
    except ArticleError as exc:
        return key, st, exc


def _open(path: str) -> int:
    """A file opened for reading; O_NONBLOCK, so that a FIFO named *.md reads as empty instead
    of waiting for a writer forever."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def _read_file(file: str | int | OSError) -> bytes:
    """The bytes of a file, given its path or an open descriptor (closed here)."""
    return _read_stat(file)[0]


def _read_stat(file: str | int | OSError) -> tuple[bytes, Stat]:
    """The bytes of a file and its stat (the descriptor's, taken before reading), given its
    path or an open descriptor (closed here). os.read of the fstat size (+1, to see growth)
    costs half of open().read() on a 4 KB file."""
    if isinstance(file, OSError):
        raise file
    fd = _open(file) if isinstance(file, str) else file
    try:
        st = os.fstat(fd)
        size = st.st_size
        data = os.read(fd, size + 1)
        if len(data) == size:  # all of it, and not the byte more: at the end (a read fewer)
            return data, _stat_of(st)
        parts = [data]  # it changed size since the fstat, or the read came back short
        while parts[-1]:
            parts.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    return b"".join(parts), _stat_of(st)


_Loaded = tuple[bytes, Stat | str, _Fields | None, bytes | None]
# (position among the entries, path, stat (None: not taken yet), index entry, position in found)
_Todo = tuple[int, str, Stat | None, Entry | None, int]


def _opened_ahead(paths: Iterable[str], window: int | None = None) -> Generator[int | OSError, None, None]:
    """Each file opened (or why not), with the kernel asked to start reading it `window` files
    before it is wanted: when files are not in the page cache (a fresh machine, a cold build)
    the disk gets many reads at once instead of one at a time per worker, which halved a
    10k-article parse after a page-cache drop (issue 7); for cached files the advice costs a
    system call. The consumer reads (and so closes) each with `_read_file` before taking the
    next; closing the generator closes the ones it opened ahead. (When the whole corpus is out
    of the cache the parent also reads every file ahead: see `_cached`.)

    The default window is 512 files (64 gave a third less of the gain), at most a quarter of
    the open-files limit, and 0 where there is no posix_fadvise (macOS)."""
    advise = getattr(os, "posix_fadvise", None)
    if window is None:
        window = min(512, _open_files_limit() // 4) if advise is not None else 0

    def open_advised(path: str) -> int | OSError:
        try:
            fd = _open(path)
        except OSError as exc:
            return exc
        if advise is not None:
            try:
                advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass  # advice only
        return fd

    ahead: collections.deque[int | OSError] = collections.deque()
    try:
        for path in paths:
            ahead.append(open_advised(path))
            if len(ahead) > window:
                yield ahead.popleft()
        while ahead:
            yield ahead.popleft()
    finally:
        for fd in ahead:
            if isinstance(fd, int):
                os.close(fd)


def _cached(paths: Sequence[str], probes: int = 8) -> bool:
    """Whether these files look like they are in the page cache: the first byte of a few of
    them, spread out, can be read without waiting (RWF_NOWAIT). True where that cannot be told."""
    nowait = getattr(os, "RWF_NOWAIT", None)
    if nowait is None or not paths:
        return True
    step = max(1, len(paths) // probes)
    for path in paths[::step]:
        try:
            fd = _open(path)
        except OSError:
            continue
        try:
            os.preadv(fd, [bytearray(1)], 0, nowait)
        except BlockingIOError:
            return False
        except OSError:
            return True  # the file system cannot say
        finally:
            os.close(fd)
    return True


def _read_ahead(paths: Sequence[str]) -> None:
    """Ask the kernel to read these files into the page cache (without waiting for them): the
    inodes in one pass first (a stat each), then the data (issue 7: -4% at 100k after a
    page-cache drop against the data alone)."""
    for path in paths:
        _stat_path(path)
    for fd in _opened_ahead(paths, window=0):
        if isinstance(fd, int):
            os.close(fd)


def _open_files_limit() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    return soft if soft != resource.RLIM_INFINITY else 1 << 16


def _load_chunk(settings: ContentSettings, jobs: list[tuple[str, str, bytes | None]]) -> list[_Loaded]:
    """Worker side of a parallel scan: results travel back pickled, ready for the database."""
    out: list[_Loaded] = []
    with contextlib.closing(_opened_ahead(full for _, full, _ in jobs)) as opened:
        for (rel, full, expected), fd in zip(jobs, opened, strict=True):
            key, st, result = _load_one(rel, full, expected, settings, fd)
            if result is None:
                out.append((key, st, None, None))
            else:
                out.append((key, st, _fields(result), _row(b"a", key, result)))
    return out


def _render_chunk(jobs: list[tuple[str, str, bytes, str]]) -> list[bytes | None]:
    """Worker side of parallel body rendering; None when the file no longer has that content."""
    out: list[bytes | None] = []
    for rel, full, key, url in jobs:
        try:
            raw = _read_file(full)
        except OSError:
            out.append(None)
            continue
        if _content_key(rel, raw) != key:
            out.append(None)
            continue
        body, source = read_body(raw, rel)
        out.append(_row(b"b", key, render_body(body, url, source)))
    return out


# --- the catalog ---------------------------------------------------------------------------------
class LazyList(Sequence[T]):
    """A sequence whose length is known up front and whose items are loaded on first use:
    a build that changed nothing reports how many articles there are without loading them."""

    def __init__(self, length: int, load: Callable[[], list[T]]) -> None:
        self._length = length
        self._load = load
        self._items: list[T] | None = None

    def _all(self) -> list[T]:
        if self._items is None:
            self._items = self._load()
            self._length = len(self._items)
        return self._items

    def __len__(self) -> int:
        return self._length if self._items is None else len(self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        return self._all()[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyList | list | tuple):
            return self._all() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyList({self._all()!r})"


class Catalog:
    """Every readable article (sorted by path) and every problem, from one scan.

    `entries` are the lean records of the readable articles; `articles` the full `Article`s,
    loaded from the index only when asked for; `article(entry)` and `rendered(article)` load
    one. Call `save_index()` after the build to store what was parsed and rendered.
    """

    def __init__(
        self, root: Path, settings: ContentSettings, index_path: Path | None = None
    ) -> None:
        self.root = root
        self.settings = settings
        self.index_path = index_path
        self.problems: list[ArticleError] = []
        self.parsed = 0  # files parsed in this scan (the rest came from the index)
        self.rehashed = 0  # files read again to confirm an index entry (touched, or racy)
        self._entries: list[Entry] = []
        self._all: list[Entry] = []
        self._index: _Index | None = None
        self._records: dict[bytes, Article | ArticleError] = {}
        self._bodies: dict[str, RenderedBody] = {}
        self._by_path: dict[str, Entry] | None = None
        self._articles: LazyList[Article] | None = None
        self._count = 0
        self._lean_dirty = False
        self._changes: dict[str, Entry | None] = {}
        self._garbage: set[bytes] = set()
        self._deferred: Callable[[], None] | None = None

    @classmethod
    def deferred(
        cls,
        root: Path,
        settings: ContentSettings,
        index_path: Path,
        found: list[Found],
        count: int,
        problems: list[ArticleError],
    ) -> Catalog:
        """A catalog known (from a build state) to be unchanged: its counts and problems are
        given, and the index is only read if someone asks for the articles themselves."""
        catalog = cls(root, settings, index_path)
        catalog.problems = list(problems)
        catalog._count = count

        def load() -> None:
            catalog._deferred = None
            catalog._scan(found, None)

        catalog._deferred = load
        return catalog

    def _ready(self) -> None:
        if self._deferred is not None:
            self._deferred()

    @property
    def entries(self) -> list[Entry]:
        self._ready()
        return self._entries

    @property
    def articles(self) -> LazyList[Article]:
        if self._articles is None:
            self._articles = LazyList(self._count, self._load_articles)
        return self._articles

    @property
    def settled(self) -> bool:
        """True if no file was modified so recently that its stat alone cannot be trusted."""
        self._ready()
        return not any(e[VERIFY] for e in self._all)

    def entry(self, path: str) -> Entry | None:
        if self._by_path is None:
            self._by_path = {e[PATH]: e for e in self.entries}
        return self._by_path.get(path)

    # scanning
    def _scan(self, found: list[Found], workers: Workers | None) -> None:
        """Stats that `walk` left None are filled in, in `found` itself."""
        started_ns = time.time_ns()
        index = _Index(self.index_path, self.settings) if self.index_path is not None else None
        old = index.open() if index is not None else {}
        self._index = index if index is not None and index.db is not None else None
        slots: list[Entry | None] = []
        todo: list[_Todo] = []
        problems: list[ArticleError] = []
        for where, (rel, st) in enumerate(found):
            if isinstance(st, str):
                problems.append(ArticleError(rel, None, f"cannot be read: {st}"))
                continue
            cached = old.get(rel)
            if cached is not None and cached[STAT] == st and not cached[VERIFY]:
                slots.append(cached)
            else:
                todo.append((len(slots), rel, st, cached, where))
                slots.append(None)
        if todo:
            self._load_files(todo, slots, workers, started_ns, found)
        all_entries: list[Entry] = slots  # type: ignore[assignment]  # every slot is filled now
        self._all = all_entries
        if todo or len(old) != len(all_entries):
            self._note_changes(old, todo)
        for entry in all_entries:
            if entry[ERROR]:
                problem = self._record(entry)
                if isinstance(problem, ArticleError):  # else: fixed since the scan began
                    problems.append(problem)
        kept, duplicates = _drop_duplicate_ids([e for e in all_entries if not e[ERROR]])
        problems.extend(duplicates)
        problems.sort(key=lambda p: p.path)
        self._entries = kept
        self.problems = problems
        self._count = len(kept)
        self._by_path = None

    def _note_changes(self, old: dict[str, Entry], todo: list[_Todo]) -> None:
        """What the index must learn: changed entries, removed paths, and the records of the
        versions that are gone (to delete)."""
        self._lean_dirty = True
        for pos, rel, _, before, _ in todo:
            entry = self._all[pos]
            self._changes[rel] = entry
            if before is not None and before[KEY] != entry[KEY]:
                self._garbage.add(before[KEY])
        still_there = len(self._all) - sum(1 for _, _, _, before, _ in todo if before is None)
        if still_there != len(old):  # some files are gone
            present = {e[PATH] for e in self._all}
            for rel, before in old.items():
                if rel not in present:
                    self._changes[rel] = None
                    self._garbage.add(before[KEY])

    def _load_files(
        self,
        todo: list[_Todo],
        slots: list[Entry | None],
        workers: Workers | None,
        started_ns: int,
        found: list[Found],
    ) -> None:
        root = str(self.root)
        jobs = [
            (rel, os.path.join(root, rel), None if old is None else old[KEY])
            for _, rel, _, old, _ in todo
        ]
        paths = [full for _, full, _ in jobs]
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct tag list
        pending: list[tuple[bytes, bytes]] = []
        done = 0

        def take(
            key: bytes,
            known: Stat | str,
            fields: _Fields | None,
            record: Article | ArticleError | bytes | None,
        ) -> None:
            nonlocal done
            pos, rel, st, old, where = todo[done]
            if st is None:  # `walk` left it out: the stat of the bytes just read
                found[where] = (rel, known)
                # No stat (gone since the walk, a dangling link): never matches a real one.
                st = _NO_STAT if isinstance(known, str) else known
            done += 1
            verify = started_ns - max(st[0], st[1]) <= _RACY_NS
            if fields is None:  # same bytes as the index entry: only the stat changed
                assert old is not None
                self.rehashed += 1
                slots[pos] = (rel, st, key, verify, *old[ERROR:])
                return
            self.parsed += 1
            error, id_, date, published, expiry, draft, labels, tags = fields
            slots[pos] = (
                rel,
                st,
                key,
                verify,
                error,
                id_,
                date,
                published,
                expiry,
                draft,
                shared.setdefault(labels, labels),
                shared.setdefault(tags, tags),
            )
            if isinstance(record, bytes):  # a row made by a worker
                if self._index is not None:
                    pending.append((key, record))
                if self._index is None or error:
                    self._records[key] = _unrow(record)
            elif record is not None:
                self._records[key] = record
                if self._index is not None:
                    pending.append((key, _row(b"a", key, record)))
            if len(pending) >= 1000 and self._index is not None:
                self._index.put_rows(b"a", pending)
                pending.clear()

        if workers is not None and workers.usable and len(jobs) >= PARALLEL_MIN_FILES:
            try:
                loading = workers.map(functools.partial(_load_chunk, self.settings), jobs, _CHUNK)
                # While the workers parse, when the files are not in the page cache: every
                # file asked for in the workers' order, to keep the disk busy (their own
                # look-ahead starts afresh with each chunk).
                if not _cached(paths):
                    _read_ahead(paths)
                for loaded in loading:
                    take(*loaded)
            except (BrokenProcessPool, OSError) as exc:
                workers.failed(exc)
        for rel, full, expected in jobs[done:]:
            key, st, result = _load_one(rel, full, expected, self.settings)
            take(key, st, None if result is None else _fields(result), result)
        if pending and self._index is not None:
            self._index.put_rows(b"a", pending)

    # records
    def _record(self, entry: Entry) -> Article | ArticleError:
        key = entry[KEY]
        record = self._records.get(key)
        if record is None:
            payload = self._index.get(b"a", key) if self._index is not None else None
            if payload is not None:
                record = decode_record(payload)
            else:  # lost from the index: read the file again
                _, _, record = _load_one(entry[PATH], str(self.root / entry[PATH]), None, self.settings)
                assert record is not None
                if self._index is not None:
                    self._index.put_many(b"a", [(key, record)])
            self._records[key] = record
        return record

    def article(self, entry: Entry) -> Article:
        """The full article of a lean entry.

        Raises:
            ArticleError: its record was lost from the index and the file no longer parses.
        """
        record = self._record(entry)
        if isinstance(record, ArticleError):
            raise record
        return record

    def _load_articles(self) -> list[Article]:
        entries = self.entries
        if self._index is not None and len(entries) > len(self._records):
            wanted = {e[KEY] for e in entries if e[KEY] not in self._records}
            for key, payload in self._index.scan_records(b"a"):
                if key in wanted:
                    self._records[key] = decode_record(payload)
        return [self.article(e) for e in entries]

    # bodies
    def markdown(self, article: Article) -> str:
        """The Markdown body (without the source line), read back from the file."""
        return read_body(_read_file(str(self.root / article.path)), article.path)[0]

    def _entry_of(self, article: Article) -> Entry | None:
        """The entry whose record is this very article (an edited copy has none)."""
        entry = self.entry(article.path)
        if entry is None:
            return None
        record = self._record(entry)
        return entry if record is article or record == article else None

    def rendered(self, article: Article) -> RenderedBody:
        """The sanitized HTML body; rendered once, only for articles that land in an output,
        and kept in the index so an unchanged file is not rendered again next build."""
        body = self._bodies.get(article.path)
        if body is not None:
            return body
        entry = self._entry_of(article)
        if entry is not None and self._body_in_index(entry):
            return self._bodies[article.path]
        raw = _read_file(str(self.root / article.path))
        body = render_body(read_body(raw, article.path)[0], article.url, article.source)
        # Cached only if the file still holds the bytes the entry was made from.
        if entry is not None and self._index is not None and _content_key(entry[PATH], raw) == entry[KEY]:
            self._index.put_many(b"b", [(entry[KEY], body)])
        self._bodies[article.path] = body
        return body

    def prefetch(self, entries: Iterable[Entry], workers: Workers | None = None) -> None:
        """Load the articles and bodies of these entries; bodies not in the index are rendered,
        in the worker processes when there are many (a cold build renders a few thousand) while
        this process loads the articles."""
        entries = list(entries)
        if self._index is not None:
            paths = {e[KEY]: e[PATH] for e in entries if e[PATH] not in self._bodies}
            for key, payload in self._index.get_many(b"b", list(paths)):
                self._bodies[paths[key]] = decode_record(payload)
        missing = [e for e in entries if e[PATH] not in self._bodies]
        if workers is None or not workers.usable or len(missing) < PARALLEL_MIN_BODIES:
            self._load_records(entries)
            return  # rendered() renders the missing bodies one by one
        # A body's page URL is its entry's id, so the jobs need no article.
        jobs = [(e[PATH], str(self.root / e[PATH]), e[KEY], e[ID]) for e in missing]
        try:
            rows = workers.map(_render_chunk, jobs, 50)  # submitted now, rendered meanwhile
        except (BrokenProcessPool, OSError) as exc:
            workers.failed(exc)
            rows = iter(())  # rendered() renders them one by one
        self._load_records(entries)
        done: list[tuple[bytes, bytes]] = []
        try:
            for entry, row in zip(missing, rows, strict=False):
                if row is not None:
                    self._bodies[entry[PATH]] = _unrow(row)
                    done.append((entry[KEY], row))
        except (BrokenProcessPool, OSError) as exc:
            workers.failed(exc)
        if self._index is not None:
            self._index.put_rows(b"b", done)

    def _load_records(self, entries: list[Entry]) -> None:
        """The articles of these entries, from the index in a few queries (what it lacks is
        read from the file again by `article`)."""
        if self._index is not None:
            wanted = [e[KEY] for e in entries if e[KEY] not in self._records]
            for key, payload in self._index.get_many(b"a", wanted):
                self._records[key] = decode_record(payload)
        for entry in entries:
            self.article(entry)

    def _body_in_index(self, entry: Entry) -> bool:
        """Whether the body of this entry is loaded, or now loaded from the index."""
        if entry[PATH] in self._bodies:
            return True
        payload = self._index.get(b"b", entry[KEY]) if self._index is not None else None
        if payload is None:
            return False
        self._bodies[entry[PATH]] = decode_record(payload)
        return True

    def save_index(self) -> None:
        """Write what this scan parsed and rendered to the index (no-op without one)."""
        if self._deferred is not None or self._index is None:
            return
        self._index.save(self._all if self._lean_dirty else None, self._changes, self._garbage)
        self._lean_dirty = False
        self._changes = {}
        self._garbage = set()

    def close(self) -> None:
        """Let go of the index database without saving (saving is `save_index`)."""
        if self._index is not None:
            self._index.close()
            self._index = None


def scan(
    root: Path,
    settings: ContentSettings,
    index_path: Path | None = None,
    *,
    found: list[Found] | None = None,
    workers: Workers | None = None,
) -> Catalog:
    """Read every article under root; reuse the index for files whose stat matches.

    Two files with the same permalink: the first by path keeps it, the others are reported.
    Call `Catalog.save_index()` after the build to store what was parsed and rendered.

    Args:
        found: the result of `walk(root)`, when the caller already has it.
        workers: processes to parse in when many files need parsing (a cold build).
    """
    catalog = Catalog(root, settings, index_path)
    catalog._scan(walk(root) if found is None else found, workers)
    return catalog


def _drop_duplicate_ids(entries: list[Entry]) -> tuple[list[Entry], list[ArticleError]]:
    if len(set(map(itemgetter(ID), entries))) == len(entries):
        return entries, []  # the usual case, found at C speed
    owners: dict[str, Entry] = {}
    kept: list[Entry] = []
    problems: list[ArticleError] = []
    for entry in entries:  # sorted by path, so the winner does not depend on the file system
        first = owners.setdefault(entry[ID], entry)
        if first is entry:
            kept.append(entry)
        else:
            problems.append(
                ArticleError(
                    entry[PATH],
                    "slug",
                    f"permalink {entry[ID]} is already used by {first[PATH]}; give one a "
                    "different slug or url",
                )
            )
    return kept, problems


# --- the publishing rule and selection --------------------------------------------------------
def is_published(article: Article, now: datetime) -> bool:
    """Hugo's rule, for every channel: not a draft, not in the future, not expired."""
    if article.draft or article.published > now:
        return False
    return article.expiry_date is None or article.expiry_date > now


def published_entries(entries: Iterable[Entry], now: datetime) -> list[Entry]:
    """`is_published` on lean entries, newest first: the same articles in the same order as
    `newest_first(a for a in articles if is_published(a, now))`."""
    at = micros(now)
    chosen = [
        e
        for e in entries
        if not e[DRAFT] and e[PUBLISHED] <= at and (e[EXPIRY] is None or e[EXPIRY] > at)
    ]
    chosen.sort(key=itemgetter(DATE), reverse=True)
    # Equal dates (rare) go by id, as in newest_first: sort each run of them.
    start = 0
    for position in range(1, len(chosen) + 1):
        if position == len(chosen) or chosen[position][DATE] != chosen[start][DATE]:
            if position - start > 1:
                chosen[start:position] = sorted(chosen[start:position], key=itemgetter(ID))
            start = position
    return chosen


def publication_window(entries: Iterable[Entry], now: datetime) -> tuple[int, int]:
    """[from, until) in epoch microseconds around `now` in which the published set stays the
    same: no publishDate is reached and no expiryDate passes."""
    at = micros(now)
    live = [e for e in entries if not e[DRAFT]]
    moments = [e[PUBLISHED] for e in live]
    moments.extend(expiry for e in live if (expiry := e[EXPIRY]) is not None)
    lower = max((t for t in moments if t <= at), default=-(2**63))
    upper = min((t for t in moments if t > at), default=2**63)
    return lower, upper


def newest_first(articles: Iterable[Article]) -> list[Article]:
    """Newest first; equal dates ordered by id so the output never depends on input order."""
    return sorted(articles, key=lambda a: (-micros(a.date), a.id))


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

