"""What every part of the store shares: errors, addresses, column types, the schema and its
migrations, the connection and transactions, and small row helpers."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from ..errors import StoreError
from ..model import (
    DELIVERY_STATUSES,
    ISSUE_STATUSES,
    SUBSCRIBER_STATUSES,
    Delivery,
    Issue,
    Subscriber,
)

log = logging.getLogger(__package__)


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

    def bind_processor(self, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
        """SQLAlchemy's processor (`process_bind_param`, then the dialect's own: on SQLite the
        text format), remembering its last value: a send step binds the same `now` to every
        row it records, and converting it again each time was a sixth of the ledger's CPU."""
        process = super().bind_processor(dialect)
        if process is None:  # pragma: no cover - a TypeDecorator always has one
            return None
        last: list[tuple[object, Any]] = [(None, None)]

        def remembered(value: Any) -> Any:
            seen, converted = last[0]  # one read: a thread sees a pair as it was stored
            if value is seen and value is not None:  # the same (immutable) object again
                return converted
            converted = process(value)
            last[0] = (value, converted)  # holding value keeps its identity from being reused
            return converted

        return remembered

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


class StoreBase:
    """The connection, transactions and schema version; the parts of `Store` build on it."""

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
    def open(cls, url: str, *, echo: bool = False) -> Self:
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

    def __enter__(self) -> Self:
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
