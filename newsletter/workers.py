"""Worker processes for a build: forked on first use, only for batches worth it.

Used by the collector (parsing) and the builder (rendering feeds); `inherited()` gives a forked
worker what its parent handed over without pickling it.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")


def _trim_heap() -> None:
    """Give freed C heap back to the system before forking (glibc keeps it otherwise), so the
    workers do not inherit it. A no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_inherited: object = None  # what the parent handed to the workers it forked last


def inherited() -> object:
    """In a worker started by `Workers.map(..., inherit=x)`: that x, shared by forking, not
    pickled, so jobs can be small indices into it."""
    return _inherited


def _chunks(jobs: Sequence[J], workers: int, least: int) -> list[list[J]]:
    """Chunks that shrink as the jobs run out (guided scheduling): each is a quarter of a fair
    share of what is left, at least `least` jobs and at most an eighth of a fair share of all.
    Large ones first, so a worker rarely waits for the parent to hand it the next; small ones
    last, so the workers finish together (equal chunks of 625 files left one worker idle for
    35 ms at the end of a 10k parse). The cap bounds what one chunk's results hold in memory:
    without it the first chunks of a 100k parse took the peak from 345 to 400 MB."""
    chunks: list[list[J]] = []
    most = max(least, len(jobs) // (workers * 8))
    start = 0
    while start < len(jobs):
        size = max(least, min(most, (len(jobs) - start) // (workers * 4)))
        chunks.append(list(jobs[start : start + size]))
        start += size
    return chunks


class Workers:
    """Worker processes for one build, started on first use (only when a batch is large enough).

    Forked where the platform allows it, so workers start in milliseconds with every module
    already imported; the parent's objects are frozen out of the garbage collector while the
    workers live, so that neither side copies the memory they share by touching it. Chunks are large (about 8 per
    worker), so a worker rarely waits for the parent to hand it the next one.
    """

    def __init__(self, count: int | None = None) -> None:
        self.count = available_cpus() if count is None else max(1, count)
        self._pool: ProcessPoolExecutor | None = None
        # Forking a process that runs other threads (a web server, say) can copy a lock some
        # thread holds; there everything stays in this process.
        self._broken = threading.active_count() > 1

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            gc.unfreeze()

    @property
    def usable(self) -> bool:
        return self.count > 1 and not self._broken

    @property
    def can_inherit(self) -> bool:
        return self.usable and "fork" in multiprocessing.get_all_start_methods()

    def map(
        self,
        fn: Callable[[list[J]], list[R]],
        jobs: Sequence[J],
        chunk: int,
        inherit: object = None,
    ) -> Iterator[R]:
        """fn over chunks of jobs in the workers; results flattened, in job order. Chunks hold
        at least `chunk` jobs (see `_chunks`). Every chunk is submitted before this returns,
        so the caller can do other work meanwhile.

        With `inherit`, fresh workers are forked now and see it through `inherited()` (only
        where `can_inherit`)."""
        global _inherited
        chunks = _chunks(jobs, self.count, chunk)
        if inherit is not None:
            self.close()
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            # Frozen until the workers are gone: a collection in this process would otherwise
            # write to every page holding a tracked object, and each page written is copied.
            # (No collection first: it costs 20 ms at 10k articles, and the little garbage it
            # would find is collected after gc.unfreeze() instead.)
            gc.freeze()
            _trim_heap()
            _inherited = inherit
            try:
                self._pool = ProcessPoolExecutor(self.count, mp_context=context)
                results = self._pool.map(fn, chunks)  # forks the workers, submits every chunk
            except BaseException:
                self._pool = None
                gc.unfreeze()
                raise
            finally:
                _inherited = None
        else:
            results = self._pool.map(fn, chunks)
        # Not a generator function: that would submit nothing until the first result is asked
        # for (prefetch rendered no body while it loaded the articles, 50 ms at 10k).
        return itertools.chain.from_iterable(results)

    def failed(self, exc: BaseException) -> None:
        log.warning("worker processes failed (%s); continuing in this process", exc)
        self._broken = True
        self.close()
