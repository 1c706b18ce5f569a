"""One compiled call where the CPU target used to make several: the fused 2-d matmul epilogues (BLAS product,
then the generated loop, in one Numba function) and the one-dispatch serial call of reduction kernels."""

from __future__ import annotations

import numpy as np
import pytest

import symdl as sd
from symdl.ops.shape import unbroadcast


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


def test_fused_matmul_epilogue_falls_back_for_an_operand_without_a_contiguous_axis():
    """gemm needs rows or columns contiguous: any other view takes the library kernel's path (which copies)."""
    from compiler.codegen.cpu import _FusedMatmul

    calls = []

    def fake(*args):  # noqa: ANN002, ANN202 - stands in for the compiled fused function
        calls.append("fused")

    fake.symdl_locked = True  # past its warm-up (see _FusedMatmul.runner)
    fused = _FusedMatmul(fake, "", 0, 1, 2, None)
    run = fused.runner(lambda *a: calls.append("fallback"))
    a = np.ones((4, 6), np.float32)
    b = np.ones((6, 10), np.float32)
    out = np.empty((4, 5), np.float32)
    run(a, b[:, ::2], out)
    run(a, b[:, :5], out)
    run(a[:, ::2], b[::2, :5], out)
    assert calls == ["fallback", "fused", "fallback"]
