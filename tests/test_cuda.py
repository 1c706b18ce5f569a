"""The cuda target (``compile(..., target="cuda")``), run under Numba's CUDA simulator.

Without a GPU the module switches numba.cuda to its simulator (``NUMBA_ENABLE_CUDASIM``) before importing it, unless
numba.cuda was already imported (then it uses what is there) or ``SYMDL_TEST_CUDA=device`` asks for the real GPU.
The simulator runs every CUDA thread as a Python thread, so shapes stay tiny; every kernel kind and variant is still
exercised (grid-stride loops over several blocks, row and block-tree reductions with a combining pass, GEMM tiles
with ragged edges). Results are compared with the reference executor or with independent NumPy formulas.
"""

from __future__ import annotations

import os
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


def test_unbroadcast_gradient_of_a_bias(rng):
    x = sd.placeholder((None, 5), name="x")
    b = sd.parameter(np.zeros((1, 5), np.float32), name="b")
    s = sd.parameter(np.float32(2.0), name="s")
    loss = ((x + b) * (x + b) * s).sum()
    gb, gs = sd.grad(loss, [b, s])
    xv = _f32(rng, 11, 5)
    got = _cuda([x], [gb, gs])(xv)
    _close(got, [(4 * xv).sum(axis=0, keepdims=True), (xv * xv).sum()], rtol=1e-5, atol=1e-5)


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


def test_unsupported_op_is_a_compile_error_not_a_fallback():
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
