"""Reductions fused with their elementwise producers (compiler/codegen/cpu/reduction.py): values against the
reference executor, the parallel function against its serial twin, every batch size without recompiling."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import symdl as sd
from compiler.codegen.cpu.elementwise import PARALLEL_THRESHOLD
from symdl.ops.shape import unbroadcast

CASES = {
    # name: (placeholder shape, build(x) -> output)
    "all": ((None, 5, 3), lambda x: (sd.tanh(x) * x).sum()),
    "rows": ((None, 6), lambda x: sd.exp(x - 1.0).sum(axis=1)),
    "rows_keepdims": ((None, 6), lambda x: (x * x).sum(axis=1, keepdims=True)),
    "channels": ((None, 3, 4, 5), lambda x: ((x - 0.5) * (x - 0.5)).sum(axis=(0, 2, 3))),
    "batch": ((None, 7), lambda x: sd.relu(x).sum(axis=0)),
    "middle": ((None, 4, 6), lambda x: sd.abs(x).sum(axis=1)),
    "unbroadcast": ((None, 3, 4), lambda x: unbroadcast(sd.sigmoid(x), sd.constant(np.zeros((3, 1), np.float32)))),
}


@functools.cache
def compiled(name: str, dtype: str = "float32"):
    shape, build = CASES[name]
    x = sd.placeholder(shape, dtype, name="x")
    y = build(x)
    if dtype == "float64":
        y = sd.cast(y, "float64")
    return sd.compile([x], [y], target="cpu"), sd.compile([x], [y])


def _reduction_kernel(f):
    ks = [ck for ck in f.lowered.compiled if ck.kernel.kind == "reduction"]
    assert len(ks) == 1, [ck.name for ck in f.lowered.compiled]
    return ks[0]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("batch", [1, 7, 0])
def test_fused_reduction_matches_reference(name, batch):
    f, ref = compiled(name)
    _reduction_kernel(f)
    shape = (batch, *CASES[name][0][1:])
    x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
    before = f.compile_report.numba_compiled
    np.testing.assert_allclose(f(x)[0], ref(x)[0], rtol=1e-5, atol=1e-5)
    assert f.compile_report.numba_compiled == before  # no recompile for a new batch size


@pytest.mark.parametrize("name", ["all", "channels", "batch", "unbroadcast"])
def test_parallel_function_matches_serial_twin_on_large_inputs(name):
    f, ref = compiled(name)
    ck = _reduction_kernel(f)
    rest = CASES[name][0][1:]
    batch = PARALLEL_THRESHOLD // int(np.prod(rest)) + 9  # more elements than the parallel threshold
    x = np.random.default_rng(1).standard_normal((batch, *rest)).astype(np.float32)
    out = f(x)[0]
    np.testing.assert_allclose(out, ref(x)[0], rtol=1e-5, atol=1e-4)
    inputs = [x if t.op.name == "placeholder" else np.asarray(t.value) for t in ck.kernel.inputs]
    par, ser = np.empty_like(out), np.empty_like(out)
    ck.run(*inputs, par)
    ck.serial(*inputs, ser)
    np.testing.assert_allclose(par, ser, rtol=1e-6, atol=1e-5)
    again = np.empty_like(out)
    ck.run(*inputs, again)
    np.testing.assert_array_equal(par, again)  # partials are combined in task order: deterministic


def test_float64_accuracy():
    shape, build = CASES["channels"]
    x = sd.placeholder(shape, "float64", name="x")
    y = build(x)
    f, ref = sd.compile([x], [y], target="cpu"), sd.compile([x], [y])
    _reduction_kernel(f)
    xs = np.random.default_rng(2).standard_normal((5, 3, 4, 5))
    np.testing.assert_allclose(f(xs)[0], ref(xs)[0], rtol=1e-10)


def test_stored_member_and_sum_in_one_pass():
    x = sd.placeholder((None, 4), name="x")
    a = sd.exp(x)
    f = sd.compile([x], [a * 2.0, a.sum(axis=0)], target="cpu")
    assert [ck.kernel.kind for ck in f.lowered.compiled] == ["reduction"]
    xs = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)
    b, s = f(xs)
    np.testing.assert_allclose(b, 2 * np.exp(xs), rtol=1e-6)
    np.testing.assert_allclose(s, np.exp(xs).sum(0), rtol=1e-5)


def test_large_batch_after_compile_compiles_nothing():
    """Warm-up runs small shapes (serial runs); the parallel runs call the same compiled functions, so a batch
    that crosses the parallel thresholds compiles nothing at call time."""
    from compiler.lower import dispatcher_stats

    x = sd.placeholder((None, 64), name="x")
    h = sd.tanh(x) * 2.0
    f = sd.compile([x], [h, sd.softmax(h, axis=1), h.sum(axis=1)], target="cpu", warmup=True)
    before = dispatcher_stats(f.lowered.compiled)
    xs = np.random.default_rng(4).standard_normal((1024, 64)).astype(np.float32)  # 65536 elements
    out = f(xs)
    assert dispatcher_stats(f.lowered.compiled)[1] == before[1]
    np.testing.assert_allclose(out[2], (2 * np.tanh(xs)).sum(1), rtol=1e-5, atol=1e-5)


def test_one_compiled_function_serves_serial_and_parallel_runs():
    """Each kernel is one task-range function: the small warm-up compiles everything a large batch needs."""
    from compiler.lower import dispatcher_stats

    x = sd.placeholder((None, 48), name="x")
    y = (sd.sigmoid(x) * 3.0).sum(axis=1)
    f = sd.compile([x], [y], target="cpu", warmup="small")
    before = dispatcher_stats(f.lowered.compiled)
    names = [getattr(d, "__name__", "") for d in f.lowered.compiled[0].dispatchers]
    assert names == ["kernel_range", "combine", "kernel_call"]  # kernel_call: the serial call in one dispatch
    xs = np.random.default_rng(5).standard_normal((2048, 48)).astype(np.float32)  # 98304 elements: parallel
    np.testing.assert_allclose(f(xs)[0], (3 / (1 + np.exp(-xs))).sum(1), rtol=1e-5)
    assert dispatcher_stats(f.lowered.compiled) == before
    with pytest.raises(ValueError, match="warmup"):
        sd.compile([x], [y], target="cpu", warmup="lazy")
