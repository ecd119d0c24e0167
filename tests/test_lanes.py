"""lanes.py: sending threads and sending processes.

The processes are real forks of this test process, writing real outbox files (or talking to a
real aiosmtpd server); a lane that dies is a lane process that really exits mid-chunk.
"""

from __future__ import annotations

import email
import email.policy
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import REPO
from test_delivery import Recorder, Start, plain, start_server  # noqa: F401 - fixture
from test_sending import KEY, prepared, subscribe

from newsletter.campaign import message_template
from newsletter.config import Config
from newsletter.delivery.outbox import OutboxTransport
from newsletter.lanes import (
    LEDGER_NICE,
    Outcome,
    ProcessLanes,
    Ready,
    Result,
    ThreadLanes,
    Worker,
    lanes_for,
)
from newsletter.model import Claimed as Job
from newsletter.sending import Personalizer, SendOptions, stored_digest
from newsletter.store import Store

OPTIONS = SendOptions(batch_size=8, max_attempts=2, backoff=0.0)
CRASH = "crash@example.nl"


class CrashingOutbox(OutboxTransport):
    """An outbox whose process exits (as if killed) when asked to send to CRASH."""

    def send(self, sender: str, recipient: str, message: bytes, message_id: str) -> None:
        if recipient == CRASH:
            os._exit(17)
        super().send(sender, recipient, message, message_id)


class SlowOutbox(OutboxTransport):
    def send(self, sender: str, recipient: str, message: bytes, message_id: str) -> None:
        time.sleep(0.05)
        super().send(sender, recipient, message, message_id)


@pytest.fixture
def worker(sample_config: Config) -> Iterator[Worker]:
    store = Store.open(sample_config.store_url)
    subscribe(store, 1)
    issue, _ = prepared(sample_config, store)
    store.close()
    template = message_template(
        sample_config, sample_config.audience("beslissers"), stored_digest(sample_config, issue)
    )
    personalizer = Personalizer(sample_config, issue, template, KEY)
    yield Worker(
        personalizer,
        OutboxTransport(Path(sample_config.site.output_dir) / "unused"),
        template.sender_address,
        OPTIONS,
        lambda: datetime(2026, 11, 30, 7, 0, tzinfo=UTC),
        threading.Event(),
        time.sleep,
    )


def jobs(count: int, start: int = 1) -> list[Job]:
    return [Job(n, n, f"lezer{n}@example.nl", f"Lezer {n}") for n in range(start, start + count)]


def collect_all(lanes: Any, expected: int, timeout: float = 20.0) -> list[Outcome]:
    got: list[Outcome] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected:
        assert time.monotonic() < deadline, f"only {len(got)} of {expected} outcomes came back"
        got.extend(lanes.collect(0.2))
    return got


def run(lanes: Any, work: list[Job]) -> list[Outcome]:
    """Submit the jobs, wait for every outcome, close the lanes."""
    try:
        lanes.submit(work)
        return collect_all(lanes, len(work))
    finally:
        lanes.close()


def recipients_in(*folders: Path) -> Counter[str]:
    seen: Counter[str] = Counter()
    for folder in folders:
        for path in folder.glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            seen[message["To"].addresses[0].addr_spec] += 1
    return seen


def test_process_lanes_send_every_job_once_and_report_each(worker: Worker, tmp_path: Path) -> None:
    folders = [tmp_path / "lane1", tmp_path / "lane2"]
    lanes = ProcessLanes(worker, [OutboxTransport(f) for f in folders], window=8)
    assert lanes.chunk == 2 and lanes.batch == 4 and lanes.describe() == "2 sending processes"
    work = jobs(25)
    outcomes = run(lanes, work)
    assert sorted(o.job for o in outcomes) == work
    assert {o.result.status for o in outcomes} == {"sent"}
    assert all(o.result.message_id == worker.personalizer.message_id(o.job.subscriber_id) for o in outcomes)
    sent = recipients_in(*folders)
    assert sent == Counter({job.email: 1 for job in work})
    assert all(any(folder.glob("*.eml")) for folder in folders), "both lanes worked"



def test_the_ledger_runs_at_a_lower_priority_than_its_sending_processes(
    worker: Worker, tmp_path: Path
) -> None:
    """While lanes run, this (the ledger's) thread is LEDGER_NICE levels lower and each lane
    keeps the level it was forked with, so a lane woken by a reply gets a shared core first;
    closed, the level comes back where raising it is allowed (root here and in CI)."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    lanes = ProcessLanes(worker, [SlowOutbox(tmp_path / "a"), SlowOutbox(tmp_path / "b")], window=8)
    try:
        assert os.getpriority(os.PRIO_PROCESS, 0) == min(19, before + LEDGER_NICE)
        for lane in lanes._lanes:
            assert lane.process.pid is not None
            assert os.getpriority(os.PRIO_PROCESS, lane.process.pid) == before
        lanes.submit(jobs(4))
        outcomes = collect_all(lanes, 4)
    finally:
        lanes.close()
    assert [o.result.status for o in outcomes] == ["sent"] * 4
    may_raise = os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20 - before
    assert os.getpriority(os.PRIO_PROCESS, 0) == (before if may_raise else min(19, before + LEDGER_NICE))

def test_halted_lanes_release_what_they_have_not_started(worker: Worker, tmp_path: Path) -> None:
    lanes = ProcessLanes(worker, [SlowOutbox(tmp_path / "out")], window=40)
    try:
        work = jobs(20)
        lanes.submit(work)
        deadline = time.monotonic() + 10
        while not list((tmp_path / "out").glob("*.eml")):  # the lane is under way
            assert time.monotonic() < deadline, "the lane sent nothing"
            time.sleep(0.01)
        lanes.halt()
        outcomes = collect_all(lanes, len(work))
    finally:
        lanes.close()
    statuses = Counter(o.result.status for o in outcomes)
    assert statuses["sent"] >= 1 and statuses["released"] >= 1, statuses
    assert set(statuses) <= {"sent", "released"}
    sent = {o.job.email for o in outcomes if o.result.status == "sent"}
    assert set(recipients_in(tmp_path / "out")) == sent  # released ones were never written


def test_a_lane_that_dies_turns_its_jobs_unknown_and_pauses(worker: Worker, tmp_path: Path) -> None:
    lanes = ProcessLanes(worker, [CrashingOutbox(tmp_path / "a"), SlowOutbox(tmp_path / "b")], window=8)
    try:
        first = [Job(1, 1, CRASH, "Crash"), *jobs(1, start=2)]  # one chunk: lane "a"
        lanes.submit(first)
        outcomes = collect_all(lanes, 2)
        lanes.submit(jobs(4, start=10))  # after the loss: only the living lane gets work
        later = collect_all(lanes, 4)
    finally:
        lanes.close()
    assert {o.result.status for o in outcomes} == {"unknown"}
    assert all("a sending process stopped unexpectedly (exit code 17)" in o.result.error for o in outcomes)
    assert all(o.result.pause for o in outcomes)
    # the loss halted the issue: the living lane starts nothing new
    assert {o.result.status for o in later} == {"released"}
    assert not list((tmp_path / "b").glob("*.eml"))


def test_lane_processes_ignore_sigterm(worker: Worker, tmp_path: Path) -> None:
    lanes = ProcessLanes(worker, [SlowOutbox(tmp_path / "out")], window=20)
    try:
        work = jobs(10)
        lanes.submit(work)
        for lane in lanes._lanes:
            assert lane.process.pid is not None
            os.kill(lane.process.pid, signal.SIGTERM)
        outcomes = collect_all(lanes, len(work))
    finally:
        lanes.close()
    assert {o.result.status for o in outcomes} == {"sent"}


def test_thread_lanes_give_the_same_outcomes(worker: Worker, tmp_path: Path) -> None:
    lanes = ThreadLanes(replace(worker, transport=OutboxTransport(tmp_path / "out")), window=8)
    assert lanes.batch == 4 and lanes.describe() == "1 sending thread"
    work = jobs(9)
    outcomes = run(lanes, work)
    assert sorted(o.job for o in outcomes) == work
    assert recipients_in(tmp_path / "out") == Counter({job.email: 1 for job in work})


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_job_that_cannot_be_composed_fails_and_the_rest_are_sent(
    worker: Worker, tmp_path: Path, kind: str
) -> None:
    """Messages are made ready (all of composing but the join) on the ledger's side as the
    lanes take the jobs; a subscriber whose name cannot go into a header fails there, by
    itself, and is never handed to a sending thread or process."""
    folder = tmp_path / "out"
    lanes: Any = (
        ThreadLanes(replace(worker, transport=OutboxTransport(folder)), window=8)
        if kind == "threads"
        else ProcessLanes(worker, [OutboxTransport(folder)], window=8)
    )
    work = jobs(5)
    work[2] = work[2]._replace(name="Lezer\x073")
    outcomes = {o.job.id: o.result for o in run(lanes, work)}
    bad = outcomes.pop(work[2].id)
    assert bad.status == "failed" and bad.error.startswith("cannot compose: To: display name contains")
    assert bad.message_id == worker.personalizer.message_id(work[2].subscriber_id)
    assert {result.status for result in outcomes.values()} == {"sent"}
    assert recipients_in(folder) == Counter({job.email: 1 for job in work if job is not work[2]})


def test_a_ready_job_gives_the_message_composing_in_place_gives(worker: Worker) -> None:
    job = jobs(1)[0]
    ready = worker.ready(job)
    assert isinstance(ready, Ready) and ready.job == job
    assert ready.message_id == worker.personalizer.message_id(job.subscriber_id)
    message = worker.personalizer.compose(job.subscriber_id, job.email, job.name, worker.clock())
    assert worker.personalizer.assemble(ready.values) == message
    with pytest.raises(ValueError, match="expected 12 personal values, got 11"):
        worker.personalizer.assemble(ready.values[:-1])


def made_ready(worker: Worker, work: list[Job]) -> list[Ready]:
    """The jobs as the lanes hand them to a sending thread or process (`Worker.ready`)."""
    ready = [worker.ready(job) for job in work]
    assert all(isinstance(item, Ready) for item in ready)
    return cast(list[Ready], ready)


def streamed(worker: Worker, work: list[Job]) -> list[Result]:
    """`deliver_stream`'s results, in job order."""
    stream = worker.deliver_stream(made_ready(worker, work))
    results = {outcome.job.id: outcome.result for outcome in stream}
    assert len(results) == len(work)
    return [results[job.id] for job in work]


def test_deliver_stream_over_smtp_matches_deliver_one_by_one(
    worker: Worker, start_server: Start
) -> None:
    """The streamed path (the next message composed while the server takes in this one, and
    with pipelining written with its envelope) gives what sending one by one gives, refusals
    and retries included."""
    handler = Recorder(
        refuse={"lezer3@example.nl": "550 5.1.1 No such user", "lezer5@example.nl": "451 4.3.0 Later"}
    )
    server, handler = start_server(handler)
    work = jobs(6)
    overlapped = replace(worker, transport=plain(server))
    results = streamed(overlapped, work)
    overlapped.transport.close()
    first = list(handler.received)
    handler.received.clear()
    one_by_one = replace(worker, transport=plain(server))
    expected = [one_by_one.deliver(ready) for ready in made_ready(one_by_one, work)]
    one_by_one.transport.close()
    assert results == expected
    assert [r.status for r in results] == ["sent", "sent", "failed", "sent", "failed", "sent"]
    assert results[2].suppress and "550 5.1.1" in results[2].error
    assert results[4].error.startswith("gave up after 2 tries") and not results[4].suppress
    assert [r.data for r in first] == [r.data for r in handler.received]


def test_deliver_stream_stops_after_a_policy_block(worker: Worker, start_server: Start) -> None:
    """The message after the blocked one was already composed (and with pipelining its
    envelope written): it is not sent, and comes back released."""
    handler = Recorder(refuse_data={"lezer2@example.nl": "554 5.7.1 Blocked for spam"})
    server, handler = start_server(handler)
    lane = replace(worker, transport=plain(server), halt=threading.Event())
    results = streamed(lane, jobs(4))
    lane.transport.close()
    assert [r.status for r in results] == ["sent", "failed", "released", "released"]
    assert "policy rejection" in results[1].pause and lane.halt.is_set()
    assert handler.recipients() == ["lezer1@example.nl"]


def test_thread_lanes_stream_over_smtp_and_send_each_job_once(
    worker: Worker, start_server: Start
) -> None:
    server, handler = start_server()
    transport = plain(server, connections=2)
    lanes = ThreadLanes(replace(worker, transport=transport), window=8)
    assert lanes.describe() == "2 sending threads"
    work = jobs(30)
    outcomes = run(lanes, work)
    transport.close()
    assert sorted(o.job for o in outcomes) == work
    assert {o.result.status for o in outcomes} == {"sent"}
    assert Counter(handler.recipients()) == Counter({job.email: 1 for job in work})
    assert transport.connections_opened <= 2


def test_lanes_for_uses_threads_while_another_thread_runs(worker: Worker, tmp_path: Path) -> None:
    class Splittable(OutboxTransport):
        def split(self) -> list[OutboxTransport]:
            return [OutboxTransport(self.folder)]

    busy = threading.Event()
    other = threading.Thread(target=busy.wait)
    other.start()
    try:
        lanes = lanes_for(replace(worker, transport=Splittable(tmp_path)), window=4)
        lanes.close()
    finally:
        busy.set()
        other.join()
    assert isinstance(lanes, ThreadLanes)


CHILD = textwrap.dedent(
    """
    import sys, threading, time
    from datetime import UTC, datetime
    from pathlib import Path
    from newsletter.config import load_config
    from newsletter.campaign import message_template
    from newsletter.delivery.outbox import OutboxTransport
    from newsletter.lanes import Job, ProcessLanes, Worker, lanes_for
    from newsletter.sending import Personalizer, SendOptions, prepare_issue, stored_digest
    from newsletter.collector import load_catalog
    from newsletter.model import ImportRow
    from newsletter.store import Store

    class Hanging(OutboxTransport):
        def split(self):
            return [Hanging(self.folder), Hanging(self.folder)]

        def send(self, sender, recipient, message, message_id):
            time.sleep(3600)

    config = load_config(sys.argv[1])
    at = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    store = Store.open(config.store_url)
    store.import_rows([ImportRow("a@example.nl", "A", ("beslissers",))], at)
    catalog = load_catalog(config)
    issue, _ = prepare_issue(config, config.audience("beslissers"), "2026-W49", at, store,
                             catalog.articles, catalog.rendered, at)
    store.close()
    template = message_template(config, config.audience("beslissers"), stored_digest(config, issue))
    worker = Worker(Personalizer(config, issue, template, b"k" * 40), Hanging(Path(sys.argv[2])),
                    template.sender_address, SendOptions(), lambda: at, threading.Event(), time.sleep)
    lanes = lanes_for(worker, 8)
    lanes.submit([Job(1, 1, "a@example.nl", "A"), Job(2, 2, "b@example.nl", "B")])
    print(type(lanes).__name__, *[lane.process.pid for lane in lanes._lanes], flush=True)
    time.sleep(3600)
    """
)


def test_lane_processes_die_with_the_sender(sample_config: Config, tmp_path: Path) -> None:
    """A fresh, single-threaded process picks sending processes; SIGKILL it and they go too,
    so no message can leave on behalf of a sender that is gone."""
    config_path = Path(sample_config.site.content_dir).parent / "config.toml"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(config_path), str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert child.stdout is not None
        kind, *pids = child.stdout.readline().split()
        assert kind == "ProcessLanes" and len(pids) == 2, (kind, pids)
        for pid in pids:
            assert Path(f"/proc/{pid}").exists()
        child.kill()
        child.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(int(pid)) for pid in pids):
            assert time.monotonic() < deadline, "a sending process outlived its sender"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait(10)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return status != "Z"  # a zombie has stopped; it only waits for its (dead) parent's reaper


def test_results_travel_as_tuples() -> None:
    result = Result("failed", "<1@x>", "550 no", "", True)
    assert Result(*tuple(result)) == result
