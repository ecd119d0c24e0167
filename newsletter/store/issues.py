"""Issues (one per audience and period) and their deliveries: the send ledger."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..errors import StoreError
from ..model import (
    DELIVERY_STATUSES,
    ISSUE_STATUSES,
    Claimed,
    Delivery,
    Issue,
)
from ._base import (
    _CHUNK,
    _ID,
    _ISSUE_NEXT,
    _REQUEUEABLE,
    _ROWCOUNT,
    ConflictError,
    NotFoundError,
    StateError,
    StoreBase,
    UTCDateTime,
    _aware,
    _delivery,
    _issue,
    _issue_row,
    _one,
    deliveries_t,
    issues_t,
    memberships_t,
    subscribers_t,
    suppressions_t,
)

log = logging.getLogger(__package__)

# The send loop's statements, built once: SQLAlchemy then reuses their compiled form instead of
# building and caching a new statement per batch (a third of a claim's cost).
_d, _s = deliveries_t, subscribers_t
_CANDIDATES = (
    sa.select(
        _d.c.id,
        _d.c.subscriber_id,
        _d.c.email,
        _d.c.name,
        sa.exists()
        .where(
            _s.c.id == _d.c.subscriber_id,
            _s.c.status == "active",
            memberships_t.c.subscriber_id == _s.c.id,
            memberships_t.c.audience_id == sa.bindparam("audience"),
            memberships_t.c.status == "active",
        )
        .label("member"),
        sa.exists()
        .where(_s.c.id == _d.c.subscriber_id, suppressions_t.c.email_key == _s.c.email_key)
        .label("blocked"),
    )
    .where(_d.c.issue_id == sa.bindparam("issue"), _d.c.status == "queued")
    .order_by(_d.c.id)
    .limit(sa.bindparam("limit"))
    .with_for_update(of=_d, skip_locked=True)  # PostgreSQL; SQLite holds the write lock
)
_AUDIENCE_OF = sa.select(issues_t.c.audience_id).where(issues_t.c.id == sa.bindparam("issue"))
_QUEUED_IDS = sa.and_(_d.c.id.in_(sa.bindparam("ids", expanding=True)), _d.c.status == "queued")
_SUPPRESS_QUEUED = (
    sa.update(_d)
    .where(_QUEUED_IDS)
    .values(status="suppressed", last_error=sa.bindparam("reason"), updated_at=sa.bindparam("now"))
)
_CLAIM_QUEUED = (
    sa.update(_d)
    .where(_QUEUED_IDS)
    .values(status="sending", attempts=_d.c.attempts + 1, updated_at=sa.bindparam("now"))
)
_FINISH_SENDING = (
    sa.update(_d)
    .where(_d.c.id == sa.bindparam("b_id"), _d.c.status == "sending")
    .values(
        status=sa.bindparam("b_status"),
        message_id=sa.bindparam("b_message_id"),
        last_error=sa.bindparam("b_error"),
        sent_at=sa.bindparam("b_sent_at"),
        updated_at=sa.bindparam("b_now"),
    )
)


class IssueStore(StoreBase):
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
        with self._tx() as conn:
            claimed = [c.id for c in _claim(conn, issue_id, limit, now)]
            if not claimed:
                return []
            d = deliveries_t
            rows = conn.execute(sa.select(d).where(d.c.id.in_(claimed)).order_by(d.c.id)).mappings()
            return [_delivery(row) for row in rows]

    def record_and_claim(
        self,
        finished: Sequence[tuple[int, str, str, str]],
        released: Sequence[int],
        issue_id: int,
        limit: int,
        now: datetime,
    ) -> list[Claimed]:
        """`finish_many(finished)`, `release(released)` and `claim_batch(limit)` (none when
        limit is 0) in ONE transaction: the send loop's step, one commit instead of three. The
        claimed deliveries come back as what sending needs of them, not as full rows."""
        _aware(now)
        _check_outcomes(finished)
        with self._tx() as conn:
            _finish(conn, finished, now)
            _release(conn, released, now)
            return _claim(conn, issue_id, limit, now) if limit > 0 else []

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
        _check_outcomes(outcomes)
        if outcomes:
            with self._tx() as conn:
                _finish(conn, outcomes, now)

    def release(self, delivery_ids: Sequence[int], now: datetime) -> int:
        """Give claimed deliveries that were never attempted (a pause or a stop came first) back
        to the queue, undoing the claim's attempt count. Only rows in "sending" change."""
        _aware(now)
        with self._tx() as conn:
            return _release(conn, delivery_ids, now)

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


def _check_outcomes(outcomes: Sequence[tuple[int, str, str, str]]) -> None:
    wrong = {status for _, status, _, _ in outcomes} - {"sent", "failed", "unknown"}
    if wrong:
        raise ValueError(f"finish_many: unknown outcome {sorted(wrong)}")


def _finish(conn: sa.Connection, outcomes: Sequence[tuple[int, str, str, str]], now: datetime) -> None:
    if outcomes:
        conn.execute(
            _FINISH_SENDING,
            [
                {
                    "b_id": delivery_id,
                    "b_status": status,
                    "b_message_id": message_id,
                    "b_error": error,
                    "b_sent_at": now if status == "sent" else None,
                    "b_now": now,
                }
                for delivery_id, status, message_id, error in outcomes
            ],
        )


def _release(conn: sa.Connection, delivery_ids: Sequence[int], now: datetime) -> int:
    d = deliveries_t
    count = 0
    for start in range(0, len(delivery_ids), _CHUNK):
        chunk = list(delivery_ids[start : start + _CHUNK])
        count += conn.execute(
            sa.update(d)
            .where(d.c.id.in_(chunk), d.c.status == "sending")
            .values(status="queued", attempts=d.c.attempts - 1, updated_at=now),
            execution_options=_ROWCOUNT,
        ).rowcount
    return int(count)


def _claim(conn: sa.Connection, issue_id: int, limit: int, now: datetime) -> list[Claimed]:
    audience = conn.execute(_AUDIENCE_OF, {"issue": issue_id}).scalar()
    if audience is None:
        raise NotFoundError("issue", issue_id)
    claimed: list[Claimed] = []
    while len(claimed) < limit:
        candidates = conn.execute(
            _CANDIDATES, {"issue": issue_id, "audience": audience, "limit": limit - len(claimed)}
        ).all()
        if not candidates:
            break
        ok = [c for c in candidates if c.member and not c.blocked]
        for reason, ids in (
            ("suppressed", [c.id for c in candidates if c.blocked]),
            ("no longer an active member", [c.id for c in candidates if not c.member and not c.blocked]),
        ):
            if ids:
                conn.execute(_SUPPRESS_QUEUED, {"ids": ids, "reason": reason, "now": now})
        if ok:
            conn.execute(_CLAIM_QUEUED, {"ids": [c.id for c in ok], "now": now})
            claimed.extend(Claimed(c.id, c.subscriber_id, c.email, c.name) for c in ok)
    return claimed
