"""Where an issue's messages are composed and handed to the transport: sending threads, or one
sending process per connection.

`sending.send_issue` keeps the ledger (claims, outcomes, the in-flight window) in its own thread
and gives claimed deliveries to a lanes object; lanes compose and send them and give back one
`Outcome` per delivery, in any order.

- `ThreadLanes`: `transport.parallelism` threads in this process. Works with any transport and
  in any process (the scheduler's, the web server's).
- `ProcessLanes`: one forked process per connection, each with its own transport (from
  `transport.split()`), so composing and SMTP run beside the ledger instead of taking turns
  with it for one interpreter lock: on 2 cores about twice the rate of threads. Used by
  `lanes_for` only where forking is safe (Linux, no other thread in this process) and the
  transport can be split. The processes ignore SIGTERM/SIGINT (the ledger's process decides when to stop
  and tells them through `halt`) and die with it (Linux: PR_SET_PDEATHSIG), so a killed sender
  never leaves a process sending on its behalf; what was in flight is "sending" in the ledger
  and becomes "unknown" on the next run, as with threads.
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
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

from .delivery import Transport
from .errors import DeliveryError
from .model import Claimed as Job

if TYPE_CHECKING:
    from .sending import Personalizer, SendOptions

log = logging.getLogger(__name__)

T = TypeVar("T")
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}  # the sender's to act on, never a lane's
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

    def deliver(self, job: Job) -> Result:
        """One message, its result always back (see `_guarded`)."""
        return self._guarded(job, lambda: _deliver(self, job))

    def deliver_all(self, jobs: Sequence[Job]) -> list[Result]:
        """The jobs in order. With a transport that can `start` a message, the next message is
        composed while the server takes in the current one (its reply is read after): on a
        fast link composing then costs no time. One message at a time awaits its reply, as
        with `send`."""
        start: Starter | None = getattr(self.transport, "start", None)
        if start is None:
            return [self.deliver(job) for job in jobs]
        results: list[Result] = []
        waiting: Callable[[], Result] | None = None
        for job in jobs:
            prepared = self._guarded(job, functools.partial(_prepare, self, job))
            if waiting is not None:
                results.append(waiting())
            if isinstance(prepared, Result):
                results.append(prepared)
                waiting = None
                continue
            if self.halt.is_set():  # the reply just read may have halted the issue
                results.append(Result("released"))
                waiting = None
                continue
            waiting = self._start(start, job, *prepared)
        if waiting is not None:
            results.append(waiting())
        return results

    def _start(
        self, start: Starter, job: Job, message_id: str, message: bytes
    ) -> Callable[[], Result]:
        """Write the message; returns what reads its reply (retrying as `_attempts` does)."""
        try:
            first = start(self.sender, job.email, message, message_id)
        except BaseException as exc:  # noqa: BLE001 - handled like a failed first attempt
            first = _raiser(exc)
        attempts = functools.partial(_attempts, self, job, message_id, message, first)
        return functools.partial(self._guarded, job, attempts)

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


Starter = Callable[[str, str, bytes, str], Callable[[], None]]


def _raiser(exc: BaseException) -> Callable[[], None]:
    def fail() -> None:
        raise exc

    return fail


def _prepare(worker: Worker, job: Job) -> tuple[str, bytes] | Result:
    """(Message-ID, message) of a job, or its result when it is not to be sent."""
    if worker.halt.is_set():
        return Result("released")
    message_id = worker.personalizer.message_id(job.subscriber_id)
    try:
        message = worker.personalizer.compose(
            job.subscriber_id, job.email, job.name, worker.clock(), message_id
        )
    except ValueError as exc:  # a name or address that cannot go into a header
        return Result("failed", message_id, f"cannot compose: {exc}")
    return message_id, message


def _deliver(worker: Worker, job: Job) -> Result:
    """One message: compose, send, retry transient failures with backoff."""
    prepared = _prepare(worker, job)
    if isinstance(prepared, Result):
        return prepared
    message_id, message = prepared

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
    """`parallelism` sending threads in this process."""

    def __init__(self, worker: Worker, window: int) -> None:
        self._worker = worker
        self._threads = max(1, worker.transport.parallelism)
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="send")
        self._results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        # Half a window recorded at a time, the freed half claimed again at once, so the
        # connections keep working while the ledger commits.
        self.batch = max(1, window // 2)

    def submit(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._pool.submit(self._run, job)

    def _run(self, job: Job) -> None:
        self._results.put(Outcome(job, self._worker.deliver(job)))

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
        return _count(self._threads, "sending thread")

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class _Lane:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    chunks: deque[list[Job]]
    jobs: int = 0  # submitted, not yet back
    lost: bool = False


class ProcessLanes:
    """One forked sending process per transport of `transports`."""

    def __init__(self, worker: Worker, transports: Sequence[Transport], window: int) -> None:
        context = multiprocessing.get_context("fork")
        self._halt = context.Event()
        self._lanes: list[_Lane] = []
        self._ready: list[Outcome] = []  # outcomes known without asking a process
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
                    args=(theirs, lane_worker, parent),
                    name="newsletter-send",
                    daemon=True,
                )
                process.start()
                theirs.close()
                self._lanes.append(_Lane(process, ours, deque()))
        except BaseException:
            self.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            gc.unfreeze()

    def submit(self, jobs: Sequence[Job]) -> None:
        alive = [lane for lane in self._lanes if not lane.lost]
        for start in range(0, len(jobs), self.chunk):
            chunk = list(jobs[start : start + self.chunk])
            lane = min(alive, key=lambda lane: lane.jobs) if alive else None
            try:
                if lane is None:
                    raise BrokenPipeError
                lane.conn.send(chunk)
            except OSError:  # the process is gone before it could read them: never attempted
                self._ready.extend(Outcome(job, Result("released")) for job in chunk)
                continue
            lane.chunks.append(chunk)
            lane.jobs += len(chunk)

    def collect(self, timeout: float) -> list[Outcome]:
        got, self._ready = self._ready, []
        busy = {lane.conn: lane for lane in self._lanes if lane.chunks}
        if not busy:
            return got
        for conn in wait(list(busy), 0 if got else timeout):
            lane = busy[conn]  # type: ignore[index]
            try:
                results: list[tuple[str, str, str, str, bool]] = lane.conn.recv()
            except (EOFError, OSError):
                got.extend(self._lost(lane))
                continue
            chunk = lane.chunks.popleft()
            lane.jobs -= len(chunk)
            got.extend(
                Outcome(job, Result(*result)) for job, result in zip(chunk, results, strict=True)
            )
        return got

    def _lost(self, lane: _Lane) -> list[Outcome]:
        """A sending process died: its jobs may or may not have gone out."""
        lane.process.join(1.0)
        lane.lost = True
        reason = f"a sending process stopped unexpectedly (exit code {lane.process.exitcode})"
        self._halt.set()
        lost = [job for chunk in lane.chunks for job in chunk]
        lane.chunks.clear()
        lane.jobs = 0
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


def _lane_main(conn: Connection, worker: Worker, parent: int) -> None:
    """A sending process: chunks of jobs in, their results out, until None or end of pipe."""
    for number in _STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _die_with_parent()
    if os.getppid() != parent:  # it died before the line above took effect
        return
    try:
        while True:
            try:
                chunk: list[Job] | None = conn.recv()
            except EOFError:
                return
            if chunk is None:
                return
            conn.send([tuple(result) for result in worker.deliver_all(chunk)])
    finally:
        worker.transport.close()


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


__all__ = ["Job", "Lanes", "Outcome", "ProcessLanes", "Result", "ThreadLanes", "Worker", "lanes_for"]
