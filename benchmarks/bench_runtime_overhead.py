"""Runtime overhead per kernel launch of the CPU runtime (runtime/cpu.py), with trivial kernels.

Builds a chain of ``n`` tiny nodes, pairs each with a trivial hand-written kernel (a no-op, or ``np.negative``
on 4 elements) and measures:

- ``call``: wall time of a whole call (validation, input copy, kernel loop, output copy) divided by ``n``;
- ``overhead``: from ``CpuFunction.profile``: (call time - time inside kernels) / launches;
- the thread hand-off: a no-op ``parallel_for`` back to back and after a pause, and, for the current and earlier
  spin settings taking turns, the no-op hand-off and how long after a post the worker starts a real task.

The target is <= 20 us of runtime overhead per kernel launch. Run: ``python benchmarks/bench_runtime_overhead.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

import symdl as sd
from compiler.codegen.cpu.parallel import _get_pool, get_num_threads, parallel_for
from compiler.codegen.cpu.spin import LINGER_TICKS, SPIN_TICKS
from compiler.kernels import CompiledKernel, Kernel
from compiler.program import build_program
from runtime.cpu import CpuFunction
from runtime.plan import build_plan


def chain_function(n: int, trivial: str) -> tuple[CpuFunction, np.ndarray]:
    """A CpuFunction over ``n`` chained ``neg`` nodes whose kernels are ``trivial`` ("noop" or "negative")."""
    x = sd.placeholder((None,), dtype="float64", name="x")
    t, nodes = x, []
    for _ in range(n):
        t = -t
        nodes.append(t)
    program = build_program([x], [t])

    def noop(a: np.ndarray, out: np.ndarray) -> None:
        return None

    def negative(a: np.ndarray, out: np.ndarray) -> None:
        np.negative(a, out=out)

    run = noop if trivial == "noop" else negative
    kernels = [CompiledKernel(Kernel("elementwise", [nd], [nd.inputs[0]], [nd], k), run) for k, nd in enumerate(nodes)]
    return CpuFunction(build_plan(program, kernels)), np.ones(4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    for trivial in ("noop", "negative"):
        fn, x = chain_function(args.kernels, trivial)
        fn(x)  # instantiate
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            fn(x)
        call = (time.perf_counter() - t0) / args.repeat
        prof = fn.profile(x, repeat=args.repeat)
        print(
            f"{trivial:>8}: {args.kernels} kernels, call {call * 1e6:8.1f} us = {call / args.kernels * 1e6:5.2f} us "
            f"per kernel; profiled overhead {prof.overhead_per_launch_s * 1e6:5.2f} us per launch "
            f"(kernel body {prof.kernel_s / prof.calls / args.kernels * 1e6:5.2f} us)"
        )
    fn, x = chain_function(4, "negative")
    fn(x)
    print(f"per-call fixed cost, 4 kernels: {min(_time(fn, x) for _ in range(5)) * 1e6:.1f} us")
    print(
        f"thread hand-off (a no-op parallel_for over {get_num_threads()} threads): back to back "
        f"{_handoff(0.0) * 1e6:.1f} us, 1 ms apart (the workers asleep) {_handoff(1e-3) * 1e6:.1f} us (medians)"
    )
    if get_num_threads() > 1:
        print("hand-off settings (spin budget, linger after the change, in cycle-counter ticks), taking turns:")
        pool = _get_pool(get_num_threads())
        settings = {f"spin {SPIN_TICKS}, linger {LINGER_TICKS} (current)": (SPIN_TICKS, LINGER_TICKS)}
        settings["spin 200000, linger 0 (before)"] = (200_000, 0)
        settings[f"spin {SPIN_TICKS}, linger 0"] = (SPIN_TICKS, 0)
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in settings}
        for _ in range(3):
            for name, (spin, linger) in settings.items():
                pool.spin_ticks, pool.linger_ticks = spin, linger
                results[name].append((_handoff(0.0, 300), _worker_start_delay()))
        pool.spin_ticks, pool.linger_ticks = SPIN_TICKS, LINGER_TICKS
        for name, r in results.items():
            noop, start = np.median(np.array(r), axis=0) * 1e6
            print(f"  {name:40s} no-op back to back {noop:5.1f} us; worker starts {start:5.1f} us after the post")


@njit(nogil=True, cache=True)
def _touch(a: np.ndarray, t0: int, t1: int) -> None:
    for t in range(t0, t1):
        a[t] += 1


def _handoff(gap: float, n: int = 500) -> float:
    """Median time of ``parallel_for`` on a no-op kernel, with ``gap`` seconds of (busy) waiting between calls:
    back to back, the workers are still spinning (compiler/codegen/cpu/spin.py); after a long gap they sleep."""
    a = np.zeros(get_num_threads(), np.int64)
    parallel_for(_touch, (a,), a.size)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        parallel_for(_touch, (a,), a.size)
        times.append(time.perf_counter() - t)
        end = time.perf_counter() + gap
        while time.perf_counter() < end:
            pass
    return float(np.median(times))


@njit(nogil=True, cache=True)
def _busy(a: np.ndarray, n: int) -> None:
    s = 0.0
    for i in range(n):
        s += (i * 0.37) % 1.1
    a[0] = s


def _worker_start_delay(n: int = 200) -> float:
    """Median time from handing a ~0.3 ms task to the pool until the worker starts it, with ~30 us of Python between
    hand-offs (a plan's glue between kernels): the delay the caller waits for at the end of each split kernel."""
    a = np.zeros(1)
    stamps = np.zeros(2)

    def piece(t0: int, t1: int) -> None:  # a Python kernel: the stamp is taken once the worker holds the GIL
        stamps[t0] = time.perf_counter()
        _busy(a, 300_000)

    piece(0, 1)
    delays = []
    for _ in range(n):
        t = time.perf_counter()
        parallel_for(piece, (), 2)
        delays.append(stamps[1] - t)
        end = time.perf_counter() + 30e-6
        while time.perf_counter() < end:
            pass
    return float(np.median(delays))


def _time(fn: CpuFunction, x: np.ndarray, n: int = 200) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn(x)
    return (time.perf_counter() - t0) / n


if __name__ == "__main__":
    main()
