"""APScheduler wiring: each audience's `schedule` becomes a persistent cron job that sends its
issue, once, on time (standards APS-01..17).

- One `BackgroundScheduler` per process, the main thread kept alive waiting for a signal (APS-15;
  not `BlockingScheduler`: its wait until the next job, days away, never sees a SIGTERM that the
  kernel hands to another thread), jobs persisted in the project database
  (`SQLAlchemyJobStore`), referenced as text (`"newsletter.schedule:run_audience"`, APS-07), with
  the site timezone on scheduler and triggers (APS-11), `coalesce`, `max_instances=1` and an
  explicit misfire grace (APS-01).
- `reconcile` brings the job store in line with config.toml WITHOUT re-adding existing jobs (that
  would recompute their next run and silently drop a missed one, APS-06): it adds missing jobs,
  reschedules changed ones, updates a changed grace (APS-05) and removes jobs of removed audiences.
- The job re-derives its period from the scheduled fire time (the latest fire time not after
  now), never from the clock's week (APS-17); a DST fold that fires twice (APS-12) or a second
  process lands on the same UNIQUE (audience, period) issue and sends nothing twice.
- A leader lease in the store keeps a second `newsletter run` on standby (APS-09); the delivery
  ledger would hold even without it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.triggers.cron import CronTrigger

from .config import Config, load_config
from .schedules import Schedule, parse_schedule

log = logging.getLogger(__name__)

JOB_FUNC = "newsletter.schedule:run_audience"
JOB_TABLE = "apscheduler_jobs"
LEADER_LEASE = "scheduler"
LEASE_SECONDS = 60.0  # a dead leader's lease expires after this; renewed every third of it

# Set by SIGTERM/SIGINT: a running send finishes the messages in flight and stops claiming.
STOP = threading.Event()


def job_id(audience_id: str) -> str:
    return f"digest:{audience_id}"


def trigger_for(schedule: Schedule, tz: ZoneInfo) -> CronTrigger:
    return CronTrigger(**schedule.cron_fields, timezone=tz)


def fire_times(schedule: Schedule, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after `after`, in the site timezone, as APScheduler computes them."""
    trigger = trigger_for(schedule, tz)
    previous: datetime | None = None
    # Step in UTC: aware-datetime arithmetic is wall-clock arithmetic, and a step from the second
    # 02:30 of a fall-back night (fold=1) would land on that same wall time again.
    moment = after.astimezone(UTC) + timedelta(microseconds=1)
    while True:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            return
        yield fire
        previous, moment = fire, fire.astimezone(UTC) + timedelta(microseconds=1)


def last_fire_time(schedule: Schedule, tz: ZoneInfo, now: datetime, lookback: timedelta) -> datetime | None:
    """The latest scheduled fire time in (now - lookback, now]: the run a late job belongs to."""
    latest = None
    for fire in fire_times(schedule, tz, now - lookback):
        if fire > now:
            break
        latest = fire
    return latest


@dataclass(frozen=True)
class Decision:
    action: str  # "added", "rescheduled", "updated", "removed", "kept"
    job: str
    detail: str

    def __str__(self) -> str:
        return f"{self.action} {self.job}: {self.detail}"


def reconcile(scheduler: BaseScheduler, config: Config) -> list[Decision]:
    """Make the (started, paused) scheduler's jobs match config.toml; log every decision."""
    tz = config.site.tz
    grace = int(config.misfire_grace.total_seconds())
    wanted = {job_id(a.id): a for a in config.audiences if a.schedule}
    decisions: list[Decision] = []
    existing = {job.id: job for job in scheduler.get_jobs()}
    for ident in existing:
        if ident not in wanted:
            scheduler.remove_job(ident)
            decisions.append(Decision("removed", ident, "no longer scheduled in config.toml"))
    for ident, audience in wanted.items():
        schedule = parse_schedule(audience.schedule)
        trigger = trigger_for(schedule, tz)
        args = [str(config.path.resolve()), audience.id]
        job = existing.get(ident)
        if job is None:
            scheduler.add_job(
                JOB_FUNC, trigger, id=ident, name=audience.schedule, args=args,
                misfire_grace_time=grace, coalesce=True, max_instances=1, replace_existing=False,
            )
            decisions.append(Decision("added", ident, f"{audience.schedule!r} ({tz.key})"))
            continue
        if str(job.trigger) != str(trigger) or str(job.trigger.timezone) != str(tz):
            # A changed schedule gets a new next run; an unchanged one keeps its pending run.
            scheduler.reschedule_job(ident, trigger=trigger)
            scheduler.modify_job(ident, name=audience.schedule)
            decisions.append(Decision("rescheduled", ident, f"{job.name!r} -> {audience.schedule!r}"))
        changes: dict[str, Any] = {}
        if job.misfire_grace_time != grace:
            changes["misfire_grace_time"] = grace
        if list(job.args) != args:
            changes["args"] = args
        if not job.coalesce or job.max_instances != 1:
            changes.update(coalesce=True, max_instances=1)
        if changes:
            scheduler.modify_job(ident, **changes)
            decisions.append(Decision("updated", ident, ", ".join(sorted(changes))))
        elif str(job.trigger) == str(trigger):
            decisions.append(Decision("kept", ident, f"next run {_show(job.next_run_time)}"))
    for decision in decisions:
        log.info("reconcile: %s", decision)
    return decisions


class _NoJobsWhenStopped:
    """APScheduler 3's shutdown sets the state to stopped and THEN wakes the main loop, which
    processes due jobs once more: their submission to the already closed executor fails and
    their next run time is advanced, so a run that was due (a missed run being reconciled, or a
    fire at the moment of SIGTERM) is silently dropped. A stopped scheduler touches no job."""

    state: int

    def _process_jobs(self) -> float | None:
        if self.state == STATE_STOPPED:
            return None
        return super()._process_jobs()  # type: ignore[misc, no-any-return]


class SafeBackgroundScheduler(_NoJobsWhenStopped, BackgroundScheduler):  # type: ignore[misc]
    pass


def make_scheduler(config: Config) -> BaseScheduler:
    # The job store pulls in SQLAlchemy (~0.1 s): imported here so `newsletter plan` stays quick.
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    scheduler = SafeBackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=config.store_url, tablename=JOB_TABLE)},
        executors={"default": {"type": "threadpool", "max_workers": 4}},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(config.misfire_grace.total_seconds()),
        },
        timezone=config.site.tz,
    )
    scheduler.add_listener(_on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    return scheduler


def _on_event(event: JobExecutionEvent) -> None:
    audience = event.job_id.removeprefix("digest:")
    when = event.scheduled_run_time
    period = _period_for(audience, when)
    if event.code == EVENT_JOB_MISSED:
        log.error(
            "missed: %s %s (scheduled %s) was not sent because the scheduler was down longer than "
            "the grace time; send it by hand: newsletter send %s --period %s",
            audience, period, _show(when), audience, period,
        )
    elif event.code == EVENT_JOB_MAX_INSTANCES:
        log.warning("%s %s: the previous run is still going; this fire is skipped", audience, period)
    else:
        log.error("%s %s failed: %r", audience, period, event.exception, exc_info=event.exception)


# audience id -> (schedule, zone), set by `run`, so the listener can name a missed period
_SCHEDULES: dict[str, tuple[Schedule, ZoneInfo]] = {}


def _period_for(audience_id: str, when: datetime) -> str:
    known = _SCHEDULES.get(audience_id)
    if known is None:
        return "?"
    schedule, tz = known
    return schedule.period_key(when.astimezone(tz))


def run_audience(config_path: str, audience_id: str) -> None:
    """The job: send the issue of the period whose fire time is the latest one not after now.

    Config is re-read on every run, so an edited sender line or template is used; the period and
    the window's end come from the scheduled fire time, so a run that starts late (within
    grace) still sends the right issue with the right articles. Over SMTP on Linux the send runs
    in a process of its own (`newsletter scheduled-send`), which can fork one sending process
    per connection as `newsletter send` does; this process has threads, so it cannot.
    """
    config = load_config(config_path)
    audience = config.audience(audience_id)
    schedule = parse_schedule(audience.schedule)
    now = datetime.now(UTC)
    fire = last_fire_time(schedule, config.site.tz, now, config.misfire_grace + timedelta(minutes=5))
    if fire is None:  # fired outside its own schedule (a manual trigger): nothing due
        log.warning("%s: no scheduled fire time within the grace period; nothing to do", audience_id)
        return
    period = schedule.period_key(fire.astimezone(config.site.tz))
    log.info("%s %s: scheduled for %s, starting", audience_id, period, _show(fire))
    if config.delivery.transport == "smtp" and sys.platform.startswith("linux"):
        _send_in_child(config_path, audience_id, period, fire, now)
    else:
        send_scheduled(config, audience_id, fire, now, STOP)


def send_scheduled(
    config: Config, audience_id: str, fire: datetime, now: datetime, stop: threading.Event
) -> str:
    """Deliver the period of the scheduled fire time (the job's work, in whichever process runs
    it); returns the report's status. Raises NewsletterError when the send cannot be done."""
    from .campaign import period_of
    from .collector import load_catalog
    from .errors import NewsletterError
    from .sending import deliver_period, options_from
    from .services import make_transport
    from .store import Store
    from .tokens import secret_key_from_env

    audience = config.audience(audience_id)
    period = period_of(config, audience, fire)
    catalog = load_catalog(config)
    for problem in catalog.problems:
        log.warning("article skipped: %s", problem)
    store = Store.open(config.store_url)
    try:
        report = deliver_period(
            config, audience, period, fire, store, catalog.articles, catalog.rendered,
            secret_key_from_env(), options_from(config), lambda: make_transport(config),
            now=now, stop=stop,
        )
    except NewsletterError as exc:
        log.error("%s %s: %s", audience_id, period, exc)
        raise
    finally:
        store.close()
        catalog.save_index()
    how = f" through {report.senders}" if report.senders else ""
    if report.status not in ("sent", "skipped", "already sent"):
        log.error("%s %s: %s %s", audience_id, period, report.status, report.message)
    else:
        log.info("%s %s: %s, %d sent%s", audience_id, period, report.status, report.counts.get("sent", 0), how)
    return report.status


def _send_in_child(config_path: str, audience_id: str, period: str, fire: datetime, now: datetime) -> None:
    """`send_scheduled` in a `newsletter scheduled-send` process; STOP is passed on as SIGTERM
    (the child then finishes the messages in flight and stops, as this process would)."""
    from .sending import SendError

    command = [
        sys.executable, "-m", "newsletter", "scheduled-send", "--config", config_path,
        audience_id, "--fire", fire.isoformat(), "--started", now.isoformat(),
    ]
    # Born with SIGTERM/SIGINT blocked (until its handler is set): a stop that comes right away
    # then reaches the handler instead of killing the child mid-start.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        child = subprocess.Popen(command)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    told = False
    while True:
        try:
            code = child.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if STOP.is_set() and not told:
                child.send_signal(signal.SIGTERM)
                told = True
    if code != 0:
        raise SendError(f"{audience_id} {period}: the send process exited with code {code}")


def run(config: Config, *, owner: str | None = None, poll: float = 15.0) -> None:
    """`newsletter run`: wait for the leader lease, reconcile, run the scheduler until a signal."""
    from .store import Store

    _SCHEDULES.clear()
    _SCHEDULES.update(
        {a.id: (parse_schedule(a.schedule), config.site.tz) for a in config.audiences if a.schedule}
    )
    owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    store = Store.open(config.store_url)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: finishing the messages in flight, then stopping", signum)
        STOP.set()
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        while not _lease(store, owner):
            log.info("another scheduler holds the lease; standing by")
            if _wait(stopping, poll):
                return
        log.info("scheduler lease taken by %s", owner)
        _reconcile_paused(config)
        scheduler = make_scheduler(config)
        renew = threading.Thread(target=_keep_lease, args=(store, owner, stopping), daemon=True)
        renew.start()
        if not stopping.is_set():
            scheduler.start()  # missed runs within grace go first
            _wait(stopping)
            scheduler.shutdown(wait=True)  # lets the jobs running finish
    finally:
        stopping.set()
        store.release_lease(LEADER_LEASE, owner)
        store.close()
        log.info("scheduler stopped")


def _wait(event: threading.Event, seconds: float | None = None) -> bool:
    """event.wait(seconds) in short steps. A signal that the kernel hands to another thread
    runs its Python handler only when the main thread comes back to Python: one long wait
    (BlockingScheduler's, until a job days away) missed SIGTERM that way."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while not event.wait(0.25):
        if deadline is not None and time.monotonic() >= deadline:
            return False
    return True


def _reconcile_paused(config: Config) -> list[Decision]:
    """Reconcile through a paused scheduler on the same job store, so no job fires meanwhile."""
    scheduler = make_scheduler(config)
    scheduler.start(paused=True)
    try:
        return reconcile(scheduler, config)
    finally:
        scheduler.shutdown(wait=False)


def _lease(store: Any, owner: str) -> bool:
    return bool(store.acquire_lease(LEADER_LEASE, owner, LEASE_SECONDS, datetime.now(UTC)))


def _keep_lease(store: Any, owner: str, stopping: threading.Event) -> None:
    while not stopping.wait(LEASE_SECONDS / 3):
        if not _lease(store, owner):
            log.error("lost the scheduler lease to another process; stopping")
            STOP.set()
            stopping.set()
            return


def _show(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "none"

