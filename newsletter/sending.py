"""Send one audience's issue for one period: resumable, at most once per subscriber.

The ledger (`store.py`) carries the guarantees: an issue is UNIQUE per (audience, period), a
delivery UNIQUE per (issue, subscriber). A delivery is claimed as "sending" (committed) before
the transport sees it and marked "sent", "failed" or "unknown" after, so a crash leaves at most
one batch in "sending"; the next run (holding the issue's lease, so nobody else is sending it)
marks those "unknown" and never re-sends them unless asked to (`retry_unknown`).

The digest is rendered and inlined once, when the issue is created, and stored with it; a resumed
issue sends exactly the stored HTML and text. Per subscriber only the message skeleton is filled in
(`message.MessageTemplate`).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import links
from .campaign import (
    IssuePlan,
    digest_settings,
    message_template,
    plan_issue,
    render_issue,
    site_host,
)
from .config import AudienceConfig, Config
from .delivery import Transport
from .digest import RenderedDigest
from .emailqa import check_digest
from .errors import DeliveryError, NewsletterError
from .message import MessageTemplate, make_message_id
from .model import Article, Delivery, Issue, RenderedBody
from .store import Store
from .tokens import ALL_AUDIENCES, make_token

log = logging.getLogger(__name__)

# A preferences link may re-subscribe (a signed opt-in), so unlike the unsubscribe link it expires.
PREFERENCES_LINK_TTL = timedelta(days=365)
_FLUSH_SECONDS = 0.25  # record outcomes at least this often, even in a slow trickle
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_DEFAULT_NAMES = {"nl": "lezer", "en": "reader"}


class SendError(NewsletterError):
    """The issue cannot be sent (empty when that is an error, a QA failure, a busy lease)."""


@dataclass(frozen=True)
class SendOptions:
    batch_size: int = 50  # deliveries claimed at once: also the most that can end "unknown"
    max_attempts: int = 3  # tries per message for transient failures (4xx, dropped connection)
    backoff: float = 1.0  # seconds before the 2nd try; doubled each time, with jitter
    max_consecutive_failures: int = 10  # then the issue pauses (the rest stays queued)
    lease_seconds: float = 300.0  # renewed every batch; a crashed sender's lease expires
    retry_unknown: bool = False  # requeue "unknown" deliveries (may send those twice)


def options_from(config: Config, *, retry_unknown: bool = False) -> SendOptions:
    delivery = config.delivery
    return SendOptions(
        batch_size=delivery.batch_size,
        max_attempts=delivery.max_attempts,
        backoff=delivery.retry_backoff,
        max_consecutive_failures=delivery.pause_after_failures,
        retry_unknown=retry_unknown,
    )


@dataclass
class SendReport:
    audience_id: str
    period: str
    status: str  # "sent", "skipped", "paused", "stopped", "busy", "already sent"
    issue_id: int | None = None
    subject: str = ""
    articles: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # deliveries per status
    message: str = ""  # why it paused / was skipped / is busy
    marked_unknown: int = 0  # "sending" rows found from a crashed run, now "unknown"

    @property
    def recipients(self) -> int:
        return sum(self.counts.values())


Progress = Callable[[int, int], None]  # (finished deliveries so far, all deliveries)


@dataclass(frozen=True)
class _Outcome:
    delivery: Delivery
    status: str  # "sent", "failed", "unknown", "released" (never attempted)
    message_id: str = ""
    error: str = ""
    pause: str = ""  # non-empty: stop the issue (policy block), with this reason
    suppress: bool = False  # the mailbox does not exist (5.1.x): suppress the address


def prepare_issue(
    config: Config,
    audience: AudienceConfig,
    period: str,
    end: datetime,
    store: Store,
    articles: Sequence[Article],
    body: Callable[[Article], RenderedBody],
    now: datetime,
) -> tuple[Issue | None, IssuePlan | None]:
    """The issue of (audience, period), created and rendered if it does not exist yet.

    Its articles are those published after the previous sent (or skipped) issue's end, up to
    `end` (the scheduled fire time, or now for a send by hand). Returns (None, plan) when the
    issue would be empty; nothing is stored then.

    Raises:
        SendError: the digest fails the email QA (each error listed).
        RenderError: a template fails.
    """
    issue = store.get_issue(audience.id, period)
    if issue is not None and (issue.html or issue.status != "draft"):
        return issue, None
    plan = plan_next(store, audience, articles, end)
    if plan.empty:
        return None, plan
    digest = render_issue(plan, body, digest_settings(config))
    errors = [f for f in check_digest(digest) if f.level == "error"]
    if errors:
        raise SendError(
            f"audience '{audience.id}' {period}: the digest fails the email checks:\n  "
            + "\n  ".join(str(f) for f in errors)
        )
    issue, _ = store.create_issue(
        audience.id, period, plan.period_start, plan.period_end, now, digest.subject, digest.preheader
    )
    if issue.status == "draft" and not issue.html:
        issue = store.save_rendered(
            issue.id, digest.subject, digest.preheader, digest.html, digest.text, digest.article_ids
        )
    return issue, plan


def plan_next(
    store: Store, audience: AudienceConfig, articles: Sequence[Article], end: datetime
) -> IssuePlan:
    """The next issue's articles: published after the previous sent (or skipped) issue ended."""
    previous = store.last_issue(audience.id, statuses=("sent", "skipped"))
    return plan_issue(audience, articles, end, previous.window_end if previous else None)


def skip_issue(
    audience: AudienceConfig, period: str, plan: IssuePlan, store: Store, now: datetime
) -> Issue:
    """Record an empty issue as skipped, so the schedule and `plan` see it was handled."""
    issue, _ = store.create_issue(audience.id, period, plan.period_start, plan.period_end, now)
    return store.set_issue_status(issue.id, "skipped", now)


def deliver_period(
    config: Config,
    audience: AudienceConfig,
    period: str,
    end: datetime,
    store: Store,
    articles: Sequence[Article],
    body: Callable[[Article], RenderedBody],
    key: bytes,
    options: SendOptions,
    transport_factory: Callable[[], Transport],
    *,
    now: datetime,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> SendReport:
    """The whole job of one (audience, period), as `newsletter send` and the scheduler run it:
    prepare (or resume) the issue, skip it when empty, send it, publish the archive.

    Raises:
        SendError: empty with skip_if_empty = false, or the digest fails the email checks.
        RenderError: a template fails.
    """
    issue, plan = prepare_issue(config, audience, period, end, store, articles, body, now)
    if issue is None:
        assert plan is not None
        if not audience.skip_if_empty:
            raise SendError(
                f"{audience.id} {period}: no articles published between "
                f"{plan.period_start.isoformat()} and {plan.period_end.isoformat()} "
                "(skip_if_empty = false)"
            )
        skipped = skip_issue(audience, period, plan, store, now)
        log.info("%s %s: no new articles, skipped", audience.id, period)
        return SendReport(audience.id, period, "skipped", skipped.id, message="no new articles")
    transport = transport_factory()
    try:
        report = send_issue(
            config, issue, store, transport, key, options, progress=progress, stop=stop
        )
    finally:
        transport.close()
    if report.status == "sent":
        from .archive import write_archive

        write_archive(config, store, audience.id)
    log.info(
        "%s %s: %s (%s)", audience.id, period, report.status,
        ", ".join(f"{count} {status}" for status, count in report.counts.items() if count),
    )
    return report


def stored_digest(config: Config, issue: Issue) -> RenderedDigest:
    language = "en" if config.site.language.lower().startswith("en") else "nl"
    return RenderedDigest(
        audience_id=issue.audience_id,
        subject=issue.subject,
        preheader=issue.preheader,
        html=issue.html,
        text=issue.text,
        article_ids=issue.article_ids,
        default_name=_DEFAULT_NAMES[language],
    )


class Personalizer:
    """Turns one delivery into its message bytes: tokens, links and the pre-encoded skeleton."""

    def __init__(
        self, config: Config, issue: Issue, template: MessageTemplate, key: bytes | None
    ) -> None:
        self._config = config
        self._issue = issue
        self._template = template
        self._key = key
        self._host = site_host(config)
        self._view = links.archive_url(config.site.url, issue.audience_id, issue.period)

    def token(self, subscriber_id: int, purpose: str = "unsubscribe") -> str:
        if self._key is None:
            return "TEST"  # a --test-to message: the links show their shape only
        # issued_at is the issue's creation, so a resumed send builds byte-identical messages
        if purpose == "preferences":  # covers every audience, and expires
            return make_token(
                self._key, subscriber_id, ALL_AUDIENCES, purpose, self._issue.created_at,
                ttl=PREFERENCES_LINK_TTL,
            )
        return make_token(
            self._key, subscriber_id, self._issue.audience_id, purpose, self._issue.created_at
        )

    def message_id(self, subscriber_id: int) -> str:
        return make_message_id(self._issue.id, subscriber_id, self._host)

    def compose(self, subscriber_id: int, email: str, name: str, date: datetime) -> bytes:
        token = self.token(subscriber_id)
        base = self._config.public_url
        return self._template.compose(
            to_email=email,
            to_name=name,
            message_id=self.message_id(subscriber_id),
            date=date,
            unsubscribe_url=links.unsubscribe_url(base, token),
            unsubscribe_mailto=links.unsubscribe_mailto(self._config.email.unsubscribe_mailto, token),
            view_url=self._view,
            preferences_url=links.preferences_url(base, self.token(subscriber_id, "preferences")),
        )


def send_issue(
    config: Config,
    issue: Issue,
    store: Store,
    transport: Transport,
    key: bytes,
    options: SendOptions,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """Deliver a prepared issue to its frozen recipients; resumes where a previous run stopped.

    Returns a report whose status is "sent" (queue empty), "paused" (policy block or too many
    failures in a row; the rest stays queued for a rerun), "stopped" (the stop event was set) or
    "busy" (another process holds the issue's lease).
    """
    audience = config.audience(issue.audience_id)
    report = SendReport(audience.id, issue.period, "sent", issue.id, issue.subject, len(issue.article_ids))
    if issue.status in ("sent", "skipped") and not (
        options.retry_unknown and issue.status == "sent"
    ):
        report.status = "already sent" if issue.status == "sent" else "skipped"
        report.counts = store.delivery_counts(issue.id)
        return report
    lease = f"issue:{issue.id}"
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if not _take_lease(store, lease, owner, options.lease_seconds, clock()):
        report.status = "busy"
        report.message = f"issue {issue.id} is being sent by another process"
        report.counts = store.delivery_counts(issue.id)
        return report
    try:
        return _send_locked(
            config, audience, issue, store, transport, key, options, report, lease, owner,
            clock, progress, stop, sleep,
        )
    finally:
        store.release_lease(lease, owner)


def _send_locked(
    config: Config,
    audience: AudienceConfig,
    issue: Issue,
    store: Store,
    transport: Transport,
    key: bytes,
    options: SendOptions,
    report: SendReport,
    lease: str,
    owner: str,
    clock: Callable[[], datetime],
    progress: Progress | None,
    stop: threading.Event | None,
    sleep: Callable[[float], None],
) -> SendReport:
    # We hold the lease: a delivery still "sending" belongs to a run that died mid-batch.
    for stale in store.stale_sending(issue.id):
        store.mark_unknown(stale.id, "the sending process stopped before recording the result", clock())
        report.marked_unknown += 1
    if report.marked_unknown:
        log.warning(
            "%s %s: %d deliveries left 'sending' by an interrupted run are now 'unknown'",
            audience.id, issue.period, report.marked_unknown,
        )
    if issue.status == "sent":  # --retry-unknown on a finished issue re-opens it
        if not store.delivery_counts(issue.id)["unknown"]:
            report.status = "already sent"
            report.counts = store.delivery_counts(issue.id)
            return report
    if options.retry_unknown:
        store.requeue(issue.id, clock(), statuses=("unknown",))
    issue = store.set_issue_status(issue.id, "sending", clock())
    store.freeze_recipients(issue.id, audience.id, clock())

    template = message_template(config, audience, stored_digest(config, issue))
    personalizer = Personalizer(config, issue, template, key)
    sender = template.sender_address
    counts = store.delivery_counts(issue.id)
    total = sum(counts.values())
    done = total - counts["queued"]
    if progress:
        progress(done, total)
    workers = max(1, transport.parallelism)
    consecutive = 0
    pause = ""
    halt = threading.Event()  # set: workers stop starting new messages
    worker = _Worker(personalizer, transport, sender, options, clock, halt, stop, sleep)
    results: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
    # The in-flight window: at most batch_size deliveries are "sending" in the ledger at any
    # moment (claimed, not yet recorded), so a crash leaves at most that many "unknown". Half a
    # window is recorded at a time and the freed half claimed again at once, so the connections
    # keep working while the ledger commits.
    window = options.batch_size
    step = max(1, window // 2)
    outstanding = 0  # claimed, outcome not yet back
    exhausted = False
    renewed = time.monotonic()
    pending: list[_Outcome] = []  # outcome back, not yet recorded
    flushed = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send") as pool:

        def top_up() -> None:
            nonlocal outstanding, exhausted, pause, renewed
            room = window - outstanding - len(pending)
            # claim half a window at a time (fewer, larger transactions), or whatever fits when
            # nothing is in flight
            if exhausted or room <= 0 or (room < step and outstanding):
                return
            if time.monotonic() - renewed > options.lease_seconds / 4:
                if not store.acquire_lease(lease, owner, options.lease_seconds, clock()):
                    pause = "lost the issue's lease to another process"
                    halt.set()
                    return
                renewed = time.monotonic()
            batch = store.claim_batch(issue.id, room, clock())
            exhausted = not batch
            for delivery in batch:
                pool.submit(_deliver_safely, worker, delivery, results)
            outstanding += len(batch)

        top_up()
        while outstanding:
            outcome = results.get()
            outstanding -= 1
            pending.append(outcome)
            if outcome.status in ("failed", "unknown"):
                consecutive += 1
            elif outcome.status == "sent":
                consecutive = 0
            if outcome.pause and not pause:
                pause = outcome.pause
            elif consecutive >= options.max_consecutive_failures and not pause:
                pause = f"{consecutive} deliveries failed in a row; last: {outcome.error}"
            if pause:
                halt.set()
            if not outstanding or len(pending) >= step or time.monotonic() - flushed > _FLUSH_SECONDS:
                _record(store, pending, clock())
                done += sum(1 for o in pending if o.status != "released")
                pending, flushed = [], time.monotonic()
                if progress:
                    progress(done, total)
            if not (halt.is_set() or (stop is not None and stop.is_set())):
                top_up()
    report.counts = store.delivery_counts(issue.id)
    if pause:
        report.status = "paused"
        report.message = pause
        log.error("%s %s paused: %s", audience.id, issue.period, pause)
    elif stop and stop.is_set() and report.counts["queued"]:
        report.status = "stopped"
    elif report.counts["queued"] == 0 and report.counts["sending"] == 0:
        store.set_issue_status(issue.id, "sent", clock())
        report.status = "sent"
    return report


def _take_lease(store: Store, lease: str, owner: str, ttl: float, now: datetime) -> bool:
    """The issue's lease; also from a sender on this host whose process is gone (killed), so a
    rerun right after a crash resumes instead of waiting for the lease to expire."""
    if store.acquire_lease(lease, owner, ttl, now):
        return True
    holder = store.lease_holder(lease)
    if holder is None:
        return False
    host, _, rest = holder[0].partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
        return False
    log.warning("taking over the lease %s from %s: that process is gone", lease, holder[0])
    return store.take_over_lease(lease, holder[0], owner, ttl, now)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _record(store: Store, outcomes: Sequence[_Outcome], now: datetime) -> None:
    finished = [
        (o.delivery.id, o.status, o.message_id, o.error)
        for o in outcomes
        if o.status in ("sent", "failed", "unknown")
    ]
    store.finish_many(finished, now)
    released = [o.delivery.id for o in outcomes if o.status == "released"]
    if released:
        store.release(released, now)
    for outcome in outcomes:
        if outcome.suppress:
            store.suppress(outcome.delivery.email, f"bounced: {outcome.error}", now)


@dataclass(frozen=True)
class _Worker:
    """What a sending thread needs for every message of the issue."""

    personalizer: Personalizer
    transport: Transport
    sender: str
    options: SendOptions
    clock: Callable[[], datetime]
    halt: threading.Event
    stop: threading.Event | None
    sleep: Callable[[float], None]


def _deliver_safely(
    worker: _Worker, delivery: Delivery, results: queue.SimpleQueue[_Outcome]
) -> None:
    """`_deliver`, whose outcome always reaches the collecting thread (an unexpected error
    becomes "unknown": it may have happened after the server accepted the message)."""
    try:
        outcome = _deliver(worker, delivery)
    except BaseException as exc:  # noqa: BLE001 - reported as an outcome, never lost
        log.exception("delivery %s to %s", delivery.id, delivery.email)
        outcome = _Outcome(delivery, "unknown", "", f"internal error: {type(exc).__name__}: {exc}")
    results.put(outcome)


def _deliver(worker: _Worker, delivery: Delivery) -> _Outcome:
    """One message: compose, send, retry transient failures with backoff. Runs in a worker."""
    if worker.halt.is_set() or (worker.stop is not None and worker.stop.is_set()):
        return _Outcome(delivery, "released")
    personalizer, options = worker.personalizer, worker.options
    message_id = personalizer.message_id(delivery.subscriber_id)
    try:
        message = personalizer.compose(
            delivery.subscriber_id, delivery.email, delivery.name, worker.clock()
        )
    except ValueError as exc:  # a name or address that cannot go into a header
        return _Outcome(delivery, "failed", message_id, f"cannot compose: {exc}")
    for attempt in range(1, options.max_attempts + 1):
        try:
            worker.transport.send(worker.sender, delivery.email, message, message_id)
            return _Outcome(delivery, "sent", message_id)
        except DeliveryError as exc:
            error = exc.message + (f" (SMTP {exc.code})" if exc.code else "")
            if exc.kind == "unknown":
                return _Outcome(delivery, "unknown", message_id, error)
            if exc.kind == "permanent":
                enhanced = _ENHANCED.search(exc.message)
                klass = enhanced.group(2) if enhanced else ""
                if klass == "7":  # policy: our sending is blocked; more mail makes it worse
                    pause = f"policy rejection for {delivery.email}: {error}"
                    return _Outcome(delivery, "failed", message_id, error, pause=pause)
                return _Outcome(delivery, "failed", message_id, error, suppress=klass == "1")
            if attempt == options.max_attempts or worker.halt.is_set():
                error = f"gave up after {attempt} tries: {error}"
                return _Outcome(delivery, "failed", message_id, error)
            # exponential backoff with full jitter, so parallel workers do not retry in step
            worker.sleep(random.uniform(0, options.backoff * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = [
    "Personalizer",
    "deliver_period",
    "SendError",
    "SendOptions",
    "SendReport",
    "plan_next",
    "prepare_issue",
    "send_issue",
    "skip_issue",
    "stored_digest",
]
