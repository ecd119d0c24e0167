"""The SQLite store: real database files under tmp_path, several Store objects and processes on
one file, no mocks. The SQL is dialect-neutral; these tests run on SQLite only."""

from __future__ import annotations

import multiprocessing
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from sqlalchemy.dialects.postgresql import dialect as postgresql_dialect
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from newsletter.errors import StoreError
from newsletter.model import DELIVERY_STATUSES, Claimed, ImportRow, Issue
from newsletter.store import (
    SCHEMA_VERSION,
    ConflictError,
    InvalidEmailError,
    NotFoundError,
    SchemaError,
    StateError,
    Store,
    email_key,
    normalize_email,
)
from newsletter.store._base import UTCDateTime

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def url_for(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.open(url_for(db_path)) as opened:
        yield opened


def new_issue(store: Store, audience: str = "beslissers", period: str = "2026-W48") -> Issue:
    issue, _ = store.create_issue(audience, period, NOW - WEEK, NOW, NOW)
    return issue


def add_many(store: Store, count: int, audience: str = "beslissers") -> None:
    rows = [ImportRow(f"lezer{n:05d}@example.nl", f"Lezer {n}") for n in range(count)]
    result = store.import_rows(rows, NOW, [audience])
    assert result.added == count


# --- migrations and opening -------------------------------------------------------------------


def test_fresh_database_is_migrated_to_the_current_schema(db_path: Path) -> None:
    bare = Store(url_for(db_path))
    assert bare.schema_version() == 0
    bare.close()
    with Store.open(url_for(db_path)) as store:
        assert store.schema_version() == SCHEMA_VERSION == 1
    engine = sa.create_engine(url_for(db_path))
    inspector = sa.inspect(engine)
    from newsletter import store as store_module

    for table in (store_module.subscribers_t, store_module.memberships_t, store_module.issues_t,
                  store_module.deliveries_t, store_module.suppressions_t, store_module.locks_t):
        # The query side and what migration 1 created agree (this guards later migrations).
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.c.keys())
    engine.dispose()


def test_sqlite_file_uses_wal_and_foreign_keys(store: Store, db_path: Path) -> None:
    from newsletter.store import memberships_t

    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    with pytest.raises(ConflictError, match="FOREIGN KEY"), store._tx() as conn:
        conn.execute(sa.insert(memberships_t).values(
            subscriber_id=42, audience_id="a", status="active", created_at=NOW, updated_at=NOW))


def test_migrate_again_is_a_no_op_and_keeps_data(db_path: Path) -> None:
    with Store.open(url_for(db_path)) as store:
        store.add_subscriber("a@example.nl", "A", ["x"], NOW)
        assert store.migrate() == SCHEMA_VERSION
    with Store.open(url_for(db_path)) as store:
        assert store.migrate() == SCHEMA_VERSION
        assert store.get_subscriber("a@example.nl") is not None
    raw = sqlite3.connect(db_path)
    assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    raw.close()


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    Store.open(url_for(db_path)).close()
    raw = sqlite3.connect(db_path)
    raw.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(SchemaError, match=r"version 2 is newer than this code knows \(1\)"):
        Store.open(url_for(db_path))


def test_foreign_tables_without_a_version_are_refused(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE subscribers (x TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(SchemaError, match="migration 1 failed"):
        Store.open(url_for(db_path))
    raw = sqlite3.connect(db_path)  # the failed migration left nothing behind
    tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    raw.close()
    assert tables == {"subscribers"}


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a database"):
        Store.open(url_for(bogus))


def test_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot use store URL"):
        Store("no-such-dialect://x")


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="aware"):
        store.add_subscriber("a@example.nl", "", [], datetime(2026, 11, 28, 8, 0))


# --- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_address", "stored"),
    [
        ("  Jan.Jansen@Example.NL ", "Jan.Jansen@example.nl"),
        ("a@XN--BCHER-KVA.de", "a@bücher.de"),
        ("Ünïcode@BÜCHER.de", "Ünïcode@bücher.de"),
    ],
)
def test_normalize_email(given_address: str, stored: str) -> None:
    assert normalize_email(given_address) == stored
    assert email_key(given_address) == stored.lower()


@pytest.mark.parametrize(
    "bad", ["", "jan", "jan@", "jan@localhost", "Jan <jan@example.nl>", "jan@example.nl\r\nBcc: x@y.nl",
            "a@b.test", "a b@example.nl"],
)
def test_bad_addresses_raise_a_value_error_with_the_address(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize_email(bad)
    assert isinstance(info.value, InvalidEmailError) and isinstance(info.value, StoreError)
    assert info.value.address == bad and info.value.reason


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(address=st.emails())
def test_property_normalisation_is_idempotent_and_keys_ignore_case(address: str) -> None:
    try:
        once = normalize_email(address)
    except InvalidEmailError:
        reject()
    assert normalize_email(once) == once
    assert normalize_email(f"  {once}\t") == once
    assert email_key(address.swapcase()) == email_key(once) == once.lower()
    assert once.split("@")[0] == address.split("@")[0]  # the local part is kept as given


# --- subscribers --------------------------------------------------------------------------------


def test_add_is_idempotent_and_case_insensitive(store: Store) -> None:
    first = store.add_subscriber("Jan@Example.NL", "Jan", ["beslissers"], NOW)
    assert (first.action, first.email) == ("created", "Jan@example.nl")
    assert first.subscriber_id is not None
    again = store.add_subscriber("JAN@example.nl", "Jan", ["beslissers"], NOW + WEEK)
    assert (again.action, again.subscriber_id) == ("unchanged", first.subscriber_id)
    assert [s.email for s in store.list_subscribers()] == ["Jan@example.nl"]  # first spelling kept
    found = store.get_subscriber("jAN@EXAMPLE.nl")
    assert found is not None and found.id == first.subscriber_id and found.email_key == "jan@example.nl"
    assert found.updated_at == NOW  # nothing changed, nothing written
    assert store.get_subscriber(first.subscriber_id) == found
    assert store.get_subscriber("not an address") is None
    assert store.get_subscriber(12345) is None


def test_the_database_itself_refuses_a_second_key(store: Store, db_path: Path) -> None:
    store.add_subscriber("jan@example.nl", "", [], NOW)
    raw = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute(
            "INSERT INTO subscribers (email, email_key, status, created_at, updated_at)"
            " VALUES ('JAN@example.nl', 'jan@example.nl', 'active', 'x', 'x')"
        )
    raw.close()


def test_add_updates_name_attributes_and_audiences(store: Store) -> None:
    store.add_subscriber("jan@example.nl", "Jan", ["a"], NOW, attributes={"org": "X", "n": 1})
    later = NOW + timedelta(hours=1)
    change = store.add_subscriber("jan@example.nl", "", ["a", "b"], later, attributes={"n": 2})
    assert change.action == "updated"
    subscriber = store.get_subscriber("jan@example.nl")
    assert subscriber is not None
    assert subscriber.name == "Jan"  # an empty name does not erase the stored one
    assert subscriber.attributes == {"org": "X", "n": 2}
    assert (subscriber.created_at, subscriber.updated_at) == (NOW, later)
    assert store.memberships(subscriber.id) == {"a": "active", "b": "active"}
    assert store.add_subscriber("jan@example.nl", "Jan de Vries", [], later).action == "updated"


def test_new_address_status_and_confirmation(store: Store) -> None:
    change = store.add_subscriber("p@example.nl", "", ["a"], NOW, status="pending")
    assert change.subscriber_id is not None
    # Adding it again as "active" does not skip the double opt-in.
    assert store.add_subscriber("p@example.nl", "", ["a"], NOW, status="active").action == "unchanged"
    pending = store.get_subscriber(change.subscriber_id)
    assert pending is not None and pending.status == "pending" and pending.confirmed_at is None
    assert store.confirm(change.subscriber_id, NOW + WEEK) is True
    assert store.confirm(change.subscriber_id, NOW + 2 * WEEK) is False
    active = store.get_subscriber(change.subscriber_id)
    assert active is not None and active.status == "active" and active.confirmed_at == NOW + WEEK
    with pytest.raises(ValueError):
        store.add_subscriber("q@example.nl", "", [], NOW, status="unsubscribed")
    with pytest.raises(NotFoundError):
        store.confirm(999, NOW)


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_add_and_import_never_reactivate(store: Store, status: str) -> None:
    store.add_subscriber("gone@example.nl", "Gone", ["a"], NOW)
    store.set_status("gone@example.nl", status, NOW)
    change = store.add_subscriber("GONE@example.nl", "New Name", ["a", "b"], NOW)
    assert (change.action, change.reason) == ("skipped", status)
    result = store.import_rows([ImportRow("gone@example.nl", "X")], NOW, ["b"])
    assert (result.skipped, result.problems[0].reason) == (1, status)
    subscriber = store.get_subscriber("gone@example.nl")
    assert subscriber is not None
    assert (subscriber.status, subscriber.name) == (status, "Gone")
    assert store.memberships(subscriber.id) == {"a": "active"}


def test_confirm_does_not_undo_an_unsubscribe(store: Store) -> None:
    change = store.add_subscriber("p@example.nl", "", ["a"], NOW, status="pending")
    assert change.subscriber_id is not None
    store.remove_subscriber("p@example.nl", NOW)
    assert store.confirm(change.subscriber_id, NOW) is False
    subscriber = store.get_subscriber(change.subscriber_id)
    assert subscriber is not None and subscriber.status == "unsubscribed"


def test_a_left_audience_is_not_added_back(store: Store) -> None:
    store.add_subscriber("jan@example.nl", "", ["a", "b"], NOW)
    removed = store.remove_subscriber("Jan@Example.nl", NOW, audience="b")
    assert removed.action == "updated"
    assert store.remove_subscriber("jan@example.nl", NOW, audience="b").action == "unchanged"
    skipped = store.add_subscriber("jan@example.nl", "", ["b"], NOW)
    assert (skipped.action, skipped.reason, skipped.skipped_audiences) == ("skipped", "left audience: b", ("b",))
    partly = store.add_subscriber("jan@example.nl", "", ["b", "c"], NOW)
    assert (partly.action, partly.skipped_audiences) == ("updated", ("b",))
    assert partly.subscriber_id is not None
    assert store.memberships(partly.subscriber_id) == {"a": "active", "b": "unsubscribed", "c": "active"}
    subscriber = store.get_subscriber("jan@example.nl")
    assert subscriber is not None and subscriber.status == "active"


def test_leaving_an_audience_never_joined_is_recorded(store: Store) -> None:
    change = store.add_subscriber("jan@example.nl", "", ["a"], NOW)
    assert change.subscriber_id is not None
    assert store.unsubscribe(change.subscriber_id, "b", NOW) is True
    assert store.unsubscribe(change.subscriber_id, "b", NOW) is False  # one-click POST repeated
    assert store.add_subscriber("jan@example.nl", "", ["b"], NOW).action == "skipped"
    with pytest.raises(NotFoundError):
        store.unsubscribe(999, "a", NOW)


def test_remove_from_all_audiences(store: Store) -> None:
    store.add_subscriber("jan@example.nl", "", ["a", "b"], NOW)
    change = store.remove_subscriber("jan@example.nl", NOW)
    assert change.action == "updated"
    assert store.remove_subscriber("jan@example.nl", NOW).action == "unchanged"
    subscriber = store.get_subscriber("jan@example.nl")
    assert subscriber is not None and subscriber.status == "unsubscribed"
    assert store.memberships(subscriber.id) == {"a": "unsubscribed", "b": "unsubscribed"}
    assert store.remove_subscriber("nobody@example.nl", NOW).reason == "not found"
    # A bounced address keeps its stronger status.
    store.add_subscriber("b@example.nl", "", ["a"], NOW)
    store.set_status("b@example.nl", "bounced", NOW)
    store.remove_subscriber("b@example.nl", NOW)
    bounced = store.get_subscriber("b@example.nl")
    assert bounced is not None and bounced.status == "bounced"


def test_set_status_is_the_way_back(store: Store) -> None:
    store.add_subscriber("jan@example.nl", "", ["a"], NOW)
    store.remove_subscriber("jan@example.nl", NOW, audience=None)
    back = store.set_status("JAN@example.nl", "active", NOW + WEEK)
    assert back.status == "active" and back.updated_at == NOW + WEEK
    with pytest.raises(NotFoundError):
        store.set_status("nobody@example.nl", "active", NOW)
    with pytest.raises(ValueError, match="unknown subscriber status"):
        store.set_status("jan@example.nl", "gone", NOW)


def test_suppressed_addresses_are_not_added(store: Store) -> None:
    assert store.suppress("Spam@Example.nl", "complaint", NOW) is True
    assert store.suppress("spam@example.NL", "again", NOW) is False
    assert store.is_suppressed("SPAM@example.nl") and not store.is_suppressed("other@example.nl")
    assert not store.is_suppressed("not an address")
    change = store.add_subscriber("spam@example.nl", "", ["a"], NOW)
    assert (change.action, change.reason) == ("skipped", "suppressed")
    assert store.get_subscriber("spam@example.nl") is None
    with pytest.raises(InvalidEmailError):
        store.suppress("nope", "x", NOW)


def test_list_subscribers_streams_in_key_order(store: Store) -> None:
    addresses = [f"{c}{n}@example.nl" for n in range(5) for c in "Bca"]
    for n, address in enumerate(addresses):
        store.add_subscriber(address, "", ["even" if n % 2 == 0 else "odd"], NOW)
    store.remove_subscriber("a0@example.nl", NOW, audience=None)
    listed = store.list_subscribers(page_size=2)
    assert iter(listed) is listed  # a generator, not a list
    keys = [s.email_key for s in listed]
    assert keys == sorted(a.lower() for a in addresses)
    even = [s.email for s in store.list_subscribers(audience="even", page_size=3)]
    assert even == sorted((a for n, a in enumerate(addresses) if n % 2 == 0 and a != "a0@example.nl"),
                          key=str.lower)
    gone = list(store.list_subscribers(status="unsubscribed", page_size=1))
    assert [s.email for s in gone] == ["a0@example.nl"]
    assert list(store.list_subscribers(audience="nobody")) == []


def test_count_by_audience(store: Store) -> None:
    store.import_rows([ImportRow(f"r{n}@example.nl") for n in range(5)], NOW, ["a"])
    store.add_subscriber("r0@example.nl", "", ["b"], NOW)
    store.add_subscriber("p@example.nl", "", ["a"], NOW, status="pending")
    store.remove_subscriber("r1@example.nl", NOW, audience="a")
    assert store.count_by_audience() == {"a": 4, "b": 1}
    assert store.count_by_audience(status=None) == {"a": 5, "b": 1}
    assert store.count_by_audience(status="pending") == {"a": 1}


# --- imports ------------------------------------------------------------------------------------


def test_import_is_idempotent(store: Store) -> None:
    rows = [ImportRow(f"lezer{n}@example.nl", f"Lezer {n}") for n in range(20)]
    first = store.import_rows(rows, NOW, ["a"], batch_size=7)
    assert (first.added, first.updated, first.unchanged, first.skipped) == (20, 0, 0, 0)
    second = store.import_rows(rows, NOW + WEEK, ["a"], batch_size=7)
    assert (second.added, second.updated, second.unchanged, second.skipped) == (0, 0, 20, 0)
    assert store.count_by_audience() == {"a": 20}


def test_import_counts_each_row_with_reasons(store: Store) -> None:
    store.add_subscriber("left@example.nl", "", ["a"], NOW)
    store.remove_subscriber("left@example.nl", NOW)
    store.suppress("blocked@example.nl", "hard bounce", NOW)
    rows = [
        ImportRow("new@example.nl", "New"),  # 1 added
        ImportRow("not-an-address"),  # 2 skipped: invalid
        ImportRow("NEW@example.nl", audiences=("b",)),  # 3 updated: same address, new audience
        ImportRow("new@example.nl"),  # 4 unchanged
        ImportRow("left@example.nl"),  # 5 skipped: unsubscribed
        ImportRow("blocked@example.nl"),  # 6 skipped: suppressed
        ImportRow("other@example.nl", attributes={"k": "v"}),  # 7 added
    ]
    result = store.import_rows(rows, NOW, ["a"], batch_size=2)
    assert (result.added, result.updated, result.unchanged, result.skipped) == (2, 1, 1, 3)
    assert result.total == len(rows)
    assert [(p.row, p.email) for p in result.problems] == [
        (2, "not-an-address"), (5, "left@example.nl"), (6, "blocked@example.nl")]
    assert result.skipped_by_reason() == {"invalid address": 1, "unsubscribed": 1, "suppressed": 1}
    new = store.get_subscriber("new@example.nl")
    assert new is not None and new.name == "New" and store.memberships(new.id) == {"a": "active", "b": "active"}
    other = store.get_subscriber("other@example.nl")
    assert other is not None and other.attributes == {"k": "v"}


_addresses = st.sampled_from(["a@example.nl", "A@example.nl", "b@example.nl", "c@Example.NL", "bad"])
_rows = st.builds(
    ImportRow,
    email=_addresses,
    name=st.sampled_from(["", "An", "Bo"]),
    audiences=st.none() | st.lists(st.sampled_from(["x", "y", "z"]), max_size=2).map(tuple),
    attributes=st.none() | st.fixed_dictionaries({"k": st.integers(0, 2)}),
)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(st.tuples(_addresses.filter(lambda a: a != "bad"), st.sampled_from(["x", "y"]),
                              st.sampled_from(["leave", "unsubscribe", "suppress", "bounce", "none"])),
                    max_size=3),
    rows=st.lists(_rows, max_size=12),
    batch_size=st.integers(1, 5),
)
def test_property_import_equals_adding_rows_one_by_one(
    before: list[tuple[str, str, str]], rows: list[ImportRow], batch_size: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        one, many = (Store.open(url_for(Path(folder) / name)) for name in ("one.db", "many.db"))
        try:
            for store in (one, many):
                for address, audience, event in before:
                    store.add_subscriber(address, "", [audience], NOW)
                    if event == "leave":
                        store.remove_subscriber(address, NOW, audience=audience)
                    elif event == "unsubscribe":
                        store.remove_subscriber(address, NOW)
                    elif event == "suppress":
                        store.suppress(address, "test", NOW)
                    elif event == "bounce":
                        store.set_status(address, "bounced", NOW)
            expected = {"created": 0, "updated": 0, "unchanged": 0, "skipped": 0}
            for row in rows:
                try:
                    change = one.add_subscriber(row.email, row.name, row.audiences or ("x",), NOW,
                                                attributes=row.attributes)
                except InvalidEmailError:
                    expected["skipped"] += 1
                    continue
                expected[change.action] += 1
            result = many.import_rows(
                [ImportRow(r.email, r.name, r.audiences or None, r.attributes) for r in rows],
                NOW, ["x"], batch_size=batch_size,
            )
            got = {"created": result.added, "updated": result.updated,
                   "unchanged": result.unchanged, "skipped": result.skipped}
            assert got == expected

            def state(store: Store) -> list[tuple[object, ...]]:
                return [(s.email, s.name, s.status, s.attributes, store.memberships(s.id))
                        for s in store.list_subscribers()]

            assert state(many) == state(one)
        finally:
            one.close()
            many.close()


# --- issues -------------------------------------------------------------------------------------


def test_create_issue_once_per_audience_and_period(store: Store) -> None:
    start = datetime(2026, 11, 21, 8, 0, tzinfo=AMSTERDAM)
    end = datetime(2026, 11, 28, 8, 0, tzinfo=AMSTERDAM)
    issue, created = store.create_issue("a", "2026-W48", start, end, NOW, subject="Week 48")
    assert created and issue.status == "draft" and issue.subject == "Week 48"
    assert issue.window_start == start and issue.window_start.tzinfo is UTC  # aware UTC out
    again, created_again = store.create_issue("a", "2026-W48", start, end + WEEK, NOW + WEEK)
    assert not created_again and again == issue
    other, created_other = store.create_issue("b", "2026-W48", start, end, NOW)
    assert created_other and other.id != issue.id
    assert store.get_issue("a", "2026-W48") == issue
    assert store.get_issue("a", "2026-W49") is None
    assert store.get_issue_by_id(issue.id) == issue
    with pytest.raises(NotFoundError):
        store.get_issue_by_id(999)
    with pytest.raises(ValueError, match="before window_start"):
        store.create_issue("a", "2026-W50", end, start, NOW)


def test_create_issue_from_two_stores_on_one_file(db_path: Path) -> None:
    with Store.open(url_for(db_path)) as first, Store.open(url_for(db_path)) as second:
        issue, created = first.create_issue("a", "2026-W48", NOW - WEEK, NOW, NOW)
        same, created_again = second.create_issue("a", "2026-W48", NOW - WEEK, NOW, NOW)
        assert created and not created_again and same.id == issue.id
        assert len(first.list_issues()) == 1


def test_issue_uniqueness_is_enforced_by_the_database(store: Store) -> None:
    from newsletter.store import issues_t

    new_issue(store, "a", "2026-W48")
    with pytest.raises(ConflictError), store._tx() as conn:
        conn.execute(sa.insert(issues_t).values(
            audience_id="a", period="2026-W48", status="draft", window_start=NOW,
            window_end=NOW, created_at=NOW))


def test_issue_status_transitions(store: Store) -> None:
    issue = new_issue(store)
    rendered = store.save_rendered(issue.id, "Subject", "Pre", "<p>x</p>", "x", ["id-1", "id-2"])
    assert (rendered.subject, rendered.article_ids) == ("Subject", ("id-1", "id-2"))
    sending = store.set_issue_status(issue.id, "sending", NOW)
    assert sending.started_at == NOW and sending.finished_at is None
    assert store.set_issue_status(issue.id, "sending", NOW + WEEK) == sending  # no-op
    with pytest.raises(StateError, match="only a draft"):
        store.save_rendered(issue.id, "Other", "", "", "", [])
    failed = store.set_issue_status(issue.id, "failed", NOW + timedelta(hours=1))
    assert failed.finished_at == NOW + timedelta(hours=1)
    retry = store.set_issue_status(issue.id, "sending", NOW + timedelta(hours=2))
    assert retry.started_at == NOW and retry.finished_at is None  # the first start is kept
    sent = store.set_issue_status(issue.id, "sent", NOW + timedelta(hours=3))
    assert sent.status == "sent" and sent.finished_at == NOW + timedelta(hours=3)
    with pytest.raises(StateError, match="cannot become 'draft'"):
        store.set_issue_status(issue.id, "draft", NOW)
    # an operator's --retry-unknown re-opens a sent issue; its first start is still kept
    reopened = store.set_issue_status(issue.id, "sending", NOW + timedelta(hours=4))
    assert reopened.started_at == NOW and reopened.finished_at is None
    skipped = new_issue(store, "b", "2026-W49")
    store.set_issue_status(skipped.id, "skipped", NOW)
    with pytest.raises(StateError, match="cannot become 'sending'"):
        store.set_issue_status(skipped.id, "sending", NOW)
    with pytest.raises(ValueError):
        store.set_issue_status(issue.id, "done", NOW)
    with pytest.raises(NotFoundError):
        store.set_issue_status(999, "sent", NOW)


def test_last_issue_and_list_issues(store: Store) -> None:
    assert store.last_issue("a") is None
    made = []
    for week in (46, 48, 47):
        end = NOW - (48 - week) * WEEK
        issue, _ = store.create_issue("a", f"2026-W{week}", end - WEEK, end, NOW)
        made.append(issue)
    new_issue(store, "b", "2026-W48")
    for issue in made[:2]:  # weeks 46 and 48 are sent, 47 is skipped
        store.set_issue_status(issue.id, "sending", NOW)
        store.set_issue_status(issue.id, "sent", NOW)
    store.set_issue_status(made[2].id, "skipped", NOW)
    last = store.last_issue("a")
    assert last is not None and last.period == "2026-W48"
    store.create_issue("a", "2026-W49", NOW, NOW + WEEK, NOW)
    last_any = store.last_issue("a", statuses=("sent", "skipped", "draft"))
    assert last_any is not None and last_any.period == "2026-W49"
    assert [i.period for i in store.list_issues("a")] == ["2026-W46", "2026-W47", "2026-W48", "2026-W49"]
    assert [i.audience_id for i in store.list_issues()] == ["a"] * 4 + ["b"]


# --- deliveries ---------------------------------------------------------------------------------


def test_freeze_queues_active_members_once(store: Store) -> None:
    store.import_rows([ImportRow(f"r{n}@example.nl", f"R{n}") for n in range(6)], NOW, ["a"])
    store.add_subscriber("R0@EXAMPLE.NL", "", ["a", "b"], NOW)  # the same person again
    store.add_subscriber("other@example.nl", "", ["b"], NOW)  # another audience
    store.add_subscriber("pending@example.nl", "", ["a"], NOW, status="pending")
    store.remove_subscriber("r1@example.nl", NOW, audience="a")  # left this audience
    store.remove_subscriber("r2@example.nl", NOW)  # left everything
    store.set_status("r3@example.nl", "bounced", NOW)
    store.suppress("R4@example.nl", "complaint", NOW)  # suppressed, still a member
    issue = new_issue(store, "a")
    assert store.freeze_recipients(issue.id, "a", NOW) == 2
    frozen = store.get_issue_by_id(issue.id)
    assert frozen.recipients_frozen_at == NOW
    deliveries = list(store.list_deliveries(issue.id))
    assert [(d.email, d.name, d.status, d.attempts) for d in deliveries] == [
        ("r0@example.nl", "R0", "queued", 0), ("r5@example.nl", "R5", "queued", 0)]
    # Frozen: later subscribers are not added, a second freeze adds nothing.
    store.add_subscriber("late@example.nl", "", ["a"], NOW)
    assert store.freeze_recipients(issue.id, "a", NOW + WEEK) == 0
    assert store.delivery_counts(issue.id)["queued"] == 2
    with pytest.raises(StoreError, match="belongs to audience 'a'"):
        store.freeze_recipients(issue.id, "b", NOW)


def test_freeze_keeps_the_address_and_name_of_that_moment(store: Store) -> None:
    store.add_subscriber("jan@example.nl", "Jan", ["a"], NOW)
    issue = new_issue(store, "a")
    store.freeze_recipients(issue.id, "a", NOW)
    store.add_subscriber("jan@example.nl", "Jan de Vries", ["a"], NOW)
    [delivery] = store.claim_batch(issue.id, 10, NOW)
    assert (delivery.email, delivery.name) == ("jan@example.nl", "Jan")


def test_freeze_refused_after_the_issue_is_done(store: Store) -> None:
    issue = new_issue(store)
    store.set_issue_status(issue.id, "skipped", NOW)
    with pytest.raises(StateError):
        store.freeze_recipients(issue.id, issue.audience_id, NOW)


def test_claim_batch_hands_out_each_delivery_once(store: Store) -> None:
    add_many(store, 25)
    issue = new_issue(store)
    assert store.freeze_recipients(issue.id, "beslissers", NOW) == 25
    batches = []
    while batch := store.claim_batch(issue.id, 10, NOW):
        assert all(d.status == "sending" and d.attempts == 1 for d in batch)
        batches.append([d.id for d in batch])
    assert [len(b) for b in batches] == [10, 10, 5]
    flat = [i for b in batches for i in b]
    assert flat == sorted(flat) and len(set(flat)) == 25
    assert store.delivery_counts(issue.id) == dict.fromkeys(DELIVERY_STATUSES, 0) | {"sending": 25}
    with pytest.raises(ValueError):
        store.claim_batch(issue.id, 0, NOW)


def test_claim_batch_honours_changes_after_the_freeze(store: Store) -> None:
    add_many(store, 10)
    issue = new_issue(store)
    store.freeze_recipients(issue.id, "beslissers", NOW)
    store.remove_subscriber("lezer00001@example.nl", NOW, audience="beslissers")
    store.remove_subscriber("lezer00002@example.nl", NOW)
    store.set_status("lezer00003@example.nl", "complained", NOW)
    store.suppress("LEZER00004@example.nl", "hard bounce", NOW)
    later = NOW + timedelta(minutes=5)
    batch = store.claim_batch(issue.id, 4, later)
    # Four candidates were no longer eligible; the batch is still filled with four others.
    assert [d.email for d in batch] == [f"lezer{n:05d}@example.nl" for n in (0, 5, 6, 7)]
    suppressed = list(store.list_deliveries(issue.id, statuses=["suppressed"]))
    assert [(d.email, d.last_error, d.updated_at) for d in suppressed] == [
        ("lezer00001@example.nl", "no longer an active member", later),
        ("lezer00002@example.nl", "no longer an active member", later),
        ("lezer00003@example.nl", "no longer an active member", later),
        ("lezer00004@example.nl", "suppressed", later),
    ]
    assert store.delivery_counts(issue.id)["queued"] == 2


def test_delivery_outcomes(store: Store) -> None:
    add_many(store, 4)
    issue = new_issue(store)
    store.freeze_recipients(issue.id, "beslissers", NOW)
    queued = list(store.list_deliveries(issue.id))
    with pytest.raises(StateError, match="only a claimed delivery"):
        store.mark_sent(queued[0].id, "<m0@example.nl>", NOW)  # not claimed yet
    a, b, c, d = store.claim_batch(issue.id, 4, NOW)
    sent_at = NOW + timedelta(seconds=3)
    store.mark_sent(a.id, "<m1@example.nl>", sent_at)
    store.mark_sent(a.id, "<m1@example.nl>", sent_at + WEEK)  # repeated: no-op
    with pytest.raises(StateError):
        store.mark_sent(a.id, "<other@example.nl>", sent_at)
    store.mark_failed(b.id, "550 5.1.1 no such user", sent_at)
    store.mark_unknown(c.id, "connection lost after DATA", sent_at)
    with pytest.raises(NotFoundError):
        store.mark_sent(999, "x", NOW)
    with pytest.raises(StateError):
        store.mark_failed(a.id, "too late", NOW)
    by_id = {x.id: x for x in store.list_deliveries(issue.id)}
    assert (by_id[a.id].status, by_id[a.id].message_id, by_id[a.id].sent_at) == ("sent", "<m1@example.nl>", sent_at)
    assert (by_id[b.id].status, by_id[b.id].last_error) == ("failed", "550 5.1.1 no such user")
    assert by_id[c.id].status == "unknown" and by_id[c.id].sent_at is None
    assert store.delivery_counts(issue.id) == {
        "queued": 0, "sending": 1, "sent": 1, "failed": 1, "unknown": 1, "suppressed": 0}
    assert [x.id for x in store.stale_sending(issue.id)] == [d.id]


def test_stale_sending_and_operator_requeue(store: Store) -> None:
    add_many(store, 3)
    issue = new_issue(store)
    store.freeze_recipients(issue.id, "beslissers", NOW)
    first, second = store.claim_batch(issue.id, 2, NOW)
    store.mark_unknown(first.id, "timeout", NOW)
    third, = store.claim_batch(issue.id, 1, NOW + timedelta(minutes=30))
    assert [x.id for x in store.stale_sending(issue.id)] == [second.id, third.id]
    assert [x.id for x in store.stale_sending(issue.id, older_than=NOW + timedelta(minutes=10))] == [second.id]
    with pytest.raises(ValueError, match="cannot requeue"):
        store.requeue(issue.id, NOW, statuses=("sent",))
    assert store.requeue(issue.id, NOW + timedelta(hours=1)) == 3
    again = store.claim_batch(issue.id, 10, NOW + timedelta(hours=1))
    assert [(x.id, x.attempts) for x in again] == [(first.id, 2), (second.id, 2), (third.id, 2)]
    assert again[0].last_error == "timeout"  # the history stays visible


def test_finish_many_and_release(store: Store) -> None:
    add_many(store, 5)
    issue = new_issue(store)
    store.freeze_recipients(issue.id, "beslissers", NOW)
    a, b, c, d, e = store.claim_batch(issue.id, 5, NOW)
    later = NOW + timedelta(seconds=5)
    store.finish_many([(a.id, "sent", "<a@x>", ""), (b.id, "failed", "<b@x>", "550 no"),
                       (c.id, "unknown", "<c@x>", "dropped")], later)
    store.finish_many([(a.id, "failed", "", "too late")], later)  # a finished row stays finished
    with pytest.raises(ValueError, match="unknown outcome"):
        store.finish_many([(d.id, "queued", "", "")], later)
    assert store.release([d.id, e.id, a.id], later) == 2  # only rows still "sending"
    by_id = {x.id: x for x in store.list_deliveries(issue.id)}
    assert (by_id[a.id].status, by_id[a.id].message_id, by_id[a.id].sent_at) == ("sent", "<a@x>", later)
    assert (by_id[b.id].status, by_id[b.id].last_error) == ("failed", "550 no")
    assert by_id[c.id].status == "unknown" and by_id[c.id].sent_at is None
    assert (by_id[d.id].status, by_id[d.id].attempts) == ("queued", 0)  # never attempted
    assert [x.id for x in store.claim_batch(issue.id, 5, later)] == [d.id, e.id]



@pytest.mark.parametrize("dialect", [sqlite_dialect(), postgresql_dialect()])
def test_the_timestamp_bind_processor_reuses_only_a_conversion_of_the_same_object(
    dialect: sa.Dialect,
) -> None:
    # UTCDateTime remembers its last conversion (a send step binds one `now` to every row): it
    # must give exactly what SQLAlchemy's processor gives, for the same object only.
    remembered = UTCDateTime().bind_processor(dialect)
    plain = sa.types.TypeDecorator.bind_processor(UTCDateTime(), dialect)
    assert remembered is not None and plain is not None
    a = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    same_instant = a.astimezone(AMSTERDAM)  # equal to a, another object
    other = a + timedelta(microseconds=1)
    for value in (a, a, same_instant, a, None, other, other, a):
        assert remembered(value) == plain(value)
    naive = datetime(2026, 11, 28, 8, 0)
    for _ in range(2):  # a refused value is never remembered
        with pytest.raises(ValueError, match="naive"):
            remembered(naive)


def test_one_timestamp_for_many_rows_is_stored_as_for_one_row(store: Store, db_path: Path) -> None:
    add_many(store, 3)
    issue = new_issue(store)
    store.freeze_recipients(issue.id, "beslissers", NOW)
    a, b, c = store.claim_batch(issue.id, 3, NOW)
    later = datetime(2026, 11, 28, 9, 30, 15, 250000, tzinfo=AMSTERDAM)
    store.finish_many([(a.id, "sent", "<a@x>", ""), (b.id, "sent", "<b@x>", "")], later)
    store.finish_many([(c.id, "sent", "<c@x>", "")], later.astimezone(UTC))
    with sqlite3.connect(db_path) as raw:  # the text SQLite holds, not what reading makes of it
        stored = raw.execute(
            "SELECT sent_at, updated_at FROM deliveries WHERE id IN (?, ?, ?) ORDER BY id",
            (a.id, b.id, c.id),
        ).fetchall()
    assert stored == [("2026-11-28 08:30:15.250000",) * 2] * 3

def test_record_and_claim_is_one_step_of_the_send_loop(store: Store) -> None:
    add_many(store, 6)
    issue = new_issue(store)
    store.freeze_recipients(issue.id, "beslissers", NOW)
    first = store.record_and_claim((), (), issue.id, 3, NOW)
    assert [type(c) for c in first] == [Claimed] * 3
    full = {d.id: d for d in store.list_deliveries(issue.id)}
    assert [(c.subscriber_id, c.email, c.name) for c in first] == [
        (full[c.id].subscriber_id, full[c.id].email, full[c.id].name) for c in first
    ]
    assert all(full[c.id].status == "sending" and full[c.id].attempts == 1 for c in first)
    a, b, c = first
    later = NOW + timedelta(seconds=5)
    second = store.record_and_claim(
        [(a.id, "sent", "<a@x>", ""), (b.id, "unknown", "<b@x>", "dropped")], [c.id], issue.id, 2, later
    )
    by_id = {x.id: x for x in store.list_deliveries(issue.id)}
    assert (by_id[a.id].status, by_id[a.id].sent_at) == ("sent", later)
    assert by_id[b.id].status == "unknown"
    # c was released (its attempt undone) and, the oldest queued again, claimed in the same step
    assert (by_id[c.id].status, by_id[c.id].attempts) == ("sending", 1)
    assert [x.id for x in second] == [c.id, min(set(by_id) - {a.id, b.id, c.id})]
    assert store.record_and_claim([(x.id, "sent", "", "") for x in second], (), issue.id, 0, later) == []
    with pytest.raises(ValueError, match="unknown outcome"):
        store.record_and_claim([(a.id, "queued", "", "")], (), issue.id, 1, later)
    assert store.delivery_counts(issue.id)["sending"] == 0


# --- leases -------------------------------------------------------------------------------------


def test_lease_semantics(db_path: Path) -> None:
    with Store.open(url_for(db_path)) as one, Store.open(url_for(db_path)) as two:
        assert one.acquire_lease("scheduler", "host-1", 60, NOW)
        assert not two.acquire_lease("scheduler", "host-2", 60, NOW + timedelta(seconds=59))
        assert one.acquire_lease("scheduler", "host-1", 60, NOW + timedelta(seconds=30))  # renewed
        assert not two.acquire_lease("scheduler", "host-2", 60, NOW + timedelta(seconds=89))
        assert two.acquire_lease("scheduler", "host-2", 60, NOW + timedelta(seconds=90))  # expired
        assert not one.release_lease("scheduler", "host-1")  # no longer ours
        assert not one.acquire_lease("scheduler", "host-1", 60, NOW + timedelta(seconds=91))
        assert two.release_lease("scheduler", "host-2")
        assert one.acquire_lease("scheduler", "host-1", 60, NOW + timedelta(seconds=92))
        assert two.acquire_lease("other", "host-2", 1, NOW)  # names are independent
        with pytest.raises(ValueError):
            one.acquire_lease("x", "host-1", 0, NOW)


# --- several processes on one file ----------------------------------------------------------------


def _send_worker(url: str, barrier: object, results: object) -> None:
    """One sending process: create the issue, freeze, claim and mark batches until none is left."""
    barrier.wait()  # type: ignore[attr-defined]
    with Store.open(url) as store:
        issue, created = store.create_issue("beslissers", "2026-W48", NOW - WEEK, NOW, NOW)
        frozen = store.freeze_recipients(issue.id, "beslissers", NOW)
        claimed: list[int] = []
        while batch := store.claim_batch(issue.id, 7, NOW):
            for delivery in batch:
                store.mark_sent(delivery.id, f"<{issue.id}.{delivery.subscriber_id}@example.nl>", NOW)
                claimed.append(delivery.id)
        results.put((issue.id, created, frozen, claimed))  # type: ignore[attr-defined]


def test_two_processes_create_freeze_and_claim(db_path: Path) -> None:
    url = url_for(db_path)
    with Store.open(url) as store:
        add_many(store, 300)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [context.Process(target=_send_worker, args=(url, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len({issue_id for issue_id, *_ in outcomes}) == 1
    assert sorted(created for _, created, _, _ in outcomes) == [False, True]
    assert sorted(frozen for _, _, frozen, _ in outcomes) == [0, 300]
    claimed = [d for *_, ids in outcomes for d in ids]
    assert len(claimed) == len(set(claimed)) == 300  # every delivery claimed exactly once
    with Store.open(url) as store:
        issue_id = outcomes[0][0]
        assert store.delivery_counts(issue_id)["sent"] == 300
        assert len(store.list_issues()) == 1


def test_create_issue_loses_a_race_gracefully(store: Store, db_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """The other writer inserts between our look and our insert: we get its row back."""
    caplog.set_level("DEBUG", logger="newsletter.store")
    other = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    other.execute("BEGIN IMMEDIATE")  # hold the write lock: our insert has to wait for it
    outcome: list[tuple[Issue, bool]] = []
    racer = threading.Thread(
        target=lambda: outcome.append(store.create_issue("a", "2026-W48", NOW - WEEK, NOW, NOW)))
    racer.start()
    time.sleep(1.0)  # by now the racer has looked (nothing there) and waits to insert
    other.execute(
        "INSERT INTO issues (audience_id, period, status, window_start, window_end, created_at)"
        " VALUES ('a', '2026-W48', 'draft', '2026-11-21 08:00:00.000000',"
        " '2026-11-28 08:00:00.000000', '2026-11-28 08:00:00.000000')")
    other.execute("COMMIT")
    other.close()
    racer.join(timeout=60)
    [(issue, created)] = outcome
    assert not created and (issue.audience_id, issue.period, issue.window_end) == ("a", "2026-W48", NOW)
    assert "created by another process first" in caplog.text


# --- a measurement, not a test: python3 tests/test_store.py [COUNT] [--tracemalloc] -------------


def _measure(count: int, trace: bool) -> None:
    import resource
    import tracemalloc

    def peak_mb() -> float:
        if trace:
            return tracemalloc.get_traced_memory()[1] / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if trace:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as folder:
        url = url_for(Path(folder) / "measure.db")
        with Store.open(url) as store:
            print(f"{count} subscribers, {'tracemalloc peak' if trace else 'peak RSS'} in MB")
            rows = (ImportRow(f"Lezer.{n:06d}@Example.NL", f"Lezer {n}") for n in range(count))
            started = time.perf_counter()
            result = store.import_rows(rows, NOW, ["beslissers"])
            print(f"import_rows      {time.perf_counter() - started:7.2f} s  peak {peak_mb():6.1f}"
                  f"  ({result.added} added)")
            started = time.perf_counter()
            again = store.import_rows(
                (ImportRow(f"lezer.{n:06d}@example.nl") for n in range(count)), NOW, ["beslissers"])
            print(f"re-import        {time.perf_counter() - started:7.2f} s  peak {peak_mb():6.1f}"
                  f"  ({again.unchanged} unchanged)")
            issue = new_issue(store)
            started = time.perf_counter()
            frozen = store.freeze_recipients(issue.id, "beslissers", NOW)
            print(f"freeze           {time.perf_counter() - started:7.2f} s  peak {peak_mb():6.1f}"
                  f"  ({frozen} queued)")
            claim_s = mark_s = 0.0
            batches = 0
            while True:
                started = time.perf_counter()
                batch = store.claim_batch(issue.id, 500, NOW)
                claim_s += time.perf_counter() - started
                if not batch:
                    break
                batches += 1
                started = time.perf_counter()
                for delivery in batch:
                    store.mark_sent(delivery.id, f"<{delivery.id}@example.nl>", NOW)
                mark_s += time.perf_counter() - started
            print(f"claim_batch x{batches} {claim_s:7.2f} s  peak {peak_mb():6.1f}")
            print(f"mark_sent x{count} {mark_s:7.2f} s  ({mark_s / count * 1e6:.0f} µs each)")
            started = time.perf_counter()
            listed = sum(1 for _ in store.list_subscribers(audience="beslissers"))
            print(f"list_subscribers {time.perf_counter() - started:7.2f} s  peak {peak_mb():6.1f}"
                  f"  ({listed} streamed)")
            print("counts", store.delivery_counts(issue.id))


if __name__ == "__main__":
    import sys

    _measure(int(next((a for a in sys.argv[1:] if a.isdigit()), "100000")), "--tracemalloc" in sys.argv)


def test_rejoin_is_a_fresh_opt_in_but_never_for_blocked_addresses(store: Store) -> None:
    change = store.add_subscriber("anna@example.nl", "Anna", ["beslissers", "bouwers"], NOW)
    anna = change.subscriber_id
    assert anna is not None
    store.remove_subscriber("anna@example.nl", NOW)  # left everything
    assert store.add_subscriber("anna@example.nl", "Anna", ["beslissers"], NOW).action == "skipped"
    assert store.rejoin(anna, ["beslissers"], NOW + WEEK) == ["beslissers"]
    assert store.get_subscriber(anna).status == "active"  # type: ignore[union-attr]
    assert store.memberships(anna) == {"beslissers": "active", "bouwers": "unsubscribed"}
    assert store.rejoin(anna, ["beslissers", "onderzoekers"], NOW + WEEK) == ["onderzoekers"]
    bob = store.add_subscriber("bob@example.nl", "", ["beslissers"], NOW).subscriber_id
    assert bob is not None
    store.suppress("bob@example.nl", "complaint", NOW)
    store.remove_subscriber("bob@example.nl", NOW)
    assert store.rejoin(bob, ["beslissers"], NOW) == []
    with pytest.raises(NotFoundError):
        store.rejoin(999, ["beslissers"], NOW)


def test_forget_pending_removes_only_old_unconfirmed_addresses(store: Store) -> None:
    old = store.add_subscriber("oud@example.nl", "", ["beslissers"], NOW, status="pending").subscriber_id
    new = store.add_subscriber("nieuw@example.nl", "", ["beslissers"], NOW + WEEK, status="pending").subscriber_id
    kept = store.add_subscriber("actief@example.nl", "", ["beslissers"], NOW).subscriber_id
    assert store.forget_pending(NOW + timedelta(days=2), NOW + timedelta(days=2)) == 1
    assert store.get_subscriber(old) is None and store.memberships(old) == {}  # type: ignore[arg-type]
    assert store.get_subscriber(new) is not None and store.get_subscriber(kept) is not None  # type: ignore[arg-type]
