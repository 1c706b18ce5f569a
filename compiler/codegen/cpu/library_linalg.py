"""CPU library kernels for matmul, convolution and pooling (Numba).

Conventions (see :mod:`compiler.codegen.cpu.library`): a factory sees the node once per compile and returns
``run(*inputs, out)``; ``run`` makes its inputs C-contiguous (a copy only when they are not), reshapes them to
the canonical rank the kernels take, and calls one ``numba.njit(cache=True)`` module-level function. Nothing
shape-dependent is baked into a compiled function: sizes are read from the arrays (the output buffer gives the
output sizes), only the op's props (stride, padding, dilation, groups, window) are passed, as one int tuple.
So a new batch size or image size never recompiles; Numba specialises on dtype (float32/float64) only.

- **matmul**: BLAS GEMM called from njit code (:func:`compiler.codegen.cpu.gemm.gemm`; transposed operands cost
  no copy). A rank-2 right operand folds the left operand's batch dims into its rows (one GEMM); otherwise one
  GEMM per broadcast batch element. A GEMM of at least :data:`PARALLEL_MIN_MACS` multiply-adds runs on all
  threads of the (otherwise single-threaded) BLAS for that call, or, where the BLAS cannot be controlled, is
  split into row blocks on the runtime's threads; batched ones split their batch.
- **conv** (1-d is run as 2-d with a unit height): stride-1 convolutions and both their gradients run the
  register-tiled SIMD kernels of :mod:`compiler.codegen.cpu.conv_simd` where their tiles are well filled;
  otherwise, per sample, ``im2col`` into a cache-sized workspace + one GEMM per group (the forward GEMM writes
  the NCHW output block directly; a plain 1x1 convolution skips im2col), or a direct loop nest for thin
  grouped convolutions such as depthwise (:data:`CONV_ALGOS`, :func:`default_conv_algo`). The batch is split
  into one sample range per thread; BLAS itself runs single-threaded (:mod:`compiler.codegen.cpu.blas`).
- **pooling**: one loop nest per ``(n, c)`` plane; the max-pool family shares :func:`_window_argmax` (the first
  maximum in row-major window order, NaN wins, as ``np.argmax`` in the reference).

Parallel kernels split only disjoint output slices (batch samples, planes or output channels) across threads:
each is one ``nogil`` function over a task range (``X_range(*args, t0, t1)``, compiled once), run by ``X_par``
on the runtime's threads or by ``X_ser`` (the serial twin, which tests compare) in the caller
(:mod:`compiler.codegen.cpu.parallel`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numba import njit

from compiler.codegen.cpu.blas import configure_blas, run_with_blas_threads
from compiler.codegen.cpu.conv_simd import (
    _simd_conv_par,
    _simd_conv_ser,
    _simd_gw_par,
    _simd_gw_ser,
    simd_conv_efficiency,
    simd_conv_runners,
    simd_grad_weight_runners,
)
from compiler.codegen.cpu.conv_winograd import (
    _winograd_par,
    _winograd_ser,
    winograd_applies,
    winograd_conv_runners,
)
from compiler.codegen.cpu.gemm import gemm
from compiler.codegen.cpu.library import LibraryImpl, register
from compiler.codegen.cpu.parallel import get_num_threads, parallel_for, task_runners
from symdl.graph import Tensor
from symdl.ops.conv import Conv, ConvGradInput, ConvGradWeight
from symdl.ops.pool import AvgPool, AvgPoolGrad, MaxPool, MaxPoolGather, MaxPoolGrad, MaxPoolIndices
from symdl.ops.reduce import MatMul

__all__ = [
    "CONV_ALGOS",
    "DIRECT_MAX_GROUP_GEMM",
    "PARALLEL_MIN_CONV_MACS",
    "PARALLEL_MIN_SIZE",
    "conv_impl",
    "default_conv_algo",
    "matmul_factory",
    "conv_factory",
    "conv_grad_input_factory",
    "conv_grad_weight_factory",
    "max_pool_factory",
    "max_pool_grad_factory",
    "max_pool_gather_factory",
    "max_pool_indices_factory",
    "avg_pool_factory",
    "avg_pool_grad_factory",
]


configure_blas()  # one BLAS thread: the runtime's threads split the work (see compiler.codegen.cpu.blas)

#: GEMMs and convolutions with at least this many multiply-adds split across the threads (~0.4 ms single-threaded
#: here; handing work to another thread costs 70-100 us on this 2-core VM)
PARALLEL_MIN_MACS = 1 << 24

#: Convolutions with at least this many multiply-adds split their samples across the task threads: each task is a
#: long run of im2col + GEMMs, so the 70-100 us hand-off pays from ~4M multiply-adds (LeNet-5 step at batch 64:
#: 5.9-6.2 -> 4.7-5.5 ms against 16M). A batch below the thread count splits output channels only from
#: :data:`PARALLEL_MIN_MACS` (one GEMM per task: batch-1 inference got slower at 4M)
PARALLEL_MIN_CONV_MACS = 1 << 22

#: Pooling calls whose input has fewer elements run the serial twin: waking the worker threads costs more than
#: it saves.
PARALLEL_MIN_SIZE = 1 << 18


def _c(a: np.ndarray) -> np.ndarray:
    """``a`` itself when C-contiguous, else a C-contiguous copy (kernels are compiled for 'C' layout only)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _cf(a: np.ndarray) -> np.ndarray:
    """``a`` itself when C- or F-contiguous, else a C-contiguous copy (for BLAS, which takes either layout)."""
    return a if a.flags.c_contiguous or a.flags.f_contiguous else np.ascontiguousarray(a)


def _as4d(a: np.ndarray) -> np.ndarray:
    """(N, C, L) → the (N, C, 1, L) view (1-d convolution and pooling run as 2-d)."""
    s = a.shape
    return a.reshape(s[0], s[1], 1, s[2])


@njit(cache=True)
def _valid_range(off: int, step: int, size: int, nout: int) -> tuple[int, int]:
    """The ``[lo, hi)`` range of ``o`` in ``[0, nout)`` for which ``o * step + off`` lies in ``[0, size)``."""
    lo = 0 if off >= 0 else (-off + step - 1) // step
    last = size - 1 - off
    hi = 0 if last < 0 else min(nout, last // step + 1)
    return lo, max(lo, hi)


# ----------------------------------------------------------------------------------------------------
# MatMul
# ----------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _matmul2d(a, b, out):  # noqa: ANN001, ANN202
    """``out = a @ b`` for (m, k), (k, n) C- or F-contiguous and (m, n) C-contiguous: one BLAS GEMM."""
    gemm(a, b, out, 0.0)


@njit(cache=True, nogil=True)
def _matmul_rows_range(a, b, out, nt, t0, t1):  # noqa: ANN001, ANN202
    """Row blocks ``t0 <= t < t1`` of ``nt`` of ``out = a @ b``: one GEMM each."""
    m = a.shape[0]
    for t in range(t0, t1):
        r0, r1 = (t * m) // nt, ((t + 1) * m) // nt
        if r1 > r0:
            gemm(a[r0:r1], b, out[r0:r1], 0.0)


@njit(cache=True, nogil=True)
def _matmul_batched_range(a, b, out, a_idx, b_idx, t0, t1):  # noqa: ANN001, ANN202
    """``out[i] = a[a_idx[i]] @ b[b_idx[i]]`` for ``t0 <= i < t1`` over 3-d C-contiguous stacks."""
    for i in range(t0, t1):
        gemm(a[a_idx[i]], b[b_idx[i]], out[i], 0.0)


def _gemm_2d(dispatchers: list[object]) -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """``gemm(a, b, out)`` for 2-d operands (``a``, ``b`` C- or F-contiguous, ``out`` C-contiguous): one BLAS call,
    or row blocks on the runtime's threads for GEMMs of at least :data:`PARALLEL_MIN_MACS`."""
    dispatchers += [_matmul2d, _matmul_rows_range]

    def run_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        m, k = a.shape
        threads = get_num_threads()
        if threads == 1 or m < 2 * threads or m * k * b.shape[1] < PARALLEL_MIN_MACS:
            _matmul2d(a, b, out)
            return
        if run_with_blas_threads(threads, _matmul2d, a, b, out):  # BLAS's own threads hand off fastest
            return
        parallel_for(_matmul_rows_range, (a, b, out, threads), threads)

    return run_gemm


def _batch_maps(a_batch: tuple[int, ...], b_batch: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For each element of the broadcast batch (row-major), the flat batch index into ``a`` and into ``b``."""
    shape = np.broadcast_shapes(a_batch, b_batch)
    ia = np.broadcast_to(np.arange(math.prod(a_batch), dtype=np.int64).reshape(a_batch), shape)
    ib = np.broadcast_to(np.arange(math.prod(b_batch), dtype=np.int64).reshape(b_batch), shape)
    return np.ascontiguousarray(ia).reshape(-1), np.ascontiguousarray(ib).reshape(-1)


@register(MatMul)
def matmul_factory(node: Tensor) -> LibraryImpl:
    """``a @ b`` with NumPy matmul semantics (rank >= 2, broadcast batch dims)."""
    a_t, b_t = node.inputs
    dispatchers: list[object] = []
    if a_t.ndim == 2 and b_t.ndim == 2:
        gemm = _gemm_2d(dispatchers)

        def run2d(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
            # BLAS takes C- or F-contiguous operands as they are: a transposed operand (an F-contiguous view
            # made by a transpose view kernel) costs no copy
            gemm(_cf(a), _cf(b), out)

        return LibraryImpl(run2d, dispatchers)
    if b_t.ndim == 2:
        gemm = _gemm_2d(dispatchers)

        def run(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
            rows = math.prod(a.shape[:-1])
            gemm(_c(a).reshape(rows, a.shape[-1]), _c(b), out.reshape(rows, out.shape[-1]))

        return LibraryImpl(run, dispatchers)

    maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # per (a batch, b batch) shape: the index maps

    def run_batched(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        ab, bb = a.shape[:-2], b.shape[:-2]
        key = (ab, bb)
        m = maps.get(key)
        if m is None:
            m = maps[key] = _batch_maps(ab, bb)
        a3 = _c(a).reshape(math.prod(ab), *a.shape[-2:])
        b3 = _c(b).reshape(math.prod(bb), *b.shape[-2:])
        o3 = out.reshape(len(m[0]), *out.shape[-2:])
        args = (a3, b3, o3, m[0], m[1])
        macs = o3.shape[0] * o3.shape[1] * o3.shape[2] * a3.shape[2]
        if macs >= PARALLEL_MIN_MACS and o3.shape[0] > 1:
            parallel_for(_matmul_batched_range, args, o3.shape[0])
        else:
            _matmul_batched_range(*args, 0, o3.shape[0])

    return LibraryImpl(run_batched, [_matmul_batched_range])


# ----------------------------------------------------------------------------------------------------
# Convolution: shared pieces. ``geom = (sh, sw, ph, pw, dh, dw)``: stride, leading padding, dilation.
# Input position of output pixel o, tap t along a dim: ``o * s - p + t * d``.
# ----------------------------------------------------------------------------------------------------


def _conv_geom(op: Conv | ConvGradInput | ConvGradWeight) -> tuple[int, int, int, int, int, int]:
    """The op's props as the 2-d ``geom`` tuple (a 1-d op gets a unit height: stride 1, no padding)."""
    if len(op.stride) == 1:
        return (1, op.stride[0], 0, op.padding[0][0], 1, op.dilation[0])
    (sh, sw), (dh, dw) = op.stride, op.dilation
    return (sh, sw, op.padding[0][0], op.padding[1][0], dh, dw)


# The copy loops below index with unsigned integers (``np.uint64``; never mixed with signed ones, which would
# promote to float): a signed index costs a negative-index wraparound test per element, which here kept LLVM
# from vectorising and made these loops 3-5x slower (measured on the LeNet layers).
_U = np.uint64


@njit(cache=True)
def _im2col_one(x, cols, i, kh, kw, oh, ow, geom):  # noqa: ANN001, ANN202
    """Sample ``i`` of ``x`` (N, C, H, W) into columns ``i*P .. (i+1)*P`` of ``cols`` (C*kh*kw, N*P)."""
    sh, sw, ph, pw, dh, dw = geom
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    base = i * oh * ow
    ui, usw = _U(i), _U(sw)
    for c in range(c_in):
        uc = _U(c)
        for a in range(kh):
            for b in range(kw):
                r = _U((c * kh + a) * kw + b)
                off = b * dw - pw
                lo, hi = _valid_range(off, sw, w, ow)
                for y in range(oh):
                    iy = y * sh - ph + a * dh
                    col = _U(base + y * ow)
                    if iy < 0 or iy >= h:
                        for xo in range(_U(ow)):
                            cols[r, col + xo] = 0
                        continue
                    uy = _U(iy)
                    for xo in range(_U(lo)):
                        cols[r, col + xo] = 0
                    src = _U(lo * sw + off)
                    dst = col + _U(lo)
                    if sw == 1:
                        for k in range(_U(hi - lo)):
                            cols[r, dst + k] = x[ui, uc, uy, src + k]
                    else:
                        for k in range(_U(hi - lo)):
                            cols[r, dst + k] = x[ui, uc, uy, src + k * usw]
                    for xo in range(_U(hi), _U(ow)):
                        cols[r, col + xo] = 0


@njit(cache=True)
def _col2im_one(dcols, dx, i, kh, kw, oh, ow, geom):  # noqa: ANN001, ANN202
    """Sample ``i`` of ``dx`` (N, C, H, W) = the sum of columns ``i*P .. (i+1)*P`` of ``dcols`` at their taps."""
    sh, sw, ph, pw, dh, dw = geom
    c_in, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    base = i * oh * ow
    ui, usw = _U(i), _U(sw)
    dx[i] = 0
    for c in range(c_in):
        uc = _U(c)
        for a in range(kh):
            for b in range(kw):
                r = _U((c * kh + a) * kw + b)
                off = b * dw - pw
                lo, hi = _valid_range(off, sw, w, ow)
                for y in range(oh):
                    iy = y * sh - ph + a * dh
                    if iy < 0 or iy >= h:
                        continue
                    uy = _U(iy)
                    src = _U(base + y * ow + lo)
                    dst = _U(lo * sw + off)
                    if sw == 1:
                        for k in range(_U(hi - lo)):
                            dx[ui, uc, uy, dst + k] += dcols[r, src + k]
                    else:
                        for k in range(_U(hi - lo)):
                            dx[ui, uc, uy, dst + k * usw] += dcols[r, src + k]


# ----------------------------------------------------------------------------------------------------
# Convolution: im2col + GEMM. Each _par/_ser pair runs one task-range function (split across threads, or not).
# ----------------------------------------------------------------------------------------------------


@njit(cache=True)
def _conv_is_1x1(x, w, out, geom):  # noqa: ANN001, ANN202
    """Whether the convolution is a plain 1x1 one (unit stride, no padding): ``x[i]`` is its own im2col."""
    sh, sw, ph, pw = geom[0], geom[1], geom[2], geom[3]
    return (
        w.shape[2] == 1 and w.shape[3] == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
        and out.shape[2] == x.shape[2] and out.shape[3] == x.shape[3]
    )  # fmt: skip


@njit(cache=True)
def _conv_fwd_chunk(x, w, out, cols, t, nt, geom, groups):  # noqa: ANN001, ANN202
    """Samples ``[t*N/nt, (t+1)*N/nt)`` of the convolution: per sample, im2col into ``cols[t]`` (C*kh*kw, P) and
    one GEMM per group, ``w[g] (O/G, K) @ cols[g] (K, P)``, whose (O/G, P) result is already the NCHW block of
    ``out[i]``: no transpose copy, and the scratch stays in cache (a batch-wide im2col is N times larger)."""
    n, kh, kw, oh, ow = x.shape[0], w.shape[2], w.shape[3], out.shape[2], out.shape[3]
    o_n, k, p = w.shape[0], w.shape[1] * w.shape[2] * w.shape[3], oh * ow
    og = o_n // groups
    w3 = w.reshape((groups, og, k))
    o4 = out.reshape((n, groups, og, p))
    one = _conv_is_1x1(x, w, out, geom)
    x4 = x.reshape((n, groups, k, p)) if one else x.reshape((n, 1, 1, x.shape[1] * x.shape[2] * x.shape[3]))
    c3 = cols[t].reshape((groups, k, p))
    for i in range((t * n) // nt, ((t + 1) * n) // nt):
        if one:
            for g in range(groups):
                gemm(w3[g], x4[i, g], o4[i, g], 0.0)
        else:
            _im2col_one(x[i : i + 1], cols[t], 0, kh, kw, oh, ow, geom)
            for g in range(groups):
                gemm(w3[g], c3[g], o4[i, g], 0.0)


@njit(cache=True, nogil=True)
def _conv_im2col_range(x, w, out, geom, groups, ws, t0, t1):  # noqa: ANN001, ANN202
    for t in range(t0, t1):
        _conv_fwd_chunk(x, w, out, ws, t, ws.shape[0], geom, groups)


_conv_im2col_par, _conv_im2col_ser = task_runners(_conv_im2col_range, lambda x, w, out, geom, groups, ws: ws.shape[0])


@njit(cache=True, nogil=True)
def _conv_fwd_rows_range(w, cols, out, i, groups, nt, t0, t1):  # noqa: ANN001, ANN202
    """Tasks ``t = g * nt + b`` of sample ``i``, its im2col ``cols`` (C*kh*kw, P) done: output-channel block ``b``
    of ``nt`` of group ``g``, ``out[i, g][rows] = w[g][rows] @ cols[g]``. Splits one sample's GEMMs across the
    threads when the batch is smaller than the thread count (batch-1 inference)."""
    n, o_n, k, p = out.shape[0], w.shape[0], w.shape[1] * w.shape[2] * w.shape[3], out.shape[2] * out.shape[3]
    og = o_n // groups
    w3 = w.reshape((groups, og, k))
    o4 = out.reshape((n, groups, og, p))
    c3 = cols.reshape((groups, k, p))
    for t in range(t0, t1):
        g, b = t // nt, t % nt
        r0, r1 = (b * og) // nt, ((b + 1) * og) // nt
        if r1 > r0:
            gemm(w3[g][r0:r1], c3[g], o4[i, g][r0:r1], 0.0)


def _conv_fwd_small_batch(x, w, out, geom, groups, cols, threads):  # noqa: ANN001, ANN202
    """The forward convolution sample by sample, each sample's GEMMs split by output-channel blocks across the
    threads (``cols``: a (C*kh*kw, P) workspace)."""
    kh, kw, oh, ow = w.shape[2], w.shape[3], out.shape[2], out.shape[3]
    one = _conv_is_1x1(x, w, out, geom)
    for i in range(x.shape[0]):
        if one:
            c = x[i].reshape(x.shape[1], oh * ow)
        else:
            _im2col_one(x[i : i + 1], cols, 0, kh, kw, oh, ow, geom)
            c = cols
        parallel_for(_conv_fwd_rows_range, (w, c, out, i, groups, threads), groups * threads)


@njit(cache=True)
def _gi_chunk(g, w, dx, dcols, t, nt, geom, groups):  # noqa: ANN001, ANN202
    """Samples ``[t*N/nt, (t+1)*N/nt)`` of the input gradient: per sample and group, ``dcols[t][g] =
    w[g].T (K, O/G) @ g[i][g] (O/G, P)`` (``g[i]`` is already the (O, P) operand), then col2im into ``dx[i]``."""
    n, kh, kw, oh, ow = g.shape[0], w.shape[2], w.shape[3], g.shape[2], g.shape[3]
    o_n, k, p = w.shape[0], w.shape[1] * w.shape[2] * w.shape[3], oh * ow
    og = o_n // groups
    w3 = w.reshape((groups, og, k))
    g4 = g.reshape((n, groups, og, p))
    d3 = dcols[t].reshape((groups, k, p))
    for i in range((t * n) // nt, ((t + 1) * n) // nt):
        for gr in range(groups):
            gemm(w3[gr].T, g4[i, gr], d3[gr], 0.0)
        _col2im_one(dcols[t], dx[i : i + 1], 0, kh, kw, oh, ow, geom)


@njit(cache=True, nogil=True)
def _grad_input_im2col_range(g, w, dx, geom, groups, ws, t0, t1):  # noqa: ANN001, ANN202
    for t in range(t0, t1):
        _gi_chunk(g, w, dx, ws, t, ws.shape[0], geom, groups)


_grad_input_im2col_par, _grad_input_im2col_ser = task_runners(
    _grad_input_im2col_range, lambda g, w, dx, geom, groups, ws: ws.shape[0]
)


@njit(cache=True)
def _gw_chunk(x, g, dw, part, cols, t, nt, geom, groups):  # noqa: ANN001, ANN202
    """``part[t]`` (G, Cg*kh*kw, O/G) = the transposed weight gradient summed over samples ``[t*N/nt,
    (t+1)*N/nt)``: per sample, im2col into ``cols[t]`` (C*kh*kw, P) and one GEMM per group, ``cols[g] @
    g_i[g].T``, with K = P (1.5x faster than ``g_i[g] @ cols[g].T`` for 16→32 3x3 on 32x32; one GEMM over the
    whole batch has K = N*P, which BLAS splits badly: 4x slower on LeNet conv1). ``dw`` only gives the shape."""
    n, o_n, cg, kh, kw = x.shape[0], g.shape[1], dw.shape[1], dw.shape[2], dw.shape[3]
    oh, ow = g.shape[2], g.shape[3]
    og, k, p = o_n // groups, cg * kh * kw, oh * ow
    c3 = cols[t].reshape((groups, k, p))
    g4 = g.reshape((n, groups, og, p))
    acc = part[t]
    acc[:] = 0
    for i in range((t * n) // nt, ((t + 1) * n) // nt):
        _im2col_one(x[i : i + 1], cols[t], 0, kh, kw, oh, ow, geom)
        for gr in range(groups):
            gemm(c3[gr], g4[i, gr].T, acc[gr], 1.0)  # accumulates in place (beta = 1)


@njit(cache=True)
def _gw_reduce(part, dw, groups):  # noqa: ANN001, ANN202
    """``dw`` (O, Cg, kh, kw) = the sum of the transposed partials ``part`` (chunks, G, Cg*kh*kw, O/G)."""
    o_n, k = dw.shape[0], dw.shape[1] * dw.shape[2] * dw.shape[3]
    og = o_n // groups
    d3 = dw.reshape((groups, og, k))
    for gr in range(groups):
        for o in range(og):
            for kk in range(k):
                acc = part[0, gr, kk, o]
                for t in range(1, part.shape[0]):
                    acc += part[t, gr, kk, o]
                d3[gr, o, kk] = acc


@njit(cache=True, nogil=True)
def _grad_weight_im2col_range(x, g, dw, geom, groups, ws, part, t0, t1):  # noqa: ANN001, ANN202
    for t in range(t0, t1):
        _gw_chunk(x, g, dw, part, ws, t, ws.shape[0], geom, groups)


def _grad_weight_im2col(parallel: bool) -> Callable[..., None]:
    """``run(x, g, dw, geom, groups, ws)``: per-range partial weight gradients, then their sum in range order."""

    def run(x: np.ndarray, g: np.ndarray, dw: np.ndarray, geom: tuple, groups: int, ws: np.ndarray) -> None:
        nt, k = ws.shape[0], dw.shape[1] * dw.shape[2] * dw.shape[3]
        part = np.empty((nt, groups, k, dw.shape[0] // groups), dw.dtype)
        if parallel:
            parallel_for(_grad_weight_im2col_range, (x, g, dw, geom, groups, ws, part), nt)
        else:
            _grad_weight_im2col_range(x, g, dw, geom, groups, ws, part, 0, nt)
        _gw_reduce(part, dw, groups)

    run.dispatchers = [_grad_weight_im2col_range, _gw_reduce]  # type: ignore[attr-defined]
    return run


_grad_weight_im2col_par, _grad_weight_im2col_ser = _grad_weight_im2col(True), _grad_weight_im2col(False)


# ----------------------------------------------------------------------------------------------------
# Convolution: direct loop nests (no workspace; the inner loop runs along the output row)
# ----------------------------------------------------------------------------------------------------


@njit(cache=True)
def _conv_direct_one(x, w, out, i, geom, groups):  # noqa: ANN001, ANN202
    """Sample ``i`` of the convolution, accumulated straight into ``out[i]``."""
    sh, sw, ph, pw, dh, dw = geom
    h, wd = x.shape[2], x.shape[3]
    o_n, cg, kh, kw = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    og = o_n // groups
    out[i] = 0
    for o in range(o_n):
        c0 = (o // og) * cg
        for c in range(cg):
            for a in range(kh):
                for b in range(kw):
                    wv = w[o, c, a, b]
                    off = b * dw - pw
                    lo, hi = _valid_range(off, sw, wd, ow)
                    for y in range(oh):
                        iy = y * sh - ph + a * dh
                        if iy < 0 or iy >= h:
                            continue
                        orow, xrow = out[i, o, y], x[i, c0 + c, iy]
                        for xo in range(lo, hi):
                            orow[xo] += wv * xrow[xo * sw + off]


@njit(cache=True)
def _grad_input_direct_one(g, w, dx, i, geom, groups):  # noqa: ANN001, ANN202
    """Sample ``i`` of the input gradient: each ``g`` pixel times each tap, added to the tapped input pixel."""
    sh, sw, ph, pw, dh, dw = geom
    h, wd = dx.shape[2], dx.shape[3]
    o_n, cg, kh, kw = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    oh, ow = g.shape[2], g.shape[3]
    og = o_n // groups
    dx[i] = 0
    for o in range(o_n):
        c0 = (o // og) * cg
        for c in range(cg):
            for a in range(kh):
                for b in range(kw):
                    wv = w[o, c, a, b]
                    off = b * dw - pw
                    lo, hi = _valid_range(off, sw, wd, ow)
                    for y in range(oh):
                        iy = y * sh - ph + a * dh
                        if iy < 0 or iy >= h:
                            continue
                        drow, grow = dx[i, c0 + c, iy], g[i, o, y]
                        for xo in range(lo, hi):
                            drow[xo * sw + off] += wv * grow[xo]


@njit(cache=True)
def _grad_weight_direct_one(x, g, dw_out, o, geom, groups):  # noqa: ANN001, ANN202
    """Output channel ``o`` of the weight gradient (a sum over the batch and the output pixels)."""
    sh, sw, ph, pw, dh, dw = geom
    n, h, wd = x.shape[0], x.shape[2], x.shape[3]
    o_n, cg, kh, kw = dw_out.shape[0], dw_out.shape[1], dw_out.shape[2], dw_out.shape[3]
    oh, ow = g.shape[2], g.shape[3]
    c0 = (o // (o_n // groups)) * cg
    for c in range(cg):
        for a in range(kh):
            for b in range(kw):
                off = b * dw - pw
                lo, hi = _valid_range(off, sw, wd, ow)
                acc = 0.0
                for i in range(n):
                    for y in range(oh):
                        iy = y * sh - ph + a * dh
                        if iy < 0 or iy >= h:
                            continue
                        grow, xrow = g[i, o, y], x[i, c0 + c, iy]
                        for xo in range(lo, hi):
                            acc += grow[xo] * xrow[xo * sw + off]
                dw_out[o, c, a, b] = acc


@njit(cache=True, nogil=True)
def _conv_direct_range(x, w, out, geom, groups, t0, t1):  # noqa: ANN001, ANN202
    for i in range(t0, t1):
        _conv_direct_one(x, w, out, i, geom, groups)


_conv_direct_par, _conv_direct_ser = task_runners(_conv_direct_range, lambda x, w, out, geom, groups: x.shape[0])


@njit(cache=True, nogil=True)
def _grad_input_direct_range(g, w, dx, geom, groups, t0, t1):  # noqa: ANN001, ANN202
    for i in range(t0, t1):
        _grad_input_direct_one(g, w, dx, i, geom, groups)


_grad_input_direct_par, _grad_input_direct_ser = task_runners(
    _grad_input_direct_range, lambda g, w, dx, geom, groups: g.shape[0]
)


@njit(cache=True, nogil=True)
def _grad_weight_direct_range(x, g, dw, geom, groups, t0, t1):  # noqa: ANN001, ANN202
    for o in range(t0, t1):
        _grad_weight_direct_one(x, g, dw, o, geom, groups)


_grad_weight_direct_par, _grad_weight_direct_ser = task_runners(
    _grad_weight_direct_range, lambda x, g, dw, geom, groups: dw.shape[0]
)


# ----------------------------------------------------------------------------------------------------
# Convolution: factories
# ----------------------------------------------------------------------------------------------------

#: ``(op class, algorithm) → (parallel kernel, serial twin)``; every kernel takes
#: ``(a, b, out, geom, groups)`` on 4-d C-contiguous arrays in the op's input order, the im2col ones also a
#: workspace ``ws`` (see :data:`_WS_SHAPE`) whose first dim is the number of sample ranges.
CONV_ALGOS: dict[tuple[type, str], tuple[Callable[..., None], Callable[..., None]]] = {
    (Conv, "im2col"): (_conv_im2col_par, _conv_im2col_ser),
    (Conv, "direct"): (_conv_direct_par, _conv_direct_ser),
    (ConvGradInput, "im2col"): (_grad_input_im2col_par, _grad_input_im2col_ser),
    (ConvGradInput, "direct"): (_grad_input_direct_par, _grad_input_direct_ser),
    (ConvGradWeight, "im2col"): (_grad_weight_im2col_par, _grad_weight_im2col_ser),
    (ConvGradWeight, "direct"): (_grad_weight_direct_par, _grad_weight_direct_ser),
    (Conv, "simd"): (_simd_conv_par, _simd_conv_ser),
    (ConvGradInput, "simd"): (_simd_conv_par, _simd_conv_ser),
    (ConvGradWeight, "simd"): (_simd_gw_par, _simd_gw_ser),
    (Conv, "winograd"): (_winograd_par, _winograd_ser),
}

#: The least share of useful lanes (:func:`simd_conv_efficiency`) for which the SIMD kernel is the default for
#: ungrouped convolutions. ``python benchmarks/bench_conv_kernels.py`` (batch 64, 2 threads): LeNet's forward
#: convolutions (0.64-0.67) 0.36 / 0.59 ms against 0.52 / 1.14 ms with im2col, its weight gradients 0.40 / 0.67
#: against 0.61 / 1.01 ms; its input gradients (0.56-0.58) are slower, 1.12-1.15 against 0.52-0.96 ms.
SIMD_MIN_EFFICIENCY = 0.6

#: The largest per-group GEMM (``C_out/groups * C_in/groups``) under which a grouped convolution counts as thin
#: (depthwise: 1): such convolutions starve BLAS, so with a stride they run the direct loop nest, and at stride 1
#: the SIMD kernel (``benchmarks/bench_conv_kernels.py``, depthwise 32ch 3x3 16x16, batch 64: simd 0.74-1.15 ms,
#: direct 3.2-4.1 ms, im2col 1.4-3.8 ms for the forward pass and both gradients).
DIRECT_MAX_GROUP_GEMM = 16


#: The fewest input and output channels for which a 3x3 stride-1 forward convolution runs Winograd by default:
#: below, its transforms cost more than the multiplications it saves (``python benchmarks/bench_conv_kernels.py``,
#: 3->16 channels at 32x32: 0.69 ms against 0.46 with the SIMD kernel).
WINOGRAD_MIN_CHANNELS = 8

#: ... and the most: the transformed weights ((t+2)^2/9 the size of the weights) are rebuilt every call, and
#: the per-chunk working set outgrows L2. Per sample, one thread, F(2x2) against the SIMD kernel: 256->256 at
#: 8x8 (batch 8) 0.59 against 1.2 ms, 512->512 at 7x7 4.5 against 3.5, at 14x14 batch 1 17.6 against 14.8.
WINOGRAD_MAX_CHANNELS = 256

#: ... and the smallest output height and width (where static). Since a vector holds only the tiles that store,
#: F(2x2) wins down to 6x6 (32->32: 13.0 against 15.3 us per sample at 6x6, 14.0 against 21.1 at 8x8; 4x4 8.9
#: against 8.5); the limit stays at 10 so that small models (the demo's 8x8 digits) do not compile the Winograd
#: kernels (~9 s once per machine) for a few microseconds.
WINOGRAD_MIN_SIZE = 10


def default_conv_algo(node: Tensor) -> str:
    """Decided from static shapes: a 3x3 stride-1 ungrouped forward convolution with neither too few nor too many
    channels and a large enough output (see :data:`WINOGRAD_MIN_CHANNELS`, :data:`WINOGRAD_MAX_CHANNELS`,
    :data:`WINOGRAD_MIN_SIZE`) runs ``"winograd"``; otherwise stride 1 runs ``"simd"`` for thin grouped
    convolutions (depthwise) and where the register tiles are well filled (:func:`simd_conv_efficiency`); a
    strided thin grouped convolution runs ``"direct"``; everything else ``"im2col"``."""
    op = node.op
    if (
        isinstance(op, Conv)
        and winograd_applies(node.inputs[1].shape, op.stride, op.dilation, op.groups)
        and all(d is not None and WINOGRAD_MIN_CHANNELS <= d <= WINOGRAD_MAX_CHANNELS for d in node.inputs[1].shape[:2])
        and all(d is None or d >= WINOGRAD_MIN_SIZE for d in node.shape[2:])
    ):
        return "winograd"
    w_shape = node.inputs[1].shape if isinstance(op, (Conv, ConvGradInput)) else node.inputs[2].shape
    cout, cg = w_shape[0], w_shape[1]
    groups = op.groups
    thin = groups > 1 and cout is not None and cg is not None and (cout // groups) * cg <= DIRECT_MAX_GROUP_GEMM
    if all(s == 1 for s in op.stride):
        if thin:  # one channel of eight tiles' lanes is still 3-5x faster than the direct loop nest
            return "simd"
        out_shape = node.shape if isinstance(op, Conv) else node.inputs[2 if isinstance(op, ConvGradInput) else 1].shape
        kind = "forward" if isinstance(op, Conv) else "input" if isinstance(op, ConvGradInput) else "weight"
        if simd_conv_efficiency(w_shape, groups, op.dilation, out_shape[-1], kind) >= SIMD_MIN_EFFICIENCY:
            return "simd"
    if thin:
        return "direct"
    return "im2col"


#: ``(op class) → (rows, P)`` of the per-chunk im2col matrix in the workspace the im2col kernels take as their
#: last argument (``ws`` of shape ``(chunks, rows, P)``, P the output pixels per sample; ``chunks`` is the
#: thread count, 1 for the serial twin). The workspace lives in the factory's closure and is reused across calls.
_WS_SHAPE: dict[type, Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[int, int]]] = {
    Conv: lambda x, w, out: (x.shape[1] * w.shape[2] * w.shape[3], out.shape[2] * out.shape[3]),
    ConvGradInput: lambda g, w, dx: (dx.shape[1] * w.shape[2] * w.shape[3], g.shape[2] * g.shape[3]),
    ConvGradWeight: lambda x, g, dw: (x.shape[1] * dw.shape[2] * dw.shape[3], g.shape[2] * g.shape[3]),
}


#: ``(op class) → macs(a, b, out)``: the multiply-adds of one call (``(x, w, out)``, ``(g, w, dx)``, ``(x, g, dw)``):
#: the gradient/output pixels times the window times the input channels per group.
_CONV_MACS: dict[type, Callable[[np.ndarray, np.ndarray, np.ndarray], int]] = {
    Conv: lambda x, w, out: out.size * w.shape[1] * w.shape[2] * w.shape[3],
    ConvGradInput: lambda g, w, dx: g.size * w.shape[1] * w.shape[2] * w.shape[3],
    ConvGradWeight: lambda x, g, dw: g.size * dw.shape[1] * dw.shape[2] * dw.shape[3],
}


def _wrap_conv(
    par: Callable[..., None],
    ser: Callable[..., None],
    geom: tuple[int, ...],
    groups: int,
    nsp: int,
    ws_shape: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[int, int]] | None,
    macs: Callable[[np.ndarray, np.ndarray, np.ndarray], int],
) -> Callable[..., None]:
    """``run(a, b, [ref,] out)`` calling ``kernel(a, b, out, geom, groups[, ws])`` on C-contiguous 4-d arrays,
    where ``kernel`` is ``par`` for calls of at least :data:`PARALLEL_MIN_CONV_MACS` multiply-adds (``macs``). With
    ``ws_shape``, ``ws`` is a workspace view (see :data:`_WS_SHAPE`)."""
    scratch = [np.empty(0)]
    split_rows = par is _conv_im2col_par  # forward im2col: a batch smaller than the thread count splits GEMM rows
    warmed = [not split_rows]

    def small_batch(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int) -> None:
        rows, p = _WS_SHAPE[Conv](a, b, out)
        if scratch[0].size < rows * p or scratch[0].dtype != a.dtype:
            scratch[0] = np.empty(rows * p, a.dtype)
        _conv_fwd_small_batch(a, b, out, geom, groups, scratch[0][: rows * p].reshape(rows, p), threads)

    def run(a: np.ndarray, b: np.ndarray, *rest: np.ndarray) -> None:
        a, b, out = _c(a), _c(b), rest[-1]
        if nsp == 1:
            a, b, out = _as4d(a), _as4d(b), _as4d(out)
        threads = get_num_threads()
        if (
            split_rows
            and a.shape[0] < threads
            and b.shape[0] // groups >= 2 * threads
            and (out.size * b.shape[1] * b.shape[2] * b.shape[3] >= PARALLEL_MIN_MACS)  # short tasks: pays late
        ):
            small_batch(a, b, out, threads)
            return
        if not warmed[0] and a.shape[0]:
            # the first call (compile's warm-up) also runs the small-batch path on sample 0 (same result), so that
            # a later batch smaller than the thread count compiles nothing at call time
            warmed[0] = True
            small_batch(a[:1], b, out[:1], threads)
        parallel = par is not ser and a.shape[0] > 1 and macs(a, b, out) >= PARALLEL_MIN_CONV_MACS
        kernel = par if parallel else ser
        args: tuple = (a, b, out, geom, groups)
        if ws_shape is not None:
            nt = max(1, min(a.shape[0], get_num_threads())) if parallel else 1
            shape = (nt, *ws_shape(a, b, out))
            size = shape[0] * shape[1] * shape[2]
            if scratch[0].size < size or scratch[0].dtype != a.dtype:
                scratch[0] = np.empty(size, a.dtype)
            args += (scratch[0][:size].reshape(shape),)
        kernel(*args)

    return run


def conv_impl(node: Tensor, algo: str) -> LibraryImpl:
    """The ``algo`` (``"im2col"`` or ``"direct"``) implementation of a Conv / ConvGradInput / ConvGradWeight node."""
    op = node.op
    nsp = len(op.stride)
    if nsp not in (1, 2):
        raise NotImplementedError(f"cpu {op.name}: only 1-d and 2-d convolutions are supported, got {nsp}-d")
    if algo == "simd" and any(st != 1 for st in op.stride):
        raise ValueError(f"cpu {op.name}: the simd algorithm runs stride-1 convolutions only, got stride {op.stride}")
    if algo == "simd":
        return _simd_impl(op, nsp)
    if algo == "winograd":
        w_shape = node.inputs[1].shape
        if not (isinstance(op, Conv) and winograd_applies(w_shape, op.stride, op.dilation, op.groups)):
            raise ValueError(
                f"cpu {op.name}: the winograd algorithm runs 2-d 3x3 stride-1 undilated ungrouped forward "
                f"convolutions only, got weights {w_shape}, stride {op.stride}, dilation {op.dilation}, "
                f"groups {op.groups}"
            )
        geom = _conv_geom(op)
        run, serial, kernels = winograd_conv_runners((geom[2], geom[3]), PARALLEL_MIN_CONV_MACS)
        return LibraryImpl(run, kernels, parallel=True, serial=serial)
    par, ser = CONV_ALGOS[(type(op), algo)]
    geom = _conv_geom(op)
    ws_shape = _WS_SHAPE.get(type(op)) if algo == "im2col" else None
    dispatchers = list(par.dispatchers)
    if par is _conv_im2col_par:  # the small-batch path (see _wrap_conv) calls these from Python
        dispatchers += [_conv_fwd_rows_range, _im2col_one, _conv_is_1x1]
    return LibraryImpl(
        _wrap_conv(par, ser, geom, op.groups, nsp, ws_shape, _CONV_MACS[type(op)]),
        dispatchers,
        parallel=True,
        serial=_wrap_conv(ser, ser, geom, op.groups, nsp, ws_shape, _CONV_MACS[type(op)]),
    )


def _simd_impl(op: Conv | ConvGradInput | ConvGradWeight, nsp: int) -> LibraryImpl:
    """The SIMD kernels (:mod:`compiler.codegen.cpu.conv_simd`) behind the op's ``run(a, b, [ref,] out)``."""
    geom = _conv_geom(op)
    pads = (geom[2], geom[3], geom[4], geom[5])
    if isinstance(op, ConvGradWeight):  # run(x, g, w_ref, out): the reference weight only gives dw's shape
        run, serial, kernels = simd_grad_weight_runners(pads, op.groups, nsp, PARALLEL_MIN_CONV_MACS)

        def adapt(fn: Callable[..., None]) -> Callable[..., None]:
            return lambda x, g, _w, out: fn(x, g, out)

    else:
        transposed = isinstance(op, ConvGradInput)
        run, serial, kernels = simd_conv_runners(pads, op.groups, transposed, nsp, PARALLEL_MIN_CONV_MACS)

        def adapt(fn: Callable[..., None]) -> Callable[..., None]:
            # the input gradient's run(g, w, x_ref, out): the reference input only gives dx's shape
            return (lambda g, w, _x, out: fn(g, w, out)) if transposed else (lambda x, w, out: fn(x, w, out))

    return LibraryImpl(adapt(run), kernels, parallel=True, serial=adapt(serial))


def simd_conv_with_epilogue(
    node: Tensor, relu: bool, pool: bool = False
) -> tuple[Callable[..., None], Callable[..., None]]:
    """``(run, serial)``, each ``run(x, w, out, bias, mask)``: the SIMD forward convolution ``node`` plus a
    per-channel ``bias`` (or None) and, when ``relu``, ReLU, and when ``pool`` a 2x2 max pool (``out`` is then
    the pooled array), all applied in the kernel's store, with ``mask`` (a boolean array, or None) receiving
    ``conv + bias > 0`` (see :func:`compiler.codegen.cpu.conv_epilogue_spec`)."""
    op = node.op
    geom = _conv_geom(op)
    hi = (op.padding[0][1], op.padding[1][1]) if pool else None
    if default_conv_algo(node) == "winograd":
        run, serial, _ = winograd_conv_runners((geom[2], geom[3]), PARALLEL_MIN_CONV_MACS, hi)
        return (
            lambda x, w, out, bias, mask: run(x, w, out, bias, relu, mask),
            lambda x, w, out, bias, mask: serial(x, w, out, bias, relu, mask),
        )
    run, serial, _ = simd_conv_runners(
        (geom[2], geom[3], geom[4], geom[5]), op.groups, False, len(op.stride), PARALLEL_MIN_CONV_MACS, hi
    )
    return (
        lambda x, w, out, bias, mask: run(x, w, out, bias, relu, mask),
        lambda x, w, out, bias, mask: serial(x, w, out, bias, relu, mask),
    )


@register(Conv)
def conv_factory(node: Tensor) -> LibraryImpl:
    """``conv1d/2d`` forward: ``run(x, w, out)``."""
    return conv_impl(node, default_conv_algo(node))


@register(ConvGradInput)
def conv_grad_input_factory(node: Tensor) -> LibraryImpl:
    """Input gradient: ``run(g, w, x_ref, out)`` (``x_ref`` only gives the shape, already ``out``'s)."""
    return conv_impl(node, default_conv_algo(node))


@register(ConvGradWeight)
def conv_grad_weight_factory(node: Tensor) -> LibraryImpl:
    """Weight gradient: ``run(x, g, w_ref, out)``."""
    return conv_impl(node, default_conv_algo(node))


# ----------------------------------------------------------------------------------------------------
# Pooling. Arrays are (planes, H, W) with planes = N * C (1-d: H = 1). ``pgeom = (kh, kw, sh, sw, ph, pw,
# dh, dw)``. Window (oy, ox) starts at input (oy * sh - ph, ox * sw - pw); taps outside the input are
# padding (-inf for max, 0 for average).
# ----------------------------------------------------------------------------------------------------


def _pool_geom(op: MaxPool | AvgPool) -> tuple[int, ...]:
    """The op's props as ``pgeom`` (a 1-d op gets a unit window height)."""
    if len(op.kernel) == 1:
        return (1, op.kernel[0], 1, op.stride[0], 0, op.padding[0], 1, op.dilation[0])
    return (*op.kernel, *op.stride, *op.padding, *op.dilation)


def _planes(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, C, L) → the C-contiguous (N*C, H, W) or (N*C, 1, L) view."""
    a = _c(a)
    s = a.shape
    if len(s) == 4:
        return a.reshape(s[0] * s[1], s[2], s[3])
    return a.reshape(s[0] * s[1], 1, s[2])


@njit(cache=True)
def _window_argmax(x, p, y0, x0, pgeom):  # noqa: ANN001, ANN202
    """``(iy, ix)`` of the first maximum (row-major taps; padding is -inf; a NaN wins) of the window at input
    ``(y0, x0)`` of plane ``p``. The position may lie in the padding (a window of -inf values only)."""
    kh, kw, dh, dw = pgeom[0], pgeom[1], pgeom[6], pgeom[7]
    h, w = x.shape[1], x.shape[2]
    best = -np.inf
    if 0 <= y0 < h and 0 <= x0 < w:
        best = x[p, y0, x0]
    by, bx = y0, x0
    for a in range(kh):
        iy = y0 + a * dh
        for b in range(kw):
            ix = x0 + b * dw
            v = -np.inf
            if 0 <= iy < h and 0 <= ix < w:
                v = x[p, iy, ix]
            if best == best and (v > best or v != v):
                best, by, bx = v, iy, ix
    return by, bx


# The max-pool family shares one argmax loop nest (one compile per dtype for the four ops); ``mode`` picks what
# is done with each window's argmax. ``a``: x (MAX, INDICES), h shaped like x (GATHER), g pooled (GRAD).
_MAX, _INDICES, _GATHER, _GRAD = 0, 1, 2, 3


@njit(cache=True)
def _max_family_plane(mode, a, x, out, idx, p, pgeom):  # noqa: ANN001, ANN202
    """Plane ``p``: MAX ``out`` = window maxima; INDICES ``idx`` = flat argmax ``iy * W + ix``; GATHER ``out`` =
    ``a`` at the argmax (0 in the padding); GRAD ``out`` (x-shaped) = ``a`` added at each argmax."""
    sh, sw, ph, pw = pgeom[2], pgeom[3], pgeom[4], pgeom[5]
    h, w = x.shape[1], x.shape[2]
    if mode == _GRAD:
        out[p] = 0
        oh, ow = a.shape[1], a.shape[2]
    elif mode == _INDICES:
        oh, ow = idx.shape[1], idx.shape[2]
    else:
        oh, ow = out.shape[1], out.shape[2]
    for oy in range(oh):
        for ox in range(ow):
            iy, ix = _window_argmax(x, p, oy * sh - ph, ox * sw - pw, pgeom)
            inside = 0 <= iy < h and 0 <= ix < w
            if mode == _MAX:
                out[p, oy, ox] = x[p, iy, ix] if inside else -np.inf
            elif mode == _INDICES:
                idx[p, oy, ox] = iy * w + ix
            elif mode == _GATHER:
                out[p, oy, ox] = a[p, iy, ix] if inside else 0
            elif inside:
                out[p, iy, ix] += a[p, oy, ox]


@njit(cache=True)
def _max_fast_ok(x, oh, ow, pgeom):  # noqa: ANN001, ANN202
    """Whether the fast path applies: no padding, no dilation, every window inside the input."""
    kh, kw, sh, sw, ph, pw, dh, dw = pgeom
    h, w = x.shape[1], x.shape[2]
    return ph == 0 and pw == 0 and dh == 1 and dw == 1 and (oh - 1) * sh + kh <= h and (ow - 1) * sw + kw <= w


@njit(cache=True)
def _max_fast_planes(mode, a, x, out, idx, p0, p1, pgeom):  # noqa: ANN001, ANN202
    """Planes ``[p0, p1)`` of :func:`_max_family_plane` when :func:`_max_fast_ok`: no bounds tests, the window's
    taps in row-major order in registers, the same first-max / NaN rule (measured faster than row-vectorised
    selects, which compile to long blend chains for the NaN rule)."""
    kh, kw, sh, sw = pgeom[0], pgeom[1], pgeom[2], pgeom[3]
    if mode == _GRAD:
        oh, ow = a.shape[1], a.shape[2]
    elif mode == _INDICES:
        oh, ow = idx.shape[1], idx.shape[2]
    else:
        oh, ow = out.shape[1], out.shape[2]
    w = x.shape[2]
    if mode == _MAX:  # the value only: no argmax bookkeeping
        for p in range(p0, p1):
            for oy in range(oh):
                y0 = oy * sh
                for ox in range(ow):
                    x0 = ox * sw
                    bv = x[p, y0, x0]
                    for ta in range(kh):
                        for tb in range(kw):
                            v = x[p, y0 + ta, x0 + tb]
                            if bv == bv and (v > bv or v != v):
                                bv = v
                    out[p, oy, ox] = bv
        return
    a_flat = a.reshape((a.shape[0], a.shape[1] * a.shape[2]))  # C-contiguous planes: (P, H*W) views
    out_flat = out.reshape((out.shape[0], out.shape[1] * out.shape[2]))
    for p in range(p0, p1):
        if mode == _GRAD:
            out_flat[p] = 0
        for oy in range(oh):
            y0 = oy * sh
            for ox in range(ow):
                x0 = ox * sw
                bv = x[p, y0, x0]
                bk = 0  # the argmax as an offset (ta * w + tb) from the window's first tap
                for ta in range(kh):
                    for tb in range(kw):
                        v = x[p, y0 + ta, x0 + tb]
                        if bv == bv and (v > bv or v != v):
                            bv, bk = v, ta * w + tb
                k = y0 * w + x0 + bk
                if mode == _INDICES:
                    idx[p, oy, ox] = k
                elif mode == _GATHER:
                    out[p, oy, ox] = a_flat[p, k]
                else:
                    out_flat[p, k] += a[p, oy, ox]


@njit(cache=True, inline="always")
def _first_max_of(v0, k0, v1, k1):  # noqa: ANN001, ANN202
    """Of two (value, row-major tap index) candidates, the one the first-maximum rule picks: a NaN wins (the
    earlier of two NaNs), else the larger value, else (a tie) the earlier tap. Selects only, no branches."""
    n0, n1 = v0 != v0, v1 != v1
    take = (n1 & (~n0 | (k1 < k0))) | (~n0 & ~n1 & ((v1 > v0) | ((v1 == v0) & (k1 < k0))))
    return (v1 if take else v0), (k1 if take else k0)


@njit(cache=True, error_model="numpy")
def _max_2x2_planes(mode, a, x, out, idx, p0, p1):  # noqa: ANN001, ANN202
    """Planes ``[p0, p1)`` of a 2x2 window with stride 2, no padding or dilation (the common pooling), in two
    vectorisable passes per output row: the winner of each column's tap pair (rows 2oy, 2oy+1) over contiguous
    rows, then the winner of each pair of columns (:func:`_first_max_of`: the same first-max / NaN rule as
    :func:`_window_argmax`, as selects). 4x faster than the per-window loop. GRAD writes every covered input
    pixel (g or 0: windows do not overlap), so only an uncovered last row/column (odd sizes) is zeroed."""
    h, w = x.shape[1], x.shape[2]
    oh, ow = h // 2, w // 2
    col_v = np.empty(2 * ow, x.dtype)
    col_k = np.empty(2 * ow, np.int64)
    win_k = np.empty(ow, np.int64)
    for p in range(p0, p1):
        for oy in range(oh):
            r0, r1 = x[p, 2 * oy], x[p, 2 * oy + 1]
            for c in range(2 * ow):
                v0, v1 = r0[c], r1[c]
                take = (v0 == v0) & ((v1 > v0) | (v1 != v1))
                col_v[c] = v1 if take else v0
                col_k[c] = (2 if take else 0) + (c & 1)
            if mode == _MAX:  # one loop per mode: a mode test inside the loop would keep it from vectorising
                o = out[p, oy]
                for ox in range(ow):
                    o[ox] = _first_max_of(col_v[2 * ox], col_k[2 * ox], col_v[2 * ox + 1], col_k[2 * ox + 1])[0]
                continue
            for ox in range(ow):
                win_k[ox] = _first_max_of(col_v[2 * ox], col_k[2 * ox], col_v[2 * ox + 1], col_k[2 * ox + 1])[1]
            if mode == _INDICES:
                for ox in range(ow):
                    k = win_k[ox]
                    idx[p, oy, ox] = (2 * oy + (k >> 1)) * w + 2 * ox + (k & 1)
            elif mode == _GATHER:
                for ox in range(ow):
                    k = win_k[ox]
                    out[p, oy, ox] = a[p, 2 * oy + (k >> 1), 2 * ox + (k & 1)]
            else:
                g, d0, d1 = a[p, oy], out[p, 2 * oy], out[p, 2 * oy + 1]
                for c in range(2 * ow):
                    gv, k = g[c >> 1], win_k[c >> 1]
                    d0[c] = gv if k == (c & 1) else 0.0
                    d1[c] = gv if k == 2 + (c & 1) else 0.0
        if mode == _GRAD:
            if w % 2:
                for y in range(h):
                    out[p, y, w - 1] = 0
            if h % 2:
                out[p, h - 1] = 0


@njit(cache=True)
def _max_family_chunk(mode, a, x, out, idx, t, nt, pgeom):  # noqa: ANN001, ANN202
    """Chunk ``t`` of ``nt`` (a disjoint range of planes): the fast path when it applies, else the general one."""
    n = x.shape[0]
    p0, p1 = t * n // nt, (t + 1) * n // nt
    if mode == _GRAD:
        oh, ow = a.shape[1], a.shape[2]
    elif mode == _INDICES:
        oh, ow = idx.shape[1], idx.shape[2]
    else:
        oh, ow = out.shape[1], out.shape[2]
    if _max_fast_ok(x, oh, ow, pgeom):
        _max_fast_planes(mode, a, x, out, idx, p0, p1, pgeom)
    else:
        for p in range(p0, p1):
            _max_family_plane(mode, a, x, out, idx, p, pgeom)


#: Planes are processed in at most this many chunks (disjoint plane ranges).
_POOL_CHUNKS = 16


@njit(cache=True, nogil=True)
def _max_family_range(mode, a, x, out, idx, pgeom, t0, t1):  # noqa: ANN001, ANN202
    nt = min(x.shape[0], _POOL_CHUNKS)
    for t in range(t0, t1):
        _max_family_chunk(mode, a, x, out, idx, t, nt, pgeom)


@njit(cache=True, nogil=True)
def _max_2x2_range(mode, a, x, out, idx, t0, t1):  # noqa: ANN001, ANN202
    """Chunks ``t0 <= t < t1`` of planes of the 2x2 / stride-2 max-pool family (:func:`_max_2x2_planes`). A kernel
    of its own, picked by the caller, so a model with only 2x2 pools never compiles the general paths (and the
    other way round): 6 s of the LeNet step's cold compile was the max-pool family with all its paths."""
    n = x.shape[0]
    nt = min(n, _POOL_CHUNKS)
    for t in range(t0, t1):
        _max_2x2_planes(mode, a, x, out, idx, t * n // nt, (t + 1) * n // nt)


_max_2x2_par, _max_2x2_ser = task_runners(_max_2x2_range, lambda mode, a, x, out, idx: min(x.shape[0], _POOL_CHUNKS))

_max_family_par, _max_family_ser = task_runners(
    _max_family_range, lambda mode, a, x, out, idx, pgeom: min(x.shape[0], _POOL_CHUNKS)
)


@njit(cache=True)
def _avg_count(o, k, s, p, n, include_pad):  # noqa: ANN001, ANN202
    """How many of window ``o``'s taps count along one dim (PyTorch's rule; windows clip to the padding)."""
    start = o * s - p
    end = min(start + k, n + p)
    if include_pad:
        return end - start
    return max(min(end, n) - max(start, 0), 0)


@njit(cache=True)
def _avg_divisor(oy, ox, h, w, pgeom, include_pad, override):  # noqa: ANN001, ANN202
    """What the window sum at ``(oy, ox)`` is divided by (``override`` if non-zero; 1 for an empty count)."""
    if override != 0:
        return override
    kh, kw, sh, sw, ph, pw = pgeom[0], pgeom[1], pgeom[2], pgeom[3], pgeom[4], pgeom[5]
    d = _avg_count(oy, kh, sh, ph, h, include_pad) * _avg_count(ox, kw, sw, pw, w, include_pad)
    return d if d != 0 else 1


@njit(cache=True)
def _avg_family_plane(grad, a, out, p, pgeom, include_pad, override):  # noqa: ANN001, ANN202
    """Plane ``p``: forward ``out`` = window sums of ``a`` (x) over the divisor; ``grad``: ``out`` (x-shaped) =
    each ``a`` (g) pixel over its divisor, added to its window's input pixels."""
    kh, kw, sh, sw, ph, pw, dh, dw = pgeom
    xs, ps = (out, a) if grad else (a, out)  # the input-shaped and the pooled-shaped array
    h, w = xs.shape[1], xs.shape[2]
    if grad:
        out[p] = 0
    for oy in range(ps.shape[1]):
        for ox in range(ps.shape[2]):
            div = _avg_divisor(oy, ox, h, w, pgeom, include_pad, override)
            share = a[p, oy, ox] / div if grad else 0.0
            acc = 0.0
            for ta in range(kh):
                iy = oy * sh - ph + ta * dh
                if iy < 0 or iy >= h:
                    continue
                for tb in range(kw):
                    ix = ox * sw - pw + tb * dw
                    if 0 <= ix < w:
                        if grad:
                            out[p, iy, ix] += share
                        else:
                            acc += a[p, iy, ix]
            if not grad:
                out[p, oy, ox] = acc / div


@njit(cache=True, nogil=True)
def _avg_family_range(grad, a, out, pgeom, include_pad, override, t0, t1):  # noqa: ANN001, ANN202
    for p in range(t0, t1):
        _avg_family_plane(grad, a, out, p, pgeom, include_pad, override)


_avg_family_par, _avg_family_ser = task_runners(
    _avg_family_range, lambda grad, a, out, pgeom, include_pad, override: out.shape[0]
)


def _max_family_impl(node: Tensor, mode: int) -> LibraryImpl:
    """``run(x, out)`` (MAX, INDICES) or ``run(a, x, out)`` (GATHER, GRAD) over the max-pool family kernel: the
    2x2 / stride-2 kernel when the windows tile the input (floor mode), else the general one."""
    pgeom = _pool_geom(node.op)
    no_idx = np.empty((0, 0, 0), np.int64)
    no_out = np.empty((0, 0, 0), node.inputs[-1].dtype)
    two_by_two = tuple(pgeom) == (2, 2, 2, 2, 0, 0, 1, 1)
    # ceil mode: odd input sizes take the general kernel, even ones the 2x2 one; the first call (compile's
    # warm-up) compiles both, so that no image size compiles anything at call time
    warm_both = [two_by_two and bool(getattr(node.op, "ceil_mode", False))]

    def call(parallel: bool, a: np.ndarray, x: np.ndarray, out: np.ndarray, idx: np.ndarray, pooled: tuple) -> None:
        par = parallel and x.size >= PARALLEL_MIN_SIZE
        if warm_both[0]:
            warm_both[0] = False
            if pooled[-2:] == (x.shape[-2] // 2, x.shape[-1] // 2):  # the general kernel gives the same result
                (_max_family_par if par else _max_family_ser)(mode, a, x, out, idx, pgeom)
        if two_by_two and pooled[-2:] == (x.shape[-2] // 2, x.shape[-1] // 2):
            (_max_2x2_par if par else _max_2x2_ser)(mode, a, x, out, idx)
        else:
            (_max_family_par if par else _max_family_ser)(mode, a, x, out, idx, pgeom)

    def make(parallel: bool) -> Callable[..., None]:
        if mode in (_MAX, _INDICES):

            def run(x: np.ndarray, out: np.ndarray) -> None:
                xp = _planes(x)
                if mode == _MAX:
                    call(parallel, xp, xp, _planes(out), no_idx, out.shape)
                else:
                    call(parallel, xp, xp, no_out, _planes(out), out.shape)

            return run

        def run2(a: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
            if mode == _GATHER and a.shape != x.shape:
                a = np.broadcast_to(a, x.shape)
            pooled = out.shape if mode == _GATHER else a.shape
            call(parallel, _planes(a), _planes(x), _planes(out), no_idx, pooled)

        return run2

    dispatchers = _max_family_par.dispatchers + _max_2x2_par.dispatchers
    return LibraryImpl(make(True), dispatchers, parallel=True, serial=make(False))


@register(MaxPool)
def max_pool_factory(node: Tensor) -> LibraryImpl:
    """``run(x, out)``: the window maxima (NaN propagates)."""
    return _max_family_impl(node, _MAX)


@register(MaxPoolIndices)
def max_pool_indices_factory(node: Tensor) -> LibraryImpl:
    """``run(x, out)``: int64 flat index (``h * W + w``) of each window's first maximum."""
    return _max_family_impl(node, _INDICES)


@register(MaxPoolGather)
def max_pool_gather_factory(node: Tensor) -> LibraryImpl:
    """``run(h, x, out)``: ``h`` at each window's first maximum of ``x`` (``h`` broadcast to ``x``'s shape)."""
    return _max_family_impl(node, _GATHER)


@register(MaxPoolGrad)
def max_pool_grad_factory(node: Tensor) -> LibraryImpl:
    """``run(g, x, out)``: ``g`` scattered (added) to each window's first maximum of ``x``; zeros elsewhere."""
    return _max_family_impl(node, _GRAD)


def _avg_family_impl(node: Tensor, grad: bool) -> LibraryImpl:
    """``run(x, out)`` (forward) or ``run(g, x_ref, out)`` (gradient) over the average-pool family kernel."""
    op = node.op
    pgeom, include_pad, override = _pool_geom(op), bool(op.count_include_pad), int(op.divisor_override or 0)

    def make(par: Callable[..., None], ser: Callable[..., None]) -> Callable[..., None]:
        def run(a: np.ndarray, *rest: np.ndarray) -> None:
            out = rest[-1]
            kernel = par if out.size >= PARALLEL_MIN_SIZE else ser
            kernel(grad, _planes(a), _planes(out), pgeom, include_pad, override)

        return run

    par, ser = _avg_family_par, _avg_family_ser
    return LibraryImpl(make(par, ser), par.dispatchers, parallel=True, serial=make(ser, ser))


@register(AvgPool)
def avg_pool_factory(node: Tensor) -> LibraryImpl:
    """``run(x, out)``: window sums of the zero-padded input over PyTorch's divisor."""
    return _avg_family_impl(node, grad=False)


@register(AvgPoolGrad)
def avg_pool_grad_factory(node: Tensor) -> LibraryImpl:
    """``run(g, x_ref, out)``: each ``g / divisor`` spread over its window's input pixels."""
    return _avg_family_impl(node, grad=True)
