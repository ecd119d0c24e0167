"""Send one audience's issue for one period: resumable, at most once per subscriber.

The ledger (`store.py`) carries the guarantees: an issue is UNIQUE per (audience, period), a
delivery UNIQUE per (issue, subscriber). A delivery is claimed as "sending" (committed) before
the transport sees it and marked "sent", "failed" or "unknown" after, so a crash leaves at most
one batch in "sending"; the next run (holding the issue's lease, so nobody else is sending it)
marks those "unknown" and never re-sends them unless asked to (`retry_unknown`).

The digest is rendered and inlined once, when the issue is created, and stored with it; a resumed
issue sends exactly the stored HTML and text. Per subscriber only the message skeleton is filled in
(`message.MessageTemplate`).

This module keeps the ledger: it claims a batch, hands it to the lanes (`lanes.py`: sending
threads, or one sending process per SMTP connection) and records their outcomes while they send,
each step one transaction (`Store.record_and_claim`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

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
from .digest import RenderedDigest, default_name_for
from .emailqa import check_digest
from .errors import ConfigError, NewsletterError
from .lanes import Outcome, Worker, lanes_for
from .message import MessageTemplate, Personal, make_message_id
from .model import Article, Issue, RenderedBody
from .store import Store
from .tokens import ALL_AUDIENCES, TokenMaker

log = logging.getLogger(__name__)

# A preferences link may re-subscribe (a signed opt-in), so unlike the unsubscribe link it expires.
PREFERENCES_LINK_TTL = timedelta(days=365)
_FLUSH_SECONDS = 0.25  # record outcomes at least this often, even in a slow trickle


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
    senders: str = ""  # how this run sent, e.g. "2 sending processes" or "1 sending thread"

    @property
    def recipients(self) -> int:
        return sum(self.counts.values())


Progress = Callable[[int, int], None]  # (finished deliveries so far, all deliveries)


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
    return RenderedDigest(
        audience_id=issue.audience_id,
        subject=issue.subject,
        preheader=issue.preheader,
        html=issue.html,
        text=issue.text,
        article_ids=issue.article_ids,
        default_name=default_name_for(config.site.language),
    )


class Personalizer:
    """Turns one delivery into its message bytes: tokens, links and the pre-encoded skeleton."""

    def __init__(
        self, config: Config, issue: Issue, template: MessageTemplate, key: bytes | None
    ) -> None:
        self._issue = issue
        self._template = template
        self._host = site_host(config)
        base = config.public_url
        # Each personal link ends with its token (links.py), so the rest is checked once here.
        try:
            self._links = template.personal_links(
                unsubscribe_prefix=links.unsubscribe_url(base, ""),
                unsubscribe_mailto_prefix=links.unsubscribe_mailto(config.email.unsubscribe_mailto, ""),
                view_url=links.archive_url(config.site.url, issue.audience_id, issue.period),
                preferences_prefix=links.preferences_url(base, ""),
            )
        except ValueError as exc:  # every message would carry these links: refuse the send
            setting = "site.url" if base == config.site.url else "web.public_url"
            raise ConfigError(setting, f"the links in mails cannot be made from it: {exc}", base) from exc
        # issued_at is the issue's creation, so a resumed send builds byte-identical messages;
        # a preferences token covers every audience, and expires.
        self._makers = {} if key is None else {
            "unsubscribe": TokenMaker(key, issue.audience_id, "unsubscribe", issue.created_at),
            "preferences": TokenMaker(
                key, ALL_AUDIENCES, "preferences", issue.created_at, ttl=PREFERENCES_LINK_TTL
            ),
        }

    def token(
        self, subscriber_id: int, purpose: Literal["unsubscribe", "preferences"] = "unsubscribe"
    ) -> str:
        if not self._makers:  # no key: a --test-to message, whose links show their shape only
            return "TEST"
        return self._makers[purpose](subscriber_id)

    def message_id(self, subscriber_id: int) -> str:
        return make_message_id(self._issue.id, subscriber_id, self._host)

    def compose(
        self, subscriber_id: int, email: str, name: str, date: datetime, message_id: str = ""
    ) -> bytes:
        return self.assemble(self.personal(subscriber_id, email, name, date, message_id))

    def personal(
        self, subscriber_id: int, email: str, name: str, date: datetime, message_id: str = ""
    ) -> Personal:
        """All of `compose` but its last step, `assemble`: the subscriber's tokens, links and
        headers, checked and encoded (raises ValueError as `compose` does)."""
        return self._template.personal_values(
            self._links,
            to_email=email,
            to_name=name,
            message_id=message_id or self.message_id(subscriber_id),
            date=date,
            unsubscribe_token=self.token(subscriber_id),
            preferences_token=self.token(subscriber_id, "preferences"),
        )

    def assemble(self, values: Personal) -> bytes:
        return self._template.assemble(values)


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
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_process_space()}"
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
    consecutive = 0
    pause = ""
    worker = Worker(personalizer, transport, sender, options, clock, threading.Event(), sleep)
    # The in-flight window: at most batch_size deliveries are "sending" in the ledger at any
    # moment (claimed, not yet recorded), so a crash leaves at most that many "unknown". Each
    # `lanes.batch` outcomes are recorded and as many deliveries claimed, in one transaction.
    window = options.batch_size
    lanes = lanes_for(worker, window)  # before the progress bar starts a thread
    report.senders = lanes.describe()
    if progress:
        progress(done, total)
    step = lanes.batch
    outstanding = 0  # claimed, outcome not yet back
    exhausted = halted = False
    renewed = time.monotonic()
    pending: list[Outcome] = []  # outcome back, not yet recorded
    flushed = time.monotonic()

    def halt(reason: str = "") -> None:
        nonlocal pause, halted
        pause = pause or reason
        if not halted:
            lanes.halt()
            halted = True

    def step_ledger(record: bool) -> None:
        """Record the pending outcomes (if record) and claim what fits in the window, in one
        transaction, and hand the claimed deliveries to the lanes."""
        nonlocal outstanding, exhausted, renewed, pending, flushed, done
        room = window - outstanding - (0 if record else len(pending))
        # claim a batch at a time (fewer, larger transactions), or whatever fits when nothing
        # is in flight
        limit = room if not (halted or exhausted or room <= 0 or (room < step and outstanding)) else 0
        if limit and time.monotonic() - renewed > options.lease_seconds / 4:
            if store.acquire_lease(lease, owner, options.lease_seconds, clock()):
                renewed = time.monotonic()
            else:
                halt("lost the issue's lease to another process")
                limit = 0
        if record:
            for job, result in pending:
                if result.suppress:
                    store.suppress(job.email, f"bounced: {result.error}", clock())
            finished = [
                (job.id, result.status, result.message_id, result.error)
                for job, result in pending
                if result.status != "released"
            ]
            released = [job.id for job, result in pending if result.status == "released"]
            batch = store.record_and_claim(finished, released, issue.id, limit, clock())
            done += len(finished)
            pending, flushed = [], time.monotonic()
            if progress:
                progress(done, total)
        elif limit:
            batch = store.record_and_claim((), (), issue.id, limit, clock())
        else:
            return
        if limit:
            exhausted = not batch
            lanes.submit(batch)
            outstanding += len(batch)

    try:
        step_ledger(record=False)
        while outstanding:
            if stop is not None and stop.is_set():
                halt()
            for outcome in lanes.collect(_FLUSH_SECONDS):
                outstanding -= 1
                pending.append(outcome)
                result = outcome.result
                if result.status in ("failed", "unknown"):
                    consecutive += 1
                elif result.status == "sent":
                    consecutive = 0
                if result.pause:
                    halt(result.pause)
                elif consecutive >= options.max_consecutive_failures:
                    halt(f"{consecutive} deliveries failed in a row; last: {result.error}")
            record = bool(pending) and (
                not outstanding or len(pending) >= step or time.monotonic() - flushed > _FLUSH_SECONDS
            )
            step_ledger(record)
    except BaseException:
        lanes.halt()  # the ledger failed: what it could not record must not be sent either
        raise
    finally:
        lanes.close()
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
    rerun right after a crash resumes instead of waiting for the lease to expire. "This host"
    is the hostname and, where it can be told, the same kernel boot and PID namespace: two
    machines or containers may share a hostname, and a pid means nothing outside its own."""
    if store.acquire_lease(lease, owner, ttl, now):
        return True
    holder = store.lease_holder(lease)
    if holder is None:
        return False
    host, pid, _, space = (holder[0].split(":") + ["", "", ""])[:4]  # older owners lack a space
    if (
        host != socket.gethostname()
        or space != _process_space()
        or not pid.isdigit()
        or _alive(int(pid))
    ):
        return False
    log.warning("taking over the lease %s from %s: that process is gone", lease, holder[0])
    return store.take_over_lease(lease, holder[0], owner, ttl, now)


@functools.cache
def _process_space() -> str:
    """Where this process's pid can be checked from: a digest of the kernel's boot id and the
    PID namespace ("" where there is no /proc to tell)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.blake2b(f"{boot}|{namespace}".encode(), digest_size=6).hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


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
