"""CPU library kernels for the non-linear-algebra ops: reductions, the softmax family, gathers/scatters, dropout,
batch-norm eval, shape copies and the small run-time helpers (dim sizes, checks).

Conventions (see :mod:`compiler.codegen.cpu.library`): ``factory(node) -> LibraryImpl``; ``run(*inputs, out)``
writes into the preallocated C-contiguous ``out``. Every compiled kernel is a module-level
``numba.njit(cache=True)`` function whose signature depends only on dtypes, ranks and layouts (always ``C`` here),
never on sizes, so a new batch size never recompiles.

Reductions
    The input is presented as a 4-d C-contiguous view ``x4[o, r1, k, r2]`` (kept, reduced, kept, reduced groups of
    merged axes; see :func:`reduce_plan`) reduced to ``out2[o, k]``. Every reduction pattern with at most two kept and
    two reduced groups in that order is a free reshape — this covers ``sum(axis=-1)``, ``sum(axis=0)``, batch
    statistics over ``(0, 2, 3)`` — and any other pattern costs one transposing copy. The work is cut into tasks
    ``(o, k-block, r-chunk)``, each writing a disjoint slice of a partials buffer ``part[o, chunk, k]`` (the output
    itself when there is one chunk), and chunks are combined afterwards. There is no shared accumulator.

Parallel kernels: each is one ``nogil`` function over a task range, ``X_range(*args, t0, t1)``, compiled once;
``X_par`` splits the task range across the runtime's threads and ``X_ser`` (the serial twin,
``LibraryImpl.serial``) runs it all in the caller (:mod:`compiler.codegen.cpu.parallel`). ``run`` also uses the
serial twin for small inputs, where waking threads costs more than the work.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from compiler.codegen.cpu.library import LibraryImpl, register
from compiler.codegen.cpu.parallel import get_num_threads, task_runners
from symdl.errors import OpRuntimeError
from symdl.graph import Tensor
from symdl.losses import CheckProbabilities
from symdl.ops import random as rnd
from symdl.ops.elementwise import FillLike
from symdl.ops.indexing import (
    Embedding,
    EmbeddingGrad,
    OneHot,
    TakeAlongClass,
    TakeAlongClassGrad,
    _check_idx_shape,
    _check_range,
)
from symdl.ops.nn import LogSoftmax, LogSumExp, Softmax, SoftmaxCrossEntropy, SoftmaxCrossEntropyGrad
from symdl.ops.normalization import BatchCount, BatchNormEval
from symdl.ops.reduce import Argmax, DimSize, Max, Min, Sum
from symdl.ops.shape import (
    BroadcastLike,
    BroadcastTo,
    Concat,
    ConcatPart,
    Pad,
    Slice,
    SliceGrad,
    Transpose,
    Unbroadcast,
    _unbroadcast_axes,
)

__all__ = ["PARALLEL_MIN_SIZE", "ReducePlan", "reduce_plan"]

PARALLEL_MIN_SIZE = 1 << 18  # inputs smaller than this run the serial twin (waking a thread costs 70-100 us)
_TASKS_PER_THREAD = 4  # aim for this many tasks per thread (load balance)
_MIN_CHUNK = 4096  # fewest elements of a reduced axis per chunk when a reduction is split along it
_JIT = {"cache": True, "error_model": "numpy"}  # numpy error model: x/0 gives inf/nan, never raises

SUM, MAX, MIN = 0, 1, 2


def _threads() -> int:
    return get_num_threads()


def _c(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous array (a no-op for the buffers the runtime hands us)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


# ====================================================================================================
# Reduction plans
# ====================================================================================================


@dataclass(frozen=True)
class ReducePlan:
    """How to reduce an array of ``shape`` over ``axes``: an optional transposing copy (``perm``), the 4-d view
    ``dims = (O, R1, K, R2)``, and the task decomposition (``ntasks`` tasks of ``kblk`` kept entries and one of
    ``nchunk`` chunks of the reduced axis ``R2`` if ``split_r2`` else ``R1``)."""

    perm: tuple[int, ...] | None
    dims: tuple[int, int, int, int]
    nchunk: int
    kblk: int
    split_r2: bool
    parallel: bool

    @property
    def ntasks(self) -> int:
        o, _, k, _ = self.dims
        return o * self.nchunk * (-(-k // self.kblk) if k else 0)

    def view(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the C-contiguous 4-d array ``x4[o, r1, k, r2]`` (a copy only when ``perm`` is set)."""
        if self.perm is not None:
            x = np.ascontiguousarray(np.transpose(x, self.perm))
        return x.reshape(self.dims)


def _groups(shape: tuple[int, ...], axes: tuple[int, ...]) -> list[tuple[bool, int]]:
    """Merge runs of adjacent axes with the same status into ``(reduced, size)`` groups; size-1 axes are dropped."""
    groups: list[tuple[bool, int]] = []
    for i, d in enumerate(shape):
        if d == 1:
            continue
        red = i in axes
        if groups and groups[-1][0] == red:
            groups[-1] = (red, groups[-1][1] * d)
        else:
            groups.append((red, d))
    return groups


def _layout(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[tuple[int, ...] | None, tuple[int, int, int, int]]:
    groups = _groups(shape, axes)
    if not groups or groups[0][0]:
        groups.insert(0, (False, 1))
    if not groups[-1][0]:
        groups.append((True, 1))
    if len(groups) == 2:  # [K, R]: the reduced block is contiguous
        return None, (groups[0][1], 1, 1, groups[1][1])
    if len(groups) == 4:  # [K, R, K, R]
        return None, tuple(g[1] for g in groups)  # type: ignore[return-value]
    kept = tuple(i for i in range(len(shape)) if i not in axes)
    n_kept = math.prod(shape[i] for i in kept)
    return kept + tuple(axes), (n_kept, 1, 1, math.prod(shape[i] for i in axes))


@functools.lru_cache(maxsize=1024)
def reduce_plan(shape: tuple[int, ...], axes: tuple[int, ...], threads: int = 1) -> ReducePlan:
    """The :class:`ReducePlan` for reducing ``shape`` over the sorted ``axes`` with ``threads`` threads.

    Serial plans run one task per ``o``. Parallel plans aim at a few tasks per thread: first by cutting ``K`` into
    blocks (at least 16 wide when ``R2 == 1``, where the kernel vectorises over ``k``), then by splitting the
    reduced axis into chunks of at least ``_MIN_CHUNK`` elements whose partial results are combined afterwards.
    """
    perm, dims = _layout(shape, tuple(axes))
    o, r1, k, r2 = dims
    total = o * r1 * k * r2
    parallel = threads > 1 and total >= PARALLEL_MIN_SIZE
    if not parallel or k == 0 or o == 0:
        return ReducePlan(perm, dims, 1, max(k, 1), False, parallel)
    want = threads * _TASKS_PER_THREAD
    kmin = 16 if r2 == 1 else 1
    kblk = k if o >= want else max(kmin, -(-k // -(-want // o)))
    nkb = -(-k // kblk)
    split_r2 = r1 == 1
    r_split = r2 if split_r2 else r1
    nchunk = 1
    if o * nkb < want:  # too few (o, k-block) tasks: also split the reduced axis R1 (or R2 when R1 == 1)
        nchunk = max(1, min(-(-want // (o * nkb)), (r1 * r2) // _MIN_CHUNK, r_split))
    return ReducePlan(perm, dims, nchunk, kblk, split_r2, parallel)


# ====================================================================================================
# Reduction kernels: sum / max / min
# ====================================================================================================


@numba.njit(inline="always")
def _pick(kind: int, a: float, v: float) -> float:
    """``max(a, v)`` (``kind == MAX``) or ``min(a, v)``, propagating NaN as NumPy (``v != v`` only for NaN)."""
    if kind == MAX:
        return v if (v > a) | (v != v) else a
    return v if (v < a) | (v != v) else a


@numba.njit(inline="always")
def _fold(kind: int, acc: float, row: np.ndarray) -> float:
    """Reduce the contiguous 1-d ``row`` into the scalar ``acc`` (loops index from 0: no wrap-around checks)."""
    if kind == SUM:
        for i in range(row.size):
            acc += row[i]
    else:
        for i in range(row.size):
            acc = _pick(kind, acc, row[i])
    return acc


@numba.njit(inline="always")
def _fold_into(kind: int, acc: np.ndarray, row: np.ndarray) -> None:
    """``acc[i] = acc[i] (+|max|min) row[i]`` over two contiguous 1-d arrays (vectorises)."""
    if kind == SUM:
        for i in range(acc.size):
            acc[i] += row[i]
    else:
        for i in range(acc.size):
            acc[i] = _pick(kind, acc[i], row[i])


@numba.njit(inline="always")
def _span(n: int, parts: int, i: int) -> tuple[int, int]:
    """The ``i``-th of ``parts`` near-equal contiguous pieces of ``range(n)``."""
    q, r = divmod(n, parts)
    start = i * q + min(i, r)
    return start, start + q + (1 if i < r else 0)


@numba.njit(fastmath={"reassoc"}, **_JIT)
def _reduce_task(
    x4: np.ndarray, part: np.ndarray, zero: float, kind: int, t: int, nchunk: int, kblk: int, split_r2: bool
) -> None:
    """Task ``t``: reduce ``x4[o, r-chunk, k-block, r2-chunk]`` into ``part[o, chunk, k-block]``.

    Sums start from ``zero`` (its type is the accumulator type); max/min start from the chunk's first element.
    """
    on, r1n, kn, r2n = x4.shape
    nkb = (kn + kblk - 1) // kblk
    o = t // (nchunk * nkb)
    c = (t // nkb) % nchunk
    k0 = (t % nkb) * kblk
    k1 = min(kn, k0 + kblk)
    ra, rb, sa, sb = 0, r1n, 0, r2n
    if split_r2:
        sa, sb = _span(r2n, nchunk, c)
    else:
        ra, rb = _span(r1n, nchunk, c)
    acc_row = part[o, c][k0:k1]
    if r2n == 1:  # [K, R, K]: fold whole k-rows elementwise (vectorises over k)
        x3 = x4.reshape((on, r1n, kn))
        if kind == SUM:
            acc_row[:] = zero
        else:
            acc_row[:] = x3[o, ra][k0:k1]
        for r in range(ra, rb):
            _fold_into(kind, acc_row, x3[o, r][k0:k1])
    else:  # the inner reduced block is contiguous: one scalar accumulator per k
        for k in range(k1 - k0):
            acc = zero if kind == SUM else x4[o, ra, k0 + k, sa]
            for r in range(ra, rb):
                acc = _fold(kind, acc, x4[o, r, k0 + k][sa:sb])
            acc_row[k] = acc


@numba.njit(nogil=True, **_JIT)
def reduce_range(
    x4: np.ndarray,
    part: np.ndarray,
    zero: float,
    kind: int,
    ntasks: int,
    nchunk: int,
    kblk: int,
    split_r2: bool,
    t0: int,
    t1: int,
) -> None:
    """Tasks ``t0 <= t < t1``: ``reduce_par`` splits them across threads, ``_ser`` runs all."""
    for t in range(t0, t1):
        _reduce_task(x4, part, zero, kind, t, nchunk, kblk, split_r2)


reduce_par, reduce_ser = task_runners(reduce_range, lambda x4, part, zero, kind, ntasks, nchunk, kblk, split_r2: ntasks)


def _finish(kind: int, part: np.ndarray, out2: np.ndarray) -> None:
    """Combine the chunks of ``part[o, chunk, k]`` into ``out2[o, k]`` (NaN-propagating for max/min)."""
    if kind == SUM:
        np.add.reduce(part, axis=1, out=out2)
    else:
        (np.maximum if kind == MAX else np.minimum).reduce(part, axis=1, out=out2)


def _run_reduce(
    x: np.ndarray, out: np.ndarray, axes: tuple[int, ...], kind: int, zero: object, kernel: Callable | None = None
) -> None:
    """Reduce ``x`` over ``axes`` into ``out`` (any shape with the kept size) with the given ``kind``."""
    plan = reduce_plan(x.shape, axes, _threads())
    o, _, k, _ = plan.dims
    out2 = out.reshape(o, k)
    if out2.size == 0:
        return
    x4 = plan.view(_c(x))
    if kernel is None:
        kernel = reduce_par if plan.parallel else reduce_ser
    if plan.nchunk == 1:
        kernel(x4, out2.reshape(o, 1, k), zero, kind, plan.ntasks, 1, plan.kblk, plan.split_r2)
        return
    part = np.empty((o, plan.nchunk, k), out.dtype)
    kernel(x4, part, zero, kind, plan.ntasks, plan.nchunk, plan.kblk, plan.split_r2)
    _finish(kind, part, out2)


def _accumulator_zero(out_dtype: np.dtype) -> object:
    """Sums accumulate floats in float64 (float32 inputs gain accuracy at no cost to memory traffic), ints in int64."""
    return np.float64(0) if out_dtype.kind == "f" else np.int64(0)


def _as_numeric(a: np.ndarray) -> np.ndarray:
    """Bool arrays as uint8 (same bytes; Numba kernels then treat them as 0/1 numbers)."""
    return a.view(np.uint8) if a.dtype == np.bool_ else a


def _as_summable(a: np.ndarray) -> np.ndarray:
    """Sum operands: bool as uint8, uint64 as int64 (NumPy's ``sum(dtype=int64)`` wraps uint64 the same way)."""
    return a.view(np.int64) if a.dtype == np.uint64 else _as_numeric(a)


def _sum_runner(axes: tuple[int, ...], kernel: Callable | None = None) -> Callable[..., None]:
    def run(x: np.ndarray, out: np.ndarray) -> None:
        x = _as_summable(x)
        if x.size == 0:
            out.fill(0)
            return
        _run_reduce(x, out, axes, SUM, _accumulator_zero(out.dtype), kernel)

    return run


@register(Sum)
def _sum(node: Tensor) -> LibraryImpl:
    axes = node.op.axes
    return LibraryImpl(_sum_runner(axes), [reduce_range], True, _sum_runner(axes, reduce_ser))


def _extreme_runner(op: Max, kernel: Callable | None = None) -> Callable[..., None]:
    kind = MIN if isinstance(op, Min) else MAX

    def run(x: np.ndarray, out: np.ndarray) -> None:
        if x.size == 0:
            raise OpRuntimeError(f"{op.name} of an empty array (shape {x.shape})")
        x = _as_numeric(x)
        _run_reduce(x, _as_numeric(out), op.axes, kind, x.dtype.type(0), kernel)

    return run


@register(Max, Min)
def _max_min(node: Tensor) -> LibraryImpl:
    op = node.op
    return LibraryImpl(_extreme_runner(op), [reduce_range], True, _extreme_runner(op, reduce_ser))


def _unbroadcast_runner(kernel: Callable | None = None) -> Callable[..., None]:
    def run(g: np.ndarray, ref: np.ndarray, out: np.ndarray) -> None:
        lead, keep = _unbroadcast_axes(g.shape, ref.shape)
        axes = lead + keep
        if not axes:
            np.copyto(out, g)
        elif g.size == 0:
            out.fill(0)
        else:
            _run_reduce(g, out, axes, SUM, _accumulator_zero(out.dtype), kernel)

    return run


@register(Unbroadcast)
def _unbroadcast(node: Tensor) -> LibraryImpl:
    return LibraryImpl(_unbroadcast_runner(), [reduce_range], True, _unbroadcast_runner(reduce_ser))


# ====================================================================================================
# Argmax
# ====================================================================================================


@numba.njit(**_JIT)
def _argmax_task(x3: np.ndarray, out2: np.ndarray, t: int, kblk: int) -> None:
    """First index of the maximum of ``x3[o, :, k]`` for the k-block of task ``t`` (a NaN wins, as NumPy)."""
    _, rn, kn = x3.shape
    nkb = (kn + kblk - 1) // kblk
    o = t // nkb
    k0 = (t % nkb) * kblk
    if kn == 1:  # contiguous rows
        row = x3[o].reshape(rn)
        out2[o, 0] = _argmax_row(row)
        return
    for k in range(k0, min(kn, k0 + kblk)):
        best = x3[o, 0, k]
        arg = 0
        if best == best:
            for r in range(1, rn):
                v = x3[o, r, k]
                if (v > best) | (v != v):
                    best = v
                    arg = r
                    if v != v:
                        break
        out2[o, k] = arg


@numba.njit(inline="always")
def _argmax_row(row: np.ndarray) -> int:
    best = row[0]
    arg = 0
    if best != best:
        return 0
    for r in range(row.size):
        v = row[r]
        if v > best:
            best = v
            arg = r
        elif v != v:
            return r
    return arg


@numba.njit(nogil=True, **_JIT)
def argmax_range(x3: np.ndarray, out2: np.ndarray, ntasks: int, kblk: int, t0: int, t1: int) -> None:
    """Tasks ``t0 <= t < t1``: ``argmax_par`` splits them across threads, ``_ser`` runs all."""
    for t in range(t0, t1):
        _argmax_task(x3, out2, t, kblk)


argmax_par, argmax_ser = task_runners(argmax_range, lambda x3, out2, ntasks, kblk: ntasks)


def _argmax_runner(op: Argmax, kernel: Callable | None = None) -> Callable[..., None]:
    def run(x: np.ndarray, out: np.ndarray) -> None:
        if x.size == 0:
            raise OpRuntimeError(f"argmax of an empty array (shape {x.shape})")
        x = _as_numeric(_c(x))
        if op.axis is None:
            o, r, k = 1, x.size, 1
        else:
            o, r = math.prod(x.shape[: op.axis]), x.shape[op.axis]
            k = x.size // (o * r)
        threads = _threads()
        par = threads > 1 and x.size >= PARALLEL_MIN_SIZE
        want = threads * _TASKS_PER_THREAD
        kblk = k if (not par or o >= want) else max(1, -(-k // -(-want // o)))
        ntasks = o * -(-k // kblk)
        fn = kernel or (argmax_par if par else argmax_ser)
        fn(x.reshape(o, r, k), out.reshape(o, k), ntasks, kblk)

    return run


@register(Argmax)
def _argmax(node: Tensor) -> LibraryImpl:
    op = node.op
    return LibraryImpl(_argmax_runner(op), [argmax_range], True, _argmax_runner(op, argmax_ser))


# ====================================================================================================
# Softmax, log_softmax, logsumexp: one fused, max-shifted pass per row x4[o, :, k, :]
# ====================================================================================================


@numba.njit(inline="always")
def _row_shift(x4: np.ndarray, o: int, k: int, zero: float) -> float:
    """Max of the (non-empty) row ``(o, k)``, NaN-propagating, replaced by ``zero`` when not finite (as
    ``symdl.ops.nn._shifted``: rows of ``-inf`` then give ``-inf``/NaN as PyTorch, not ``inf - inf`` everywhere)."""
    m = x4[o, 0, k, 0]
    for r in range(x4.shape[1]):
        m = _fold(MAX, m, x4[o, r, k])
    return m if np.isfinite(m) else zero


@numba.njit(fastmath={"reassoc"}, **_JIT)
def _softmax_row(x4: np.ndarray, out4: np.ndarray, zero: float, t: int, log: bool) -> None:
    """Row ``t = o * K + k``: ``out = exp(x - m) / sum`` or ``(x - m) - log(sum)`` (``log``), sums in float64."""
    _, r1n, kn, r2n = x4.shape
    o, k = t // kn, t % kn
    m = _row_shift(x4, o, k, zero)
    total = 0.0
    for r in range(r1n):
        xr, yr = x4[o, r, k], out4[o, r, k]
        for s in range(r2n):
            e = np.exp(xr[s] - m)
            total += e
            yr[s] = e
    if log:
        lse = np.log(total)
        for r in range(r1n):
            xr, yr = x4[o, r, k], out4[o, r, k]
            for s in range(r2n):
                yr[s] = (xr[s] - m) - lse
    else:
        inv = 1.0 / total
        for r in range(r1n):
            yr = out4[o, r, k]
            for s in range(r2n):
                yr[s] = yr[s] * inv


@numba.njit(nogil=True, **_JIT)
def softmax_range(x4: np.ndarray, out4: np.ndarray, zero: float, log: bool, t0: int, t1: int) -> None:
    """Tasks ``t0 <= t < t1``: ``softmax_par`` splits them across threads, ``_ser`` runs all."""
    for t in range(t0, t1):
        _softmax_row(x4, out4, zero, t, log)


softmax_par, softmax_ser = task_runners(softmax_range, lambda x4, out4, zero, log: x4.shape[0] * x4.shape[2])


@numba.njit(fastmath={"reassoc"}, **_JIT)
def _lse_row(x4: np.ndarray, out2: np.ndarray, zero: float, t: int) -> None:
    _, r1n, kn, r2n = x4.shape
    o, k = t // kn, t % kn
    m = _row_shift(x4, o, k, zero)
    total = 0.0
    for r in range(r1n):
        xr = x4[o, r, k]
        for s in range(r2n):
            total += np.exp(xr[s] - m)
    out2[o, k] = np.log(total) + m


@numba.njit(nogil=True, **_JIT)
def logsumexp_range(x4: np.ndarray, out2: np.ndarray, zero: float, t0: int, t1: int) -> None:
    """Tasks ``t0 <= t < t1``: ``logsumexp_par`` splits them across threads, ``_ser`` runs all."""
    for t in range(t0, t1):
        _lse_row(x4, out2, zero, t)


logsumexp_par, logsumexp_ser = task_runners(logsumexp_range, lambda x4, out2, zero: x4.shape[0] * x4.shape[2])


def _softmax_runner(axis: int, log: bool, parallel: bool | None = None) -> Callable[..., None]:
    def run(x: np.ndarray, out: np.ndarray) -> None:
        if x.size == 0:
            return
        plan = reduce_plan(x.shape, (axis,), 1)
        par = parallel if parallel is not None else (x.size >= PARALLEL_MIN_SIZE and _threads() > 1)
        (softmax_par if par else softmax_ser)(plan.view(_c(x)), out.reshape(plan.dims), x.dtype.type(0), log)

    return run


@register(Softmax, LogSoftmax)
def _softmax(node: Tensor) -> LibraryImpl:
    axis, log = node.op.axis, isinstance(node.op, LogSoftmax)
    return LibraryImpl(_softmax_runner(axis, log), [softmax_range], True, _softmax_runner(axis, log, parallel=False))


def _logsumexp_runner(axes: tuple[int, ...], parallel: bool | None = None) -> Callable[..., None]:
    def run(x: np.ndarray, out: np.ndarray) -> None:
        if x.size == 0:  # log(sum of nothing) = -inf (or an empty output)
            out.fill(-np.inf)
            return
        plan = reduce_plan(x.shape, axes, 1)
        o, _, k, _ = plan.dims
        par = parallel if parallel is not None else (x.size >= PARALLEL_MIN_SIZE and _threads() > 1)
        (logsumexp_par if par else logsumexp_ser)(plan.view(_c(x)), out.reshape(o, k), x.dtype.type(0))

    return run


@register(LogSumExp)
def _logsumexp(node: Tensor) -> LibraryImpl:
    axes = node.op.axes
    return LibraryImpl(_logsumexp_runner(axes), [logsumexp_range], True, _logsumexp_runner(axes, parallel=False))


# ====================================================================================================
# Integer-index ops: range checks in NumPy (messages from symdl.ops.indexing), gathers/scatters in Numba
# ====================================================================================================


@numba.njit(cache=True, nogil=True)
def _all_in_range(flat: np.ndarray, n: int) -> bool:
    """Whether every entry of ``flat`` lies in ``[0, n)`` (one pass; two NumPy reductions cost 6-8 us on the
    small label arrays of a training step, a fifth of a small MLP's whole Adam step)."""
    for i in range(flat.shape[0]):
        v = flat[i]
        if v < 0 or v >= n:
            return False
    return True


def _check_indices(idx: np.ndarray, n: int, noun: str, unit: str, ignore_index: int | None) -> None:
    """Cheap range check; on failure defer to the op module's checker, which names the first bad entry (and
    accepts entries equal to ``ignore_index``)."""
    if idx.size == 0:
        return
    if not _all_in_range(idx.reshape(-1) if idx.flags.c_contiguous else idx.ravel(), n):
        _check_range(idx, n, noun, unit, ignore_index)


def _ignore_args(ignore_index: int | None) -> tuple[bool, int]:
    return ignore_index is not None, 0 if ignore_index is None else int(ignore_index)


@numba.njit(**_JIT)
def one_hot_kernel(labels: np.ndarray, out2: np.ndarray) -> None:
    """``out2[i, labels[i]] = 1``, zeros elsewhere (labels already range-checked)."""
    out2[:] = 0
    for i in range(labels.size):
        out2[i, labels[i]] = 1


def _one_hot_runner(op: OneHot) -> Callable[..., None]:
    def run(labels: np.ndarray, out: np.ndarray) -> None:
        n = out.shape[-1]
        _check_indices(labels, n, "label", "classes", None)
        if out.size:
            one_hot_kernel(_c(labels).reshape(-1), out.reshape(-1, n))

    return run


@register(OneHot)
def _one_hot(node: Tensor) -> LibraryImpl:
    if node.op.num_classes < 0:
        from symdl.errors import GraphError, where

        raise GraphError(
            f"one_hot(num_classes=-1): the output's size depends on the data, and compiled targets preallocate "
            f"every buffer from the input shapes; pass num_classes explicitly{where(node.frame)}"
        )
    return LibraryImpl(_one_hot_runner(node.op), [one_hot_kernel])


@numba.njit(nogil=True, **_JIT)
def embedding_range(
    idx: np.ndarray, weight: np.ndarray, out2: np.ndarray, has_ignore: bool, ignore: int, t0: int, t1: int
) -> None:
    """Tasks ``t0 <= t < t1``: ``embedding_par`` splits them across threads, ``_ser`` runs all."""
    for i in range(t0, t1):
        _embedding_row(idx, weight, out2, has_ignore, ignore, i)


embedding_par, embedding_ser = task_runners(embedding_range, lambda idx, weight, out2, has_ignore, ignore: idx.size)


@numba.njit(**_JIT)
def _embedding_row(
    idx: np.ndarray, weight: np.ndarray, out2: np.ndarray, has_ignore: bool, ignore: int, i: int
) -> None:
    v = idx[i]
    if has_ignore and v == ignore:
        out2[i, :] = 0
    else:
        out2[i, :] = weight[v, :]


def _embedding_runner(op: Embedding, parallel: bool | None = None) -> Callable[..., None]:
    has_ignore, ignore = _ignore_args(op.ignore_index)

    def run(idx: np.ndarray, weight: np.ndarray, out: np.ndarray) -> None:
        _check_indices(idx, weight.shape[0], "index", "embedding rows", op.ignore_index)
        if out.size == 0:
            return
        par = parallel if parallel is not None else out.size >= PARALLEL_MIN_SIZE
        fn = embedding_par if par else embedding_ser
        fn(_c(idx).reshape(-1), _c(weight), out.reshape(idx.size, weight.shape[1]), has_ignore, ignore)

    return run


@register(Embedding)
def _embedding(node: Tensor) -> LibraryImpl:
    op = node.op
    return LibraryImpl(_embedding_runner(op), [embedding_range], True, _embedding_runner(op, False))


@numba.njit(**_JIT)
def group_rows(idx: np.ndarray, nrows: int, has_ignore: bool, ignore: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable counting sort of positions by row: positions ``order[starts[v]:starts[v + 1]]`` (ascending) hold
    row ``v``; ignored entries are left out."""
    starts = np.zeros(nrows + 1, np.int64)
    for i in range(idx.size):
        if not (has_ignore and idx[i] == ignore):
            starts[idx[i] + 1] += 1
    for v in range(nrows):
        starts[v + 1] += starts[v]
    fill = starts[:-1].copy()
    order = np.empty(starts[nrows], np.int64)
    for i in range(idx.size):
        v = idx[i]
        if not (has_ignore and v == ignore):
            order[fill[v]] = i
            fill[v] += 1
    return order, starts


@numba.njit(**_JIT)
def _scatter_row(g2: np.ndarray, order: np.ndarray, starts: np.ndarray, out2: np.ndarray, padding: int, v: int) -> None:
    out2[v, :] = 0
    if v != padding:
        for p in range(starts[v], starts[v + 1]):
            out2[v, :] += g2[order[p], :]


@numba.njit(nogil=True, **_JIT)
def embedding_grad_range(
    g2: np.ndarray, order: np.ndarray, starts: np.ndarray, out2: np.ndarray, padding: int, t0: int, t1: int
) -> None:
    """Tasks ``t0 <= t < t1``: ``embedding_grad_par`` splits them across threads, ``_ser`` runs all."""
    for v in range(t0, t1):
        _scatter_row(g2, order, starts, out2, padding, v)


embedding_grad_par, embedding_grad_ser = task_runners(
    embedding_grad_range, lambda g2, order, starts, out2, padding: out2.shape[0]
)


def _embedding_grad_runner(op: EmbeddingGrad, parallel: bool | None = None) -> Callable[..., None]:
    has_ignore, ignore = _ignore_args(op.ignore_index)
    padding = -1 if op.padding_idx is None else op.padding_idx

    def run(g: np.ndarray, idx: np.ndarray, ref: np.ndarray, out: np.ndarray) -> None:
        nrows = ref.shape[0]
        _check_indices(idx, nrows, "index", "embedding rows", op.ignore_index)
        if out.size == 0:
            return
        flat = _c(idx).reshape(-1)
        order, starts = group_rows(flat, nrows, has_ignore, ignore)
        par = parallel if parallel is not None else out.size + g.size >= PARALLEL_MIN_SIZE
        fn = embedding_grad_par if par else embedding_grad_ser
        fn(_c(g).reshape(flat.size, -1), order, starts, out.reshape(nrows, -1), padding)

    return run


@register(EmbeddingGrad)
def _embedding_grad(node: Tensor) -> LibraryImpl:
    op = node.op
    dispatchers = [group_rows, embedding_grad_range]
    return LibraryImpl(_embedding_grad_runner(op), dispatchers, True, _embedding_grad_runner(op, False))


@numba.njit(**_JIT)
def _take_class_row(x3: np.ndarray, idx2: np.ndarray, out2: np.ndarray, has_ignore: bool, ignore: int, o: int) -> None:
    for j in range(x3.shape[2]):
        c = idx2[o, j]
        out2[o, j] = 0 if (has_ignore and c == ignore) else x3[o, c, j]


@numba.njit(nogil=True, **_JIT)
def take_class_range(
    x3: np.ndarray, idx2: np.ndarray, out2: np.ndarray, has_ignore: bool, ignore: int, t0: int, t1: int
) -> None:
    """Tasks ``t0 <= t < t1``: ``take_class_par`` splits them across threads, ``_ser`` runs all."""
    for o in range(t0, t1):
        _take_class_row(x3, idx2, out2, has_ignore, ignore, o)


take_class_par, take_class_ser = task_runners(take_class_range, lambda x3, idx2, out2, has_ignore, ignore: x3.shape[0])


@numba.njit(**_JIT)
def _take_class_grad_row(
    g2: np.ndarray, idx2: np.ndarray, out3: np.ndarray, has_ignore: bool, ignore: int, o: int
) -> None:
    out3[o, :, :] = 0
    for j in range(out3.shape[2]):
        c = idx2[o, j]
        if not (has_ignore and c == ignore):
            out3[o, c, j] = g2[o, j]


@numba.njit(nogil=True, **_JIT)
def take_class_grad_range(
    g2: np.ndarray, idx2: np.ndarray, out3: np.ndarray, has_ignore: bool, ignore: int, t0: int, t1: int
) -> None:
    """Tasks ``t0 <= t < t1``: ``take_class_grad_par`` splits them across threads, ``_ser`` runs all."""
    for o in range(t0, t1):
        _take_class_grad_row(g2, idx2, out3, has_ignore, ignore, o)


take_class_grad_par, take_class_grad_ser = task_runners(
    take_class_grad_range, lambda g2, idx2, out3, has_ignore, ignore: out3.shape[0]
)


def _class_dims(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def _class_gather_runner(
    op: TakeAlongClass | SoftmaxCrossEntropy, what: str, par_fn: Callable, ser_fn: Callable, parallel: bool | None
) -> Callable[..., None]:
    """``run(x, idx, out)`` for the per-position class ops (``take_class``, ``softmax_cross_entropy``): shape and
    range checks (messages naming ``what``), then ``kernel(x3, idx2, out2, has_ignore, ignore)``."""
    has_ignore, ignore = _ignore_args(op.ignore_index)

    def run(x: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
        _check_idx_shape(x.shape, idx.shape, op.axis, what)
        o, n, k = _class_dims(x.shape, op.axis)
        _check_indices(idx, n, "label", "classes", op.ignore_index)
        if out.size == 0:
            return
        if n == 0:  # every label is ignore_index (else the range check failed)
            out.fill(0)
            return
        par = parallel if parallel is not None else (x.size >= PARALLEL_MIN_SIZE and _threads() > 1)
        fn = par_fn if par else ser_fn
        fn(_c(x).reshape(o, n, k), _c(idx).reshape(o, k), out.reshape(o, k), has_ignore, ignore)

    return run


def _class_scatter_runner(
    op: TakeAlongClassGrad | SoftmaxCrossEntropyGrad,
    what: str,
    par_fn: Callable,
    ser_fn: Callable,
    parallel: bool | None,
    reads_ref: bool,
) -> Callable[..., None]:
    """``run(g, idx, ref, out)`` for the adjoints of the class ops: ``kernel(g2, idx2, [ref3,] out3, has_ignore,
    ignore)`` (``reads_ref``: the kernel reads ``ref``'s values, not only its shape)."""
    has_ignore, ignore = _ignore_args(op.ignore_index)

    def run(g: np.ndarray, idx: np.ndarray, ref: np.ndarray, out: np.ndarray) -> None:
        _check_idx_shape(ref.shape, idx.shape, op.axis, what)
        o, n, k = _class_dims(ref.shape, op.axis)
        _check_indices(idx, n, "label", "classes", op.ignore_index)
        if n == 0 or idx.size == 0:
            out.fill(0)
            return
        g2 = (_c(g) if g.shape == idx.shape else _c(np.broadcast_to(g, idx.shape))).reshape(o, k)
        par = parallel if parallel is not None else (out.size >= PARALLEL_MIN_SIZE and _threads() > 1)
        fn = par_fn if par else ser_fn
        if reads_ref:
            fn(g2, _c(idx).reshape(o, k), _c(ref).reshape(o, n, k), out.reshape(o, n, k), has_ignore, ignore)
        else:
            fn(g2, _c(idx).reshape(o, k), out.reshape(o, n, k), has_ignore, ignore)

    return run


@register(TakeAlongClass)
def _take_class(node: Tensor) -> LibraryImpl:
    op = node.op
    args = (op, "take_class", take_class_par, take_class_ser)
    return LibraryImpl(_class_gather_runner(*args, None), [take_class_range], True, _class_gather_runner(*args, False))


@register(TakeAlongClassGrad)
def _take_class_grad(node: Tensor) -> LibraryImpl:
    op = node.op
    dispatchers = [take_class_grad_range]
    args = (op, "take_class_grad", take_class_grad_par, take_class_grad_ser)
    return LibraryImpl(
        _class_scatter_runner(*args, None, False), dispatchers, True, _class_scatter_runner(*args, False, False)
    )


# ====================================================================================================
# Softmax cross-entropy: per row (o, j) of x3[o, :, j], one max-shifted pass forward and one backward
# ====================================================================================================


@numba.njit(inline="always")
def _xent_lse(x3: np.ndarray, o: int, j: int, zero: float) -> float:
    """``logsumexp`` of the row ``x3[o, :, j]`` with a max-shift (a non-finite max is replaced by ``zero``, as
    ``symdl.ops.nn._shifted``), summed in float64."""
    n = x3.shape[1]
    m = x3[o, 0, j]
    for c in range(n):
        m = _pick(MAX, m, x3[o, c, j])
    if not np.isfinite(m):
        m = zero
    total = 0.0
    for c in range(n):
        total += np.exp(x3[o, c, j] - m)
    return np.log(total) + m


@numba.njit(fastmath={"reassoc"}, **_JIT)
def _xent_row(x3: np.ndarray, idx2: np.ndarray, out2: np.ndarray, has_ignore: bool, ignore: int, o: int) -> None:
    zero = x3.dtype.type(0)
    for j in range(x3.shape[2]):
        c = idx2[o, j]
        if has_ignore and c == ignore:
            out2[o, j] = 0
        else:
            out2[o, j] = _xent_lse(x3, o, j, zero) - x3[o, c, j]


@numba.njit(nogil=True, **_JIT)
def xent_range(
    x3: np.ndarray, idx2: np.ndarray, out2: np.ndarray, has_ignore: bool, ignore: int, t0: int, t1: int
) -> None:
    """Tasks ``t0 <= t < t1``: ``xent_par`` splits them across threads, ``_ser`` runs all."""
    for o in range(t0, t1):
        _xent_row(x3, idx2, out2, has_ignore, ignore, o)


xent_par, xent_ser = task_runners(xent_range, lambda x3, idx2, out2, has_ignore, ignore: x3.shape[0])


@numba.njit(fastmath={"reassoc"}, **_JIT)
def _xent_grad_row(
    g2: np.ndarray, idx2: np.ndarray, x3: np.ndarray, out3: np.ndarray, has_ignore: bool, ignore: int, o: int
) -> None:
    zero = x3.dtype.type(0)
    for j in range(x3.shape[2]):
        c = idx2[o, j]
        if has_ignore and c == ignore:
            for k in range(x3.shape[1]):
                out3[o, k, j] = 0
            continue
        lse = _xent_lse(x3, o, j, zero)
        gj = g2[o, j]
        for k in range(x3.shape[1]):
            out3[o, k, j] = np.exp(x3[o, k, j] - lse) * gj
        out3[o, c, j] -= gj


@numba.njit(nogil=True, **_JIT)
def xent_grad_range(
    g2: np.ndarray, idx2: np.ndarray, x3: np.ndarray, out3: np.ndarray, has_ignore: bool, ignore: int, t0: int, t1: int
) -> None:
    """Tasks ``t0 <= t < t1``: ``xent_grad_par`` splits them across threads, ``_ser`` runs all."""
    for o in range(t0, t1):
        _xent_grad_row(g2, idx2, x3, out3, has_ignore, ignore, o)


xent_grad_par, xent_grad_ser = task_runners(xent_grad_range, lambda g2, idx2, x3, out3, has_ignore, ignore: x3.shape[0])


@register(SoftmaxCrossEntropy)
def _xent(node: Tensor) -> LibraryImpl:
    op = node.op
    args = (op, "cross_entropy", xent_par, xent_ser)
    return LibraryImpl(_class_gather_runner(*args, None), [xent_range], True, _class_gather_runner(*args, False))


@register(SoftmaxCrossEntropyGrad)
def _xent_grad(node: Tensor) -> LibraryImpl:
    op = node.op
    args = (op, "cross_entropy", xent_grad_par, xent_grad_ser)
    return LibraryImpl(
        _class_scatter_runner(*args, None, True),
        [xent_grad_range],
        True,
        _class_scatter_runner(*args, False, True),
    )


# ====================================================================================================
# Dropout mask: the counter-based hash of symdl.ops.random, bit for bit (uint64 arithmetic wraps mod 2**64)
# ====================================================================================================

_U11, _U27, _U30, _U31 = np.uint64(11), np.uint64(27), np.uint64(30), np.uint64(31)
_MIX1, _MIX2, _GAMMA = np.uint64(rnd.MIX1), np.uint64(rnd.MIX2), np.uint64(rnd.GAMMA)
_DROPOUT_BLOCK = 1 << 14


@numba.njit(inline="always")
def _mix64(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return z ^ (z >> _U31)


@numba.njit(**_JIT)
def dropout_key(state: np.ndarray, stream: np.uint64) -> np.uint64:
    """``mix64(mix64(mix64(seed) ^ counter) ^ stream)`` (``stream``: uint64)."""
    return _mix64(_mix64(_mix64(state[0]) ^ state[1]) ^ stream)


@numba.njit(**_JIT)
def _dropout_block(key: np.uint64, threshold: np.uint64, scale: float, zero: float, out1: np.ndarray, b: int) -> None:
    for i in range(b * _DROPOUT_BLOCK, min(out1.size, (b + 1) * _DROPOUT_BLOCK)):
        h = _mix64(key ^ (np.uint64(i) * _GAMMA))
        out1[i] = scale if (h >> _U11) < threshold else zero


@numba.njit(nogil=True, **_JIT)
def dropout_range(
    state: np.ndarray,
    stream: np.uint64,
    threshold: np.uint64,
    scale: float,
    zero: float,
    out1: np.ndarray,
    t0: int,
    t1: int,
) -> None:
    """Tasks ``t0 <= t < t1``: ``dropout_par`` splits them across threads, ``_ser`` runs all."""
    key = dropout_key(state, stream)
    for b in range(t0, t1):
        _dropout_block(key, threshold, scale, zero, out1, b)


dropout_par, dropout_ser = task_runners(
    dropout_range,
    lambda state, stream, threshold, scale, zero, out1: (out1.size + _DROPOUT_BLOCK - 1) // _DROPOUT_BLOCK,
)


def _dropout_runner(op: rnd.DropoutMask, dtype: np.dtype, parallel: bool | None = None) -> Callable[..., None]:
    stream = np.uint64(op.stream & ((1 << 64) - 1))
    threshold = np.uint64(rnd.keep_threshold(op.p))
    scale = dtype.type(0) if op.p >= 1.0 else dtype.type(1) / dtype.type(1.0 - op.p)
    zero = dtype.type(0)

    def run(x: np.ndarray, state: np.ndarray, out: np.ndarray) -> None:
        if out.size == 0:
            return
        par = parallel if parallel is not None else out.size >= PARALLEL_MIN_SIZE
        (dropout_par if par else dropout_ser)(_c(state), stream, threshold, scale, zero, out.reshape(-1))

    return run


@register(rnd.DropoutMask)
def _dropout_mask(node: Tensor) -> LibraryImpl:
    op, dt = node.op, node.dtype
    return LibraryImpl(_dropout_runner(op, dt), [dropout_range], True, _dropout_runner(op, dt, False))


# ====================================================================================================
# Batch-norm eval: y = x * alpha + beta per channel, the exact formula (and rounding) of BatchNormEval.perform
# ====================================================================================================


@numba.njit(**_JIT)
def _bn_plane(
    x3: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    eps: float,
    one: float,
    out3: np.ndarray,
    t: int,
) -> None:
    c = t % x3.shape[1]
    n = t // x3.shape[1]
    alpha = (one / np.sqrt(var[c] + eps)) * weight[c]
    beta = bias[c] - mean[c] * alpha
    for s in range(x3.shape[2]):
        out3[n, c, s] = x3[n, c, s] * alpha + beta


@numba.njit(nogil=True, **_JIT)
def batch_norm_eval_range(
    x3: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    eps: float,
    one: float,
    out3: np.ndarray,
    t0: int,
    t1: int,
) -> None:
    """Tasks ``t0 <= t < t1``: ``batch_norm_eval_par`` splits them across threads, ``_ser`` runs all."""
    for t in range(t0, t1):
        _bn_plane(x3, mean, var, weight, bias, eps, one, out3, t)


batch_norm_eval_par, batch_norm_eval_ser = task_runners(
    batch_norm_eval_range, lambda x3, mean, var, weight, bias, eps, one, out3: x3.shape[0] * x3.shape[1]
)


def _bn_runner(op: BatchNormEval, dtype: np.dtype, parallel: bool | None = None) -> Callable[..., None]:
    eps, one = dtype.type(op.eps), dtype.type(1)

    def run(
        x: np.ndarray, mean: np.ndarray, var: np.ndarray, weight: np.ndarray, bias: np.ndarray, out: np.ndarray
    ) -> None:
        if out.size == 0:
            return
        dims = (x.shape[0], x.shape[1], x.size // (x.shape[0] * x.shape[1]))
        par = parallel if parallel is not None else out.size >= PARALLEL_MIN_SIZE
        fn = batch_norm_eval_par if par else batch_norm_eval_ser
        fn(_c(x).reshape(dims), _c(mean), _c(var), _c(weight), _c(bias), eps, one, out.reshape(dims))

    return run


@register(BatchNormEval)
def _batch_norm_eval(node: Tensor) -> LibraryImpl:
    op, dt = node.op, node.dtype
    dispatchers = [batch_norm_eval_range]
    return LibraryImpl(_bn_runner(op, dt), dispatchers, True, _bn_runner(op, dt, False))


# ====================================================================================================
# Checks and run-time sizes
# ====================================================================================================


@numba.njit(**_JIT)
def _check_block(x1: np.ndarray, out1: np.ndarray, bad: np.ndarray, b: int) -> None:
    size = (x1.size + bad.size - 1) // bad.size
    count = 0
    for i in range(b * size, min(x1.size, (b + 1) * size)):
        v = x1[i]
        out1[i] = v
        count += not (v >= 0 and v <= 1)
    bad[b] = count


@numba.njit(nogil=True, **_JIT)
def check_probabilities_range(x1: np.ndarray, out1: np.ndarray, bad: np.ndarray, t0: int, t1: int) -> None:
    """Tasks ``t0 <= t < t1``: ``check_probabilities_par`` splits them across threads, ``_ser`` runs all."""
    for b in range(t0, t1):
        _check_block(x1, out1, bad, b)


check_probabilities_par, check_probabilities_ser = task_runners(
    check_probabilities_range, lambda x1, out1, bad: bad.size
)


def _check_probabilities_runner(op: CheckProbabilities, parallel: bool | None = None) -> Callable[..., None]:
    def run(x: np.ndarray, out: np.ndarray) -> None:
        if x.size == 0:
            return
        nblocks = min(64, max(1, x.size // PARALLEL_MIN_SIZE))
        bad = np.empty(nblocks, np.int64)
        par = parallel if parallel is not None else nblocks > 1
        (check_probabilities_par if par else check_probabilities_ser)(_c(x).reshape(-1), out.reshape(-1), bad)
        if bad.any():
            op.perform(x)  # raises with the op's message (first bad entry, count)

    return run


@register(CheckProbabilities)
def _check_probabilities(node: Tensor) -> LibraryImpl:
    op = node.op
    dispatchers = [check_probabilities_range]
    return LibraryImpl(_check_probabilities_runner(op), dispatchers, True, _check_probabilities_runner(op, False))


@register(DimSize, BatchCount)
def _dim_size(node: Tensor) -> LibraryImpl:
    op = node.op

    def run(x: np.ndarray, out: np.ndarray) -> None:
        out[...] = op.perform(x)  # BatchCount.perform raises for a single value per channel

    return LibraryImpl(run)


@register(FillLike)
def _fill_like(node: Tensor) -> LibraryImpl:
    value = node.op.value

    def run(ref: np.ndarray, out: np.ndarray) -> None:
        out.fill(value)

    return LibraryImpl(run)


# ====================================================================================================
# Shape copies: NumPy strided copies into ``out`` (as fast as a Numba loop for these access patterns)
# ====================================================================================================


@register(BroadcastLike, BroadcastTo)
def _broadcast(node: Tensor) -> LibraryImpl:
    def run(x: np.ndarray, *rest: np.ndarray) -> None:
        np.copyto(rest[-1], x)  # rest = (ref, out) or (out,)

    return LibraryImpl(run)


@register(Transpose)
def _transpose(node: Tensor) -> LibraryImpl:
    perm = node.op.perm

    def run(x: np.ndarray, out: np.ndarray) -> None:
        np.copyto(out, np.transpose(x, perm))

    return LibraryImpl(run)


def _along(axis: int, start: int, stop: int) -> tuple[slice, ...]:
    return (slice(None),) * axis + (slice(start, stop),)


@register(Concat)
def _concat(node: Tensor) -> LibraryImpl:
    axis = node.op.axis

    def run(*arrays: np.ndarray) -> None:
        out, start = arrays[-1], 0
        for x in arrays[:-1]:
            stop = start + x.shape[axis]
            out[_along(axis, start, stop)] = x
            start = stop

    return LibraryImpl(run)


@register(ConcatPart)
def _concat_part(node: Tensor) -> LibraryImpl:
    axis, k = node.op.axis, node.op.k

    def run(g: np.ndarray, *rest: np.ndarray) -> None:
        refs, out = rest[:-1], rest[-1]
        start = sum(r.shape[axis] for r in refs[:k])
        np.copyto(out, g[_along(axis, start, start + refs[k].shape[axis])])

    return LibraryImpl(run)


@register(Pad)
def _pad(node: Tensor) -> LibraryImpl:
    pads = node.op.pads
    value = node.dtype.type(node.op.value)

    def run(x: np.ndarray, out: np.ndarray) -> None:
        out.fill(value)
        out[tuple(slice(b, b + d) for (b, _), d in zip(pads, x.shape))] = x

    return LibraryImpl(run)


@register(Slice)
def _slice(node: Tensor) -> LibraryImpl:
    index = node.op._np_index()

    def run(x: np.ndarray, out: np.ndarray) -> None:
        try:
            part = x[index]
        except IndexError as e:
            raise OpRuntimeError(f"index {index} out of range for shape {x.shape}") from e
        np.copyto(out, part)

    return LibraryImpl(run)


@register(SliceGrad)
def _slice_grad(node: Tensor) -> LibraryImpl:
    index = Slice(node.op.index)._np_index()

    def run(g: np.ndarray, ref: np.ndarray, out: np.ndarray) -> None:
        out.fill(0)
        out[index] = g

    return LibraryImpl(run)
