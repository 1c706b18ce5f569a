"""Bounded spin-waits in native code, for the thread pool's hand-offs (:mod:`compiler.codegen.cpu.parallel`).

A thread blocked on a semaphore sleeps in the kernel, and on a virtual machine its idle vCPU halts: waking it
takes an inter-processor interrupt through the hypervisor, 30-40 us per direction here (a no-op parallel_for
cost 74 us). A thread that spins for a while first catches work posted within that time in well under a
microsecond. The spin runs in a ``nogil`` Numba function, so it holds neither the GIL nor anything else: it
reads a counter with acquire loads (the compiler may not hoist them out of the loop), relaxes the core between
reads (``pause`` on x86), and gives up after a budget of cycle-counter ticks, after which the caller blocks as
before. Writers are plain Python stores made under the GIL; the GIL orders them with everything else the
threads do in Python.

Seeing the change is not the end of the hand-off: the spinning thread must then take the GIL back, and the
thread that made the change still holds it for the few microseconds until it enters its own ``nogil`` kernel.
A thread that asks for the GIL while it is held sleeps on a condition variable, and its vCPU halts: the
hand-off then took 45-70 us instead of ~15 (measured with cycle-counter stamps in the conv-BN-ReLU net). So a
spin that sees the change lingers ``linger`` ticks more (:data:`LINGER_TICKS`, a few microseconds) before it
returns, by which time the GIL is usually free.
"""

from __future__ import annotations

import platform
from typing import Any

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["LINGER_TICKS", "SPIN_TICKS", "spin_until_all_equal", "spin_until_changed"]

#: how long a spin lasts before its caller falls back to blocking, in cycle-counter ticks (the TSC on x86,
#: ~2-4 GHz: 0.5-1 ms): long enough to span the Python between two kernels of a plan and the imbalance of two
#: threads' halves of a kernel on a busy VM (with 200k ticks, ~77 us here, the worker had gone to sleep before
#: half of the conv-BN-ReLU net's kernels, and each wake cost 60-75 us)
SPIN_TICKS = 2_000_000

#: how long a spin goes on after it has seen the change it waited for (~2.5-5 us), so that the thread that made
#: it has released the GIL by then (see the module docstring). A no-op 2-thread ``parallel_for`` back to back:
#: 11-15 us with this, 22-32 us with none (``python benchmarks/bench_runtime_overhead.py``, settings taking turns;
#: 2.6 GHz TSC). A one-off sweep also measured 20-27 us with 20k ticks: the linger is paid twice per hand-off, so
#: more than the GIL's few microseconds is pure cost.
LINGER_TICKS = 10_000

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _load_acquire(typingctx: Any, arr: types.Type, idx: types.Type) -> Any:
    """``arr[idx]`` of an int64 array as an atomic acquire load (re-read on every call, never hoisted)."""
    if not isinstance(arr, types.Array) or arr.dtype != types.int64 or not isinstance(idx, types.Integer):
        raise TypingError(f"_load_acquire: expected an int64 array and an integer index, got {arr}, {idx}")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.gep(data, [context.cast(builder, args[1], sig.args[1], types.intp)])
        return builder.load_atomic(ptr, ordering="acquire", align=8)

    return types.int64(arr, idx), codegen


@intrinsic
def _ticks(typingctx: Any) -> Any:
    """The cycle counter (``llvm.readcyclecounter``: rdtsc on x86)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(64), []), "llvm.readcyclecounter"
        )
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def _relax(typingctx: Any) -> Any:
    """A spin-loop hint (``pause`` on x86, which also frees the core for its sibling hyperthread); nothing
    elsewhere."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@njit(cache=True, nogil=True)
def _spin_for(ticks):  # noqa: ANN001, ANN202
    """Spin for ``ticks`` cycle-counter ticks."""
    start = _ticks()
    while _ticks() - start < ticks:
        _relax()


@njit(cache=True, nogil=True)
def spin_until_changed(counters, i, old, budget, linger):  # noqa: ANN001, ANN201
    """Spin until ``counters[i] != old`` (then ``linger`` ticks more) or ``budget`` ticks have passed; returns
    the last value read."""
    start = _ticks()
    while True:
        v = _load_acquire(counters, i)
        if v != old:
            _spin_for(linger)
            return v
        if _ticks() - start > budget:
            return v
        _relax()


@njit(cache=True, nogil=True)
def spin_until_all_equal(a, b, n, budget, linger):  # noqa: ANN001, ANN201
    """Spin until ``a[k] == b[k]`` for every ``k < n`` (then ``linger`` ticks more) or ``budget`` ticks have
    passed; returns whether they all are."""
    start = _ticks()
    while True:
        same = True
        for k in range(n):
            if _load_acquire(a, k) != _load_acquire(b, k):
                same = False
                break
        if same:
            _spin_for(linger)
            return True
        if _ticks() - start > budget:
            return False
        _relax()
