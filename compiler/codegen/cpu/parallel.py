"""The CPU target's parallelism: a small pool of threads running ``nogil`` Numba kernels over disjoint task ranges.

Every parallel CPU kernel is one serial Numba function that takes a task range as its last two arguments,
``kernel(*args, t0, t1)``, compiled with ``nogil=True``. :func:`parallel_for` splits ``range(ntasks)`` into one
contiguous piece per thread, runs the first piece in the calling thread and the others on persistent worker
threads, and returns when all are done. Tasks write disjoint slices (or their own partials, combined afterwards
in task order), so results do not depend on thread timing.

Why not ``numba.prange``: a ``parallel=True`` function is a second, much slower compile of the same loop (the
parfor pipeline: 30 s of the LeNet train step's 48 s cold compile went to parallel twins), and its OpenMP or
workqueue threads are a second thread system beside BLAS's. Here each kernel compiles once (the serial call is
``kernel(*args, 0, ntasks)``), and the threads are the runtime's own.

- Threads: ``NUMBA_NUM_THREADS`` (the core count by default), changed with :func:`set_num_threads`
  (``symdl.set_num_threads``).
- A call made while the pool is busy (from another Python thread, or nested) runs serially in its caller rather
  than waiting; a fork gets a fresh pool (threads do not survive ``fork``).
- An exception raised by any piece is re-raised in the caller after every piece has finished.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["get_num_threads", "parallel_for", "set_num_threads", "task_runners"]

_threads: int | None = None


def get_num_threads() -> int:
    """How many threads the CPU kernels use (the calling thread included)."""
    global _threads
    if _threads is None:
        import numba

        _threads = max(1, int(numba.config.NUMBA_NUM_THREADS))
    return _threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (>= 1) in the CPU kernels from now on (results of reductions may change in the last
    bits: their partial sums follow the task split)."""
    global _threads, _pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be an int >= 1, got {n!r}")
    _threads = n
    with _pool_lock:
        if _pool is not None and _pool.size != n:
            _pool.close()
            _pool = None


class _Pool:
    """``size - 1`` daemon workers. Hand-offs spin first (:mod:`compiler.codegen.cpu.spin`) and block on a
    semaphore only when nothing comes within the spin budget: a worker spins on its ``posted`` counter after each
    job, the caller on the ``finished`` counters after its own piece.

    Every write to the counters and flags is a Python statement made under the GIL, which orders them: a thread
    that is about to block first says so (``sleeping[w]``, ``waiting``), then re-checks the counter, and the other
    side releases the semaphore when it sees the flag. A release nobody needed leaves a count behind, which at
    worst wakes a later wait early; every wait re-checks its counter in a loop."""

    def __init__(self, size: int) -> None:
        import numpy as np

        from compiler.codegen.cpu.spin import LINGER_TICKS, SPIN_TICKS

        self.size = size
        self.pid = os.getpid()
        self.spin_ticks = SPIN_TICKS  # read at every hand-off: bench_runtime_overhead.py compares settings
        self.linger_ticks = LINGER_TICKS
        self.busy = threading.Lock()
        self.jobs: list[tuple[Callable[..., Any], tuple, int, int] | None] = [None] * (size - 1)
        self.errors: list[BaseException | None] = [None] * (size - 1)
        self.posted = np.zeros(max(size - 1, 1), np.int64)  # jobs posted to worker w (written by the caller)
        self.finished = np.zeros(max(size - 1, 1), np.int64)  # jobs worker w has finished (written by it)
        self.sleeping = [False] * (size - 1)
        self.waiting = False
        self.wake = [threading.Semaphore(0) for _ in range(size - 1)]
        self.done = threading.Semaphore(0)
        for w in range(size - 1):
            threading.Thread(target=self._work, args=(w,), name=f"symdl-cpu-{w + 1}", daemon=True).start()

    def _work(self, w: int) -> None:
        from compiler.codegen.cpu.spin import spin_until_changed

        seen = 0
        while True:
            if spin_until_changed(self.posted, w, seen, self.spin_ticks, self.linger_ticks) == seen:
                self.sleeping[w] = True
                if self.posted[w] == seen:
                    self.wake[w].acquire()
                self.sleeping[w] = False
                continue
            seen = int(self.posted[w])
            job = self.jobs[w]
            if job is None:  # closed
                return
            fn, args, t0, t1 = job
            try:
                fn(*args, t0, t1)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                self.errors[w] = e
            self.jobs[w] = None
            self.finished[w] = seen
            if self.waiting:
                self.done.release()

    def _post(self, w: int, job: tuple[Callable[..., Any], tuple, int, int] | None) -> None:
        self.jobs[w] = job
        self.posted[w] += 1
        if self.sleeping[w]:
            self.wake[w].release()

    def _wait(self, n: int) -> None:
        """Until workers ``0 .. n-1`` have finished every job posted to them."""
        from compiler.codegen.cpu.spin import spin_until_all_equal

        if n == 0 or spin_until_all_equal(self.finished, self.posted, n, self.spin_ticks, self.linger_ticks):
            return
        while True:
            self.waiting = True
            if all(self.finished[k] == self.posted[k] for k in range(n)):
                self.waiting = False
                return
            self.done.acquire()

    def run(self, fn: Callable[..., Any], args: tuple, ntasks: int) -> None:
        parts = min(self.size, ntasks)
        for w in range(parts - 1):
            self._post(w, (fn, args, ((w + 1) * ntasks) // parts, ((w + 2) * ntasks) // parts))
        first: BaseException | None = None
        try:
            fn(*args, 0, ntasks // parts)
        except BaseException as e:  # noqa: BLE001 - wait for the workers first: they use the same arrays
            first = e
        self._wait(parts - 1)
        errors = [e for e in self.errors[: parts - 1] if e is not None]
        self.errors[: parts - 1] = [None] * (parts - 1)
        if first is not None:
            raise first
        if errors:
            raise errors[0]

    def close(self) -> None:
        for w in range(self.size - 1):
            self._post(w, None)


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool(size: int) -> _Pool:
    global _pool
    pool = _pool
    if pool is None or pool.pid != os.getpid() or pool.size != size:
        with _pool_lock:
            if _pool is None or _pool.pid != os.getpid() or _pool.size != size:
                _pool = _Pool(size)
            pool = _pool
    return pool


def parallel_for(kernel: Callable[..., Any], args: tuple, ntasks: int) -> None:
    """``kernel(*args, t0, t1)`` over contiguous pieces of ``range(ntasks)``, one per thread, in parallel.

    ``kernel`` must be a ``nogil`` Numba function whose task ranges write disjoint memory."""
    size = get_num_threads()
    if ntasks <= 1 or size == 1:
        kernel(*args, 0, ntasks)
        return
    pool = _get_pool(size)
    if not pool.busy.acquire(blocking=False):  # another thread (or a nested call) has the pool: run here
        kernel(*args, 0, ntasks)
        return
    try:
        pool.run(kernel, args, ntasks)
    finally:
        pool.busy.release()


def task_runners(
    kernel: Callable[..., Any], count: Callable[..., int]
) -> tuple[Callable[..., None], Callable[..., None]]:
    """``(parallel, serial)`` callables for a task-range kernel ``kernel(*args, t0, t1)`` whose task count is
    ``count(*args)``: ``parallel(*args)`` splits the tasks across the threads, ``serial(*args)`` runs them all
    in the calling thread. Both carry ``dispatchers``: ``[kernel]``, the one compiled function behind them."""

    def parallel(*args: Any) -> None:
        parallel_for(kernel, args, count(*args))

    def serial(*args: Any) -> None:
        kernel(*args, 0, count(*args))

    name = getattr(kernel, "__name__", "kernel")
    parallel.__name__, serial.__name__ = f"{name}[parallel]", f"{name}[serial]"
    parallel.dispatchers = serial.dispatchers = [kernel]  # type: ignore[attr-defined] - the compiled function
    return parallel, serial
