"""The explicit-SIMD intrinsics of ``compiler.codegen.cpu.simd`` against NumPy, in both float dtypes.

One small njit function exercises every operation, so each dtype compiles once."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from compiler.codegen.cpu.simd import (
    VECTOR_BITS,
    lanes_for,
    vadd,
    vbcast,
    vfma,
    vlanes,
    vload,
    vmax,
    vmul,
    vsplat,
    vstore,
    vsum,
    vzero,
)

DTYPES = [np.float32, np.float64]


@njit(cache=True)
def _every_op(a, b, c, out, sums):  # noqa: ANN001, ANN202
    """Rows of ``out`` (each ``lanes`` long, ``a``/``b``/``c`` read at offset 1: unaligned loads)."""
    n = vlanes(a)
    x, y, z = vload(a, 1), vload(b, 1), vload(c, 1)
    vstore(out, 0 * n, vadd(x, y))
    vstore(out, 1 * n, vmul(x, y))
    vstore(out, 2 * n, vfma(x, y, z))
    vstore(out, 3 * n, vmax(x, y))
    vstore(out, 4 * n, vbcast(a, 3))
    vstore(out, 5 * n, vsplat(x, 2.5))
    vstore(out, 6 * n, vzero(a))
    sums[0] = vsum(x)
    sums[1] = n


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_operation_against_numpy(dtype):
    n = lanes_for(dtype)
    assert n * 8 * np.dtype(dtype).itemsize == VECTOR_BITS
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=n + 2).astype(dtype) for _ in range(3))
    a[2], b[3] = np.nan, np.nan  # vmax propagates a NaN from either side, like np.maximum
    out = np.full(7 * n, 7, dtype)
    sums = np.zeros(2, dtype)
    _every_op(a, b, c, out, sums)
    x, y, z = a[1 : n + 1], b[1 : n + 1], c[1 : n + 1]
    rows = out.reshape(7, n)
    np.testing.assert_array_equal(rows[0], x + y)
    np.testing.assert_array_equal(rows[1], x * y)
    exact = x.astype(np.float64) * y + z  # fused: one rounding (exact in float64 for float32 operands)
    np.testing.assert_allclose(rows[2], exact, rtol=np.finfo(dtype).eps)
    np.testing.assert_array_equal(rows[3], np.maximum(x, y))
    np.testing.assert_array_equal(rows[4], np.full(n, a[3]))
    np.testing.assert_array_equal(rows[5], np.full(n, 2.5, dtype))
    np.testing.assert_array_equal(rows[6], np.zeros(n, dtype))
    assert np.isnan(sums[0])  # x holds the NaN
    assert sums[1] == n


@njit(cache=True)
def _dot(a, b):  # noqa: ANN001, ANN202
    n = vlanes(a)
    acc = vzero(a)
    for i in range(0, a.shape[0], n):
        acc = vfma(vload(a, i), vload(b, i), acc)
    return vsum(acc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_register_accumulated_dot_product(dtype):
    rng = np.random.default_rng(1)
    n = 64 * lanes_for(dtype)
    a, b = rng.normal(size=n).astype(dtype), rng.normal(size=n).astype(dtype)
    np.testing.assert_allclose(_dot(a, b), np.dot(a.astype(np.float64), b), rtol=50 * np.finfo(dtype).eps)


def test_type_errors_name_the_operation():
    @njit
    def load_ints(a):  # noqa: ANN001, ANN202
        return vsum(vload(a, 0))

    with pytest.raises(TypingError, match="simd: expected a float array"):
        load_ints(np.zeros(32, np.int64))

    @njit
    def mixed(a, b):  # noqa: ANN001, ANN202
        return vsum(vadd(vload(a, 0), vload(b, 0)))

    with pytest.raises(TypingError, match="vadd: expected two vectors of one kind"):
        mixed(np.zeros(32, np.float32), np.zeros(32, np.float64))
