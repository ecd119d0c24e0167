"""Fault injection for `newsletter send`: kill the sending process, rerun the same command.

The requirement: a delivery row is `sending` before SMTP and `sent` after; after a crash a rerun of
the same command resumes, never sends twice to a subscriber marked sent, turns rows left in
`sending` into `unknown` and reports them (not re-sent unless `--retry-unknown`).

Every run uses a fresh copy of the sample site (its own SQLite file) with N_SUBSCRIBERS active
subscribers of `beslissers`, `[delivery] transport = "smtp"` with a small batch, and its own
recording SMTP server on 127.0.0.1 (`smtp_sink.RecordingSink`, in a thread of this process, a few
milliseconds per message so that kills land mid-send). `newsletter send` runs as a real subprocess
(`python -m newsletter`) and is killed with SIGKILL at a seeded-random point:

- "t=<s>": after a delay from the start of the process (stratified over the first 0.8 s: start-up,
  reading the articles, rendering and creating the issue, freezing the recipients);
- "msg <k> before reply": by the server, the moment the k-th message's data is complete and before
  its 250 reply (the message may count as delivered; the sender cannot know);
- "msg <k> +<ms>": the k-th message is answered, the kill follows a few ms later (recording a
  batch, claiming the next one, composing).

k is stratified over 1..N, so the kills cover the first batch, every part of the run and its end.
After each kill the same command is run again to completion and the ledger (through `Store`) and
the server's recordings are checked. The SMTP traffic comes from the sender's sending processes
(one per connection), which die with it; what one wrote just before may still be arriving, so
the server's count at the kill is taken once nothing more arrives.

The rerun comes immediately after the kill: the killed process still holds the issue's lease,
and the rerun takes it over because that process (on this host) is gone.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import NOW, copy_site, use_smtp
from smtp_sink import Received, RecordingSink, running_sink

from newsletter.campaign import site_host
from newsletter.config import load_config
from newsletter.message import make_message_id
from newsletter.model import Delivery, ImportRow, Issue
from newsletter.store import Store

AUDIENCE = "beslissers"
SEND_NOW = "2026-11-30T08:00"  # Monday 08:00 of ISO week 49: the beslissers schedule
N_SUBSCRIBERS = 60
BATCH = 5  # [delivery] batch_size: the in-flight window, the most that may end "unknown"
CONNECTIONS = 2
SERVER_DELAY = 0.004  # seconds per message before the 250 reply
RUNS = 24  # kill + resume cycles; the requirement asks for at least 20 kills
SEED = 20261130
SECRET = "fault-injection-secret-key-0123456789abcdef"
TIMEOUT = 60.0  # seconds for any one command
KILL_SIGNAL = signal.SIGKILL


# --- the site ------------------------------------------------------------------------------------
def make_site(
    dest: Path,
    port: int,
    *,
    subscribers: int = N_SUBSCRIBERS,
    connections: int = CONNECTIONS,
    batch_size: int = BATCH,
) -> Path:
    """A copy of the sample site sending through 127.0.0.1:port, with `subscribers` imported."""
    dest.mkdir(parents=True)
    config_path = use_smtp(copy_site(dest), port, connections=connections, batch_size=batch_size)
    config = load_config(config_path)
    assert config.delivery.transport == "smtp" and config.delivery.smtp.port == port
    rows = [ImportRow(f"lezer{i}@example.nl", f"Lezer {i}", (AUDIENCE,)) for i in range(subscribers)]
    with Store.open(config.store_url) as store:
        result = store.import_rows(rows, NOW - timedelta(days=1))
    assert result.added == subscribers
    return config_path


def send_command(config_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "newsletter", "send", AUDIENCE, "--now", SEND_NOW,
        "--config", str(config_path), *extra,
    ]


def send_env() -> dict[str, str]:
    env = dict(os.environ)
    env["NEWSLETTER_SECRET_KEY"] = SECRET
    env.pop("NEWSLETTER_SMTP_USER", None)
    env.pop("NEWSLETTER_SMTP_PASSWORD", None)
    return env


def run_send(config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        send_command(config_path, *extra), cwd=config_path.parent, env=send_env(),
        capture_output=True, text=True, timeout=TIMEOUT,
    )


def start_send(config_path: Path, log_name: str) -> subprocess.Popen[bytes]:
    """`newsletter send` in the background, output to files (never a pipe that could fill up)."""
    folder = config_path.parent
    with (folder / f"{log_name}.out").open("wb") as out, (folder / f"{log_name}.err").open("wb") as err:
        return subprocess.Popen(
            send_command(config_path), cwd=folder, env=send_env(), stdout=out, stderr=err,
            start_new_session=True,  # its own process group, so nothing it forked outlives it
        )


def signal_process(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.returncode is None:  # not reaped yet: the pid is still this process
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass


def reap(process: subprocess.Popen[bytes]) -> int:
    returncode = process.wait(timeout=TIMEOUT)
    try:  # the group leader is gone; end anything it left behind in its group
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return returncode


def settled_count(sink: RecordingSink) -> int:
    """What the server received from the killed run: its last message may still be on its way
    through the loopback (written by a sending process just before it died), so wait until
    nothing more arrives."""
    count = sink.count()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if sink.count() == count:
            return count
        count = sink.count()
    return count


# --- the ledger ----------------------------------------------------------------------------------
@dataclass
class Ledger:
    issue: Issue | None
    counts: dict[str, int]
    deliveries: list[Delivery]

    def emails(self, *statuses: str) -> set[str]:
        return {d.email for d in self.deliveries if d.status in statuses}


def read_ledger(config_path: Path) -> Ledger:
    config = load_config(config_path)
    with Store.open(config.store_url) as store:
        issues = store.list_issues(AUDIENCE)
        assert len(issues) <= 1, issues
        if not issues:
            return Ledger(None, {}, [])
        issue = issues[0]
        return Ledger(issue, store.delivery_counts(issue.id), list(store.list_deliveries(issue.id)))


def check_complete(
    config_path: Path,
    received: list[Received],
    *,
    subscribers: int = N_SUBSCRIBERS,
    allow_duplicates_for: set[str] | None = None,
) -> Ledger:
    """The ledger is finished and agrees with what the server received."""
    config = load_config(config_path)
    ledger = read_ledger(config_path)
    assert ledger.issue is not None and ledger.issue.status == "sent", ledger.issue
    counts = ledger.counts
    assert counts["queued"] == 0 and counts["sending"] == 0, counts
    accounted = counts["sent"] + counts["failed"] + counts["suppressed"] + counts["unknown"]
    assert accounted == subscribers == len(ledger.deliveries), counts
    assert counts["failed"] == 0 and counts["suppressed"] == 0, counts  # the sink refuses nothing

    by_email = {d.email: d for d in ledger.deliveries}
    host = site_host(config)
    recipients: dict[str, int] = {}
    for message in received:
        recipients[message.recipient] = recipients.get(message.recipient, 0) + 1
        delivery = by_email.get(message.recipient)
        assert delivery is not None, f"{message.recipient} received but not in the ledger"
        # the message went to the subscriber it was composed for (deterministic Message-ID)
        assert message.message_id == make_message_id(ledger.issue.id, delivery.subscriber_id, host)
        assert delivery.status in ("sent", "unknown"), (message, delivery)
    duplicates = {r: n for r, n in recipients.items() if n > 1}
    assert set(duplicates) <= (allow_duplicates_for or set()), f"sent twice: {duplicates}"
    missing = ledger.emails("sent") - set(recipients)
    assert not missing, f"marked sent but never received: {sorted(missing)}"
    return ledger


# --- the fault loop ------------------------------------------------------------------------------
@dataclass(frozen=True)
class KillPlan:
    delay: float = 0.0  # seconds after the start (when message == 0)
    message: int = 0  # kill at the k-th message the server accepts (0: use the delay)
    before_reply: bool = False
    after_reply_delay: float = 0.0

    def describe(self) -> str:
        if not self.message:
            return f"t={self.delay:.2f}s"
        if self.before_reply:
            return f"msg {self.message} before reply"
        return f"msg {self.message} +{self.after_reply_delay * 1000:.0f}ms"


def kill_plans(rng: random.Random, runs: int) -> list[KillPlan]:
    """Stratified random kill points: a few by time (mostly before any message), the rest by
    message count over the whole run, about half of them before the server's reply."""
    timed = max(4, runs // 5)
    plans = [KillPlan(delay=rng.uniform(i * 0.8 / timed, (i + 1) * 0.8 / timed)) for i in range(timed)]
    counted = runs - timed
    for i in range(counted):
        low = 1 + i * N_SUBSCRIBERS // counted
        high = max(low, (i + 1) * N_SUBSCRIBERS // counted)
        # the first and last strata always before the reply: a kill inside the first batch and
        # one in the last, whatever the timing
        if i in (0, counted - 1) or rng.random() < 0.5:
            plans.append(KillPlan(message=rng.randint(low, high), before_reply=True))
        else:
            plans.append(KillPlan(message=rng.randint(low, high), after_reply_delay=rng.uniform(0, 0.02)))
    rng.shuffle(plans)
    return plans


def arm(
    sink: RecordingSink, process: subprocess.Popen[bytes], plan: KillPlan, signum: int
) -> Callable[[int], None]:
    """The server hook that signals the sender at the planned message."""

    def hook(count: int) -> None:
        if count != plan.message:
            return
        if plan.before_reply or not plan.after_reply_delay:
            signal_process(process, signum)
        else:
            asyncio.get_running_loop().call_later(
                plan.after_reply_delay, signal_process, process, signum
            )

    sink.on_message = hook
    return hook


def signal_at_message(
    sink: RecordingSink, config_path: Path, log_name: str, message: int, signum: int
) -> int:
    """Run `newsletter send`, signal it once the server holds the message-th message (before
    its reply), reap it; its exit code."""
    process = start_send(config_path, log_name)
    arm(sink, process, KillPlan(message=message, before_reply=True), signum)
    returncode = reap(process)
    sink.on_message = None
    return returncode


@dataclass
class RunResult:
    plan: str
    killed: bool
    issue_at_kill: bool
    received_at_kill: int
    sending_at_kill: int
    unknown: int
    resumed_sent: int


@dataclass
class Tally:
    results: list[RunResult] = field(default_factory=list)

    def table(self) -> str:
        lines = [
            f"{'run':>3}  {'kill point':<22} {'killed':<6} {'issue':<5} {'recv@kill':>9} "
            f"{'sending@kill':>12} {'unknown':>7} {'resumed':>7}"
        ]
        for number, r in enumerate(self.results, 1):
            lines.append(
                f"{number:>3}  {r.plan:<22} {'yes' if r.killed else 'no':<6} "
                f"{'yes' if r.issue_at_kill else 'no':<5} {r.received_at_kill:>9} "
                f"{r.sending_at_kill:>12} {r.unknown:>7} {r.resumed_sent:>7}"
            )
        return "\n".join(lines)


def test_sigkill_at_random_points_then_rerun_resumes_at_most_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    tally = Tally()
    for number, plan in enumerate(kill_plans(rng, RUNS), 1):
        with running_sink(RecordingSink(delay=SERVER_DELAY)) as (sink, port):
            config_path = make_site(tmp_path / f"run{number:02d}", port)
            process = start_send(config_path, "killed")
            if plan.message:
                arm(sink, process, plan, KILL_SIGNAL)
                returncode = reap(process)
            else:
                try:
                    returncode = process.wait(timeout=plan.delay)
                except subprocess.TimeoutExpired:
                    signal_process(process, KILL_SIGNAL)
                    returncode = reap(process)
            sink.on_message = None
            killed = returncode == -KILL_SIGNAL
            context = f"run {number} ({plan.describe()}), site {config_path.parent}"
            assert killed or returncode == 0, f"{context}: exit {returncode}"
            at_kill = settled_count(sink)
            crashed = read_ledger(config_path)
            sending_at_kill = crashed.counts.get("sending", 0)
            # the crash leaves at most one batch in flight
            assert sending_at_kill <= BATCH, f"{context}: {crashed.counts}"
            if crashed.counts:
                assert crashed.counts["sent"] <= at_kill, f"{context}: {crashed.counts}"

            resumed = run_send(config_path)
            output = f"{context}\nstdout:\n{resumed.stdout}\nstderr:\n{resumed.stderr}"
            assert resumed.returncode == 0, output
            ledger = check_complete(config_path, sink.received)

            unknown = ledger.counts["unknown"]
            assert unknown <= BATCH, output
            # exactly the rows the dead process left "sending" became "unknown" ...
            assert unknown == sending_at_kill, output
            # ... and the rerun did not send them
            resent = ledger.emails("unknown") & {r.recipient for r in sink.received[at_kill:]}
            assert not resent, f"{output}\nunknown rows re-sent: {sorted(resent)}"
            # ... and it says so
            status = re.search(
                r"^beslissers 2026-W49: (already )?sent; (\d+) sent, .* (\d+) unknown, 0 still queued"
                r"(?: \(through (.*)\))?$",
                resumed.stdout, re.MULTILINE,
            )
            assert status is not None, output
            assert int(status.group(2)) == ledger.counts["sent"] and int(status.group(3)) == unknown
            if not status.group(1):  # it sent: one process per connection, beside the ledger's
                assert status.group(4) == f"{CONNECTIONS} sending processes", output
            if unknown:
                assert f"{unknown} deliveries were in flight when an earlier run stopped" in resumed.stderr, output
                assert "--retry-unknown" in resumed.stderr, output
            tally.results.append(
                RunResult(plan.describe(), killed, crashed.issue is not None, at_kill,
                          sending_at_kill, unknown, sink.count() - at_kill)
            )
    print(f"\n{tally.table()}")
    results = tally.results
    kills = sum(r.killed for r in results)
    assert kills >= 20, tally.table()
    # the kills covered the interesting places
    assert any(r.killed and not r.issue_at_kill for r in results), "no kill before the issue existed"
    assert any(r.killed and 0 < r.received_at_kill < BATCH for r in results), "no kill in the first batch"
    assert any(r.killed and r.received_at_kill >= N_SUBSCRIBERS - BATCH for r in results), "no kill near the end"
    assert any(r.unknown for r in results), "no kill left a delivery in flight"


def test_retry_unknown_sends_the_unknown_ones(tmp_path: Path) -> None:
    with running_sink(RecordingSink(delay=SERVER_DELAY)) as (sink, port):
        config_path = make_site(tmp_path / "site", port)
        # mid second batch, the message complete but not yet answered
        assert signal_at_message(sink, config_path, "killed", BATCH + 3, KILL_SIGNAL) == -KILL_SIGNAL
        at_kill = settled_count(sink)

        resumed = run_send(config_path)
        assert resumed.returncode == 0, resumed.stderr
        ledger = check_complete(config_path, sink.received)
        unknown = ledger.emails("unknown")
        assert 1 <= len(unknown) <= BATCH, ledger.counts
        assert not unknown & {r.recipient for r in sink.received[at_kill:]}

        before_retry = sink.count()
        again = run_send(config_path, "--retry-unknown")
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{N_SUBSCRIBERS} sent, 0 failed, 0 suppressed, 0 unknown, 0 still queued" in again.stdout
        # the unknown ones may now have it twice; nobody else
        final = check_complete(config_path, sink.received, allow_duplicates_for=unknown)
        assert final.counts["sent"] == N_SUBSCRIBERS
        assert {r.recipient for r in sink.received} == final.emails("sent")
        retried = [r.recipient for r in sink.received[before_retry:]]
        assert sorted(retried) == sorted(unknown)  # each unknown one once more, nobody else


@pytest.mark.parametrize("at_message", [2, BATCH * 5 + 2, N_SUBSCRIBERS - 2])
def test_sigterm_stops_cleanly_and_a_rerun_finishes(tmp_path: Path, at_message: int) -> None:
    with running_sink(RecordingSink(delay=SERVER_DELAY)) as (sink, port):
        config_path = make_site(tmp_path / "site", port)
        returncode = signal_at_message(sink, config_path, "stopped", at_message, signal.SIGTERM)
        out = (config_path.parent / "stopped.out").read_text(encoding="utf-8")
        err = (config_path.parent / "stopped.err").read_text(encoding="utf-8")
        assert returncode in (0, 1), f"exit {returncode}\n{out}\n{err}"
        if returncode == 1:
            assert "beslissers 2026-W49: stopped;" in out, out + err
        assert "signal 15: finishing the messages in flight" in err
        ledger = read_ledger(config_path)
        assert ledger.counts["sending"] == 0 and ledger.counts["unknown"] == 0, ledger.counts
        # the messages in flight were finished and recorded: what arrived is exactly what is sent
        assert {r.recipient for r in sink.received} == ledger.emails("sent"), ledger.counts
        assert ledger.counts["sent"] >= at_message
        assert sink.duplicates() == {}

        rerun = run_send(config_path)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        final = check_complete(config_path, sink.received)
        assert final.counts["sent"] == N_SUBSCRIBERS and final.counts["unknown"] == 0
        assert sink.duplicates() == {}
        assert "in flight when an earlier run stopped" not in rerun.stderr


def test_an_immediate_rerun_after_sigkill_is_not_busy(tmp_path: Path) -> None:
    with running_sink(RecordingSink(delay=SERVER_DELAY)) as (sink, port):
        config_path = make_site(tmp_path / "site", port)
        assert signal_at_message(sink, config_path, "killed", BATCH + 2, KILL_SIGNAL) == -KILL_SIGNAL
        resumed = run_send(config_path)  # no waiting, no help
        assert "busy" not in resumed.stdout, resumed.stdout
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        check_complete(config_path, sink.received)
