"""GEMM for the CPU kernels: BLAS ``sgemm``/``dgemm`` called directly from Numba code, on row-major arrays.

``gemm(a, b, out, beta)`` computes ``out = a @ b + beta * out`` for 2-d float32 or float64 arrays whose rows or
columns are contiguous (C-contiguous, F-contiguous, or slices of them; anything else is a ValueError): the layout
becomes BLAS's transpose flag and leading dimension, so transposed views and row blocks cost no copy, and
``beta = 1`` accumulates in place.

Why not ``np.dot`` inside Numba: every ``np.dot`` call site instantiates Numba's generic BLAS wrapper (layout
checks, copies, error paths) per type and layout combination, 1.75 s of compile each here against 0.5 s for this
one function; those instantiations were most of the cold compile of the conv and matmul kernels. It also cannot
accumulate (``beta``). The BLAS is the one ``np.dot`` in Numba calls (SciPy's ``cython_blas``), through Numba's
own ``numba_xxgemm`` entry point.

Row-major ``C = A B`` is column-major ``C^T = B^T A^T``: BLAS gets ``(B, A)`` with ``m = n_cols(C)``,
``n = n_rows(C)``; a row-major operand is ``'N'`` with its row stride as leading dimension, a column-major one
``'T'`` with its column stride.

:func:`matmul` (``out = a @ b``, what the fused matmul epilogues call) runs small products whose ``b`` has
contiguous *columns* (``x @ w.T``, the input gradient of a linear layer) on a register-tiled dot-product kernel
(:func:`_dot_kernel`) instead: OpenBLAS's transposed path packs ``b`` for every call, 32x128 @ (128x128)^T took
16-17 us there against 12-13 us here (10 us for the untransposed product either way). Untransposed small
products stay on BLAS: a broadcast-form 6x16 register tile measured within 5% of it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.np.linalg import ensure_blas

from compiler.codegen.cpu.simd import vfma, vlanes, vload, vsum, vzero

__all__ = ["GEMM_VERSION", "gemm", "matmul"]

#: bump when :func:`matmul` or anything it calls changes: generated kernels calling it (the fused matmul
#: epilogues) put it in their source, so their content-addressed disk cache entries change with it
GEMM_VERSION = "1"

#: :func:`matmul` uses the dot-product kernel for at most this many multiply-adds (beyond, BLAS's cache blocking
#: wins), at most :data:`DOT_MAX_M` rows (128x128x128: BLAS 46 us, here 51) and a reduction length of at least
#: :data:`DOT_MIN_K` (the lane sums cost as much as 8 multiply-add steps: at k = 64 BLAS is 8% faster, at 128 this
#: kernel 13%, at 784 35%)
DOT_MAX_MACS = 1 << 22
DOT_MAX_M = 64
DOT_MIN_K = 96

ensure_blas()  # registers the BLAS entry points SciPy's bindings export with Numba's helper library
_P, _I, _C = types.voidptr, types.intp, types.char
#: Numba's own GEMM entry (``kind`` 's'/'d', then the BLAS arguments by value), referenced by symbol name, so the
#: functions calling it can be cached on disk (a ctypes function pointer would be a dynamic global: uncacheable)
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(_C, _C, _C, _I, _I, _I, _P, _P, _I, _P, _I, _P, _P, _I))

_N, _T = 110, 116  # ord("n"), ord("t")


@njit(cache=True, inline="always")
def _operand(x, itemsize):  # noqa: ANN001, ANN202
    """``(flag, leading dim, ok)`` of a row-major operand for the column-major call: rows contiguous → 'N' with the
    row stride; columns contiguous → 'T' with the column stride; ``ok`` False when neither."""
    r, c = x.shape
    s0, s1 = x.strides[0] // itemsize, x.strides[1] // itemsize
    if s1 == 1 or c <= 1:
        return _N, max(s0, c, 1), True
    if s0 == 1 or r <= 1:
        return _T, max(s1, r, 1), True
    return _N, 1, False


@njit(cache=True, nogil=True)
def gemm(a, b, out, beta):  # noqa: ANN001, ANN201
    """``out = a @ b + beta * out`` (2-d, one float dtype; ``out`` rows contiguous). See the module docstring."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    itemsize = out.itemsize
    if k == 0:  # BLAS scales C by beta; do the same without a call
        for i in range(m):
            for j in range(n):
                out[i, j] = out[i, j] * beta if beta != 0 else 0
        return
    fa, lda, ok_a = _operand(a, itemsize)
    fb, ldb, ok_b = _operand(b, itemsize)
    if not (ok_a and ok_b and (out.strides[1] == itemsize or n <= 1)):
        raise ValueError("gemm: operands need contiguous rows or columns, and the output contiguous rows")
    ldc = max(out.strides[0] // itemsize, n, 1)
    scal = np.empty(2, out.dtype)
    scal[0], scal[1] = 1, beta
    kind = 115 if itemsize == 4 else 100  # ord("s"), ord("d")
    status = _xxgemm(
        kind, fb, fa, n, m, k, scal[0:].ctypes, b.ctypes, ldb, a.ctypes, lda, scal[1:].ctypes, out.ctypes, ldc
    )
    if status != 0:
        raise ValueError("gemm: BLAS rejected the call")


@njit(cache=True, nogil=True)
def _dot_rest(a, bt, out, i0, i1, j0, j1, kv):  # noqa: ANN001, ANN202
    """``out[i, j] = a[i] . bt[j]`` for ``i0 <= i < i1``, ``j0 <= j < j1`` one dot product at a time (the tails
    of :func:`_dot_kernel`): lanes over ``p < kv``, then a scalar tail."""
    k = a.shape[1]
    for i in range(i0, i1):
        for j in range(j0, j1):
            c = vzero(a)
            for p in range(0, kv, vlanes(a)):
                c = vfma(
                    vload(a, i * a.strides[0] // a.itemsize + p), vload(bt, j * bt.strides[0] // bt.itemsize + p), c
                )
            s = vsum(c)
            for p in range(kv, k):
                s += a[i, p] * bt[j, p]
            out[i, j] = s


@njit(cache=True, nogil=True)
def _dot_kernel(a, bt, out):  # noqa: ANN001, ANN202
    """``out = a @ bt.T`` for ``a`` (m, k) and ``bt`` (n, k) with contiguous rows, ``out`` (m, n): a 4x3 tile
    of output elements at a time, each a vector accumulator over ``k`` (12 accumulators + 4 loads fit the 16
    AVX2 registers), then its lanes summed and the ``k % lanes`` tail added in scalars. Column blocks outside,
    so the 3 rows of ``bt`` stay in L1 while ``a`` streams past them. Unchecked (see :func:`matmul`)."""
    m, k = a.shape
    n = bt.shape[0]
    sa = a.strides[0] // a.itemsize
    sb = bt.strides[0] // bt.itemsize
    lanes = vlanes(a)
    kv = k - k % lanes
    mt = m - m % 4
    nt = n - n % 3
    for j in range(0, nt, 3):
        ib = j * sb
        for i in range(0, mt, 4):
            ia = i * sa
            c00 = vzero(a)
            c01 = vzero(a)
            c02 = vzero(a)
            c10 = vzero(a)
            c11 = vzero(a)
            c12 = vzero(a)
            c20 = vzero(a)
            c21 = vzero(a)
            c22 = vzero(a)
            c30 = vzero(a)
            c31 = vzero(a)
            c32 = vzero(a)
            for p in range(0, kv, lanes):
                b0 = vload(bt, ib + p)
                b1 = vload(bt, ib + sb + p)
                b2 = vload(bt, ib + 2 * sb + p)
                x = vload(a, ia + p)
                c00 = vfma(x, b0, c00)
                c01 = vfma(x, b1, c01)
                c02 = vfma(x, b2, c02)
                x = vload(a, ia + sa + p)
                c10 = vfma(x, b0, c10)
                c11 = vfma(x, b1, c11)
                c12 = vfma(x, b2, c12)
                x = vload(a, ia + 2 * sa + p)
                c20 = vfma(x, b0, c20)
                c21 = vfma(x, b1, c21)
                c22 = vfma(x, b2, c22)
                x = vload(a, ia + 3 * sa + p)
                c30 = vfma(x, b0, c30)
                c31 = vfma(x, b1, c31)
                c32 = vfma(x, b2, c32)
            s00, s01, s02 = vsum(c00), vsum(c01), vsum(c02)
            s10, s11, s12 = vsum(c10), vsum(c11), vsum(c12)
            s20, s21, s22 = vsum(c20), vsum(c21), vsum(c22)
            s30, s31, s32 = vsum(c30), vsum(c31), vsum(c32)
            for p in range(kv, k):
                b0, b1, b2 = bt[j, p], bt[j + 1, p], bt[j + 2, p]
                x = a[i, p]
                s00 += x * b0
                s01 += x * b1
                s02 += x * b2
                x = a[i + 1, p]
                s10 += x * b0
                s11 += x * b1
                s12 += x * b2
                x = a[i + 2, p]
                s20 += x * b0
                s21 += x * b1
                s22 += x * b2
                x = a[i + 3, p]
                s30 += x * b0
                s31 += x * b1
                s32 += x * b2
            out[i, j], out[i, j + 1], out[i, j + 2] = s00, s01, s02
            out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2] = s10, s11, s12
            out[i + 2, j], out[i + 2, j + 1], out[i + 2, j + 2] = s20, s21, s22
            out[i + 3, j], out[i + 3, j + 1], out[i + 3, j + 2] = s30, s31, s32
    _dot_rest(a, bt, out, mt, m, 0, n, kv)  # the last m % 4 rows
    _dot_rest(a, bt, out, 0, mt, nt, n, kv)  # the last n % 3 columns of the others


@njit(cache=True, nogil=True)
def _use_dot(a, b, out):  # noqa: ANN001, ANN202
    """Whether :func:`matmul` runs ``a @ b`` on :func:`_dot_kernel`: ``a``'s rows and ``b``'s columns
    contiguous, ``out``'s rows too, and a small product with a long enough reduction."""
    m, k = a.shape
    n = b.shape[1]
    it = a.itemsize
    return (
        a.strides[1] == it
        and b.strides[0] == it
        and out.strides[1] == it
        and k >= DOT_MIN_K
        and m <= DOT_MAX_M
        and m * n * k <= DOT_MAX_MACS
    )


@njit(cache=True, nogil=True)
def matmul(a, b, out):  # noqa: ANN001, ANN201
    """``out = a @ b`` for 2-d operands of one float dtype, ``out`` C-contiguous: :func:`_dot_kernel` where
    :func:`_use_dot` says so, else :func:`gemm` (BLAS); an operand with neither rows nor columns contiguous is
    copied first (as the matmul library kernel does)."""
    if _use_dot(a, b, out):
        _dot_kernel(a, b.T, out)
        return
    it = a.itemsize
    a_ok = a.strides[1] == it or a.strides[0] == it or a.shape[0] <= 1 or a.shape[1] <= 1
    b_ok = b.strides[1] == it or b.strides[0] == it or b.shape[0] <= 1 or b.shape[1] <= 1
    if a_ok and b_ok:
        gemm(a, b, out, 0.0)
    elif a_ok:
        gemm(a, np.ascontiguousarray(b), out, 0.0)
    elif b_ok:
        gemm(np.ascontiguousarray(a), b, out, 0.0)
    else:
        gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), out, 0.0)
