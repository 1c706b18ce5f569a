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
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.np.linalg import ensure_blas

__all__ = ["GEMM_VERSION", "gemm"]

#: bump when :func:`gemm` changes: generated kernels calling it (the fused matmul epilogues) put it in their
#: source, so their content-addressed disk cache entries change with it (Numba's own cache only checks the
#: calling function's file)
GEMM_VERSION = "2"

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
