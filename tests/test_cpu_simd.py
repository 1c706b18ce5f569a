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
    prefetch,
    vadd,
    vbcast,
    vfma,
    vlanes,
    vload,
    vload_merge,
    vload_strided2,
    vmax,
    vmul,
    vsplat,
    vstore,
    vstore_lanes,
    vstore_pairs,
    vsub,
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


@njit(cache=True)
def _masked_ops(a, b, out, flags, idx, e0, e1):  # noqa: ANN001, ANN202
    vstore_pairs(out, idx, vload(a, 0), vload(b, 0), e0, e1)
    vstore_pairs(flags, idx, vload(a, 0), vload(b, 0), e0, e1)


@njit(cache=True)
def _lanes_ops(a, b, out, idx, e0, e1):  # noqa: ANN001, ANN202
    prefetch(out, idx + 10**9, True)  # a hint: never faults, even far outside the array
    prefetch(a, 0, False)
    vstore_lanes(out, idx, vsub(vload(a, 0), vload(b, 0)), e0, e1)


@njit(cache=True)
def _strided(a, out, idx, e0, e1):  # noqa: ANN001, ANN202
    vstore(out, 0, vload_strided2(a, idx, e0, e1, 0))
    vstore(out, vlanes(out), vload_strided2(a, idx, e0, e1, 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_and_interleaving_stores_touch_only_their_range(dtype):
    """vstore_pairs (values, and ``> 0`` flags into a boolean array) and vstore_lanes write exactly the
    elements of their range, at an index that may start before the array (only in-range lanes are touched)."""
    n = lanes_for(dtype)
    a = np.arange(n, dtype=dtype) - 3
    a[2] = np.nan
    b = 100 + np.arange(n, dtype=dtype)
    stream = np.empty(2 * n, dtype)
    stream[0::2], stream[1::2] = a, b
    for idx, e0, e1 in ((0, 0, 2 * n), (5, 3, 11), (2 - n, n + 1, 2 * n - 1), (0, 4, 4)):
        out, flags = np.full(3 * n, -1, dtype), np.zeros(3 * n, np.bool_)
        _masked_ops(a, b, out, flags, idx, e0, e1)
        want, want_flags = np.full(3 * n, -1, dtype), np.zeros(3 * n, np.bool_)
        want[idx + e0 : idx + e1] = stream[e0:e1]
        want_flags[idx + e0 : idx + e1] = stream[e0:e1] > 0  # NaN: False, as np.greater
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(flags, want_flags)
        lo, hi = min(e0, n), min(e1, n)
        out = np.full(2 * n, -1, dtype)
        _lanes_ops(a, b, out, 3, lo, hi)
        want = np.full(2 * n, -1, dtype)
        want[3 + lo : 3 + hi] = (a - b)[lo:hi]
        np.testing.assert_array_equal(out, want)


@njit(cache=True)
def _merged(a, out, i0, i1, e0, e1):  # noqa: ANN001, ANN202
    v = vload_merge(a, i0, vsplat(vzero(a), -1.0), 0, e0)
    vstore(out, 0, vload_merge(a, i1, v, e0, e1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_merged_loads_assemble_runs_from_two_offsets(dtype):
    """vload_merge: lanes ``[0, e0)`` from ``i0 + l``, ``[e0, e1)`` from ``i1 + l``, the rest keep the passed-in
    vector; addresses of unset lanes are never read (offsets may lie before the array or past its end)."""
    n = lanes_for(dtype)
    a = np.arange(1, 2 * n + 1, dtype=dtype)
    for i0, i1, e0, e1 in ((0, 1, 5, n), (3, n, n // 2, n - 1), (-n, 2, 0, n), (n, 2 * n - 3, 3, 3)):
        out = np.empty(n, dtype)
        _merged(a, out, i0, i1, e0, e1)
        want = np.full(n, -1, dtype)
        want[:e0] = a[i0 : i0 + e0] if e0 else want[:0]
        want[e0:e1] = a[i1 + e0 : i1 + e1]
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_loads_split_even_and_odd_elements(dtype):
    """vload_strided2: every other element from ``idx`` (+1 for the odd phase), 0 outside ``[e0, e1)`` of the
    2-vector stream, never reading there (``idx`` may lie before the array)."""
    n = lanes_for(dtype)
    a = np.arange(1, 3 * n + 1, dtype=dtype)
    for idx, e0, e1 in ((0, 0, 2 * n), (5, 1, n + 3), (-1, 1, 2 * n), (2 * n, 0, n)):
        out = np.empty(2 * n, dtype)
        _strided(a, out, idx, e0, e1)
        stream = np.zeros(2 * n, dtype)
        for e in range(max(e0, 0), min(e1, 2 * n)):
            stream[e] = a[idx + e]
        np.testing.assert_array_equal(out[:n], stream[0::2])
        np.testing.assert_array_equal(out[n:], stream[1::2])
