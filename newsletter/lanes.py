"""Where an issue's messages are composed and handed to the transport: sending threads, or one
sending process per connection.

`sending.send_issue` keeps the ledger (claims, outcomes, the in-flight window) in its own thread
and gives claimed deliveries to a lanes object; lanes send them and give back one `Outcome` per
delivery, in any order. As a lanes object takes the deliveries (in the ledger's thread) it makes
each message ready (`Worker.ready`: the tokens, links and headers, checked and encoded: all of
composing but the last join), so a sending thread or process only assembles and sends: with one
connection and a local server the sending process and the server take turns on one core, and
composing there had set the pace (9,100 → 12,400 msg/s when it moved). Each thread or process
streams (`Worker.deliver_stream`): it keeps its connection going for as long as deliveries are
waiting, assembling each message while the server takes in the one before, so a message costs
one round trip where the server offers PIPELINING.

- `ThreadLanes`: `transport.parallelism` threads in this process. Works with any transport and
  in any process (the scheduler's, the web server's).
- `ProcessLanes`: one forked process per connection, each with its own transport (from
  `transport.split()`), so composing and SMTP run beside the ledger instead of taking turns
  with it for one interpreter lock: on 2 cores about twice the rate of threads. Used by
  `lanes_for` only where forking is safe (Linux, no other thread in this process) and the
  transport can be split. The processes ignore SIGTERM/SIGINT (the ledger's process decides when to stop
  and tells them through `halt`) and die with it (Linux: PR_SET_PDEATHSIG), so a killed sender
  never leaves a process sending on its behalf; what was in flight is "sending" in the ledger
  and becomes "unknown" on the next run, as with threads. While they run, the ledger's thread
  runs at a lower CPU priority (`LEDGER_NICE`), and back at its own when they are closed where
  the system allows raising it again (root, or RLIMIT_NICE): a sending process woken by its
  server's reply then gets a shared core at once instead of waiting for a ledger step (a
  local relay answers in well under a millisecond).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import multiprocessing
import os
import queue
import random
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar, cast

from .delivery import NotSent, Outgoing, Transport
from .errors import DeliveryError
from .model import Claimed as Job

if TYPE_CHECKING:
    from .message import Personal
    from .sending import Personalizer, SendOptions

log = logging.getLogger(__name__)

T = TypeVar("T")
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}  # the sender's to act on, never a lane's
# How much lower the ledger runs than its sending processes while they run (nice levels: a
# weight of about a tenth). With the ledger sharing a core with a sending process this took one
# connection from 6,980 to 8,480 msg/s on the bench; with a core each it changes nothing.
LEDGER_NICE = 10
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


class Result(NamedTuple):
    """How one job ended, as it travels back from a sending process."""

    status: str  # "sent", "failed", "unknown", "released" (never attempted)
    message_id: str = ""
    error: str = ""
    pause: str = ""  # non-empty: stop the issue (policy block), with this reason
    suppress: bool = False  # the mailbox does not exist (5.1.x): suppress the address


class Outcome(NamedTuple):
    job: Job
    result: Result


class Ready(NamedTuple):
    """A job whose message is made but for its last step (`Worker.ready`): what is left before
    sending is one join (`Personalizer.assemble`)."""

    job: Job
    message_id: str
    values: Personal


class Flag(Protocol):
    """threading.Event or multiprocessing.Event."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


@dataclass(frozen=True)
class Worker:
    """What a sending thread or process needs for every message of the issue."""

    personalizer: Personalizer
    transport: Transport
    sender: str
    options: SendOptions
    clock: Callable[[], datetime]
    halt: Flag  # set: start no new message
    sleep: Callable[[float], None]

    def ready(self, job: Job) -> Ready | Result:
        """The job's Message-ID and personal values, made now, or its result when it cannot be
        composed. The lanes call it on the ledger's side as they take jobs, so that a sending
        thread or process only assembles each message: composing (~12 µs of tokens, checks and
        encoding) is then not on the path from the server's reply to the next message."""
        return self._guarded(job, functools.partial(_make_ready, self, job))

    def deliver(self, ready: Ready) -> Result:
        """One message, its result always back (see `_guarded`)."""
        return self._guarded(ready.job, lambda: _deliver(self, ready))

    def deliver_stream(self, jobs: Iterable[Ready]) -> Iterator[Outcome]:
        """Each job's outcome, as it is known (not in job order). With a transport that can
        `stream`, the jobs go over one connection, each message assembled while the server takes
        in the one before (and, where the server allows, written with the next envelope: one
        round trip per message). `jobs` is read only as far as messages are needed, so a
        caller can hand over what is there and end the stream when it runs out.

        A transient failure is retried (as `deliver` does) after the stream has ended, since a
        retry needs the connection the stream holds."""
        stream: Streamer | None = getattr(self.transport, "stream", None)
        if stream is None:
            for ready in jobs:
                yield Outcome(ready.job, self.deliver(ready))
            return
        source = iter(jobs)  # read once: after a failed stream the rest go one at a time
        known: list[Outcome] = []  # outcomes of jobs that never reached the transport
        taken: dict[int, Job] = {}  # handed to the transport, not yet answered
        later: list[tuple[Job, Outgoing, BaseException]] = []

        def messages() -> Iterator[Outgoing]:
            for ready in source:
                job = ready.job
                prepared = self._guarded(job, functools.partial(_prepare, self, ready))
                if isinstance(prepared, Result):
                    known.append(Outcome(job, prepared))
                    continue
                taken[job.id] = job
                message_id, message = prepared
                yield Outgoing(job.email, message, message_id, job)

        try:
            for outgoing, error in stream(self.sender, messages(), self.halt.is_set):
                job = taken.pop(cast(Job, outgoing.tag).id)
                yield from _drain(known)
                if error is None:
                    yield Outcome(job, Result("sent", outgoing.message_id))
                elif isinstance(error, NotSent):
                    yield Outcome(job, Result("released"))
                elif isinstance(error, DeliveryError) and error.kind == "transient":
                    later.append((job, outgoing, error))
                else:
                    yield Outcome(job, self._answer(job, outgoing, error))
        except Exception as exc:  # noqa: BLE001 - the transport failed: what it held is unknown
            log.exception("sending stream failed")
            reason = f"internal error: {type(exc).__name__}: {exc}"
            for job in taken.values():
                yield Outcome(job, Result("unknown", "", reason))
        yield from _drain(known)
        for ready in source:  # a stream that stopped, or failed, left these
            yield Outcome(ready.job, self.deliver(ready))
        for job, outgoing, error in later:
            yield Outcome(job, self._answer(job, outgoing, error))

    def _answer(self, job: Job, item: Outgoing, error: BaseException) -> Result:
        """The result of a streamed message that failed: `_attempts` with that as its first
        try (so a transient failure is tried again, with backoff, over `send`)."""
        attempts = functools.partial(
            _attempts, self, job, item.message_id, item.message, _raiser(error)
        )
        return self._guarded(job, attempts)

    def _guarded(self, job: Job, call: Callable[[], T]) -> T | Result:
        """call(), but an unexpected error becomes "unknown" (it may have happened after the
        server accepted the message); a policy block also halts every lane at once."""
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - reported as an outcome, never lost
            log.exception("delivery %s to %s", job.id, job.email)
            return Result("unknown", "", f"internal error: {type(exc).__name__}: {exc}")
        if isinstance(result, Result) and result.pause:
            self.halt.set()
        return result


Streamer = Callable[
    [str, Iterable[Outgoing], Callable[[], bool]], Iterator[tuple[Outgoing, BaseException | None]]
]


def _drain(outcomes: list[Outcome]) -> Iterator[Outcome]:
    while outcomes:
        yield outcomes.pop(0)


def _raiser(exc: BaseException) -> Callable[[], None]:
    def fail() -> None:
        raise exc

    return fail


def _make_ready(worker: Worker, job: Job) -> Ready | Result:
    message_id = worker.personalizer.message_id(job.subscriber_id)
    try:
        values = worker.personalizer.personal(
            job.subscriber_id, job.email, job.name, worker.clock(), message_id
        )
    except ValueError as exc:  # a name or address that cannot go into a header
        return Result("failed", message_id, f"cannot compose: {exc}")
    return Ready(job, message_id, values)


def _prepare(worker: Worker, ready: Ready) -> tuple[str, bytes] | Result:
    """(Message-ID, message) of a job made ready, or "released" once the lanes are halted."""
    if worker.halt.is_set():
        return Result("released")
    return ready.message_id, worker.personalizer.assemble(ready.values)


def _deliver(worker: Worker, ready: Ready) -> Result:
    """One message: assemble, send, retry transient failures with backoff."""
    prepared = _prepare(worker, ready)
    if isinstance(prepared, Result):
        return prepared
    message_id, message = prepared
    job = ready.job

    def send() -> None:
        worker.transport.send(worker.sender, job.email, message, message_id)

    return _attempts(worker, job, message_id, message, send)


def _attempts(
    worker: Worker, job: Job, message_id: str, message: bytes, first: Callable[[], None]
) -> Result:
    """first() is the first try; transient failures are tried again with `send`, after an
    exponential backoff with full jitter (so parallel senders do not retry in step)."""
    options = worker.options

    def resend() -> None:
        worker.transport.send(worker.sender, job.email, message, message_id)

    attempt, call = 1, first
    while True:
        try:
            call()
            return Result("sent", message_id)
        except DeliveryError as exc:
            error = exc.message + (f" (SMTP {exc.code})" if exc.code else "")
            if exc.kind == "unknown":
                return Result("unknown", message_id, error)
            if exc.kind == "permanent":
                enhanced = _ENHANCED.search(exc.message)
                klass = enhanced.group(2) if enhanced else ""
                if klass == "7":  # policy: our sending is blocked; more mail makes it worse
                    pause = f"policy rejection for {job.email}: {error}"
                    return Result("failed", message_id, error, pause=pause)
                return Result("failed", message_id, error, suppress=klass == "1")
            if attempt == options.max_attempts or worker.halt.is_set():
                return Result("failed", message_id, f"gave up after {attempt} tries: {error}")
            worker.sleep(random.uniform(0, options.backoff * 2 ** (attempt - 1)))
            attempt, call = attempt + 1, resend


class Lanes(Protocol):  # pragma: no cover - a Protocol has no behaviour
    batch: int  # how many outcomes to gather before recording them (and claiming as many)

    def submit(self, jobs: Sequence[Job]) -> None: ...

    def collect(self, timeout: float) -> list[Outcome]:
        """Outcomes that came back, waiting up to timeout seconds for the first; [] if none."""
        ...

    def halt(self) -> None:
        """Start no new message; what was submitted comes back "released"."""
        ...

    def close(self) -> None: ...

    def describe(self) -> str:
        """e.g. "2 sending processes", for the report."""
        ...


def _count(number: int, what: str) -> str:
    return f"{number} {what}" + ("" if number == 1 else "es" if what.endswith("s") else "s")


class ThreadLanes:
    """`parallelism` sending threads in this process, each streaming jobs over its own
    connection (`Worker.deliver_stream`) for as long as there are jobs waiting."""

    def __init__(self, worker: Worker, window: int) -> None:
        self._worker = worker
        self._jobs: queue.SimpleQueue[Ready | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"send-{number}")
            for number in range(max(1, worker.transport.parallelism))
        ]
        for thread in self._threads:
            thread.start()
        # Half a window recorded at a time, the freed half claimed again at once, so the
        # connections keep working while the ledger commits.
        self.batch = max(1, window // 2)

    def submit(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            ready = self._worker.ready(job)
            if isinstance(ready, Result):
                self._results.put(Outcome(job, ready))
            else:
                self._jobs.put(ready)

    def _run(self) -> None:
        """Wait for a job, stream it and whatever else is waiting, and again; None: stop."""
        while (first := self._jobs.get()) is not None:
            stop = False

            def waiting(first: Ready) -> Iterator[Ready]:
                nonlocal stop
                job: Ready | None = first
                while job is not None:
                    yield job
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        return
                stop = True

            for outcome in self._worker.deliver_stream(waiting(first)):
                self._results.put(outcome)
            if stop:
                return

    def collect(self, timeout: float) -> list[Outcome]:
        try:
            got = [self._results.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                got.append(self._results.get_nowait())
            except queue.Empty:
                return got

    def halt(self) -> None:
        self._worker.halt.set()

    def describe(self) -> str:
        return _count(len(self._threads), "sending thread")

    def close(self) -> None:
        for _thread in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()


@dataclass
class _Lane:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    jobs: dict[int, Job]  # submitted, not yet back, by id
    lost: bool = False


class ProcessLanes:
    """One forked sending process per transport of `transports`."""

    def __init__(self, worker: Worker, transports: Sequence[Transport], window: int) -> None:
        context = multiprocessing.get_context("fork")
        self._worker = worker
        self._halt = context.Event()
        self._lanes: list[_Lane] = []
        self._known: list[Outcome] = []  # outcomes known without asking a process
        self._priority: int | None = None  # this thread's nice level before the lanes started
        # Two chunks per lane in flight: a lane works on one while its last one is recorded.
        self.chunk = max(1, window // (2 * len(transports)))
        self.batch = self.chunk * len(transports)
        parent = os.getpid()
        # Objects that exist now are never collected in a sending process: a collection there
        # could finalize a copy of this process's database connection.
        gc.collect()
        gc.freeze()
        # Blocked across the forks, so a lane is born deaf to them: a SIGTERM for the sender
        # arriving meanwhile waits for this process (which stops cleanly) instead of killing a
        # lane mid-message.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            for transport in transports:
                ours, theirs = context.Pipe()
                lane_worker = replace(worker, transport=transport, halt=self._halt)
                process = context.Process(
                    target=_lane_main,
                    args=(theirs, lane_worker, parent, self.chunk),
                    name="newsletter-send",
                    daemon=True,
                )
                process.start()
                theirs.close()
                self._lanes.append(_Lane(process, ours, {}))
        except BaseException:
            self.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            gc.unfreeze()
        self._priority = _lower_priority(LEDGER_NICE)  # after the forks: the lanes keep theirs

    def submit(self, jobs: Sequence[Job]) -> None:
        alive = [lane for lane in self._lanes if not lane.lost]
        for start in range(0, len(jobs), self.chunk):
            chunk: list[Ready] = []
            for job in jobs[start : start + self.chunk]:
                ready = self._worker.ready(job)
                if isinstance(ready, Result):
                    self._known.append(Outcome(job, ready))
                else:
                    chunk.append(ready)
            if not chunk:
                continue
            lane = min(alive, key=lambda lane: len(lane.jobs)) if alive else None
            try:
                if lane is None:
                    raise BrokenPipeError
                lane.conn.send(chunk)
            except OSError:  # the process is gone before it could read them: never attempted
                self._known.extend(Outcome(item.job, Result("released")) for item in chunk)
                continue
            lane.jobs.update((item.job.id, item.job) for item in chunk)

    def collect(self, timeout: float) -> list[Outcome]:
        got, self._known = self._known, []
        busy = {lane.conn: lane for lane in self._lanes if lane.jobs}
        if not busy:
            return got
        for conn in wait(list(busy), 0 if got else timeout):
            lane = busy[conn]  # type: ignore[index]
            try:
                results: list[tuple[int, tuple[str, str, str, str, bool]]] = lane.conn.recv()
            except (EOFError, OSError):
                got.extend(self._lost(lane))
                continue
            got.extend(Outcome(lane.jobs.pop(key), Result(*result)) for key, result in results)
        return got

    def _lost(self, lane: _Lane) -> list[Outcome]:
        """A sending process died: its jobs may or may not have gone out."""
        lane.process.join(1.0)
        lane.lost = True
        reason = f"a sending process stopped unexpectedly (exit code {lane.process.exitcode})"
        self._halt.set()
        lost, lane.jobs = list(lane.jobs.values()), {}
        return [Outcome(job, Result("unknown", "", reason, pause=reason)) for job in lost]

    def halt(self) -> None:
        self._halt.set()

    def describe(self) -> str:
        return _count(len(self._lanes), "sending process")

    def close(self) -> None:
        for lane in self._lanes:
            try:
                lane.conn.send(None)
            except OSError:
                pass
        for lane in self._lanes:
            lane.process.join(30.0)
            if lane.process.is_alive():  # pragma: no cover - a hung SMTP session
                lane.process.kill()
                lane.process.join()
            lane.conn.close()
        if self._priority is not None:
            _restore_priority(self._priority)
            self._priority = None


def _lane_main(conn: Connection, worker: Worker, parent: int, flush: int) -> None:
    """A sending process: chunks of jobs in, their results out (`flush` at a time), until None
    or end of pipe."""
    for number in _STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _die_with_parent()
    if os.getppid() != parent:  # it died before the line above took effect
        return
    try:
        while True:
            try:
                chunk: list[Ready] | None = conn.recv()
            except EOFError:
                return
            if chunk is None or _stream_chunks(conn, worker, chunk, flush):
                return
    finally:
        worker.transport.close()


def _stream_chunks(conn: Connection, worker: Worker, first: list[Ready], flush: int) -> bool:
    """Stream `first` and the chunks that arrive before it runs out (never waiting for one:
    the ledger may be waiting for these results), sending results back `flush` at a time.
    True if the end (None or a closed pipe) came meanwhile."""
    ended = False

    def jobs() -> Iterator[Ready]:
        nonlocal ended
        chunk: list[Ready] | None = first
        while chunk is not None:
            yield from chunk
            if not conn.poll():
                return
            try:
                chunk = conn.recv()
            except EOFError:
                chunk = None
        ended = True

    results: list[tuple[int, tuple[str | bool, ...]]] = []  # plain tuples pickle smaller
    for outcome in worker.deliver_stream(jobs()):
        results.append((outcome.job.id, tuple(outcome.result)))
        if len(results) >= flush:
            conn.send(results)
            results = []
    if results:
        conn.send(results)
    return ended


def _lower_priority(step: int) -> int | None:
    """Lower this thread's CPU priority by `step` nice levels; the level before, or None if it
    could not be changed. (Linux keeps a nice value per thread.)"""
    try:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, min(19, before + step))
    except (OSError, AttributeError):  # pragma: no cover - lanes_for forks on Linux only
        return None
    return before


def _restore_priority(before: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, before)
    except OSError:  # raising a priority needs root or RLIMIT_NICE: it stays lower
        log.debug("could not restore this process's CPU priority to nice %d", before)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the one that forked it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - lanes_for forks on Linux only
        pass


def lanes_for(worker: Worker, window: int) -> Lanes:
    """Sending processes where the transport can be split and forking is safe, else threads."""
    split: Callable[[], list[Transport]] | None = getattr(worker.transport, "split", None)
    if (
        split is not None
        # Linux: fork is the default start method there (macOS system libraries are not
        # fork-safe), and a lane can be tied to its parent's life (PR_SET_PDEATHSIG)
        and sys.platform.startswith("linux")
        and threading.active_count() == 1  # a fork copies no lock another thread might hold
    ):
        return ProcessLanes(worker, split(), window)
    return ThreadLanes(worker, window)


__all__ = ["Job", "Lanes", "Outcome", "ProcessLanes", "Ready", "Result", "ThreadLanes", "Worker", "lanes_for"]
