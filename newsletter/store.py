"""The persistent store: subscribers, audience memberships, issues, deliveries, suppressions, leases.

SQLAlchemy Core only, with dialect-neutral SQL: an SQLite file by default
(``sqlite:////abs/path/newsletter.db``), PostgreSQL (``postgresql+psycopg://...``) with the same
code. The only per-dialect branches are connection setup (SQLite pragmas and ``BEGIN IMMEDIATE``),
the migration lock (a PostgreSQL advisory lock) and "insert if absent" (``ON CONFLICT DO NOTHING``).
Every datetime is timezone-aware UTC in the API and in the database; ``now`` is always an argument:
the store never reads the clock.

Public API (``Store`` methods; statuses are the tuples in ``model.py``)::

    normalize_email(address) -> str                       # InvalidEmailError (a ValueError) if bad
    email_key(address) -> str                             # the unique, lower-cased form

    Store(url) / Store.open(url)                          # open() also runs migrate()
    migrate() -> int; schema_version() -> int; close(); with Store.open(url) as store: ...

    add_subscriber(email, name, audiences, now, status="active", attributes=None) -> SubscriberChange
    import_rows(rows, now, default_audiences=(), status="active", batch_size=500) -> ImportResult
    remove_subscriber(email, now, audience=None) -> SubscriberChange
    unsubscribe(subscriber_id, audience_id, now) -> bool
    set_status(email, status, now) -> Subscriber
    confirm(subscriber_id, now) -> bool
    get_subscriber(email_or_id) -> Subscriber | None
    memberships(subscriber_id) -> dict[audience_id, "active" | "unsubscribed"]
    list_subscribers(audience=None, status=None) -> Iterator[Subscriber]   # by email_key, paged
    count_by_audience(status="active") -> dict[audience_id, int]
    suppress(email, reason, now) -> bool; is_suppressed(email) -> bool

    create_issue(audience_id, period, window_start, window_end, now, subject="", preheader="")
        -> tuple[Issue, bool]
    get_issue(audience_id, period) -> Issue | None; get_issue_by_id(issue_id) -> Issue
    save_rendered(issue_id, subject, preheader, html, text, article_ids) -> Issue
    set_issue_status(issue_id, status, now) -> Issue
    last_issue(audience_id, statuses=("sent",)) -> Issue | None
    list_issues(audience_id=None) -> list[Issue]

    freeze_recipients(issue_id, audience_id, now) -> int
    claim_batch(issue_id, limit, now) -> list[Delivery]
    mark_sent(delivery_id, message_id, now); mark_failed(delivery_id, error, now)
    mark_unknown(delivery_id, error, now)
    requeue(issue_id, now, statuses=("unknown", "sending")) -> int
    delivery_counts(issue_id) -> dict[status, int]
    stale_sending(issue_id, older_than=None) -> list[Delivery]
    list_deliveries(issue_id, statuses=None) -> Iterator[Delivery]

    acquire_lease(name, owner, ttl_seconds, now) -> bool; release_lease(name, owner) -> bool

Rules kept here, so that every caller gets them:

- An address is unique case-insensitively (``email_key``). Adding or importing never re-activates an
  address that unsubscribed, bounced or complained, never re-adds it to an audience it left (a left
  audience stays recorded as an ``unsubscribed`` membership) and never adds a suppressed address:
  those rows are reported as skipped. Only ``set_status`` (an operator's act) changes the status of
  an existing address.
- Recipients are frozen once per issue (``freeze_recipients``); ``claim_batch`` re-checks each
  delivery just before handing it out, so an unsubscribe or suppression after the freeze is honoured
  up to the moment of sending (the row becomes ``suppressed``).
- Sending is at-most-once: ``claim_batch`` writes ``sending`` (attempts + 1) before the caller
  talks SMTP; rows left in ``sending`` after a crash are never handed out again until an operator
  calls ``requeue``.

Errors: every database failure becomes ``StoreError`` (``ConflictError`` for a broken uniqueness
rule); ``SchemaError`` for a missing, foreign or too new schema; ``NotFoundError`` (also a
``LookupError``) for an unknown id; ``StateError`` for an operation the row's status forbids;
``InvalidEmailError`` (also a ``ValueError``) for a bad address. Bad arguments raise ``ValueError``.

Concurrency: several processes may share one SQLite file (WAL, 30 s busy timeout, and every write
transaction starts with ``BEGIN IMMEDIATE``, so writers queue instead of failing on lock upgrade);
on PostgreSQL ``claim_batch`` uses ``FOR UPDATE SKIP LOCKED``. Make one ``Store`` per process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from .errors import StoreError
from .model import (
    DELIVERY_STATUSES,
    ISSUE_STATUSES,
    SUBSCRIBER_STATUSES,
    Delivery,
    ImportProblem,
    ImportResult,
    ImportRow,
    Issue,
    Subscriber,
    SubscriberChange,
)

log = logging.getLogger(__name__)

__all__ = [
    "ConflictError",
    "InvalidEmailError",
    "NotFoundError",
    "SchemaError",
    "StateError",
    "Store",
    "email_key",
    "normalize_email",
]


# --- errors -------------------------------------------------------------------------------------


class SchemaError(StoreError):
    """The database has no usable schema, or one newer than this code knows."""


class ConflictError(StoreError):
    """A write broke a uniqueness rule (usually: another process wrote the same row first)."""


class NotFoundError(StoreError, LookupError):
    """No row with that id or address."""

    def __init__(self, kind: str, key: object) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"no {kind} {key!r}")


class StateError(StoreError):
    """The row's current status does not allow the operation."""

    def __init__(self, kind: str, key: object, status: str, message: str) -> None:
        self.kind = kind
        self.key = key
        self.status = status
        super().__init__(f"{kind} {key!r} is {status!r}: {message}")


class InvalidEmailError(StoreError, ValueError):
    """An address that is not a valid email address; carries the address and the reason."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"{address!r}: {reason}")


# --- addresses ----------------------------------------------------------------------------------


def normalize_email(address: str) -> str:
    """The address as stored: surrounding space stripped, domain lower-cased (IDNA-normalised),
    local part kept as given. No DNS lookups.

    Raises:
        InvalidEmailError: not a valid address (no @, display name, CR/LF, reserved domain, ...).
    """
    if not isinstance(address, str):
        raise InvalidEmailError(repr(address), "not a string")
    try:
        return validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError as e:
        raise InvalidEmailError(address, str(e)) from e


def email_key(address: str) -> str:
    """The case-insensitive identity of an address: its normalised form, lower-cased."""
    return normalize_email(address).lower()


# --- column types -------------------------------------------------------------------------------


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out. PostgreSQL stores ``timestamptz``; SQLite stores naive UTC
    text in SQLAlchemy's fixed-width format, which sorts and compares chronologically."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store only takes aware datetimes")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a raw literal that bypassed the bind processor
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONText(sa.types.TypeDecorator[Any]):
    """JSON as canonical text (sorted keys), the same on every dialect."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value: Any | None, dialect: sa.Dialect) -> Any | None:
        return None if value is None else json.loads(value)


# --- schema -------------------------------------------------------------------------------------

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY is the rowid
_EMAIL = sa.String(320)
_AUDIENCE = sa.String(200)
_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _status_check(values: Sequence[str], column: str = "status") -> sa.CheckConstraint:
    listed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=column)


def _tables_v1(md: sa.MetaData) -> dict[str, sa.Table]:
    """The tables as migration 1 creates them.

    The query side below uses these same objects while the schema is at version 1. A later
    migration that changes a table must leave this function alone (migration 1 has to keep
    building the version-1 shape) and give the query side its own, updated definition.
    """
    subscribers = sa.Table(
        "subscribers", md,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("email", _EMAIL, nullable=False),
        sa.Column("email_key", _EMAIL, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("confirmed_at", UTCDateTime),
        sa.Column("attributes", JSONText, nullable=False, server_default="{}"),
        _status_check(SUBSCRIBER_STATUSES),
    )
    memberships = sa.Table(
        "memberships", md,
        sa.Column("subscriber_id", _ID, sa.ForeignKey("subscribers.id"), primary_key=True),
        sa.Column("audience_id", _AUDIENCE, primary_key=True),
        # "unsubscribed" rows are kept: they stop an import from adding the address back.
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        _status_check(("active", "unsubscribed")),
        sa.Index(None, "audience_id", "status", "subscriber_id"),
    )
    issues = sa.Table(
        "issues", md,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("audience_id", _AUDIENCE, nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text, nullable=False, server_default=""),
        sa.Column("preheader", sa.Text, nullable=False, server_default=""),
        sa.Column("html", sa.Text, nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("article_ids", JSONText, nullable=False, server_default="[]"),
        sa.Column("window_start", UTCDateTime, nullable=False),
        sa.Column("window_end", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("recipients_frozen_at", UTCDateTime),
        sa.UniqueConstraint("audience_id", "period"),
        _status_check(ISSUE_STATUSES),
        sa.Index(None, "audience_id", "window_end"),
    )
    deliveries = sa.Table(
        "deliveries", md,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("issue_id", _ID, sa.ForeignKey("issues.id"), nullable=False),
        sa.Column("subscriber_id", _ID, sa.ForeignKey("subscribers.id"), nullable=False),
        sa.Column("email", _EMAIL, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("message_id", sa.Text, nullable=False, server_default=""),
        sa.Column("queued_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime),
        sa.UniqueConstraint("issue_id", "subscriber_id"),
        _status_check(DELIVERY_STATUSES),
        sa.Index(None, "issue_id", "status", "id"),
        sa.Index(None, "subscriber_id"),
    )
    suppressions = sa.Table(
        "suppressions", md,
        sa.Column("email_key", _EMAIL, primary_key=True),
        sa.Column("email", _EMAIL, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    locks = sa.Table(
        "locks", md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    return {t.name: t for t in (subscribers, memberships, issues, deliveries, suppressions, locks)}


def _migration_1(conn: Connection) -> None:
    md = sa.MetaData(naming_convention=_NAMING)
    _tables_v1(md)
    md.create_all(conn, checkfirst=False)


# Numbered migrations: _MIGRATIONS[n - 1] takes the schema from version n - 1 to n. Append only.
_MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_migration_1,)
SCHEMA_VERSION = len(_MIGRATIONS)

_meta = sa.MetaData(naming_convention=_NAMING)
_version_table = sa.Table("schema_version", _meta, sa.Column("version", sa.Integer, primary_key=True))
_query_md = sa.MetaData(naming_convention=_NAMING)
_t = _tables_v1(_query_md)
subscribers_t = _t["subscribers"]
memberships_t = _t["memberships"]
issues_t = _t["issues"]
deliveries_t = _t["deliveries"]
suppressions_t = _t["suppressions"]
locks_t = _t["locks"]

_PG_MIGRATION_LOCK = 0x6E6C5354  # any constant: the key of the advisory lock around migrate()
_WRITE = "newsletter_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)
# An INSERT's rowcount is only kept when asked for (psycopg otherwise reports -1).
_ROWCOUNT = {"preserve_rowcount": True}
_CHUNK = 500  # rows per IN (...) list and per import step
_GONE = ("unsubscribed", "bounced", "complained")  # statuses an add or import never changes
_ISSUE_NEXT: dict[str, set[str]] = {  # allowed issue status transitions (same -> same is always a no-op)
    "draft": {"sending", "skipped", "failed"},
    "sending": {"sent", "failed"},
    "failed": {"sending"},
    "skipped": set(),
    "sent": {"sending"},  # re-opened by an operator's --retry-unknown
}
_REQUEUEABLE = ("sending", "unknown", "failed")


# --- the store ----------------------------------------------------------------------------------


class Store:
    """SQLAlchemy Core implementation of the newsletter store. See the module docstring."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        try:
            self._url = sa.make_url(url)
            self._engine = sa.create_engine(self._url, echo=echo)
        except (ArgumentError, ImportError, ValueError) as e:
            raise StoreError(f"cannot use store URL {_masked(url)}: {e}") from e
        self.dialect = self._engine.dialect.name
        if self.dialect == "sqlite":
            _configure_sqlite(self._engine)

    @classmethod
    def open(cls, url: str, *, echo: bool = False) -> Store:
        """A store whose schema is migrated to the version this code knows."""
        store = cls(url, echo=echo)
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    def __repr__(self) -> str:
        return f"Store({self._url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Connection]:
        """One transaction; database errors come out as StoreError (ConflictError for
        uniqueness). On SQLite a writing transaction takes the write lock up front."""
        try:
            with self._engine.connect() as conn:
                if write:
                    conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    yield conn
        except IntegrityError as e:
            raise ConflictError(f"{self!r}: {e.orig}") from e
        except DBAPIError as e:
            raise StoreError(f"{self!r}: {e.orig}") from e

    # --- schema ---------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply the missing numbered migrations, in order, in one transaction; returns the
        schema version. Re-running is a no-op.

        Raises:
            SchemaError: the database is newer than this code, or a migration failed.
        """
        with self._tx() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            _version_table.create(conn, checkfirst=True)
            current = conn.scalar(sa.select(sa.func.max(_version_table.c.version))) or 0
            if current > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self!r}: database schema version {current} is newer than this code "
                    f"knows ({SCHEMA_VERSION}); upgrade newsletter before using this database"
                )
            for number in range(current + 1, SCHEMA_VERSION + 1):
                try:
                    _MIGRATIONS[number - 1](conn)
                except DBAPIError as e:
                    raise SchemaError(f"{self!r}: migration {number} failed: {e.orig}") from e
                conn.execute(sa.insert(_version_table).values(version=number))
                log.info("store schema migrated to version %s", number)
        return SCHEMA_VERSION

    def schema_version(self) -> int:
        """The database's schema version (0 for an empty database)."""
        with self._tx(write=False) as conn:
            if not sa.inspect(conn).has_table("schema_version"):
                return 0
            return int(conn.scalar(sa.select(sa.func.max(_version_table.c.version))) or 0)

    # --- subscribers ----------------------------------------------------------------------------

    def add_subscriber(
        self,
        email: str,
        name: str,
        audiences: Iterable[str],
        now: datetime,
        status: str = "active",
        attributes: Mapping[str, object] | None = None,
    ) -> SubscriberChange:
        """Add an address to audiences, or update its name/attributes; idempotent.

        A new address gets ``status`` ("active" or "pending"); an existing one keeps its status.
        A name replaces the stored one when not empty; attributes are merged into the stored ones.
        Skipped (nothing written): a suppressed address, an address that unsubscribed, bounced or
        complained, or one whose only news would be an audience it left.

        Raises:
            InvalidEmailError: ``email`` is not a valid address.
        """
        _aware(now)
        _check_new_status(status)
        request = _Request(
            row=1, email=normalize_email(email), name=name.strip(),
            audiences=_audience_tuple(audiences), attributes=dict(attributes or {}),
        )
        with self._tx() as conn:
            return _upsert(conn, [request], now, status)[0]

    def import_rows(
        self,
        rows: Iterable[ImportRow],
        now: datetime,
        default_audiences: Iterable[str] = (),
        status: str = "active",
        batch_size: int = _CHUNK,
    ) -> ImportResult:
        """Add many addresses in one transaction, in steps of ``batch_size`` rows (each step: three
        reads, then batched inserts and updates). Each row has the effect (and is counted) as
        ``add_subscriber`` would, applied in input order; an invalid address is skipped, not fatal.
        """
        _aware(now)
        _check_new_status(status)
        if not 1 <= batch_size <= 5000:  # each step's keys go in one IN (...) list
            raise ValueError(f"batch_size must be 1..5000, got {batch_size}")
        defaults = _audience_tuple(default_audiences)
        counts = {"created": 0, "updated": 0, "unchanged": 0, "skipped": 0}
        problems: list[ImportProblem] = []

        def tally(change: SubscriberChange, row: int) -> None:
            counts[change.action] += 1
            if change.action == "skipped":
                problems.append(ImportProblem(row, change.email, change.reason))

        with self._tx() as conn:
            batch: list[_Request] = []
            for number, item in enumerate(rows, start=1):
                try:
                    address = normalize_email(item.email)
                except InvalidEmailError as e:
                    tally(SubscriberChange(item.email, "skipped", f"invalid address: {e.reason}"), number)
                    continue
                audiences = defaults if item.audiences is None else _audience_tuple(item.audiences)
                batch.append(_Request(number, address, item.name.strip(), audiences,
                                      dict(item.attributes or {})))
                if len(batch) >= batch_size:
                    for request, change in zip(batch, _upsert(conn, batch, now, status), strict=True):
                        tally(change, request.row)
                    batch = []
            if batch:
                for request, change in zip(batch, _upsert(conn, batch, now, status), strict=True):
                    tally(change, request.row)
        result = ImportResult(counts["created"], counts["updated"], counts["unchanged"],
                              counts["skipped"], tuple(problems))
        log.info("import: %s added, %s updated, %s unchanged, %s skipped",
                 result.added, result.updated, result.unchanged, result.skipped)
        return result

    def remove_subscriber(
        self, email: str, now: datetime, audience: str | None = None
    ) -> SubscriberChange:
        """Unsubscribe an address from one audience, or from all (then its status becomes
        "unsubscribed", unless it bounced or complained). The left audience stays recorded, so a
        later import does not add the address back. Unknown address: "skipped", "not found".

        Raises:
            InvalidEmailError: ``email`` is not a valid address.
        """
        _aware(now)
        address = normalize_email(email)
        with self._tx() as conn:
            row = _subscriber_row(conn, subscribers_t.c.email_key == address.lower())
            if row is None:
                return SubscriberChange(address, "skipped", "not found")
            changed = _leave(conn, row["id"], None if audience is None else [audience], now)
            if audience is None and row["status"] in ("pending", "active"):
                _update_subscriber(conn, row["id"], now, status="unsubscribed")
                changed = True
        action = "updated" if changed else "unchanged"
        return SubscriberChange(row["email"], action, subscriber_id=row["id"])

    def unsubscribe(self, subscriber_id: int, audience_id: str, now: datetime) -> bool:
        """Leave one audience (the one-click unsubscribe); True if something changed.

        Raises:
            NotFoundError: no such subscriber.
        """
        _aware(now)
        with self._tx() as conn:
            if _subscriber_row(conn, subscribers_t.c.id == subscriber_id) is None:
                raise NotFoundError("subscriber", subscriber_id)
            return _leave(conn, subscriber_id, [audience_id], now)

    def rejoin(self, subscriber_id: int, audiences: Iterable[str], now: datetime) -> list[str]:
        """A confirmed opt-in (a confirm link or the preferences page, both signed): make these
        memberships active, including audiences the address left, and re-activate an
        "unsubscribed" address. Never for a suppressed, bounced or complained one. Returns the
        audiences that became active.

        Raises:
            NotFoundError: no such subscriber.
        """
        _aware(now)
        wanted = _audience_tuple(audiences)
        s, m, x = subscribers_t, memberships_t, suppressions_t
        with self._tx() as conn:
            row = _subscriber_row(conn, s.c.id == subscriber_id)
            if row is None:
                raise NotFoundError("subscriber", subscriber_id)
            blocked = conn.scalar(sa.select(x.c.email_key).where(x.c.email_key == row["email_key"]))
            if blocked is not None or row["status"] in ("bounced", "complained"):
                return []
            joined = []
            for audience in wanted:
                changed = conn.execute(
                    sa.update(m)
                    .where(m.c.subscriber_id == subscriber_id, m.c.audience_id == audience,
                           m.c.status != "active")
                    .values(status="active", updated_at=now),
                    execution_options=_ROWCOUNT,
                ).rowcount
                inserted = _insert_if_absent(
                    conn, m,
                    {"subscriber_id": subscriber_id, "audience_id": audience, "status": "active",
                     "created_at": now, "updated_at": now},
                    ["subscriber_id", "audience_id"],
                )
                if changed or inserted:
                    joined.append(audience)
            if row["status"] == "unsubscribed" and joined:
                _update_subscriber(conn, subscriber_id, now, status="active")
            elif joined:
                _update_subscriber(conn, subscriber_id, now)
        return joined

    def forget_pending(self, created_before: datetime, now: datetime) -> int:
        """Delete subscribers still "pending" (never confirmed) created before the cut-off, with
        their memberships: unconfirmed addresses are not kept (data minimisation)."""
        _aware(created_before)
        _aware(now)
        s, m = subscribers_t, memberships_t
        with self._tx() as conn:
            stale = sa.select(s.c.id).where(s.c.status == "pending", s.c.created_at < created_before)
            conn.execute(sa.delete(m).where(m.c.subscriber_id.in_(stale)))
            gone = conn.execute(
                sa.delete(s).where(s.c.status == "pending", s.c.created_at < created_before),
                execution_options=_ROWCOUNT,
            ).rowcount
        if gone:
            log.info("forgot %s unconfirmed subscriber(s)", gone)
        return int(gone)

    def set_status(self, email: str, status: str, now: datetime) -> Subscriber:
        """Set an address's status (an operator's or a bounce handler's act; the only way back to
        "active" after an unsubscribe). Memberships are left as they are.

        Raises:
            NotFoundError: unknown address.  ValueError: unknown status.
        """
        _aware(now)
        if status not in SUBSCRIBER_STATUSES:
            raise ValueError(f"unknown subscriber status {status!r}; one of {SUBSCRIBER_STATUSES}")
        key = email_key(email)
        with self._tx() as conn:
            row = _subscriber_row(conn, subscribers_t.c.email_key == key)
            if row is None:
                raise NotFoundError("subscriber", email)
            if row["status"] != status:
                extra: dict[str, Any] = {}
                if status == "active" and row["confirmed_at"] is None:
                    extra["confirmed_at"] = now
                _update_subscriber(conn, row["id"], now, status=status, **extra)
            found = _subscriber_row(conn, subscribers_t.c.id == row["id"])
        assert found is not None
        return _subscriber(found)

    def confirm(self, subscriber_id: int, now: datetime) -> bool:
        """Double opt-in: "pending" becomes "active" (confirmed now). True if it changed; an
        address in any other status is left alone (a late confirm never undoes an unsubscribe).

        Raises:
            NotFoundError: no such subscriber.
        """
        _aware(now)
        with self._tx() as conn:
            row = _subscriber_row(conn, subscribers_t.c.id == subscriber_id)
            if row is None:
                raise NotFoundError("subscriber", subscriber_id)
            if row["status"] != "pending":
                return False
            _update_subscriber(conn, subscriber_id, now, status="active", confirmed_at=now)
            return True

    def get_subscriber(self, key: str | int) -> Subscriber | None:
        """The subscriber with this id, or this address (any case); None if unknown or invalid."""
        if isinstance(key, int):
            where = subscribers_t.c.id == key
        else:
            try:
                where = subscribers_t.c.email_key == email_key(key)
            except InvalidEmailError:
                return None
        with self._tx(write=False) as conn:
            row = _subscriber_row(conn, where)
        return None if row is None else _subscriber(row)

    def memberships(self, subscriber_id: int) -> dict[str, str]:
        """audience id -> "active" | "unsubscribed", for one subscriber."""
        m = memberships_t
        with self._tx(write=False) as conn:
            rows = conn.execute(
                sa.select(m.c.audience_id, m.c.status)
                .where(m.c.subscriber_id == subscriber_id)
                .order_by(m.c.audience_id)
            )
            return {audience: status for audience, status in rows}

    def list_subscribers(
        self, audience: str | None = None, status: str | None = None, page_size: int = 1000
    ) -> Iterator[Subscriber]:
        """Subscribers ordered by email_key, optionally only active members of one audience and/or
        one status. Streams in pages (keyset pagination, one short read per page), so it never
        holds all rows nor a long transaction; rows changed meanwhile may or may not be seen."""
        s, m = subscribers_t, memberships_t
        query = sa.select(s).order_by(s.c.email_key).limit(page_size)
        if audience is not None:
            query = query.join(m, m.c.subscriber_id == s.c.id).where(
                m.c.audience_id == audience, m.c.status == "active"
            )
        if status is not None:
            query = query.where(s.c.status == status)
        after: str | None = None
        while True:
            page = query if after is None else query.where(s.c.email_key > after)
            with self._tx(write=False) as conn:
                rows = conn.execute(page).mappings().all()
            yield from (_subscriber(row) for row in rows)
            if len(rows) < page_size:
                return
            after = rows[-1]["email_key"]

    def count_by_audience(self, status: str | None = "active") -> dict[str, int]:
        """Per audience, the subscribers with an active membership (and this subscriber status;
        None counts every status)."""
        s, m = subscribers_t, memberships_t
        query = (
            sa.select(m.c.audience_id, sa.func.count())
            .select_from(m.join(s, s.c.id == m.c.subscriber_id))
            .where(m.c.status == "active")
            .group_by(m.c.audience_id)
            .order_by(m.c.audience_id)
        )
        if status is not None:
            query = query.where(s.c.status == status)
        with self._tx(write=False) as conn:
            return {audience: int(count) for audience, count in conn.execute(query)}

    # --- suppressions ---------------------------------------------------------------------------

    def suppress(self, email: str, reason: str, now: datetime) -> bool:
        """Never send to this address again (hard bounce, complaint, legal request), whether or not
        it is a subscriber. True if newly suppressed; the first reason is kept.

        Raises:
            InvalidEmailError: ``email`` is not a valid address.
        """
        _aware(now)
        address = normalize_email(email)
        values = {"email_key": address.lower(), "email": address, "reason": reason, "created_at": now}
        with self._tx() as conn:
            return _insert_if_absent(conn, suppressions_t, values, ["email_key"])

    def is_suppressed(self, email: str) -> bool:
        """Whether the address (any case) is suppressed; False for an invalid address."""
        try:
            key = email_key(email)
        except InvalidEmailError:
            return False
        x = suppressions_t
        with self._tx(write=False) as conn:
            return conn.scalar(sa.select(x.c.email_key).where(x.c.email_key == key)) is not None

    # --- issues ---------------------------------------------------------------------------------

    def create_issue(
        self,
        audience_id: str,
        period: str,
        window_start: datetime,
        window_end: datetime,
        now: datetime,
        subject: str = "",
        preheader: str = "",
    ) -> tuple[Issue, bool]:
        """The issue of (audience, period), created as "draft" if absent; ``created`` tells which.
        Race-safe: of two processes creating the same issue, one inserts and the other gets that
        row back. An existing issue is returned as it is, whatever window was asked for.
        """
        for value in (window_start, window_end, now):
            _aware(value)
        if window_end < window_start:
            raise ValueError(f"window_end {window_end} is before window_start {window_start}")
        existing = self.get_issue(audience_id, period)
        if existing is not None:
            return existing, False
        values = {
            "audience_id": audience_id, "period": period, "status": "draft", "subject": subject,
            "preheader": preheader, "article_ids": [], "window_start": window_start,
            "window_end": window_end, "created_at": now,
        }
        try:
            with self._tx() as conn:
                conn.execute(sa.insert(issues_t).values(values))
        except ConflictError:
            # Another process inserted it between our look and our insert.
            log.debug("issue %s %s was created by another process first", audience_id, period)
        else:
            issue = self.get_issue(audience_id, period)
            assert issue is not None
            log.info("issue %s created for %s %s", issue.id, audience_id, period)
            return issue, True
        issue = self.get_issue(audience_id, period)
        if issue is None:  # the conflict was something else
            raise StoreError(f"could not create issue {audience_id} {period}")
        return issue, False

    def get_issue(self, audience_id: str, period: str) -> Issue | None:
        i = issues_t
        with self._tx(write=False) as conn:
            row = _one(conn, sa.select(i).where(i.c.audience_id == audience_id, i.c.period == period))
        return None if row is None else _issue(row)

    def get_issue_by_id(self, issue_id: int) -> Issue:
        """Raises NotFoundError for an unknown id."""
        with self._tx(write=False) as conn:
            return _issue(_issue_row(conn, issue_id))

    def save_rendered(
        self,
        issue_id: int,
        subject: str,
        preheader: str,
        html: str,
        text: str,
        article_ids: Sequence[str],
    ) -> Issue:
        """Store the rendered digest. Only a "draft" issue takes it: what is being sent or was
        sent never changes.

        Raises:
            NotFoundError: no such issue.  StateError: the issue is not a draft.
        """
        with self._tx() as conn:
            row = _issue_row(conn, issue_id, lock=True)
            if row["status"] != "draft":
                raise StateError("issue", issue_id, row["status"], "only a draft can be rendered")
            conn.execute(
                sa.update(issues_t).where(issues_t.c.id == issue_id).values(
                    subject=subject, preheader=preheader, html=html, text=text,
                    article_ids=list(article_ids),
                )
            )
            return _issue(_issue_row(conn, issue_id))

    def set_issue_status(self, issue_id: int, status: str, now: datetime) -> Issue:
        """Move an issue along draft -> sending -> sent (or skipped / failed; failed -> sending
        for a retry). Setting the current status again is a no-op. "sending" records started_at
        (once); sent, skipped and failed record finished_at.

        Raises:
            NotFoundError: no such issue.  StateError: a transition that is not allowed.
        """
        _aware(now)
        if status not in ISSUE_STATUSES:
            raise ValueError(f"unknown issue status {status!r}; one of {ISSUE_STATUSES}")
        with self._tx() as conn:
            row = _issue_row(conn, issue_id, lock=True)
            current = row["status"]
            if current == status:
                return _issue(row)
            if status not in _ISSUE_NEXT[current]:
                raise StateError("issue", issue_id, current, f"cannot become {status!r}")
            values: dict[str, Any] = {"status": status}
            if status == "sending":
                values["finished_at"] = None
                if row["started_at"] is None:
                    values["started_at"] = now
            else:
                values["finished_at"] = now
            conn.execute(sa.update(issues_t).where(issues_t.c.id == issue_id).values(values))
            return _issue(_issue_row(conn, issue_id))

    def last_issue(self, audience_id: str, statuses: Sequence[str] = ("sent",)) -> Issue | None:
        """The audience's issue with the latest window_end among these statuses."""
        i = issues_t
        query = (
            sa.select(i)
            .where(i.c.audience_id == audience_id, i.c.status.in_(list(statuses)))
            .order_by(i.c.window_end.desc(), i.c.id.desc())
            .limit(1)
        )
        with self._tx(write=False) as conn:
            row = _one(conn, query)
        return None if row is None else _issue(row)

    def list_issues(self, audience_id: str | None = None) -> list[Issue]:
        """Issues ordered by audience, then window_end."""
        i = issues_t
        query = sa.select(i).order_by(i.c.audience_id, i.c.window_end, i.c.id)
        if audience_id is not None:
            query = query.where(i.c.audience_id == audience_id)
        with self._tx(write=False) as conn:
            return [_issue(row) for row in conn.execute(query).mappings()]

    # --- deliveries -----------------------------------------------------------------------------

    def freeze_recipients(self, issue_id: int, audience_id: str, now: datetime) -> int:
        """Queue one delivery per active subscriber with an active membership of the audience and
        not suppressed, in one INSERT ... SELECT; returns how many were queued. Done once per
        issue: later calls queue nothing and return 0.

        Raises:
            NotFoundError: no such issue.  StoreError: ``audience_id`` is not the issue's.
            StateError: the issue is no longer draft or sending.
        """
        _aware(now)
        s, m, x, d = subscribers_t, memberships_t, suppressions_t, deliveries_t
        with self._tx() as conn:
            issue = _issue_row(conn, issue_id, lock=True)
            if issue["audience_id"] != audience_id:
                raise StoreError(
                    f"issue {issue_id} belongs to audience {issue['audience_id']!r}, not {audience_id!r}"
                )
            if issue["recipients_frozen_at"] is not None:
                return 0
            if issue["status"] not in ("draft", "sending"):
                raise StateError("issue", issue_id, issue["status"], "recipients can no longer be frozen")
            stamp = sa.literal(now, UTCDateTime())
            recipients = (
                sa.select(
                    sa.literal(issue_id, _ID), s.c.id, s.c.email, s.c.name,
                    sa.literal("queued", sa.String(16)), sa.literal(0, sa.Integer), stamp, stamp,
                )
                .select_from(s.join(m, m.c.subscriber_id == s.c.id))
                .where(
                    m.c.audience_id == audience_id, m.c.status == "active", s.c.status == "active",
                    ~sa.exists().where(x.c.email_key == s.c.email_key),
                )
                .order_by(s.c.id)
            )
            columns = ["issue_id", "subscriber_id", "email", "name", "status", "attempts",
                       "queued_at", "updated_at"]
            insert = sa.insert(d).from_select(columns, recipients)
            queued = conn.execute(insert, execution_options=_ROWCOUNT).rowcount
            conn.execute(
                sa.update(issues_t).where(issues_t.c.id == issue_id).values(recipients_frozen_at=now)
            )
        log.info("issue %s: %s recipients frozen for %s", issue_id, queued, audience_id)
        return int(queued)

    def claim_batch(self, issue_id: int, limit: int, now: datetime) -> list[Delivery]:
        """Atomically hand out up to ``limit`` queued deliveries, oldest first, as "sending" with
        attempts + 1. Each candidate is checked first: one whose subscriber is no longer active,
        left the audience or is suppressed becomes "suppressed" instead. An empty list means
        nothing is left to send.
        """
        _aware(now)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        s, m, x, d = subscribers_t, memberships_t, suppressions_t, deliveries_t
        claimed: list[int] = []
        with self._tx() as conn:
            audience = _issue_row(conn, issue_id)["audience_id"]
            member = sa.exists().where(
                s.c.id == d.c.subscriber_id, s.c.status == "active",
                m.c.subscriber_id == s.c.id, m.c.audience_id == audience, m.c.status == "active",
            )
            blocked = sa.exists().where(s.c.id == d.c.subscriber_id, x.c.email_key == s.c.email_key)
            while len(claimed) < limit:
                candidates = conn.execute(
                    sa.select(d.c.id, member.label("member"), blocked.label("blocked"))
                    .where(d.c.issue_id == issue_id, d.c.status == "queued")
                    .order_by(d.c.id)
                    .limit(limit - len(claimed))
                    .with_for_update(of=d, skip_locked=True)  # PostgreSQL; SQLite holds the write lock
                ).all()
                if not candidates:
                    break
                ok = [c.id for c in candidates if c.member and not c.blocked]
                for reason, ids in (
                    ("suppressed", [c.id for c in candidates if c.blocked]),
                    ("no longer an active member", [c.id for c in candidates if not c.member and not c.blocked]),
                ):
                    if ids:
                        conn.execute(
                            sa.update(d).where(d.c.id.in_(ids), d.c.status == "queued")
                            .values(status="suppressed", last_error=reason, updated_at=now)
                        )
                if ok:
                    conn.execute(
                        sa.update(d).where(d.c.id.in_(ok), d.c.status == "queued")
                        .values(status="sending", attempts=d.c.attempts + 1, updated_at=now)
                    )
                    claimed.extend(ok)
            if not claimed:
                return []
            rows = conn.execute(sa.select(d).where(d.c.id.in_(claimed)).order_by(d.c.id)).mappings()
            return [_delivery(row) for row in rows]

    def mark_sent(self, delivery_id: int, message_id: str, now: datetime) -> None:
        """A claimed delivery went out. Repeating it with the same message id is a no-op.

        Raises:
            NotFoundError: no such delivery.  StateError: the delivery was not "sending".
        """
        self._finish(delivery_id, "sent", now, message_id=message_id, sent_at=now)

    def mark_failed(self, delivery_id: int, error: str, now: datetime) -> None:
        """A claimed delivery was refused (permanent failure, or retries exhausted)."""
        self._finish(delivery_id, "failed", now, last_error=error)

    def mark_unknown(self, delivery_id: int, error: str, now: datetime) -> None:
        """A claimed delivery may or may not have gone out (e.g. the connection dropped after
        DATA): it is not retried automatically; an operator may ``requeue`` it."""
        self._finish(delivery_id, "unknown", now, last_error=error)

    def _finish(self, delivery_id: int, status: str, now: datetime, **values: Any) -> None:
        _aware(now)
        d = deliveries_t
        with self._tx() as conn:
            done = conn.execute(
                sa.update(d).where(d.c.id == delivery_id, d.c.status == "sending")
                .values(status=status, updated_at=now, **values)
            ).rowcount
            if done:
                return
            row = _one(conn, sa.select(d).where(d.c.id == delivery_id))
            if row is None:
                raise NotFoundError("delivery", delivery_id)
            if row["status"] == status and row["message_id"] == values.get("message_id", row["message_id"]):
                return  # a repeated call
            raise StateError("delivery", delivery_id, row["status"], f"only a claimed delivery can become {status!r}")

    def finish_many(
        self, outcomes: Sequence[tuple[int, str, str, str]], now: datetime
    ) -> None:
        """Record many claimed deliveries' outcomes in ONE transaction: (delivery_id, status,
        message_id, error) with status "sent", "failed" or "unknown". Like the single-row
        ``mark_*`` methods, only rows still in "sending" change (a repeat is a no-op)."""
        _aware(now)
        if not outcomes:
            return
        wrong = {status for _, status, _, _ in outcomes} - {"sent", "failed", "unknown"}
        if wrong:
            raise ValueError(f"finish_many: unknown outcome {sorted(wrong)}")
        d = deliveries_t
        statement = (
            sa.update(d)
            .where(d.c.id == sa.bindparam("b_id"), d.c.status == "sending")
            .values(
                status=sa.bindparam("b_status"),
                message_id=sa.bindparam("b_message_id"),
                last_error=sa.bindparam("b_error"),
                sent_at=sa.bindparam("b_sent_at"),
                updated_at=now,
            )
        )
        rows = [
            {
                "b_id": delivery_id,
                "b_status": status,
                "b_message_id": message_id,
                "b_error": error,
                "b_sent_at": now if status == "sent" else None,
            }
            for delivery_id, status, message_id, error in outcomes
        ]
        with self._tx() as conn:
            conn.execute(statement, rows)

    def release(self, delivery_ids: Sequence[int], now: datetime) -> int:
        """Give claimed deliveries that were never attempted (a pause or a stop came first) back
        to the queue, undoing the claim's attempt count. Only rows in "sending" change."""
        _aware(now)
        d = deliveries_t
        count = 0
        with self._tx() as conn:
            for start in range(0, len(delivery_ids), _CHUNK):
                chunk = list(delivery_ids[start : start + _CHUNK])
                count += conn.execute(
                    sa.update(d)
                    .where(d.c.id.in_(chunk), d.c.status == "sending")
                    .values(status="queued", attempts=d.c.attempts - 1, updated_at=now),
                    execution_options=_ROWCOUNT,
                ).rowcount
        return int(count)

    def requeue(
        self, issue_id: int, now: datetime, statuses: Sequence[str] = ("unknown", "sending")
    ) -> int:
        """An operator's retry: put deliveries in these statuses back in the queue; returns how
        many. Only for rows no sender is working on any more (see ``stale_sending``): a row
        requeued while its sender is still busy can be sent twice. Never touches sent rows.
        """
        _aware(now)
        wrong = [status for status in statuses if status not in _REQUEUEABLE]
        if wrong:
            raise ValueError(f"cannot requeue {wrong}; only {_REQUEUEABLE}")
        d = deliveries_t
        with self._tx() as conn:
            count = conn.execute(
                sa.update(d).where(d.c.issue_id == issue_id, d.c.status.in_(list(statuses)))
                .values(status="queued", updated_at=now)
            ).rowcount
        log.info("issue %s: %s deliveries requeued from %s", issue_id, count, list(statuses))
        return int(count)

    def delivery_counts(self, issue_id: int) -> dict[str, int]:
        """Deliveries of the issue per status, every status present (0 when none)."""
        d = deliveries_t
        counts = dict.fromkeys(DELIVERY_STATUSES, 0)
        query = (
            sa.select(d.c.status, sa.func.count())
            .where(d.c.issue_id == issue_id)
            .group_by(d.c.status)
        )
        with self._tx(write=False) as conn:
            counts.update({status: int(count) for status, count in conn.execute(query)})
        return counts

    def stale_sending(self, issue_id: int, older_than: datetime | None = None) -> list[Delivery]:
        """Deliveries still "sending" (claimed, never marked), optionally only those claimed before
        ``older_than``: after a crash these are the ones whose fate is unknown."""
        d = deliveries_t
        query = sa.select(d).where(d.c.issue_id == issue_id, d.c.status == "sending").order_by(d.c.id)
        if older_than is not None:
            _aware(older_than)
            query = query.where(d.c.updated_at < older_than)
        with self._tx(write=False) as conn:
            return [_delivery(row) for row in conn.execute(query).mappings()]

    def list_deliveries(
        self, issue_id: int, statuses: Sequence[str] | None = None, page_size: int = 1000
    ) -> Iterator[Delivery]:
        """The issue's deliveries by id, paged like ``list_subscribers``."""
        d = deliveries_t
        query = sa.select(d).where(d.c.issue_id == issue_id).order_by(d.c.id).limit(page_size)
        if statuses is not None:
            query = query.where(d.c.status.in_(list(statuses)))
        after = 0
        while True:
            with self._tx(write=False) as conn:
                rows = conn.execute(query.where(d.c.id > after)).mappings().all()
            yield from (_delivery(row) for row in rows)
            if len(rows) < page_size:
                return
            after = rows[-1]["id"]

    # --- leases ---------------------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, ttl_seconds: float, now: datetime) -> bool:
        """Take the lease ``name`` until now + ttl if it is free, expired or already ``owner``'s
        (then it is renewed). Atomic across processes; True if ``owner`` holds it now."""
        _aware(now)
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        expires = now + timedelta(seconds=ttl_seconds)
        k = locks_t
        with self._tx() as conn:
            taken = conn.execute(
                sa.update(k)
                .where(k.c.name == name, sa.or_(k.c.owner == owner, k.c.expires_at <= now))
                .values(owner=owner, expires_at=expires)
            ).rowcount
            if taken:
                return True
            values = {"name": name, "owner": owner, "expires_at": expires}
            return _insert_if_absent(conn, k, values, ["name"])

    def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        """(owner, expires_at) of the lease, or None when nobody ever took it."""
        k = locks_t
        with self._tx(write=False) as conn:
            row = _one(conn, sa.select(k.c.owner, k.c.expires_at).where(k.c.name == name))
        return None if row is None else (row["owner"], row["expires_at"])

    def take_over_lease(
        self, name: str, dead_owner: str, owner: str, ttl_seconds: float, now: datetime
    ) -> bool:
        """Take a lease from an owner the caller KNOWS is dead (e.g. a killed process on this
        host), whatever its expiry; only if ``dead_owner`` still holds it (compare and set)."""
        _aware(now)
        k = locks_t
        with self._tx() as conn:
            taken = conn.execute(
                sa.update(k)
                .where(k.c.name == name, k.c.owner == dead_owner)
                .values(owner=owner, expires_at=now + timedelta(seconds=ttl_seconds)),
                execution_options=_ROWCOUNT,
            ).rowcount
        return bool(taken)

    def release_lease(self, name: str, owner: str) -> bool:
        """Give the lease up; True if ``owner`` held it (an expired or foreign lease is untouched)."""
        k = locks_t
        with self._tx() as conn:
            gone = conn.execute(sa.delete(k).where(k.c.name == name, k.c.owner == owner)).rowcount
        return bool(gone)


# --- adding subscribers: a pure decision per row, then batched writes ---------------------------


@dataclass(frozen=True)
class _Request:
    row: int
    email: str  # normalised
    name: str
    audiences: tuple[str, ...]
    attributes: dict[str, object]

    @property
    def key(self) -> str:
        return self.email.lower()


@dataclass
class _State:
    """One address as stored (or as it will be once this step is written)."""

    email: str
    id: int | None = None
    status: str | None = None  # None: not in the store
    name: str = ""
    attributes: dict[str, object] = field(default_factory=dict)
    memberships: dict[str, str] = field(default_factory=dict)
    suppressed: bool = False

    def copy(self) -> _State:
        return _State(self.email, self.id, self.status, self.name, dict(self.attributes),
                      dict(self.memberships), self.suppressed)


def _decide(state: _State, request: _Request, status: str) -> SubscriberChange:
    """Apply one request to ``state`` (in place) and say what it did. Pure: no database."""
    email = state.email if state.status else request.email
    if state.suppressed:
        return SubscriberChange(email, "skipped", "suppressed", state.id)
    if state.status is None:
        state.email, state.status, state.name = request.email, status, request.name
        state.attributes = dict(request.attributes)
        state.memberships = dict.fromkeys(request.audiences, "active")
        return SubscriberChange(email, "created", subscriber_id=state.id)
    if state.status in _GONE:
        return SubscriberChange(email, "skipped", state.status, state.id)
    changed = False
    if request.name and request.name != state.name:
        state.name, changed = request.name, True
    merged = {**state.attributes, **request.attributes}
    if merged != state.attributes:
        state.attributes, changed = merged, True
    left = tuple(a for a in request.audiences if state.memberships.get(a) == "unsubscribed")
    for audience in request.audiences:
        if audience not in state.memberships:
            state.memberships[audience], changed = "active", True
    reason = f"left audience: {', '.join(left)}" if left else ""
    if changed:
        return SubscriberChange(email, "updated", reason, state.id, left)
    return SubscriberChange(email, "skipped" if left else "unchanged", reason, state.id, left)


def _upsert(
    conn: Connection, requests: Sequence[_Request], now: datetime, status: str
) -> list[SubscriberChange]:
    """Decide and write a step of requests; one change per request, in order."""
    s, m, x = subscribers_t, memberships_t, suppressions_t
    keys = list(dict.fromkeys(r.key for r in requests))
    before: dict[str, _State] = {}
    for row in conn.execute(sa.select(s).where(s.c.email_key.in_(keys))).mappings():
        before[row["email_key"]] = _State(row["email"], row["id"], row["status"], row["name"],
                                          dict(row["attributes"]))
    by_id = {state.id: state for state in before.values()}
    if by_id:
        query = sa.select(m.c.subscriber_id, m.c.audience_id, m.c.status).where(
            m.c.subscriber_id.in_(list(by_id))
        )
        for subscriber_id, audience, membership in conn.execute(query):
            by_id[subscriber_id].memberships[audience] = membership
    blocked = set(conn.scalars(sa.select(x.c.email_key).where(x.c.email_key.in_(keys))))
    after: dict[str, _State] = {}
    for key in keys:
        state = before.setdefault(key, _State(email=""))
        state.suppressed = key in blocked
        after[key] = state.copy()

    changes = [_decide(after[r.key], r, status) for r in requests]

    inserts = [k for k in keys if before[k].status is None and after[k].status is not None]
    if inserts:
        conn.execute(sa.insert(s), [
            {"email": after[k].email, "email_key": k, "name": after[k].name,
             "status": after[k].status, "created_at": now, "updated_at": now,
             "attributes": after[k].attributes} for k in inserts
        ])
        query = sa.select(s.c.email_key, s.c.id).where(s.c.email_key.in_(inserts))
        for key, subscriber_id in conn.execute(query):
            after[key].id = subscriber_id
    updates = [
        k for k in keys if before[k].status is not None
        and (before[k].name, before[k].attributes, before[k].memberships)
        != (after[k].name, after[k].attributes, after[k].memberships)
    ]
    if updates:
        conn.execute(
            sa.update(s).where(s.c.id == sa.bindparam("b_id")).values(
                name=sa.bindparam("b_name"), attributes=sa.bindparam("b_attributes", type_=JSONText),
                updated_at=sa.bindparam("b_now", type_=UTCDateTime),
            ),
            [{"b_id": after[k].id, "b_name": after[k].name, "b_attributes": after[k].attributes,
              "b_now": now} for k in updates],
        )
    joins = [
        {"subscriber_id": after[k].id, "audience_id": audience, "status": "active",
         "created_at": now, "updated_at": now}
        for k in keys for audience in after[k].memberships
        if audience not in before[k].memberships
    ]
    if joins:
        conn.execute(sa.insert(m), joins)
    # Ids of addresses created in this step are known only now.
    return [
        change if change.subscriber_id is not None or after[r.key].id is None
        else SubscriberChange(change.email, change.action, change.reason, after[r.key].id,
                              change.skipped_audiences)
        for r, change in zip(requests, changes, strict=True)
    ]


# --- helpers ------------------------------------------------------------------------------------


def _configure_sqlite(engine: sa.Engine) -> None:
    """WAL and a busy timeout so processes can share the file; foreign keys on; and our own
    BEGIN, so SQLite DDL is transactional and writers take the lock up front (no deadlock on
    upgrading a read lock)."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver stops issuing its own BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _insert_if_absent(
    conn: Connection, table: sa.Table, values: dict[str, Any], keys: list[str]
) -> bool:
    """Insert unless a row with the same key exists; True if inserted. Atomic on every dialect."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
        stmt = insert.values(values).on_conflict_do_nothing(index_elements=keys)
        return bool(conn.execute(stmt, execution_options=_ROWCOUNT).rowcount)
    try:  # other dialects: a savepoint, so that losing the race does not end the transaction
        with conn.begin_nested():
            conn.execute(sa.insert(table).values(values))
    except IntegrityError:
        return False
    return True


def _one(conn: Connection, query: sa.Select[Any]) -> RowMapping | None:
    return conn.execute(query).mappings().first()


def _subscriber_row(conn: Connection, where: sa.ColumnElement[bool]) -> RowMapping | None:
    return _one(conn, sa.select(subscribers_t).where(where))


def _issue_row(conn: Connection, issue_id: int, lock: bool = False) -> RowMapping:
    query = sa.select(issues_t).where(issues_t.c.id == issue_id)
    row = _one(conn, query.with_for_update() if lock else query)
    if row is None:
        raise NotFoundError("issue", issue_id)
    return row


def _update_subscriber(conn: Connection, subscriber_id: int, now: datetime, **values: Any) -> None:
    s = subscribers_t
    conn.execute(sa.update(s).where(s.c.id == subscriber_id).values(updated_at=now, **values))


def _leave(
    conn: Connection, subscriber_id: int, audiences: list[str] | None, now: datetime
) -> bool:
    """Mark memberships "unsubscribed" (all when ``audiences`` is None), recording a left audience
    even if the address was never in it; True if anything changed."""
    m = memberships_t
    where = [m.c.subscriber_id == subscriber_id, m.c.status != "unsubscribed"]
    if audiences is not None:
        where.append(m.c.audience_id.in_(audiences))
    changed = bool(conn.execute(
        sa.update(m).where(*where).values(status="unsubscribed", updated_at=now)
    ).rowcount)
    for audience in audiences or ():
        row = {"subscriber_id": subscriber_id, "audience_id": audience,
               "status": "unsubscribed", "created_at": now, "updated_at": now}
        changed |= _insert_if_absent(conn, m, row, ["subscriber_id", "audience_id"])
    if changed:
        _update_subscriber(conn, subscriber_id, now)
    return changed


def _subscriber(row: RowMapping) -> Subscriber:
    return Subscriber(
        id=row["id"], email=row["email"], email_key=row["email_key"], name=row["name"],
        status=row["status"], created_at=row["created_at"], updated_at=row["updated_at"],
        confirmed_at=row["confirmed_at"], attributes=dict(row["attributes"] or {}),
    )


def _issue(row: RowMapping) -> Issue:
    return Issue(
        id=row["id"], audience_id=row["audience_id"], period=row["period"], status=row["status"],
        window_start=row["window_start"], window_end=row["window_end"],
        created_at=row["created_at"], subject=row["subject"], preheader=row["preheader"],
        html=row["html"], text=row["text"], article_ids=tuple(row["article_ids"] or ()),
        started_at=row["started_at"], finished_at=row["finished_at"],
        recipients_frozen_at=row["recipients_frozen_at"],
    )


def _delivery(row: RowMapping) -> Delivery:
    return Delivery(
        id=row["id"], issue_id=row["issue_id"], subscriber_id=row["subscriber_id"],
        email=row["email"], name=row["name"], status=row["status"], attempts=row["attempts"],
        queued_at=row["queued_at"], updated_at=row["updated_at"], last_error=row["last_error"],
        message_id=row["message_id"], sent_at=row["sent_at"],
    )


def _aware(value: datetime) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got {value!r}")


def _check_new_status(status: str) -> None:
    if status not in ("active", "pending"):
        raise ValueError(f"a new subscriber is 'active' or 'pending', not {status!r}")


def _audience_tuple(audiences: Iterable[str]) -> tuple[str, ...]:
    if isinstance(audiences, str):
        raise ValueError(f"audiences must be a list of ids, not the string {audiences!r}")
    given = list(audiences)
    result = tuple(dict.fromkeys(a.strip() for a in given))
    if any(not a for a in result):
        raise ValueError(f"empty audience id in {given!r}")
    return result


def _masked(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"
