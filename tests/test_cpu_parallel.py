"""The CPU target's task threads (compiler/codegen/cpu/parallel.py): every task runs once, in the right piece;
errors come back to the caller; busy or nested use runs serially; thread counts are validated."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

from compiler.codegen.cpu import parallel as P


@numba.njit(nogil=True, cache=True)
def _mark(hits, owner, tag, t0, t1):  # noqa: ANN001, ANN202
    for t in range(t0, t1):
        hits[t] += 1
        owner[t] = tag


@numba.njit(nogil=True, cache=True)
def _fail_at(hits, bad, t0, t1):  # noqa: ANN001, ANN202
    for t in range(t0, t1):
        if t == bad:
            raise ValueError("task failed")
        hits[t] += 1


@pytest.fixture
def threads():
    saved = P.get_num_threads()
    yield
    P.set_num_threads(saved)


@pytest.mark.parametrize("n_threads", [1, 2, 3, 5])
@pytest.mark.parametrize("ntasks", [0, 1, 2, 3, 7, 64])
def test_every_task_runs_exactly_once(threads, n_threads, ntasks):
    P.set_num_threads(n_threads)
    hits = np.zeros(ntasks, np.int64)
    owner = np.full(ntasks, -1, np.int64)
    P.parallel_for(_mark, (hits, owner, 1), ntasks)
    np.testing.assert_array_equal(hits, np.ones(ntasks, np.int64))
    np.testing.assert_array_equal(owner, np.ones(ntasks, np.int64))


def test_pieces_are_contiguous_and_balanced(threads):
    """Piece ``w`` of ``p`` is ``[w*n//p, (w+1)*n//p)``: check the split by recording which range ran where."""
    P.set_num_threads(3)
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def record(t0: int, t1: int) -> None:
        with lock:
            seen.append((t0, t1))

    P.parallel_for(record, (), 10)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 10)]


def test_an_error_in_a_worker_reaches_the_caller_after_all_pieces(threads):
    P.set_num_threads(2)
    hits = np.zeros(8, np.int64)
    with pytest.raises(ValueError, match="task failed"):
        P.parallel_for(_fail_at, (hits, 6), 8)  # task 6 is in the worker's piece
    assert hits[:4].tolist() == [1, 1, 1, 1]  # the caller's piece completed
    hits[:] = 0
    P.parallel_for(_fail_at, (hits, -1), 8)  # the pool still works afterwards
    assert hits.tolist() == [1] * 8


def test_nested_use_runs_serially_instead_of_deadlocking(threads):
    P.set_num_threads(2)
    inner_hits = np.zeros(4, np.int64)

    def outer(t0: int, t1: int) -> None:
        for _ in range(t0, t1):
            P.parallel_for(_mark, (inner_hits, np.zeros(4, np.int64), 0), 4)

    P.parallel_for(outer, (), 2)
    assert inner_hits.tolist() == [2, 2, 2, 2]


def test_set_num_threads_validates(threads):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="set_num_threads"):
            P.set_num_threads(bad)
    P.set_num_threads(1)
    assert P.get_num_threads() == 1


def test_task_runners_run_the_same_compiled_function(threads):
    P.set_num_threads(2)
    par, ser = P.task_runners(_mark, lambda hits, owner, tag: hits.size)
    assert par.dispatchers == ser.dispatchers == [_mark]
    a, b = np.zeros(9, np.int64), np.zeros(9, np.int64)
    par(a, np.zeros(9, np.int64), 0)
    ser(b, np.zeros(9, np.int64), 0)
    np.testing.assert_array_equal(a, b)


def test_spin_waits_see_a_change_and_give_up_after_their_budget():
    """The native spin-waits behind the pool's hand-offs (compiler/codegen/cpu/spin.py)."""
    from compiler.codegen.cpu.spin import spin_until_all_equal, spin_until_changed

    counters = np.array([4, 7], np.int64)
    assert spin_until_changed(counters, 1, 5, 10**12, 0) == 7  # already different: returns at once
    assert spin_until_changed(counters, 0, 4, 1000, 0) == 4  # never changes: gives up
    assert spin_until_all_equal(counters, np.array([4, 7], np.int64), 2, 1000, 0)
    assert not spin_until_all_equal(counters, np.array([4, 8], np.int64), 2, 1000, 0)
    assert spin_until_all_equal(counters, np.array([4, 8], np.int64), 1, 1000, 0)  # only the first n compared

    def bump() -> None:
        import time

        time.sleep(0.02)
        counters[0] = 5  # a plain store from another thread ends the spin

    t = threading.Thread(target=bump)
    t.start()
    assert spin_until_changed(counters, 0, 4, 10**13, 0) == 5
    t.join()


def test_spin_waits_linger_after_the_change_but_not_after_giving_up():
    """A spin that sees its change goes on for ``linger`` ticks (so the other thread has released the GIL when it
    returns); one that gives up returns at once. The cycle counter runs at >= 1 GHz on any current CPU, so a
    linger of 2e8 ticks is at most 0.2 s, and at least 0.02 s below 10 GHz."""
    import time

    from compiler.codegen.cpu.spin import spin_until_all_equal, spin_until_changed

    counters = np.array([4, 7], np.int64)
    spin_until_changed(counters, 1, 5, 10, 10)  # compile outside the timing
    spin_until_all_equal(counters, counters, 2, 10, 10)
    t0 = time.perf_counter()
    assert spin_until_changed(counters, 1, 5, 10**12, 2 * 10**8) == 7
    assert 0.02 < time.perf_counter() - t0 < 1.0
    t0 = time.perf_counter()
    assert spin_until_all_equal(counters, counters.copy(), 2, 10**12, 2 * 10**8)
    assert 0.02 < time.perf_counter() - t0 < 1.0
    t0 = time.perf_counter()
    assert spin_until_changed(counters, 0, 4, 1000, 10**12) == 4  # gave up: no linger (10**12 ticks = minutes)
    assert not spin_until_all_equal(counters, np.array([4, 8], np.int64), 2, 1000, 10**12)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("n_threads", [2, 3])
def test_pool_hands_off_both_while_spinning_and_after_its_workers_sleep(threads, n_threads):
    """Back-to-back calls find the workers spinning; after a pause longer than the spin budget they have gone to
    sleep on their semaphores and must be woken. Every task runs exactly once either way."""
    import time

    P.set_num_threads(n_threads)
    hits = np.zeros(30, np.int64)
    owner = np.zeros(30, np.int64)
    for k in range(40):
        P.parallel_for(_mark, (hits, owner, k), 30)
        if k % 8 == 7:
            time.sleep(0.01)  # >> SPIN_TICKS: the workers block
    np.testing.assert_array_equal(hits, np.full(30, 40))
    pool = P._get_pool(n_threads)
    assert (pool.finished[: n_threads - 1] == pool.posted[: n_threads - 1]).all()


def test_a_closed_pool_lets_its_workers_exit(threads):
    P.set_num_threads(3)
    P.parallel_for(_mark, (np.zeros(3, np.int64), np.zeros(3, np.int64), 1), 3)
    before = {t.name for t in threading.enumerate() if t.name.startswith("symdl-cpu-")}
    assert len(before) >= 2
    P.set_num_threads(2)  # closes the 3-thread pool
    import time

    deadline = time.time() + 5
    while time.time() < deadline and sum(t.name in before for t in threading.enumerate()) > 0:
        time.sleep(0.01)
    P.parallel_for(_mark, (np.zeros(2, np.int64), np.zeros(2, np.int64), 1), 2)
    workers = [t for t in threading.enumerate() if t.name.startswith("symdl-cpu-") and t.is_alive()]
    assert len(workers) == 1  # the old pool's two workers are gone, the new pool has one
