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

from ._base import (
    SCHEMA_VERSION,
    ConflictError,
    InvalidEmailError,
    NotFoundError,
    SchemaError,
    StateError,
    deliveries_t,
    email_key,
    issues_t,
    locks_t,
    memberships_t,
    normalize_email,
    subscribers_t,
    suppressions_t,
)
from .issues import IssueStore
from .leases import LeaseStore
from .subscribers import SubscriberStore


class Store(SubscriberStore, IssueStore, LeaseStore):
    """SQLAlchemy Core implementation of the newsletter store. See the module docstring."""


__all__ = [
    "SCHEMA_VERSION",
    "ConflictError",
    "InvalidEmailError",
    "NotFoundError",
    "SchemaError",
    "StateError",
    "Store",
    "email_key",
    "normalize_email",
    # the tables, for tests that check constraints at the database level
    "deliveries_t",
    "issues_t",
    "locks_t",
    "memberships_t",
    "subscribers_t",
    "suppressions_t",
]
