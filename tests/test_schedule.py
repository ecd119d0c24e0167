"""schedule.py: APScheduler 3 wiring with a real SQLite job store, real sends to the outbox, and
`newsletter run` processes racing for the leader lease."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from conftest import AMSTERDAM, copy_site, use_smtp
from smtp_sink import RecordingSink, running_sink

from newsletter.config import Config, load_config
from newsletter.model import ImportRow
from newsletter.planner import plan_audience
from newsletter.schedule import (
    JOB_FUNC,
    fire_times,
    job_id,
    last_fire_time,
    make_scheduler,
    reconcile,
)
from newsletter.schedules import parse_schedule
from newsletter.sending import SendOptions, deliver_period
from newsletter.services import make_transport
from newsletter.store import Store

KEY = "t" * 48


# --- fire times and DST (pure, APScheduler's own trigger) ----------------------------------------
def test_monday_0800_stays_at_0800_across_both_dst_transitions() -> None:
    schedule = parse_schedule("mon 08:00")
    times = list(_take(fire_times(schedule, AMSTERDAM, datetime(2027, 3, 20, tzinfo=AMSTERDAM)), 2))
    times += list(_take(fire_times(schedule, AMSTERDAM, datetime(2026, 10, 15, tzinfo=AMSTERDAM)), 2))
    assert [t.strftime("%a %H:%M") for t in times] == ["Mon 08:00"] * 4
    assert [t.utcoffset() for t in times] == [timedelta(hours=h) for h in (1, 2, 2, 1)]


def test_a_0230_job_fires_twice_on_the_fall_back_sunday_but_is_one_period() -> None:
    """APS-12: APScheduler fires 02:30 twice on 25 October 2026 (CEST and CET); both fires map
    to the same period key, so the UNIQUE issue makes the second one a no-op (see below)."""
    schedule = parse_schedule("daily 02:30")
    fires = [t for t in _take(fire_times(schedule, AMSTERDAM, datetime(2026, 10, 24, 12, tzinfo=AMSTERDAM)), 3)]
    on_sunday = [t for t in fires if t.date().isoformat() == "2026-10-25"]
    assert {schedule.period_key(t) for t in on_sunday} == {"2026-10-25"}
    assert fires[-1].date().isoformat() == "2026-10-26"


def test_the_second_fold_fire_sends_nothing(sample_config: Config, tmp_path: Path) -> None:
    store = Store.open(sample_config.store_url)
    store.import_rows([ImportRow(f"l{i}@example.nl", "", ("beslissers",)) for i in range(3)], datetime.now(UTC))
    from newsletter.collector import load_catalog

    catalog = load_catalog(sample_config)
    audience = sample_config.audience("beslissers")
    first = datetime(2026, 11, 30, 2, 30, tzinfo=AMSTERDAM)
    reports = [
        deliver_period(
            sample_config, audience, "2026-11-30", fire, store, catalog.articles, catalog.rendered,
            KEY.encode(), SendOptions(), lambda: make_transport(sample_config), now=fire,
        )
        for fire in (first, first + timedelta(hours=1))  # the fold: same wall time, an hour later
    ]
    assert [r.status for r in reports] == ["sent", "already sent"]
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 3
    store.close()


def test_last_fire_time_is_the_run_a_late_job_belongs_to() -> None:
    schedule = parse_schedule("mon 08:00")
    now = datetime(2026, 11, 30, 10, 15, tzinfo=AMSTERDAM)  # two hours late
    fire = last_fire_time(schedule, AMSTERDAM, now, timedelta(hours=3))
    assert fire == datetime(2026, 11, 30, 8, tzinfo=AMSTERDAM)
    assert schedule.period_key(fire) == "2026-W49"
    assert last_fire_time(schedule, AMSTERDAM, now, timedelta(hours=1)) is None


def _take(iterator: Iterator[datetime], count: int) -> Iterator[datetime]:
    for _, item in zip(range(count), iterator, strict=False):
        yield item


# --- reconcile against a persistent job store ------------------------------------------------------
def paused(config: Config) -> BackgroundScheduler:
    scheduler = make_scheduler(config)
    scheduler.start(paused=True)
    return scheduler  # type: ignore[return-value]


def test_reconcile_adds_keeps_reschedules_and_removes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = copy_site(tmp_path)
    config = load_config(path)
    scheduler = paused(config)
    decisions = reconcile(scheduler, config)
    assert sorted((d.action, d.job) for d in decisions) == [
        ("added", "digest:beslissers"), ("added", "digest:bouwers"), ("added", "digest:onderzoekers")]
    job = scheduler.get_job(job_id("beslissers"))
    assert job.func_ref == JOB_FUNC and job.misfire_grace_time == 3 * 3600 and job.coalesce
    # A missed run (next_run_time in the past) must survive a restart's reconcile (APS-06).
    missed = datetime.now(UTC) - timedelta(minutes=20)
    scheduler.modify_job(job_id("beslissers"), next_run_time=missed)
    scheduler.shutdown()

    scheduler = paused(config)  # a fresh process: the jobs reload from the database (APS-07)
    decisions = reconcile(scheduler, config)
    assert {d.action for d in decisions} == {"kept"}
    assert scheduler.get_job(job_id("beslissers")).next_run_time == missed
    scheduler.shutdown()

    text = path.read_text(encoding="utf-8")
    text = text.replace('schedule = "thu 07:30"', 'schedule = "fri 07:30"')
    text = text.replace('misfire_grace = "3h"', 'misfire_grace = "6h"')
    text = text.replace('schedule = "monthly 1 09:00"', 'schedule = ""')
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    scheduler = paused(config)
    with caplog.at_level(logging.INFO, logger="newsletter.schedule"):
        decisions = reconcile(scheduler, config)
    actions = {(d.action, d.job) for d in decisions}
    assert ("rescheduled", "digest:bouwers") in actions
    assert ("removed", "digest:onderzoekers") in actions
    assert ("updated", "digest:beslissers") in actions  # the grace changed (APS-05)
    bouwers = scheduler.get_job(job_id("bouwers"))
    assert bouwers.next_run_time.strftime("%a %H:%M") == "Fri 07:30"
    assert scheduler.get_job(job_id("beslissers")).misfire_grace_time == 6 * 3600
    assert scheduler.get_job(job_id("onderzoekers")) is None
    assert "reconcile: rescheduled digest:bouwers: 'thu 07:30' -> 'fri 07:30'" in caplog.text
    scheduler.shutdown()


# --- runs after downtime: within and beyond grace ---------------------------------------------------
@pytest.fixture
def minutely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """A site whose beslissers digest is due every minute (a daily period), with subscribers."""
    path = copy_site(tmp_path)
    text = path.read_text(encoding="utf-8").replace('schedule = "mon 08:00"', 'schedule = "* * * * *"')
    text = text.replace('window = "7d"', 'window = "3650d"', 1)
    text = text.replace('misfire_grace = "3h"', 'misfire_grace = "1h"')
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    config = load_config(path)
    store = Store.open(config.store_url)
    store.import_rows([ImportRow(f"l{i}@example.nl", "", ("beslissers",)) for i in range(4)], datetime.now(UTC))
    store.close()
    return config


def wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def start_with_due_job(config: Config, late: timedelta) -> BackgroundScheduler:
    scheduler = paused(config)
    reconcile(scheduler, config)
    for ident in ("digest:bouwers", "digest:onderzoekers"):
        scheduler.remove_job(ident)
    scheduler.modify_job(job_id("beslissers"), next_run_time=datetime.now(UTC) - late)
    scheduler.resume()
    return scheduler


def issues(config: Config) -> list[object]:
    store = Store.open(config.store_url)
    try:
        return list(store.list_issues("beslissers"))
    finally:
        store.close()


def test_a_run_missed_within_grace_is_sent_once_on_start(minutely: Config) -> None:
    scheduler = start_with_due_job(minutely, timedelta(seconds=20))
    try:
        wait_for(lambda: any(i.status == "sent" for i in issues(minutely)))  # type: ignore[attr-defined]
    finally:
        scheduler.shutdown(wait=True)
    (issue,) = issues(minutely)
    assert issue.period == datetime.now(AMSTERDAM).date().isoformat() or issue.period  # type: ignore[attr-defined]
    outbox = minutely.delivery.outbox_dir
    assert len(list(outbox.glob("*.eml"))) == 4


def test_a_run_missed_beyond_grace_is_logged_and_shown_not_sent(
    minutely: Config, caplog: pytest.LogCaptureFixture
) -> None:
    from newsletter import schedule as module

    # a daily send whose only recent fire time was two hours ago; the grace is one hour
    fire = (datetime.now(AMSTERDAM) - timedelta(hours=2)).replace(second=0, microsecond=0)
    text = minutely.path.read_text(encoding="utf-8").replace(
        'schedule = "* * * * *"', f'schedule = "{fire.minute} {fire.hour} * * *"'
    )
    minutely.path.write_text(text, encoding="utf-8")
    config = load_config(minutely.path)
    module._SCHEDULES["beslissers"] = (parse_schedule(config.audience("beslissers").schedule), AMSTERDAM)
    with caplog.at_level(logging.ERROR, logger="newsletter.schedule"):
        scheduler = start_with_due_job(config, datetime.now(UTC) - fire)
        try:
            wait_for(lambda: "missed: beslissers" in caplog.text, timeout=10)
            next_run = scheduler.get_job(job_id("beslissers")).next_run_time
        finally:
            scheduler.shutdown(wait=True)
    assert issues(config) == []
    period = fire.date().isoformat()
    assert f"send it by hand: newsletter send beslissers --period {period}" in caplog.text
    assert not config.delivery.outbox_dir.exists()
    assert next_run == fire + timedelta(days=1)  # APScheduler moved on to the next day (APS-02)


# --- over SMTP the job runs in a process of its own ----------------------------------------------
def test_a_scheduled_send_over_smtp_runs_in_its_own_process_with_sending_processes(
    minutely: Config, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # The scheduler has threads, so it cannot fork sending processes; `newsletter
    # scheduled-send` (a fresh process) can, as `newsletter send` does.
    from newsletter import schedule as module

    with running_sink() as (sink, port):
        config_path = use_smtp(tmp_path / "config.toml", port, connections=2)
        module.run_audience(str(config_path), "beslissers")
        assert sorted(r.recipient for r in sink.received) == [f"l{i}@example.nl" for i in range(4)]
    err = capfd.readouterr().err
    assert "beslissers" in err and "sent, 4 sent through 2 sending processes" in err
    (issue,) = issues(minutely)
    assert issue.status == "sent"  # type: ignore[attr-defined]


def test_a_stop_reaches_the_scheduled_send_process(minutely: Config, tmp_path: Path) -> None:
    """SIGTERM to `newsletter run` sets STOP; the job passes it on to its send process, which
    finishes the message in flight and stops: the rest stays queued for the next run."""
    from newsletter import schedule as module

    with Store.open(minutely.store_url) as store:
        store.import_rows(
            [ImportRow(f"m{i}@example.nl", "", ("beslissers",)) for i in range(40)],
            datetime.now(UTC),
        )
    sink = RecordingSink(delay=0.05)
    sink.on_message = lambda count: module.STOP.set() if count == 3 else None
    try:
        with running_sink(sink) as (_, port):
            config_path = use_smtp(tmp_path / "config.toml", port, connections=1, batch_size=1)
            module.run_audience(str(config_path), "beslissers")  # returns: stopped is not a failure
    finally:
        module.STOP.clear()
    (issue,) = issues(minutely)
    with Store.open(minutely.store_url) as store:
        counts = store.delivery_counts(issue.id)  # type: ignore[attr-defined]
    assert issue.status != "sent"  # type: ignore[attr-defined]
    assert 3 <= counts["sent"] == sink.count() < 44
    assert counts["queued"] == 44 - counts["sent"] and counts["sending"] == 0
    assert not sink.duplicates()


def test_planner_shows_due_and_missed_runs(sample_config: Config) -> None:
    store = Store.open(sample_config.store_url)
    audience = sample_config.audience("beslissers")
    first = datetime(2026, 11, 2, 8, tzinfo=AMSTERDAM)
    issue, _ = store.create_issue("beslissers", "2026-W45", first - timedelta(days=7), first, first)
    store.set_issue_status(issue.id, "skipped", first)
    at = datetime(2026, 11, 23, 9, 0, tzinfo=AMSTERDAM)  # one hour after the W48 fire
    plan = plan_audience(sample_config, audience, [], at, 0, store.list_issues("beslissers"))
    store.close()
    assert [(p.period, p.state) for p in plan.past] == [
        ("2026-W46", "missed"), ("2026-W47", "missed"), ("2026-W48", "due")]
    assert plan.period == "2026-W49" and plan.outcome == "skip (empty)"


# --- two schedulers on one database ---------------------------------------------------------------
def test_two_schedulers_racing_send_one_issue_once(minutely: Config) -> None:
    """Even without the leader lease (two in-process schedulers firing the same due job), the
    UNIQUE issue, the issue lease and the delivery ledger let each subscriber get one message."""
    first = start_with_due_job(minutely, timedelta(seconds=5))
    second = make_scheduler(minutely)
    second.start()
    try:
        wait_for(lambda: any(i.status == "sent" for i in issues(minutely)))  # type: ignore[attr-defined]
        time.sleep(0.5)
    finally:
        first.shutdown(wait=True)
        second.shutdown(wait=True)
    assert len(issues(minutely)) == 1
    assert len(list(minutely.delivery.outbox_dir.glob("*.eml"))) == 4


class RunProcess:
    """`newsletter run` in a subprocess; a thread collects its log lines."""

    def __init__(self, config: Path) -> None:
        env = {**os.environ, "NEWSLETTER_SECRET_KEY": KEY}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "run", "--config", str(config), "--standby-poll", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged; log:\n{''.join(self.lines)}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


def test_a_second_signal_while_stopping_changes_nothing(tmp_path: Path) -> None:
    # Regression: with two signals at once (a service manager's SIGTERM, then Ctrl-C) Linux
    # hands the second to another thread; `run` then hung in BlockingScheduler's wait (1 run in
    # 4), or shut the scheduler down twice and logged SchedulerNotRunningError.
    run = RunProcess(copy_site(tmp_path))
    run.wait_for("reconcile: added digest:beslissers")
    run.process.send_signal(signal.SIGTERM)
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=20) == 0
    time.sleep(0.2)  # the collector thread reads the last lines
    log = "".join(run.lines)
    assert "scheduler stopped" in log and "Traceback" not in log, log


def test_a_second_run_process_stands_by_and_takes_over(tmp_path: Path) -> None:
    config = copy_site(tmp_path)
    leader = RunProcess(config)
    standby: RunProcess | None = None
    try:
        leader.wait_for("scheduler lease taken")
        leader.wait_for("reconcile: added digest:beslissers")
        standby = RunProcess(config)
        standby.wait_for("another scheduler holds the lease; standing by")
        assert leader.stop() == 0  # SIGTERM: a clean exit that releases the lease
        standby.wait_for("scheduler lease taken")
        standby.wait_for("reconcile: kept digest:beslissers")
        assert not any("reconcile: added" in line for line in standby.lines)  # jobs persisted
    finally:
        leader.stop()
        if standby is not None:
            assert standby.stop() == 0
