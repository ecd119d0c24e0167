"""Subscribers, memberships and the suppression list."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model import (
    SUBSCRIBER_STATUSES,
    ImportProblem,
    ImportResult,
    ImportRow,
    Subscriber,
    SubscriberChange,
)
from ._base import (
    _CHUNK,
    _GONE,
    _ROWCOUNT,
    InvalidEmailError,
    JSONText,
    NotFoundError,
    StoreBase,
    UTCDateTime,
    _audience_tuple,
    _aware,
    _check_new_status,
    _insert_if_absent,
    _leave,
    _subscriber,
    _subscriber_row,
    _update_subscriber,
    email_key,
    memberships_t,
    normalize_email,
    subscribers_t,
    suppressions_t,
)

log = logging.getLogger(__package__)


class SubscriberStore(StoreBase):
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
