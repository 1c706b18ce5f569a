"""The small-GEMM dot-product kernel behind :func:`compiler.codegen.cpu.gemm.matmul`, the fused 2-d matmul
epilogues that call it, and the one-dispatch serial call of reduction kernels."""

from __future__ import annotations

import numpy as np
import pytest

import symdl as sd
from compiler.codegen.cpu.gemm import _dot_kernel, _use_dot, matmul
from symdl.ops.shape import unbroadcast

pytest.importorskip("numba")

DTYPES = [np.float32, np.float64]
# (m, k, n): tails in every direction (m % 4, n % 3, k % lanes), single rows/columns, the MLP's shapes
SHAPES = [(32, 128, 128), (1, 16, 1), (5, 17, 7), (33, 130, 11), (4, 24, 3), (7, 100, 2), (64, 33, 129), (3, 9, 5)]


def _ints(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Small integers: every product and partial sum is exact in float32, so any summation order gives the
    same bits as NumPy."""
    return rng.integers(-8, 9, shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_dot_kernel_exact(dtype, shape):
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, w = _ints(rng, (m, k), dtype), _ints(rng, (n, k), dtype)
    out = np.full((m, n), np.nan, dtype)
    _dot_kernel(a, w, out)
    assert np.array_equal(out, a @ w.T)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matmul_layouts_exact(dtype, shape):
    """Every operand layout ``matmul`` takes: C, F (transposed views), row blocks of wider arrays (a leading
    dimension above the row length) and strided views (copied), the dot kernel or BLAS behind them."""
    m, k, n = shape
    rng = np.random.default_rng(7 + m + k + n)
    a, b = _ints(rng, (m, k), dtype), _ints(rng, (k, n), dtype)
    ref = a @ b
    a_views = [a, np.asfortranarray(a), np.pad(a, ((0, 0), (0, 5)))[:, :k], np.repeat(a, 2, axis=1)[:, ::2]]
    b_views = [b, np.asfortranarray(b), np.pad(b.T, ((0, 0), (0, 3)))[:, :k].T, np.repeat(b, 2, axis=0)[::2]]
    for av in a_views:
        for bv in b_views:
            out = np.full((m, n), np.nan, dtype)
            matmul(av, bv, out)
            assert np.array_equal(out, ref), (av.strides, bv.strides)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_random_floats_close(dtype):
    rng = np.random.default_rng(11)
    for m, k, n in [(32, 128, 128), (13, 200, 31), (64, 96, 10)]:
        a = rng.standard_normal((m, k)).astype(dtype)
        w = rng.standard_normal((n, k)).astype(dtype)
        assert _use_dot(a, w.T, np.empty((m, n), dtype)) == (k >= 96)
        out = np.empty((m, n), dtype)
        matmul(a, w.T, out)
        ref = a.astype(np.float64) @ w.T.astype(np.float64)
        tol = 1e-4 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.sqrt(k))


def test_matmul_nan_and_empty():
    a = np.ones((5, 100), np.float32)
    a[2, 50] = np.nan
    w = np.ones((4, 100), np.float32)
    out = np.zeros((5, 4), np.float32)
    matmul(a, w.T, out)
    assert np.isnan(out[2]).all() and not np.isnan(np.delete(out, 2, axis=0)).any()
    matmul(np.ones((0, 100), np.float32), w.T, np.zeros((0, 4), np.float32))
    out = np.full((3, 4), np.nan, np.float32)
    matmul(np.ones((3, 0), np.float32), np.ones((0, 4), np.float32), out)
    assert (out == 0).all()


def _mlp_step(dtype: str, hidden: int = 128):
    """A 3-layer MLP training step whose backward pass has matmul + where + unbroadcast epilogues with a
    transposed weight (the dot kernel) and matmul + add + relu + greater epilogues."""
    rng = np.random.default_rng(5)
    x = sd.placeholder((None, 24), dtype, name="x")
    y = sd.placeholder((None,), "int64", name="y")
    sizes = [24, hidden, hidden, 7]
    params = []
    h = x
    for i in range(3):
        w = sd.parameter((rng.standard_normal(sizes[i : i + 2]) / np.sqrt(sizes[i])).astype(dtype), name=f"w{i}")
        b = sd.parameter((0.1 * rng.standard_normal(sizes[i + 1])).astype(dtype), name=f"b{i}")
        params += [w, b]
        h = h @ w + b
        if i < 2:
            h = sd.relu(h)
    loss = sd.cross_entropy(h, y)
    grads = sd.grad(loss, params)
    return x, y, params, loss, {p: p - 0.05 * g for p, g in zip(params, grads)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_matmul_epilogues_match_reference(dtype):
    """The fused epilogue kernels (one compiled function: product + loop) are used and three SGD steps at odd
    batch sizes match the reference executor."""
    x, y, params, loss, updates = _mlp_step(dtype)
    start = [p.value.copy() for p in params]
    rng = np.random.default_rng(9)
    batches = [(rng.standard_normal((n, 24)).astype(dtype), rng.integers(0, 7, n)) for n in (33, 5, 33)]
    results = []
    for target in ("cpu", "reference"):
        for p, v in zip(params, start):
            p.value = v.copy()
        f = sd.compile([x, y], [loss], updates=updates, target=target)
        if target == "cpu":
            epilogues = [ck for ck in f.lowered.compiled if ck.kernel.kind == "epilogue"]
            fused = [ck for ck in epilogues if "def fused(" in (ck.source or "")]
            assert len(fused) == len(epilogues) >= 4
            assert any("where" in ck.kernel.name and "unbroadcast" in ck.kernel.name for ck in fused)
        results.append([float(f(xs, ys)[0]) for xs, ys in batches] + [p.value.copy() for p in params])
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(results[0][:3], results[1][:3], rtol=tol)
    for got, ref in zip(results[0][3:], results[1][3:]):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def test_reduction_one_dispatch_call_matches_the_task_path():
    """The reduction kernels' one-dispatch serial call (``kernel_call``) and the task path (``kernel_range`` +
    ``combine``) give identical bits, including -0.0 partials and empty loops."""
    from compiler.codegen.cpu import reduction

    x = sd.placeholder((None, 10), name="x")
    b = sd.parameter(np.zeros(10, np.float32), name="b")
    outs = [sd.sum(sd.relu(x) * 2.0), unbroadcast(x * x, b)]
    f = sd.compile([x], outs, mode="eval", target="cpu")
    kernels = [ck for ck in f.lowered.compiled if ck.kernel.kind == "reduction"]
    assert kernels and all("def kernel_call(" in ck.source for ck in kernels)
    rng = np.random.default_rng(2)
    for n in (0, 1, 37):
        xs = rng.standard_normal((n, 10)).astype(np.float32)
        xs[:, 3] = -0.0
        got = f(xs)
        saved = reduction._dims_arg
        reduction._dims_arg = lambda kernel: None  # build without kernel_call: the task path
        try:
            g = sd.compile([x], outs, mode="eval", target="cpu")
            assert all(
                "def kernel_call(" not in ck.source for ck in g.lowered.compiled if ck.kernel.kind == "reduction"
            )
            ref = g(xs)
        finally:
            reduction._dims_arg = saved
        for a, r in zip(got, ref):
            assert a.tobytes() == r.tobytes()
