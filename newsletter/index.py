"""The collector's index on disk: lean entries (plain tuples) plus a delta file, and a SQLite file
of full records keyed by content hash (see `collector`'s docstring).

Every part is checksummed and tied to the package version, the parsing code, the libraries'
versions and the content settings; a damaged or foreign part is deleted and rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import marshal
import os
import pickle
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from types import ModuleType
from typing import Any, Final
from zoneinfo import ZoneInfo

import nh3
import yaml
from cmarkgfm import cmark

from . import __version__, content, errors, model
from .content import ContentSettings

log = logging.getLogger(__name__)

_INDEX_MAGIC = b"newsletter-index\n"
_INDEX_FORMAT = 5  # bump whenever the layout of the index changes (5: compact Article records)
_DELTA_MIN = 1000  # changed entries the delta file may hold (or 1% of all, if more)
_SWEEP_SLACK = 1000  # records beyond two per entry before unnamed ones are swept up

Stat = tuple[int, int, int, int]  # mtime_ns, ctime_ns, size, inode
# A relative POSIX path, and its stat or why it has none; None: not taken yet (`walk(stat=False)`,
# filled in by the scan).
Found = tuple[str, Stat | str | None]

# One lean index entry: a plain tuple (100k of them load in ~0.1 s), read through these positions.
Entry = tuple[
    str, Stat, bytes, bool, bool, str, int, int, int | None, bool, tuple[str, ...], tuple[str, ...]
]
PATH: Final = 0
STAT: Final = 1
KEY: Final = 2  # blake2b of path + bytes: the identity of this version of the file
VERIFY: Final = 3  # the stat was taken in the racy window: re-hash the file before trusting it
ERROR: Final = 4  # the file is an ArticleError, not an article
ID: Final = 5
DATE: Final = 6  # microseconds since the epoch, exact
PUBLISHED: Final = 7
EXPIRY: Final = 8  # None: never expires
DRAFT: Final = 9
LABELS: Final = 10
TAGS: Final = 11
_Fields = tuple[bool, str, int, int, int | None, bool, tuple[str, ...], tuple[str, ...]]
_ERROR_FIELDS: _Fields = (True, "", 0, 0, None, False, (), ())


def _row(kind: bytes, key: bytes, record: object) -> bytes:
    """A record as stored: digest of (kind, key, payload), then the encoded payload. Made in
    the worker, so the parent only inserts it."""
    payload = encode_record(record)
    return _record_digest(kind + key, payload) + payload


def _unrow(row: bytes) -> Any:
    return decode_record(memoryview(row)[16:])


# --- records: an Article as a marshalled tuple, anything else pickled --------------------------
# An Article is most of what a cold build stores (one per file): marshal writes its fields in
# 2.3 µs and 830 bytes where pickle took 7.0 µs and 1,100 bytes (a datetime with its timezone
# alone cost pickle 3.5 µs), and reads it back in 3.7 µs instead of 5.7.
_ARTICLE = b"M"  # first byte of a marshalled Article; a pickle starts with 0x80
_BODY = b"B"  # first byte of a marshalled RenderedBody
# Article's fields in the order the record holds them. A test holds this to the dataclass, so a
# new field fails it: then add the field to encode_record and decode_record as well.
_ARTICLE_FIELDS: Final = (
    "id", "path", "slug", "url", "title", "date", "publish_date", "expiry_date", "lastmod",
    "draft", "tags", "labels", "summary", "cover", "author", "source",
)  # fmt: skip
# RenderedBody's and Section's fields, held to the dataclasses by a test like _ARTICLE_FIELDS.
_BODY_FIELDS: Final = ("html", "intro_html", "sections", "source")
_SECTION_FIELDS: Final = ("heading", "anchor", "html")
_MICROSECOND = timedelta(microseconds=1)
_DateParts = tuple[int, int, int, int, int, int, int, int, "int | str"]


class _NotCompact(Exception):
    """A value the compact form cannot hold exactly (pickled instead)."""


def _date_parts(moment: datetime | None) -> _DateParts | None:
    """The fields of an aware datetime and its zone: an offset in microseconds (a `timezone`
    without a name of its own) or an IANA key (a `ZoneInfo`)."""
    if moment is None:
        return None
    tz = moment.tzinfo
    zone: int | str
    if tz is UTC:
        zone = 0
    elif type(tz) is timezone:
        offset = tz.utcoffset(None)
        if tz.tzname(None) != timezone(offset).tzname(None):
            raise _NotCompact  # a fixed offset with a name of its own
        zone = offset // _MICROSECOND
    elif type(tz) is ZoneInfo and tz.key is not None and ZoneInfo(tz.key) is tz:
        zone = tz.key
    else:
        raise _NotCompact
    return (
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
        moment.microsecond, moment.fold, zone,
    )  # fmt: skip


def _date(parts: _DateParts | None) -> datetime | None:
    if parts is None:
        return None
    year, month, day, hour, minute, second, microsecond, fold, zone = parts
    if isinstance(zone, str):
        tz: tzinfo = ZoneInfo(zone)
    else:
        tz = UTC if zone == 0 else timezone(zone * _MICROSECOND)
    return datetime(year, month, day, hour, minute, second, microsecond, tz, fold=fold)


def encode_record(record: object) -> bytes:
    """A record's bytes for the index: compact for an Article, pickled otherwise."""
    if type(record) is model.Article:
        a = record
        cover = a.cover
        try:
            fields = (
                a.id, a.path, a.slug, a.url, a.title, _date_parts(a.date),
                _date_parts(a.publish_date), _date_parts(a.expiry_date), _date_parts(a.lastmod),
                a.draft, a.tags, a.labels, a.summary,
                None if cover is None else (cover.image, cover.alt, cover.caption),
                a.author, a.source,
            )  # fmt: skip
            return _ARTICLE + marshal.dumps(fields, 4)
        except (_NotCompact, ValueError):  # ValueError: marshal met a type it cannot write
            pass
    elif type(record) is model.RenderedBody:
        body = _body_fields(record)
        if body is not None:
            try:
                return _BODY + marshal.dumps(body, 4)
            except ValueError:  # a type marshal cannot write
                pass
    return pickle.dumps(record, pickle.HIGHEST_PROTOCOL)


def _body_fields(body: model.RenderedBody) -> tuple[Any, ...] | None:
    """A body with its intro and sections as places in its HTML, which holds them all: half
    the bytes of a pickle (a cold build sends a few thousand bodies from the workers and
    stores them). None if a part is not found there as it is, or not a plain str."""
    html, intro = body.html, body.intro_html
    if type(html) is not str or type(intro) is not str or not html.startswith(intro):
        return None
    sections = []
    position = len(intro)
    for section in body.sections:
        if type(section) is not model.Section or type(section.html) is not str:
            return None
        start = html.find(section.html, position)
        if start < 0:
            return None
        position = start + len(section.html)
        sections.append((section.heading, section.anchor, start, position))
    return (html, len(body.intro_html), tuple(sections), body.source)


def decode_record(payload: bytes | memoryview) -> Any:
    """What `encode_record` was given (from our own checksummed bytes)."""
    kind = payload[:1]
    if kind == _BODY:
        html, intro, sections, source = marshal.loads(payload[1:])
        return model.RenderedBody(
            html,
            html[:intro],
            tuple(model.Section(heading, anchor, html[start:end]) for heading, anchor, start, end in sections),
            source,
        )
    if kind != _ARTICLE:
        return pickle.loads(payload)  # noqa: S301 - our own checksummed record
    (id_, path, slug, url, title, date, published, expiry, lastmod, draft, tags, labels,
     summary, cover, author, source) = marshal.loads(payload[1:])  # fmt: skip
    return model.Article(
        id_, path, slug, url, title, _date(date), _date(published), _date(expiry), _date(lastmod),  # type: ignore[arg-type]
        draft, tags, labels, summary, None if cover is None else model.Cover(*cover), author,
        source,
    )  # fmt: skip


def code_fingerprint(*modules: ModuleType) -> str:
    """A digest of the source of the given modules, so that an edited parser (even without a
    version bump) never trusts results of the old one."""
    digest = hashlib.blake2b(digest_size=16)
    for module in modules:
        try:
            digest.update(Path(module.__file__ or "").read_bytes())
        except OSError:
            digest.update(module.__name__.encode())
    return digest.hexdigest()


@functools.cache
def _parser_fingerprint() -> str:
    versions = [getattr(module, "__version__", "?") for module in (yaml, nh3)]
    # cmarkgfm has no version attribute: its C library's version and the compiled module's
    # size and time (a reinstall counts as a change, which only costs a rebuild).
    try:
        binary = os.stat(getattr(cmark._cmark, "__file__", None) or "")
        built = f"{binary.st_size}/{binary.st_mtime_ns}"
    except OSError:
        built = "?"
    libraries = " ".join([*versions, cmark.CMARK_VERSION, built])
    # python-frontmatter has no version attribute; the code that splits front matter stands in.
    splitter = sys.modules["frontmatter.default_handlers"]
    # this module, the collector (which turns files into records) and what they parse with
    collector = sys.modules[f"{__package__}.collector"]
    code = code_fingerprint(sys.modules[__name__], collector, content, model, errors, splitter, cmark)
    return f"{__version__}|{sys.version}|{libraries}|{code}"


def index_key(settings: ContentSettings) -> bytes:
    """Everything that changes parse results: a different key invalidates the whole index."""
    return f"{_INDEX_FORMAT}|{_parser_fingerprint()}|{settings!r}".encode()


class _Foreign(Exception):
    """An index file written by another version or for other settings."""


class _Index:
    """The lean file at `path` (plus a delta file of recent changes) and the record database
    beside it, opened for one scan."""

    def __init__(self, path: Path, settings: ContentSettings) -> None:
        self.path = path
        self.db_path = path.with_name(path.name + ".db")
        self.delta_path = path.with_name(path.name + ".delta")
        self.key = index_key(settings)
        self.db: sqlite3.Connection | None = None
        self.generation = b""
        self.base_digest = b""  # checksum of the lean file as loaded or last written
        self.pending: dict[str, Entry | None] = {}  # the changes in the delta file
        # The kinds of record in a database this scan created: only those are looked up (a cold
        # build asks for thousands of bodies that cannot be there). None: created before, unknown.
        self._written: set[bytes] | None = None

    # opening
    def open(self) -> dict[str, Entry]:
        """Connect to the database (creating it if needed) and load the lean entries that belong
        to it. Returns {} when there is no usable index; `db` stays None if none can be kept."""
        self.db = self._connect()
        return self._load_lean() if self.db is not None else {}

    def _connect(self) -> sqlite3.Connection | None:
        for _attempt in range(2):
            db = None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.db_path, timeout=5, isolation_level=None)
                db.execute("PRAGMA synchronous=OFF")  # a cache: a crash costs a rebuild, no more
                db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB)")
                db.execute("CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, data BLOB)")
                meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
                generation = meta.get("generation")
                if meta.get("key") == self.key and isinstance(generation, bytes):
                    self.generation = generation
                    return db
                if meta:
                    log.info("index %s is for other settings or another version; rebuilding", self.db_path)
                    db.close()
                    self._remove_db()
                    continue
                self.generation = os.urandom(16)
                self._written = set()
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO meta VALUES ('key', ?), ('generation', ?)", (self.key, self.generation))
                db.execute("COMMIT")
                return db
            except sqlite3.OperationalError as exc:
                if db is not None:
                    db.close()
                if "locked" in str(exc) or "busy" in str(exc):
                    log.warning("index %s is in use by another build; not using it", self.db_path)
                    return None
                log.warning("index %s is damaged (%s); rebuilding it", self.db_path, exc)
                self._remove_db()
            except sqlite3.DatabaseError as exc:
                if db is not None:
                    db.close()
                log.warning("index %s is damaged (%s); rebuilding it", self.db_path, exc)
                self._remove_db()
            except OSError as exc:  # a cache that cannot be kept only costs time
                if db is not None:
                    db.close()
                log.warning("cannot use index %s: %s", self.db_path, exc)
                return None
        return None

    def _remove_db(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            try:
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove %s%s: %s", self.db_path, suffix, exc)

    def _load_lean(self) -> dict[str, Entry]:
        """The entries of the lean file, with the changes of its delta file applied."""
        try:
            base = self._read_sealed(self.path)
            if base is None:
                return {}
            digest, (generation, entries) = base
            if generation != self.generation:
                raise ValueError("it belongs to another record database")
            if type(entries) is not list or (entries and len(entries[0]) != 12):
                raise ValueError("unexpected layout")
            index = {e[PATH]: e for e in entries}
            del base, entries
            delta = self._read_sealed(self.delta_path)
            if delta is not None:
                _, (generation, of_base, changes) = delta
                if generation != self.generation or of_base != digest:
                    raise ValueError("its delta belongs to another index")
                for path, entry in changes.items():
                    if entry is None:
                        index.pop(path, None)
                    else:
                        index[path] = entry
                self.pending = changes
            self.base_digest = digest
            return index
        except _Foreign:
            log.info("index %s is for other settings or another version; rebuilding", self.path)
        except Exception as exc:  # any damage means: start over, never build from bad data
            log.warning("index %s is damaged (%s); rebuilding it", self.path, exc)
        self.pending = {}
        return {}

    def _read_sealed(self, path: Path) -> tuple[bytes, Any] | None:
        """(checksum, content) of a file written by `_write_sealed`; None if there is none.

        Raises:
            _Foreign: written under another key (version, code or settings).
            ValueError: damaged.
        """
        try:
            data = path.read_bytes()
        except OSError:
            return None
        magic_len = len(_INDEX_MAGIC)
        if data[:magic_len] != _INDEX_MAGIC:
            raise ValueError("bad magic")
        digest = data[magic_len : magic_len + 32]
        key_len = int(data[magic_len + 32 : magic_len + 40])
        key = data[magic_len + 40 : magic_len + 40 + key_len]
        if key != self.key:
            raise _Foreign
        payload = memoryview(data)[magic_len + 40 + key_len :]
        # Only checksummed data is unmarshalled: marshal is not meant for damaged input. The
        # key covers this module's source, so intact data has the layout this code wrote.
        checksum = hashlib.sha256(key)
        checksum.update(payload)
        if checksum.digest() != digest:
            raise ValueError("checksum mismatch")
        return digest, marshal.loads(payload)

    def _write_sealed(self, path: Path, content: Any) -> bytes:
        payload = marshal.dumps(content, 4)
        digest = hashlib.sha256(self.key)
        digest.update(payload)
        header = _INDEX_MAGIC + digest.digest() + f"{len(self.key):08d}".encode() + self.key
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(header)
                handle.write(payload)
            os.replace(tmp, path)
        except OSError as exc:  # a cache that cannot be written only costs time
            log.warning("cannot write index %s: %s", path, exc)
            tmp.unlink(missing_ok=True)
        return digest.digest()

    def _write_lean(self, entries: list[Entry], changes: dict[str, Entry | None]) -> None:
        """A few changes go to the small delta file; otherwise (or when it has grown to 1% of
        the entries) the whole lean file is written again and the delta removed."""
        merged = {**self.pending, **changes}
        if self.base_digest and len(merged) <= max(_DELTA_MIN, len(entries) // 100):
            self._write_sealed(self.delta_path, (self.generation, self.base_digest, merged))
            self.pending = merged
            return
        self.delta_path.unlink(missing_ok=True)
        self.base_digest = self._write_sealed(self.path, (self.generation, entries))
        self.pending = {}

    # records
    def _write(self, statement: str, rows: Iterable[tuple[bytes, ...]]) -> bool:
        """One short write transaction (no lock is held between them, so a catalog that is never
        saved blocks no other build). False if the database failed."""
        if self.db is None:
            return False
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(statement, rows)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            self._failed(exc)
            return False
        return True

    def get(self, kind: bytes, key: bytes) -> bytes | None:
        """The verified payload of one record, or None (missing, damaged, of a kind this scan's
        new database never got, or no database)."""
        for _, payload in self.get_many(kind, [key]):
            return payload
        return None

    def get_many(self, kind: bytes, keys: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """(key, verified payload) of those of these records that are there and intact: one
        query per few hundred keys instead of one each (1,675 lookups took 36 ms of a 10k
        build, in the process everything else waits for)."""
        if self.db is None or (self._written is not None and kind not in self._written):
            return
        step = 500  # bound variables per query: old SQLite builds allow 999
        try:
            for start in range(0, len(keys), step):
                chunk = [kind + key for key in keys[start : start + step]]
                query = f"SELECT key, data FROM records WHERE key IN ({','.join('?' * len(chunk))})"
                for row_key, data in self.db.execute(query, chunk).fetchall():
                    payload = self._verified(row_key, data)
                    if payload is not None:
                        yield row_key[len(kind) :], payload
        except sqlite3.DatabaseError as exc:
            self._failed(exc)

    def scan_records(self, kind: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, verified payload) of every record of one kind; damaged ones are left out."""
        if self.db is None:
            return
        try:
            cursor = self.db.execute(
                "SELECT key, data FROM records WHERE key >= ? AND key < ?",
                (kind, bytes([kind[0] + 1])),
            )
            for row_key, data in cursor:
                payload = self._verified(row_key, data)
                if payload is not None:
                    yield row_key[len(kind) :], payload
        except sqlite3.DatabaseError as exc:
            self._failed(exc)

    def _verified(self, row_key: bytes, data: object) -> bytes | None:
        if isinstance(data, bytes) and len(data) > 16:
            payload = data[16:]
            if _record_digest(row_key, payload) == data[:16]:
                return payload
        log.warning("index record %s is damaged; reading the file again", row_key.hex())
        return None

    def put_many(self, kind: bytes, records: Iterable[tuple[bytes, object]]) -> None:
        self.put_rows(kind, ((key, _row(kind, key, record)) for key, record in records))

    def put_rows(self, kind: bytes, rows: Iterable[tuple[bytes, bytes]]) -> None:
        """Store rows made by `_row`."""
        if self._written is not None:
            self._written.add(kind)
        self._write(
            "INSERT OR REPLACE INTO records VALUES (?, ?)", ((kind + key, row) for key, row in rows)
        )

    def save(
        self,
        entries: list[Entry] | None,
        changes: dict[str, Entry | None],
        garbage: Iterable[bytes],
    ) -> None:
        """Write the lean entries (if given), then drop the records of replaced files.

        Records are committed as they are made, before the lean file that names them; a crash
        between the two leaves records nobody names, never an entry without its record."""
        if self.db is None:
            return
        if entries is not None:
            self._write_lean(entries, changes)
        gone = [(kind + key,) for key in garbage for kind in (b"a", b"b")]
        if gone:
            self._write("DELETE FROM records WHERE key = ?", gone)
        if entries is not None and not self.pending:  # a full lean file: sweep up orphans too
            self._sweep(entries)

    def _sweep(self, entries: list[Entry]) -> None:
        """Delete records no entry names (left by scans that were never saved, or a crash),
        when there are clearly too many of them."""
        if self.db is None:
            return
        try:
            (rows,) = self.db.execute("SELECT count(*) FROM records").fetchone()
            if rows <= 2 * len(entries) + _SWEEP_SLACK:
                return
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS live (key BLOB PRIMARY KEY)")
            self.db.execute("DELETE FROM live")
            self.db.executemany(
                "INSERT OR IGNORE INTO live VALUES (?)",
                ((kind + e[KEY],) for e in entries for kind in (b"a", b"b")),
            )
            self._write("DELETE FROM records WHERE key NOT IN (SELECT key FROM live)", [()])
            self.db.execute("DELETE FROM live")
        except sqlite3.DatabaseError as exc:
            self._failed(exc)

    def _failed(self, exc: sqlite3.DatabaseError) -> None:
        """The database broke mid-build: stop using it, and if it is damaged rather than busy,
        delete both parts so the next build starts clean."""
        log.warning("index %s failed (%s); continuing without it", self.db_path, exc)
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = None
        if not ("locked" in str(exc) or "busy" in str(exc)):
            self._remove_db()
            self.path.unlink(missing_ok=True)
            self.delta_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()  # an open transaction is rolled back
            self.db = None


def _record_digest(row_key: bytes, payload: bytes) -> bytes:
    digest = hashlib.blake2b(row_key, digest_size=16)
    digest.update(payload)
    return digest.digest()
