"""The cuda target (``compile(..., target="cuda")``), run under Numba's CUDA simulator.

Without a GPU the module switches numba.cuda to its simulator (``NUMBA_ENABLE_CUDASIM``) before importing it, unless
numba.cuda was already imported (then it uses what is there) or ``SYMDL_TEST_CUDA=device`` asks for the real GPU.
The simulator runs every CUDA thread as a Python thread, so shapes stay tiny; every kernel kind and variant is still
exercised (grid-stride loops over several blocks, row and block-tree reductions with a combining pass, GEMM tiles
with ragged edges). Results are compared with the reference executor or with independent NumPy formulas.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

if "numba.cuda" not in sys.modules and os.environ.get("SYMDL_TEST_CUDA") != "device":
    import numba

    numba.core.config.ENABLE_CUDASIM = 1  # read when numba.cuda is first imported

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed: pip install 'symdl[cuda]'")

from compiler.codegen.cuda import device as cuda_device  # noqa: E402

_PROBLEM = cuda_device.cuda_problem()
if _PROBLEM is not None:  # e.g. SYMDL_TEST_CUDA=device on a machine without a GPU
    pytest.skip(_PROBLEM, allow_module_level=True)

import symdl as sd  # noqa: E402
from symdl import nn, optim  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _fast_thread_switching():
    """The simulator's block scheduler polls its threads; a short GIL switch interval makes barriers ~5x faster."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)


def _ref(inputs, outputs, updates=None, **kw):
    return sd.compile(inputs, outputs, updates, target="reference", **kw)


def _cuda(inputs, outputs, updates=None, **kw):
    return sd.compile(inputs, outputs, updates, target="cuda", **kw)


def _close(got, want, rtol=1e-5, atol=1e-6):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        else:
            np.testing.assert_array_equal(g, w)


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Elementwise kernels
# ----------------------------------------------------------------------------------------------------


def test_elementwise_broadcasting_several_outputs_and_new_batch_size(rng):
    x = sd.placeholder((None, 3, 4), name="x")
    b = sd.placeholder((3, 1), name="b")
    c = sd.parameter(np.float32(0.5), name="c")
    z = x * b + c  # b broadcast along the first and last loop axes, c a 0-d parameter
    y1 = sd.tanh(z)
    y2 = sd.sigmoid(z) - b
    y3 = z > 0.0
    f = _cuda([x, b], [y1, y2, y3])
    assert [s.kind for s in f.plan.steps] == ["elementwise"]  # one fused kernel with three outputs
    assert len(f.plan.steps[0].outputs) == 3
    bv = _f32(rng, 3, 1)
    for n in (2, 5):  # a new batch size binds new buffers but generates nothing
        xv = _f32(rng, n, 3, 4)
        got = f(xv, bv)
        zv = xv * bv + np.float32(0.5)
        want = [np.tanh(zv), 1 / (1 + np.exp(-zv)) - bv, zv > 0]
        _close(got, want, rtol=1e-5, atol=1e-6)
    assert f._executor.instantiations == 2
    source = f.lowered.compiled[0].source
    assert "for i in range(start, n, step):" in source  # a grid-stride loop over the flat index
    assert "x1 = in1[i1]" in source  # b (3, 1) in the (N, 3, 4) loop: read along loop axis 1 only
    assert "x2 = in2[0]" in source.split("for i in")[0]  # the 0-d c is loaded once, before the loop


def test_scalar_expressions_match_reference_including_special_values():
    x = sd.placeholder((None,), name="x")
    outs = [
        sd.relu(x),
        sd.leaky_relu(x, 0.1),
        sd.elu(x),
        sd.softplus(x),
        sd.sigmoid(x),
        sd.tanh(x),
        sd.exp(x),
        sd.log(sd.abs(x)),
        sd.sqrt(sd.abs(x)),
        sd.sign(x),
        sd.clip(x, -1.0, 1.0),
        sd.maximum(x, 0.5),
        sd.where(x > 0, x, -x),
        x**2,
        (x * 3.0).astype("int32"),
    ]
    xv = np.array([-np.inf, -50.0, -1.5, -0.0, 0.0, 0.25, 2.0, 30.0, np.inf, np.nan], np.float32)
    want = _ref([x], outs)(xv)
    got = _cuda([x], outs)(xv)
    _close(got, want, rtol=2e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------
# Reductions
# ----------------------------------------------------------------------------------------------------


def test_reductions_rows_and_block_tree_variants(rng):
    x = sd.placeholder((None, 3, 4), name="x")
    outs = [
        x.sum(),  # 240 elements into one: the block-tree kernel, several partials, a combining pass
        x.sum(axis=0),  # 20 rows per output: block tree
        sd.exp(x).sum(axis=(0, 2), keepdims=True),  # fused into the exp loop
        x.sum(axis=2),  # 4 per output: one thread per output
        x.mean(axis=1),
        x.max(axis=(1, 2)),
        x.min(),
        (x > 0).sum(axis=0),  # bool -> int64: a library sum
        sd.argmax(x.reshape((-1, 12)), axis=1),
    ]
    f = _cuda([x], outs)
    r = _ref([x], outs)
    cfg = cuda_device.launch_config()
    assert 20 > cfg.rows_max >= 4  # both variants really run below
    for n in (20, 1):
        xv = _f32(rng, n, 3, 4)
        got = f(xv)
        _close(got, r(xv), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[0], xv.astype(np.float64).sum(), rtol=1e-6)
        np.testing.assert_array_equal(got[7], (xv > 0).sum(axis=0))
        np.testing.assert_array_equal(got[8], xv.reshape(-1, 12).argmax(axis=1))


def test_reduction_kernels_are_deterministic(rng):
    x = sd.placeholder((None,), name="x")
    f = _cuda([x], [(x * 1.5).sum()])
    xv = (rng.standard_normal(300) * 1e3).astype(np.float32)
    first = f(xv)[0]
    assert all(f(xv)[0].tobytes() == first.tobytes() for _ in range(2))
    np.testing.assert_allclose(first, (xv.astype(np.float64) * 1.5).sum(), rtol=1e-6)


def test_simulator_shared_arrays_are_one_per_block_even_when_allocation_is_slow(rng, monkeypatch):
    """Regression: Numba's simulator allocates a launch's ``cuda.shared.array`` on first use with an unlocked
    get-then-set, so threads of the first block that reach the line together could get arrays of their own (flaky
    sums, e.g. the Adam MLP test 1 run in 3). An allocation that yields makes every thread of the block reach the line
    before the first allocation ends: without :func:`cuda_device.patch_simulator_shared_arrays` every sum breaks."""
    if not cuda_device.is_simulator():
        pytest.skip("a simulator race")
    import time

    from numba.cuda.simulator import kernelapi

    assert cuda_device.patch_simulator_shared_arrays()
    real = kernelapi.np

    class SlowAllocation:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def empty(*args, **kw):
            time.sleep(0.002)
            return real.empty(*args, **kw)

    x = sd.placeholder((None, 40), name="x")
    f = _cuda([x], [x.sum(axis=1), (x * 2.0).sum()])  # a block-tree reduction per row, and one over everything
    xv = _f32(rng, 3, 40)
    monkeypatch.setattr(kernelapi, "np", SlowAllocation())
    got = f(xv)
    _close(got, [xv.sum(axis=1), np.float32(2 * xv.astype(np.float64).sum())], rtol=1e-5, atol=1e-5)


def test_unbroadcast_gradient_of_a_bias(rng):
    x = sd.placeholder((None, 5), name="x")
    b = sd.parameter(np.zeros((1, 5), np.float32), name="b")
    s = sd.parameter(np.float32(2.0), name="s")
    loss = ((x + b) * (x + b) * s).sum()
    gb, gs = sd.grad(loss, [b, s])
    xv = _f32(rng, 11, 5)
    got = _cuda([x], [gb, gs])(xv)
    _close(got, [(4 * xv).sum(axis=0, keepdims=True), (xv * xv).sum()], rtol=1e-5, atol=1e-5)


def test_unbroadcast_with_axes_known_only_at_run_time(rng):
    """``unbroadcast`` to a reference with unknown dims (``(None, 1)`` against ``(None, 3)``): the summed axes are
    decided from the concrete shapes per call, fused with its group or alone."""
    from compiler.codegen.cuda.reduction import reduction_axes
    from runtime.cuda import lower_cuda

    s = sd.placeholder((None, 1), name="s")
    t = sd.placeholder((None, 1), name="t")
    z = sd.placeholder((None, 3), name="z")
    gs, gt = sd.grad((s * z * z).sum() + sd.exp(t + z).sum(), [s, t])
    f = _cuda([s, t, z], [gs, gt])
    ref = _ref([s, t, z], [gs, gt])
    runtime = [k for k in lower_cuda(f.program).kernels for n in k.nodes if n.op.name == "unbroadcast"]
    assert runtime and all(reduction_axes(n) is None for k in runtime for n in k.nodes if n.op.name == "unbroadcast")
    for n in (5, 1, 2):
        args = [_f32(rng, n, 1), _f32(rng, n, 1), _f32(rng, n, 3)]
        _close(f(*args), ref(*args), rtol=1e-5, atol=1e-5)
    from symdl.ops.shape import unbroadcast

    g = sd.placeholder((4, 3), name="g")
    r = sd.placeholder((None, 3), name="r")
    f = _cuda([g, r], [unbroadcast(g, r), unbroadcast(g * 2.0, r)])  # alone, and fused with its group
    gv = _f32(rng, 4, 3)
    for n in (1, 4, 1):  # a variant per summed axes: (0,) for a reference of 1 row, () for 4 rows
        rv = _f32(rng, n, 3)
        _close(
            f(gv, rv),
            [gv.sum(axis=0, keepdims=True) if n == 1 else gv, 2 * (gv.sum(0, keepdims=True) if n == 1 else gv)],
        )


# ----------------------------------------------------------------------------------------------------
# Matmul
# ----------------------------------------------------------------------------------------------------


def test_matmul_ragged_tiles_transposed_and_batched(rng):
    a = sd.placeholder((None, 7), name="a")
    b = sd.placeholder((7, 3), name="b")
    c = sd.placeholder((2, None, 5), name="c")
    d = sd.placeholder((5, 6), name="d")
    e = sd.placeholder((3, 1, 2, 5), name="e")
    outs = [a @ b, a.T @ a, c @ d, e @ c.transpose((0, 2, 1))]  # 2-d, transposed view, batched, broadcast batch
    f = _cuda([a, b, c, d, e], outs)
    assert "view" in [s.kind for s in f.plan.steps]  # a.T is read by the GEMM through strides, no copy
    av, bv, dv = _f32(rng, 5, 7), _f32(rng, 7, 3), _f32(rng, 5, 6)
    cv, ev = _f32(rng, 2, 6, 5), _f32(rng, 3, 1, 2, 5)
    got = f(av, bv, cv, dv, ev)
    f64 = lambda v: v.astype(np.float64)  # noqa: E731
    want = [f64(av) @ f64(bv), f64(av).T @ f64(av), f64(cv) @ f64(dv), f64(ev) @ np.swapaxes(f64(cv), 1, 2)]
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_matmul_epilogue_with_fused_bias_gradient(rng):
    x = sd.placeholder((None, 4), name="x")
    w = sd.parameter(_f32(rng, 4, 6), name="w")
    b = sd.parameter(_f32(rng, 6), name="b")
    h = sd.relu(x @ w + b)
    loss = (h * h).mean()
    gw, gb = sd.grad(loss, [w, b])
    f = _cuda([x], [h, loss, gw, gb])
    assert "epilogue" in [s.kind for s in f.plan.steps]
    xv = _f32(rng, 9, 4)
    _close(f(xv), _ref([x], [h, loss, gw, gb])(xv), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Convolution (im2col + GEMM, col2im gather), slicing
# ----------------------------------------------------------------------------------------------------


def test_conv2d_grouped_strided_with_epilogue_and_gradients(rng):
    x = sd.placeholder((None, 2, 4, 5), name="x")
    w = sd.parameter(_f32(rng, 4, 1, 3, 3), name="w")
    b = sd.parameter(_f32(rng, 4), name="b")
    y = sd.relu(sd.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2))
    loss = (y * y).sum()
    gx, gw = sd.grad(loss, [x, w])
    f = _cuda([x], [y, gx, gw])
    assert "epilogue" in [s.kind for s in f.plan.steps]  # conv + bias + relu in one kernel
    xv = _f32(rng, 2, 2, 4, 5)
    _close(f(xv), _ref([x], [y, gx, gw])(xv), rtol=1e-4, atol=1e-5)


def test_conv1d_dilated_gradients(rng):
    x = sd.placeholder((None, 2, 7), name="x")
    w = sd.parameter(_f32(rng, 3, 2, 2), name="w")
    y = sd.conv1d(x, w, padding=2, dilation=2, stride=2)
    gx, gw = sd.grad((y * y).sum(), [x, w])
    xv = _f32(rng, 1, 2, 7)
    _close(_cuda([x], [y, gx, gw])(xv), _ref([x], [y, gx, gw])(xv), rtol=1e-4, atol=1e-5)


def test_slicing_and_its_gradient(rng):
    x = sd.placeholder((None, 6), name="x")
    y = x[:, 1:5:2] * 3.0 + x[-1, None, 2:4]
    (gx,) = sd.grad((y * y).sum(), [x])
    xv = _f32(rng, 3, 6)
    _close(_cuda([x], [y, gx])(xv), _ref([x], [y, gx])(xv), rtol=1e-5, atol=1e-6)


def test_batch_norm_eval_and_embedding_with_gradient(rng):
    x = sd.placeholder((None, 3, 2), name="x")
    mean, var = sd.parameter(_f32(rng, 3), name="mean"), sd.parameter(rng.random(3).astype(np.float32), name="var")
    gamma, beta = sd.parameter(_f32(rng, 3), name="gamma"), sd.parameter(_f32(rng, 3), name="beta")
    bn = sd.batch_norm(x, mean, var, gamma, beta, training=False, eps=1e-3)
    idx = sd.placeholder((None,), "int64", name="idx")
    table = sd.parameter(_f32(rng, 5, 4), name="table")
    e = sd.embedding(idx, table, padding_idx=1)
    (gt,) = sd.grad((e * e).sum(), [table])
    xv, iv = _f32(rng, 4, 3, 2), np.array([3, 1, 3, 0, 4, 3])
    outs = [bn, e, gt]
    got = _cuda([x, idx], outs, mode="eval")(xv, iv)
    _close(got, _ref([x, idx], outs, mode="eval")(xv, iv), rtol=1e-5, atol=1e-6)
    alpha = gamma.value / np.sqrt(var.value + np.float32(1e-3))
    np.testing.assert_allclose(got[0], xv * alpha[:, None] + (beta.value - mean.value * alpha)[:, None], rtol=1e-5)
    want_gt = np.zeros((5, 4), np.float32)
    np.add.at(want_gt, iv, 2 * table.value[iv])
    want_gt[1] = 0  # padding_idx gets no gradient
    np.testing.assert_allclose(got[2], want_gt, rtol=1e-6)
    with pytest.raises(sd.OpRuntimeError, match=r"index 7 is out of range for 5 embedding rows"):
        _cuda([idx], [e])(np.array([0, 7]))


# ----------------------------------------------------------------------------------------------------
# Softmax family and cross-entropy
# ----------------------------------------------------------------------------------------------------


def test_softmax_family_stable_for_large_logits(rng):
    x = sd.placeholder((None, 5), name="x")
    outs = [sd.softmax(x, axis=-1), sd.log_softmax(x, axis=-1), sd.softmax(x, axis=0), sd.log_softmax(x, axis=0)]
    xv = _f32(rng, 3, 5)
    xv[0] = [1e4, -1e4, 0.0, 1e4, 3.0]
    got = _cuda([x], outs)(xv)
    _close(got, _ref([x], outs)(xv), rtol=1e-5, atol=1e-6)
    z = xv.astype(np.float64) - xv.max(axis=1, keepdims=True)
    np.testing.assert_allclose(got[0], np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert np.all(np.isfinite(got[1]))


def test_cross_entropy_value_gradient_and_ignore_index(rng):
    x = sd.placeholder((None, 4), name="x")
    y = sd.placeholder((None,), "int64", name="y")
    w = sd.parameter(_f32(rng, 4, 4), name="w")
    logits = x @ w
    loss = sd.cross_entropy(logits, y, ignore_index=-1)
    (gw,) = sd.grad(loss, [w])
    xv, yv = _f32(rng, 6, 4), np.array([0, 3, -1, 2, 1, 3])
    got = _cuda([x, y], [loss, gw])(xv, yv)
    _close(got, _ref([x, y], [loss, gw])(xv, yv), rtol=1e-5, atol=1e-6)
    z = (xv @ w.value).astype(np.float64)
    logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    keep = yv != -1
    np.testing.assert_allclose(got[0], -logp[keep, yv[keep]].mean(), rtol=1e-5)


def test_labels_out_of_range_raise_before_anything_changes(rng):
    x = sd.placeholder((None, 3), name="x")
    y = sd.placeholder((None,), "int64", name="y")
    w = sd.parameter(_f32(rng, 3, 3), name="w")
    loss = sd.cross_entropy(x @ w, y)
    (gw,) = sd.grad(loss, [w])
    f = _cuda([x, y], [loss], updates={w: w - 0.1 * gw})
    before = w.value.copy()
    with pytest.raises(sd.OpRuntimeError, match=r"softmax_cross_entropy: label 5 is out of range for 3 classes"):
        f(_f32(rng, 2, 3), np.array([0, 5]))
    np.testing.assert_array_equal(w.value, before)


# ----------------------------------------------------------------------------------------------------
# Training: device-resident parameters, updates on the device, values synced back
# ----------------------------------------------------------------------------------------------------


def _mlp_run(target, opt_cls, batches, **kw):
    sd.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = opt_cls(model.parameters(), **kw)
    x = sd.placeholder((None, 6), name="x")
    y = sd.placeholder((None,), "int64", name="y")
    loss = sd.cross_entropy(model(x), y)
    step = sd.compile([x, y], [loss], updates=opt.minimize(loss), target=target)
    held = model[0].weight.value
    losses = [step(xb, yb)[0] for xb, yb in batches]
    if target == "cuda":  # like the CPU target: updated in place, an array obtained earlier sees the new values
        assert held is model[0].weight.value
    return step, losses, [p.value.copy() for p in model.parameters()]


@pytest.mark.parametrize(
    "opt_cls, kw", [(optim.Adam, {"lr": 1e-2}), (optim.SGD, {"lr": 0.1, "momentum": 0.9})], ids=["adam", "sgd"]
)
def test_mlp_training_steps_match_reference(rng, opt_cls, kw):
    batches = [(_f32(rng, n, 6), rng.integers(0, 3, n)) for n in (8, 8, 5)]  # the last batch is ragged
    _, want_losses, want_params = _mlp_run("reference", opt_cls, batches, **kw)
    step, losses, params = _mlp_run("cuda", opt_cls, batches, **kw)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-4)
    for p, w in zip(params, want_params):
        np.testing.assert_allclose(p, w, rtol=1e-4, atol=1e-6)
    assert step._executor.instantiations == 3  # warm-up (batch 2), batch 8, batch 5: buffers per shape, no codegen
    report = step.memory_report()
    assert report.signature == ((5, 6), (5,))
    assert 0 < report.planned_peak_bytes <= report.unplanned_bytes
    moments = 2 if opt_cls is optim.Adam else 1  # optimiser state lives on the device too
    lr_and_step = 4 + 8  # the 0-d float32 learning rate and float64 step counter
    assert report.parameter_bytes == (1 + moments) * sum(p.nbytes for p in params) + lr_and_step
    assert report.peak_device_bytes == (
        report.planned_peak_bytes
        + report.input_bytes
        + report.staging_bytes
        + report.parameter_bytes
        + report.constant_bytes
        + report.scratch_bytes
    )
    assert "peak device" in str(report)


def test_parameters_stay_on_device_and_assignment_is_picked_up(rng):
    w = sd.parameter(np.ones((2, 3), np.float32), name="w")
    x = sd.placeholder((None, 2), name="x")
    step = _cuda([x], [x @ w], updates={w: w * 2.0})
    predict = _cuda([x], [x @ w], mode="eval")
    xv = np.eye(2, dtype=np.float32)
    np.testing.assert_array_equal(step(xv)[0], np.ones((2, 3)))  # outputs read the old value
    np.testing.assert_array_equal(w.value, 2 * np.ones((2, 3)))  # synced back after the call
    np.testing.assert_array_equal(predict(xv)[0], 2 * np.ones((2, 3)))  # the other function shares the device copy
    w.value = np.full((2, 3), 5.0, np.float32)  # a new array object: uploaded on the next call
    np.testing.assert_array_equal(predict(xv)[0], 5 * np.ones((2, 3)))
    step(xv)
    np.testing.assert_array_equal(w.value, 10 * np.ones((2, 3)))


def test_swapped_updates_read_old_values():
    p = sd.parameter(np.array([1.0, 2.0], np.float32), name="p")
    q = sd.parameter(np.array([3.0, 4.0], np.float32), name="q")
    x = sd.placeholder((2,), name="x")
    f = _cuda([x], [x + p], updates={p: q, q: p})
    np.testing.assert_array_equal(f(np.zeros(2, np.float32))[0], [1.0, 2.0])
    np.testing.assert_array_equal(p.value, [3.0, 4.0])
    np.testing.assert_array_equal(q.value, [1.0, 2.0])


def test_check_numerics_names_the_kernel():
    x = sd.placeholder((None,), name="x")
    f = _cuda([x], [sd.log(x) * 2.0], check_numerics=True)
    with pytest.raises(sd.NumericsError, match=r"check_numerics: kernel k0_log\+mul .* 1 NaN"):
        f(np.array([1.0, -1.0], np.float32))


# ----------------------------------------------------------------------------------------------------
# Errors: unsupported ops, missing numba.cuda, no device
# ----------------------------------------------------------------------------------------------------


def test_unsupported_op_is_a_compile_error_not_a_fallback(monkeypatch):
    from compiler.codegen.cuda import library

    monkeypatch.delitem(library.LIBRARY, sd.ops.pool.MaxPool)  # every op of the core has a kernel now
    x = sd.placeholder((None, 1, 4, 4), name="x")
    with pytest.raises(
        sd.GraphError, match=r"(?s)op max_pool \(MaxPool, .*\) is not yet supported on the cuda target.*test_cuda"
    ):
        _cuda([x], [sd.max_pool2d(x, 2)])


def test_missing_numba_cuda_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba.cuda", None)  # import numba.cuda now fails
    x = sd.placeholder((2,), name="x")
    with pytest.raises(sd.GraphError, match=r"numba.cuda is not importable .*pip install 'symdl\[cuda\]'"):
        _cuda([x], [x + 1.0])


def test_no_device_without_simulator_says_how_to_simulate(monkeypatch):
    import numba.cuda

    monkeypatch.setattr(cuda_device, "is_simulator", lambda cuda=None: False)
    monkeypatch.setattr(numba.cuda, "is_available", lambda: False)
    x = sd.placeholder((2,), name="x")
    with pytest.raises(sd.GraphError, match=r"no CUDA device found .*NUMBA_ENABLE_CUDASIM=1"):
        _cuda([x], [x + 1.0])


def test_logsumexp_and_nll_loss_with_gradient(rng):
    x = sd.placeholder((None, 3, 4), name="x")
    y = sd.placeholder((None, 4), "int64", name="y")
    lse = sd.logsumexp(x, axis=(0, 2))  # reduced axes moved last by one strided copy
    loss = sd.nll_loss(sd.log_softmax(x, axis=1), y, ignore_index=0)
    (gx,) = sd.grad(loss, [x])
    xv, yv = _f32(rng, 2, 3, 4), np.array([[0, 1, 2, 1], [2, 0, 1, 1]])
    got = _cuda([x, y], [lse, loss, gx])(xv, yv)
    _close(got, _ref([x, y], [lse, loss, gx])(xv, yv), rtol=1e-5, atol=1e-6)
    m = xv.max(axis=(0, 2))
    np.testing.assert_allclose(got[0], np.log(np.exp(xv - m[:, None]).sum(axis=(0, 2))) + m, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Second slice: pooling, concat, pad, dropout, probability check, one_hot, fill_like; LeNet-5
# ----------------------------------------------------------------------------------------------------


def _max_pool_numpy(xv, k, s, p):
    """Window maxima and flat argmax (first maximum, -inf padding) of (N, C, H, W) by plain loops."""
    n, c, h, w = xv.shape
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    vals = np.empty((n, c, oh, ow), xv.dtype)
    idx = np.empty((n, c, oh, ow), np.int64)
    for i in range(n):
        for j in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    best, bi = -np.inf, None
                    for a in range(k):
                        for b in range(k):
                            iy, ix = oy * s - p + a, ox * s - p + b
                            if 0 <= iy < h and 0 <= ix < w and (bi is None or xv[i, j, iy, ix] > best):
                                best, bi = xv[i, j, iy, ix], iy * w + ix
                    vals[i, j, oy, ox], idx[i, j, oy, ox] = best, bi
    return vals, idx


def test_max_pool_values_indices_and_gradients(rng):
    x = sd.placeholder((None, 2, 5, 6), name="x")
    m1 = sd.max_pool2d(x, 2)
    m2, i2 = sd.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    m3 = sd.max_pool1d(x.reshape((-1, 5, 6)), 2, stride=1, dilation=2)
    loss = (m1 * m1).sum() + (m2 * 3.0).sum() + m3.sum()
    (gx,) = sd.grad(loss, [x])
    (gg,) = sd.grad((gx * gx).sum(), [x])  # max_pool_grad's own gradient: MaxPoolGather
    outs = [m1, m2, i2, m3, gx, gg]
    xv = _f32(rng, 2, 2, 5, 6)
    xv[0, 0, 0, :2] = 7.0  # a tie: the first maximum (row-major) wins
    got = _cuda([x], outs)(xv)
    _close(got, _ref([x], outs)(xv), rtol=0, atol=0)  # the same window order and sums: bit-identical
    want2, wanti = _max_pool_numpy(xv, 3, 2, 1)
    np.testing.assert_array_equal(got[1], want2)
    np.testing.assert_array_equal(got[2], wanti)
    # gradient of sum(m2 * 3): 3 at each window's argmax, summed where windows overlap
    g2 = np.zeros(xv.size // 2 // 2 * 4, np.float32).reshape(2, 2, 30)
    np.add.at(g2, (np.arange(2)[:, None, None], np.arange(2)[None, :, None], wanti.reshape(2, 2, -1)), 3.0)
    m1v = _max_pool_numpy(xv, 2, 2, 0)
    g1 = np.zeros((2, 2, 30), np.float32)
    np.add.at(
        g1,
        (np.arange(2)[:, None, None], np.arange(2)[None, :, None], m1v[1].reshape(2, 2, -1)),
        2 * m1v[0].reshape(2, 2, -1),
    )
    want_gx = np.asarray(_ref([x], [sd.grad(m3.sum(), [x])[0]])(xv)[0]) + (g1 + g2).reshape(xv.shape)
    np.testing.assert_allclose(got[4], want_gx, rtol=1e-6)


def test_max_pool_nan_propagates_and_grad_is_deterministic(rng):
    x = sd.placeholder((1, 1, 4, 4), name="x")
    y = sd.max_pool2d(x, 2, stride=1)
    (gx,) = sd.grad(y.sum(), [x])
    xv = _f32(rng, 1, 1, 4, 4)
    xv[0, 0, 1, 2] = np.nan
    f = _cuda([x], [y, gx])
    first = f(xv)
    _close(first, _ref([x], [y, gx])(xv), rtol=0, atol=0)
    assert np.isnan(first[0][0, 0, :2, 1:]).all() and not np.isnan(first[0][0, 0, 2:, 0]).any()
    again = f(xv)
    np.testing.assert_array_equal(again[1], first[1])


@pytest.mark.parametrize("include_pad,override", [(True, None), (False, None), (False, 3)])
def test_avg_pool_and_gradient(rng, include_pad, override):
    x = sd.placeholder((None, 2, 5, 5), name="x")
    y = sd.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=include_pad, divisor_override=override)
    g = sd.placeholder((None, 2, 3, 3), name="g")
    (gx,) = sd.grad((y * g).sum(), [x])
    xv, gv = _f32(rng, 2, 2, 5, 5), _f32(rng, 2, 2, 3, 3)
    got = _cuda([x, g], [y, gx])(xv, gv)
    _close(got, _ref([x, g], [y, gx])(xv, gv), rtol=1e-6, atol=1e-7)
    # independent formula: zero-padded window sums over the divisor
    pad = np.pad(xv.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones((5, 5)), 1)
    want = np.empty((2, 2, 3, 3))
    for oy in range(3):
        for ox in range(3):
            win = pad[:, :, 2 * oy : 2 * oy + 3, 2 * ox : 2 * ox + 3].sum(axis=(2, 3))
            div = override or (9 if include_pad else ones[2 * oy : 2 * oy + 3, 2 * ox : 2 * ox + 3].sum())
            want[:, :, oy, ox] = win / div
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-7)


def test_avg_pool1d_gradient_matches_finite_differences(rng):
    x = sd.placeholder((1, 2, 7), "float64", name="x")
    y = sd.avg_pool1d(x, 3, stride=2, padding=1)
    loss = (y * y).sum()
    (gx,) = sd.grad(loss, [x])
    f = _cuda([x], [loss, gx])
    xv = rng.standard_normal((1, 2, 7))
    gv = f(xv)[1]
    eps, num = 1e-6, np.zeros_like(xv)
    for i in np.ndindex(xv.shape):
        d = np.zeros_like(xv)
        d[i] = eps
        num[i] = (f(xv + d)[0] - f(xv - d)[0]) / (2 * eps)
    np.testing.assert_allclose(gv, num, rtol=1e-6, atol=1e-8)


def test_concat_pad_and_their_gradients(rng):
    a = sd.placeholder((None, 2, 3), name="a")
    b = sd.placeholder((None, 1, 3), name="b")
    c = sd.concat([a, b, a], axis=1)
    p = sd.pad(c, (1, 2, 0, 1), value=-1.5)
    w = sd.placeholder((None, 6, 6), name="w")
    ga, gb = sd.grad((p * w).sum(), [a, b])
    outs = [c, p, ga, gb]
    av, bv, wv = _f32(rng, 2, 2, 3), _f32(rng, 2, 1, 3), _f32(rng, 2, 6, 6)
    got = _cuda([a, b, w], outs)(av, bv, wv)
    _close(got, _ref([a, b, w], outs)(av, bv, wv), rtol=0, atol=0)
    cv = np.concatenate([av, bv, av], axis=1)
    np.testing.assert_array_equal(got[0], cv)
    np.testing.assert_array_equal(got[1], np.pad(cv, ((0, 0), (0, 1), (1, 2)), constant_values=np.float32(-1.5)))
    inner = wv[:, :5, 1:4]
    np.testing.assert_allclose(got[2], inner[:, :2] + inner[:, 3:], rtol=1e-6)
    np.testing.assert_array_equal(got[3], inner[:, 2:3])


def test_dropout_mask_is_bit_identical_to_the_cpu_formula():
    from symdl.ops import random as rnd

    sd.manual_seed(1234)
    x = sd.placeholder((None, 3, 7), name="x")
    y = sd.dropout(x, 0.3, training=True)
    z = sd.dropout(x, 0.5, training=True)  # a second stream of the same generator
    (gx,) = sd.grad((y * z).sum(), [x])
    gen = rnd.default_generator()
    start = gen.get_state()
    xv = np.ones((4, 3, 7), np.float32)
    f = _cuda([x], [y, z, gx], mode="train")
    first = f(xv)
    second = f(xv)  # the counter advanced: new masks
    gen.set_state(start)
    want1 = _ref([x], [y, z, gx], mode="train")(xv)
    want2 = _ref([x], [y, z, gx], mode="train")(xv)
    _close(first, want1, rtol=0, atol=0)
    _close(second, want2, rtol=0, atol=0)
    assert not np.array_equal(first[0], second[0])
    seed, counter = (int(v) for v in start)
    mask = rnd.dropout_mask_array((4, 3, 7), np.array([seed, counter], np.uint64), 0.3, 0, "float32")
    np.testing.assert_array_equal(first[0], mask)  # stream 0, the first call's counter
    assert 0.1 < (first[0] == 0).mean() < 0.5 and (first[0][first[0] != 0] == np.float32(1) / np.float32(0.7)).all()


def test_dropout_mask_hash_matches_numpy_for_large_indices():
    """The 32-bit-halves product wraps exactly: compare the device hash with NumPy's uint64 one at big indices."""
    import numba.cuda as cuda

    from compiler.codegen.cuda.library_more import more_module
    from symdl.ops import random as rnd

    mod = more_module()
    state = np.array([2**64 - 3, 2**63 + 5], np.uint64)
    n = 70
    out = cuda.device_array(n, np.float64)
    threshold = np.uint64(rnd.keep_threshold(0.5))
    mod.dropout_mask[2, 16](cuda.to_device(state), np.uint64(2**64 - 1), threshold, 2.0, 0.0, out, n)
    want = rnd.dropout_mask_array((n,), state, 0.5, 2**64 - 1, "float64")
    np.testing.assert_array_equal(out.copy_to_host(), want)


def test_binary_cross_entropy_checks_probabilities_like_the_cpu(rng):
    p = sd.placeholder((None, 3), name="p")
    t = sd.placeholder((None, 3), name="t")
    loss = sd.binary_cross_entropy(p, t)
    (gp,) = sd.grad(loss, [p])
    f = _cuda([p, t], [loss, gp])
    pv = rng.uniform(0.05, 0.95, (4, 3)).astype(np.float32)
    tv = rng.uniform(0, 1, (4, 3)).astype(np.float32)
    _close(f(pv, tv), _ref([p, t], [loss, gp])(pv, tv), rtol=1e-5, atol=1e-6)
    bad = pv.copy()
    bad[2, 1], bad[3, 0] = 1.5, np.nan
    with pytest.raises(
        sd.errors.OpRuntimeError,
        match=r"binary_cross_entropy: all elements of the input must be probabilities in \[0, 1\]; found 1\.5 at "
        r"position \[2, 1\] \(2 of 12 entries are outside\)",
    ):
        f(bad, tv)


def test_one_hot_fill_like_and_label_range(rng):
    y = sd.placeholder((None, 2), "int64", name="y")
    oh = sd.one_hot(y, 4)
    z = sd.zeros_like(oh.astype("float32")) + 2.0
    f = _cuda([y], [oh, z])
    yv = np.array([[0, 3], [2, 2], [1, 0]])
    got = f(yv)
    np.testing.assert_array_equal(got[0], np.eye(4, dtype=np.int64)[yv])
    _close(got, _ref([y], [oh, z])(yv))
    with pytest.raises(sd.errors.OpRuntimeError, match=r"label 4 .*4 classes|out of range"):
        f(np.array([[0, 4]]))
    with pytest.raises(sd.GraphError, match=r"one_hot\(num_classes=-1\).*pass num_classes explicitly"):
        _cuda([y], [sd.one_hot(y)])


# ----------------------------------------------------------------------------------------------------
# validate=True: every cuda kernel against the cpu kernel of the same fused group
# ----------------------------------------------------------------------------------------------------


def _conv_bn_relu_step(seed=0):
    """A small conv-BN-ReLU-linear training step (loss and gradients; BatchNorm running-stat updates)."""
    rng = np.random.default_rng(seed)
    sd.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)
    )
    x = sd.placeholder((None, 2, 4, 4), name="x")
    y = sd.placeholder((None,), "int64", name="y")
    loss = sd.cross_entropy(model(x), y)
    grads = sd.grad(loss, list(model.parameters()))
    data = [_f32(rng, 3, 2, 4, 4), np.array([1, 4, 0])]
    return model, [x, y], [loss, *grads], data


def test_validate_passes_on_a_correct_plan_and_reports_every_kernel():
    model, ins, outs, data = _conv_bn_relu_step()
    f = _cuda(ins, outs, validate=True, warmup=False)
    assert f.validation is None
    got = f(*data)
    rep = f.validation
    assert rep.ok and len(rep.kernels) == len(f.plan.steps)
    assert [k.name for k in rep.kernels] == [s.name for s in f.plan.steps]
    assert "all agree" in str(rep) and "k1_conv+add+sum" in str(rep)
    # the validated call returns the outputs and applies the updates (BatchNorm running statistics) as usual
    model2, ins2, outs2, _ = _conv_bn_relu_step()  # fresh parameters with the same seed
    want = _ref(ins2, outs2)(*data)
    _close(got, want, rtol=1e-4, atol=1e-5)
    for (name, v), (_, w) in zip(model.state_dict().items(), model2.state_dict().items()):
        np.testing.assert_allclose(v, w, rtol=1e-5, atol=1e-6, err_msg=name)


def _corrupt(monkeypatch, step, delta=1.0):
    """Make the cuda kernel of ``step`` add ``delta`` to element 0 of its first output after it runs."""
    original = step.compiled.run

    def corrupted(*args):
        original(*args)
        out = args[len(step.inputs)]
        host = cuda_device.download(out)
        host.reshape(-1)[0] += delta
        cuda_device.upload(host, out.data)

    monkeypatch.setattr(step.compiled, "run", corrupted)


def test_validate_names_the_first_disagreeing_kernel(monkeypatch):
    _, ins, outs, data = _conv_bn_relu_step()
    f = _cuda(ins, outs, validate=True, warmup=False)
    step = next(s for s in f.plan.steps if s.kind == "epilogue" and s.ops()[0] == "matmul")
    _corrupt(monkeypatch, step, 0.5)  # bound when the shape signature is first instantiated: before any call
    with pytest.raises(Exception) as info:
        f(*data)
    from runtime.cuda_validate import KernelMismatchError

    assert isinstance(info.value, KernelMismatchError) and isinstance(info.value, sd.SymdlError)
    msg = str(info.value)
    assert f"cuda kernel {step.name} (epilogue, forward; ops: matmul, add)" in msg, msg
    assert f"output 0 {step.outputs[0].label()} float32[3, 5]: 1 of 15 elements differ" in msg, msg
    assert "max abs error 0.5" in msg and "worst at index (0, 0)" in msg, msg
    assert "test_cuda.py" in msg  # the user's line (where the layer was applied)
    # a gradient kernel too
    f2 = _cuda(ins, outs, validate=True, warmup=False)
    grad_step = next(s for s in f2.plan.steps if s.ops() == ["conv_grad_weight"])
    _corrupt(monkeypatch, grad_step, -2.0)
    with pytest.raises(KernelMismatchError, match=rf"cuda kernel {grad_step.name} \(op, backward; ops: conv_grad_w"):
        f2(*data)


def test_validate_catches_an_integer_kernel_exactly(monkeypatch):
    x = sd.placeholder((None, 4), name="x")
    f = _cuda([x], [sd.argmax(x, axis=1) + 1], validate=True, warmup=False)
    step = next(s for s in f.plan.steps if "argmax" in s.ops())
    _corrupt(monkeypatch, step, 1)
    with pytest.raises(Exception, match=r"(?s)cuda kernel k0_argmax.*int64\[3\]: 1 of 3 elements differ \(exact"):
        f(np.arange(12, dtype=np.float32).reshape(3, 4))


def test_validate_detects_a_buffer_overwritten_before_its_last_reader(monkeypatch):
    x = sd.placeholder((None, 3), name="x")
    w = sd.parameter(np.ones((3, 3), np.float32), name="w")
    m = x @ w  # read by the softmax and by the sum below
    f = _cuda([x], [sd.softmax(m, axis=1), sd.sum(m * m)], validate=True, warmup=False)
    steps = f.plan.steps
    producer = next(s for s in steps if s.ops() == ["matmul"])
    readers = [s for s in steps if not s.is_view and any(t is producer.outputs[0] for t in s.inputs)]
    assert len(readers) == 2, f.plan
    original = readers[0].compiled.run
    pos = [t.id for t in readers[0].inputs].index(producer.outputs[0].id)

    def clobbering(*args):
        original(*args)
        v = args[pos]
        cuda_device.upload(np.full(v.shape, 7.0, np.float32), v.data)

    monkeypatch.setattr(readers[0].compiled, "run", clobbering)
    with pytest.raises(
        Exception,
        match=rf"written by cuda kernel {producer.name} was changed on the device before "
        rf"kernel {re.escape(readers[1].name)} read it",
    ):
        f(np.ones((2, 3), np.float32))


def test_validate_refuses_other_targets_and_unpairable_plans():
    x = sd.placeholder((None, 3), name="x")
    for target in ("cpu", "reference"):
        with pytest.raises(sd.GraphError, match=rf"validate=True .* target='cuda' only, not '{target}'"):
            sd.compile([x], [sd.sum(sd.exp(x) * 2.0)], target=target, validate=True)
    from runtime.cuda import lower_cuda
    from runtime.cuda_validate import KernelValidator

    f = _cuda([x], [sd.sum(sd.exp(x) * 2.0)], warmup=False)
    lowered = lower_cuda(f.program, fuse_reductions=True)
    with pytest.raises(
        sd.GraphError,
        match=r"validate: cuda kernel k0_exp\+mul\+sum \(reduction; ops: exp, mul, sum\) has no cpu kernel with",
    ):
        KernelValidator(f.program, lowered, fuse_reductions=False)  # cpu side lowered without reduction fusion


def test_validate_checks_each_group_of_a_horizontal_launch(monkeypatch, rng):
    x = sd.placeholder((None, 3), name="x")
    w1 = sd.parameter(_f32(rng, 3, 4), name="w1")
    w2 = sd.parameter(_f32(rng, 4, 2), name="w2")
    loss = sd.mean(sd.tanh(x @ w1) @ w2)
    g1, g2 = sd.grad(loss, [w1, w2])
    f = _cuda([x], [loss], updates={w1: w1 - 0.1 * g1, w2: w2 - 0.1 * g2}, validate=True, warmup=False)
    step = next((s for s in f.plan.steps if s.kind == "horizontal"), None)
    if step is None:
        pytest.skip("no horizontal kernel in this plan")
    f(_f32(rng, 2, 3))
    assert f.validation.ok and any(k.kind == "horizontal" for k in f.validation.kernels)
    g = _cuda([x], [loss], updates={w1: w1 - 0.1 * g1, w2: w2 - 0.1 * g2}, validate=True, warmup=False)
    step = next(s for s in g.plan.steps if s.kind == "horizontal")
    _corrupt(monkeypatch, step, 3.0)
    part = step.compiled.kernel.parts[0]
    with pytest.raises(Exception, match=rf"cuda kernel {re.escape(step.name)} part {re.escape(part.name)} \("):
        g(_f32(rng, 2, 3))


# ----------------------------------------------------------------------------------------------------
# Kernel cache across processes
# ----------------------------------------------------------------------------------------------------


def test_kernels_ask_numba_cuda_for_its_disk_cache(rng, monkeypatch):
    """Every generated and library kernel is decorated ``@cuda.jit(cache=True)`` (device functions are compiled
    into their kernels); the simulator accepts and ignores the flag, and numba-cuda's real ``jit`` turns it into an
    on-disk cache (checked with a stand-in dispatcher: no GPU here)."""
    import ast
    import inspect

    x = sd.placeholder((None, 5), name="x")
    w = sd.parameter(_f32(rng, 5, 3), name="w")
    f = _cuda([x], [sd.relu(x @ w).sum(axis=0), sd.softmax(x, axis=1)])
    f(_f32(rng, 4, 5))
    files = set()
    for step in f.plan.steps:
        for d in step.compiled.dispatchers:
            fn = getattr(d, "fn", None) or getattr(d, "py_func", None)
            files.add(inspect.getsourcefile(fn))
    assert files
    kernels = 0
    for path in files:
        for node in ast.walk(ast.parse(open(path).read())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if "cuda.jit" not in ast.unparse(deco):
                    continue
                kw = {k.arg: ast.literal_eval(k.value) for k in getattr(deco, "keywords", [])}
                if not kw.get("device"):
                    kernels += 1
                    assert kw.get("cache") is True, (path, node.name, ast.unparse(deco))
    assert kernels >= 3
    assert cuda_device.kernel_decorator() == "@cuda.jit(cache=True)"

    from numba.cuda import decorators

    enabled = []

    class Dispatcher:  # numba-cuda's CUDADispatcher, recording whether caching was enabled
        def __init__(self, fn, targetoptions):
            self.fn = fn

        def enable_caching(self):
            enabled.append(self.fn.__name__)

    monkeypatch.setattr(decorators, "CUDADispatcher", Dispatcher)
    monkeypatch.setattr(decorators.config, "ENABLE_CUDASIM", 0)
    monkeypatch.setattr(decorators, "_have_nvjitlink", lambda: False)

    def kernel(a):  # pragma: no cover - never run
        pass

    decorators.jit(cache=True)(kernel)
    assert enabled == ["kernel"]


def test_kernel_decorator_without_a_cache_argument(monkeypatch):
    """A ``numba.cuda.jit`` that takes no ``cache`` argument gets a plain ``@cuda.jit``."""
    import numba.cuda

    def jit(func_or_sig=None, device=False):  # pragma: no cover - never called
        return func_or_sig

    monkeypatch.setattr(numba.cuda, "jit", jit)
    assert cuda_device.kernel_decorator() == "@cuda.jit"


def test_updated_parameters_come_back_to_the_host_on_demand(rng):
    """A cuda training step leaves the newest value on the device: nothing is downloaded until something reads
    the parameter (``p.value``, a cpu-compiled function), which then sees the updated value."""
    w = sd.parameter(np.ones((2, 3), np.float32), name="w")
    x = sd.placeholder((None, 2), name="x")
    step = _cuda([x], [x @ w], updates={w: w * 2.0})
    host = w._value
    step(np.eye(2, dtype=np.float32))
    assert w._pull is not None  # not downloaded yet
    np.testing.assert_array_equal(host, np.ones((2, 3)))
    cpu = sd.compile([x], [x @ w], target="cpu")  # binding it on the cpu brings the host copy up to date
    np.testing.assert_array_equal(cpu(np.eye(2, dtype=np.float32))[0], np.full((2, 3), 2.0))
    assert w._pull is None
    step(np.eye(2, dtype=np.float32))
    np.testing.assert_array_equal(w.value, np.full((2, 3), 4.0))  # p.value pulls
    assert w.value is host  # downloaded in place into the same host array
    w.value = np.zeros((2, 3), np.float32)  # assignment wins and is uploaded on the next device call
    step(np.eye(2, dtype=np.float32))
    np.testing.assert_array_equal(w.value, np.zeros((2, 3)))
