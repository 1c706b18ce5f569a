"""batch_norm: PyTorch F.batch_norm semantics in train and eval mode, running statistics, gradients, errors."""

import os

import numpy as np
import pytest

import symdl
from symdl.errors import GraphError, OpRuntimeError, ShapeError
from symdl.ops.normalization import BatchNormEval

THIS_FILE = os.path.basename(__file__)
SHAPES = [(6, 3), (5, 3, 4), (4, 3, 3, 2)]


def _bn_layer(shape, dtype=np.float32, affine=True, rng=None, batch=None):
    rng = rng or np.random.default_rng(0)
    c = shape[1]
    x = symdl.placeholder((batch,) + tuple(shape[1:]), dtype, name="x")
    rm = symdl.parameter(np.zeros(c, dtype), name="running_mean", trainable=False)
    rv = symdl.parameter(np.ones(c, dtype), name="running_var", trainable=False)
    w = symdl.parameter(rng.uniform(0.5, 1.5, c).astype(dtype), name="weight") if affine else None
    b = symdl.parameter(rng.normal(size=c).astype(dtype), name="bias") if affine else None
    return x, rm, rv, w, b


def _np_bn(x, mean, var, w, b, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if w is not None:
        y = y * w.reshape(shape) + b.reshape(shape)
    return y


def _batch_stats(x):
    axes = (0,) + tuple(range(2, x.ndim))
    n = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    biased = x.var(axis=axes)
    return mean, biased, biased * n / (n - 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_train_output_matches_numpy(shape, affine, rng):
    x, rm, rv, w, b = _bn_layer(shape, affine=affine, rng=rng)
    y = symdl.batch_norm(x, rm, rv, w, b)
    f = symdl.compile([x], [y], mode="train")
    xv = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
    (out,) = f(xv)
    mean, biased, _ = _batch_stats(xv.astype(np.float64))
    wv, bv = (None, None) if w is None else (w.value, b.value)
    expected = _np_bn(xv.astype(np.float64), mean, biased, wv, bv)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_running_stats_after_train_steps(shape, rng):
    x, rm, rv, w, b = _bn_layer(shape, dtype=np.float64, rng=rng)
    momentum = 0.1
    y = symdl.batch_norm(x, rm, rv, w, b, momentum=momentum)
    f = symdl.compile([x], [y], mode="train")
    exp_mean, exp_var = np.zeros(shape[1]), np.ones(shape[1])
    for step in range(4):
        batch = shape[0] + step  # the batch dim is None: sizes may vary between calls
        xv = rng.normal(size=(batch,) + shape[1:]) * 2 + step
        f(xv)
        mean, _, unbiased = _batch_stats(xv)
        exp_mean = (1 - momentum) * exp_mean + momentum * mean
        exp_var = (1 - momentum) * exp_var + momentum * unbiased
        np.testing.assert_allclose(rm.value, exp_mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rv.value, exp_var, rtol=1e-12, atol=1e-12)
    assert rm.value.dtype == np.float64 and rv.value.shape == (shape[1],)


def test_eval_uses_running_stats_and_does_not_update(rng):
    shape = (5, 3, 4, 4)
    x, rm, rv, w, b = _bn_layer(shape, rng=rng)
    rm.value = rng.normal(size=3).astype(np.float32)
    rv.value = rng.uniform(0.5, 2.0, 3).astype(np.float32)
    before = rm.value.copy(), rv.value.copy()
    y = symdl.batch_norm(x, rm, rv, w, b, eps=1e-3)
    f = symdl.compile([x], [y], mode="eval")
    assert f.program.updates == []
    xv = rng.normal(size=shape).astype(np.float32)
    (out,) = f(xv)
    np.testing.assert_allclose(out, _np_bn(xv, rm.value, rv.value, w.value, b.value, eps=1e-3), rtol=1e-5, atol=1e-5)
    f(xv)
    np.testing.assert_array_equal(rm.value, before[0])
    np.testing.assert_array_equal(rv.value, before[1])
    # the eval branch is the dedicated primitive (the targets fold it into the preceding conv/linear)
    assert any(isinstance(n.op, BatchNormEval) for n in f.program.order)


def test_same_graph_compiles_in_both_modes(rng):
    shape = (8, 2, 3)
    x, rm, rv, w, b = _bn_layer(shape, rng=rng)
    y = symdl.batch_norm(x, rm, rv, w, b)
    loss = (y * y).sum()
    f_train = symdl.compile([x], [y, loss], mode="train")
    f_eval = symdl.compile([x], [y, loss], mode="eval")
    assert {p.name for p, _ in f_train.program.updates} == {"running_mean", "running_var"}
    assert f_eval.program.updates == []
    xv = (rng.normal(size=shape) + 2).astype(np.float32)
    for _ in range(3):
        f_train(xv)
    out_eval, _ = f_eval(xv)
    np.testing.assert_allclose(out_eval, _np_bn(xv, rm.value, rv.value, w.value, b.value), rtol=1e-5, atol=1e-5)
    out_train, _ = f_train(xv)
    assert not np.allclose(out_train, out_eval)


def test_forced_training_flags(rng):
    shape = (6, 3)
    x, rm, rv, w, b = _bn_layer(shape, rng=rng)
    y_true = symdl.batch_norm(x, rm, rv, w, b, training=True)
    xv = rng.normal(size=shape).astype(np.float32)
    mean, biased, _ = _batch_stats(xv.astype(np.float64))
    # training=True: batch statistics in both compile modes; updates only from a train-mode compile
    f_eval = symdl.compile([x], [y_true], mode="eval")
    np.testing.assert_allclose(f_eval(xv)[0], _np_bn(xv, mean, biased, w.value, b.value), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(rm.value, np.zeros(3, np.float32))
    f_train = symdl.compile([x], [y_true], mode="train")
    np.testing.assert_allclose(f_train(xv)[0], _np_bn(xv, mean, biased, w.value, b.value), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm.value, 0.1 * mean, rtol=1e-5, atol=1e-6)

    x2, rm2, rv2, w2, b2 = _bn_layer(shape, rng=rng)
    y_false = symdl.batch_norm(x2, rm2, rv2, w2, b2, training=False)
    f = symdl.compile([x2], [y_false], mode="train")
    assert f.program.updates == []
    np.testing.assert_allclose(f(xv)[0], _np_bn(xv, rm2.value, rv2.value, w2.value, b2.value), rtol=1e-5, atol=1e-5)


def test_without_running_stats_uses_batch_stats_in_both_modes(rng):
    x = symdl.placeholder((None, 3), "float64")
    y = symdl.batch_norm(x, None, None)
    xv = rng.normal(size=(7, 3))
    mean, biased, _ = _batch_stats(xv)
    for mode in ("train", "eval"):
        f = symdl.compile([x], [y], mode=mode)
        assert f.program.updates == []
        np.testing.assert_allclose(f(xv)[0], _np_bn(xv, mean, biased, None, None), rtol=1e-10)


def test_one_value_per_channel_raises_in_train_mode_only():
    x, rm, rv, w, b = _bn_layer((1, 3))
    y = symdl.batch_norm(x, rm, rv, w, b)
    xv = np.ones((1, 3), np.float32)
    with pytest.raises(OpRuntimeError, match="more than 1 value per channel"):
        symdl.compile([x], [y], mode="train")(xv)
    (out,) = symdl.compile([x], [y], mode="eval")(xv)
    assert out.shape == (1, 3)


def test_running_stats_used_twice_in_train_mode_is_rejected():
    x, rm, rv, w, b = _bn_layer((4, 3))
    y = symdl.batch_norm(symdl.batch_norm(x, rm, rv, w, b), rm, rv)
    with pytest.raises(GraphError, match="updated by two different batch_norm nodes"):
        symdl.compile([x], [y], mode="train")
    symdl.compile([x], [y], mode="eval")


# ----------------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 2)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradients_x_weight_bias(shape, mode, rng):
    x, rm, rv, w, b = _bn_layer(shape, rng=rng, batch=shape[0])
    rm.value = rng.normal(size=shape[1]).astype(np.float32)
    rv.value = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    y = symdl.batch_norm(x, rm, rv, w, b)
    xv = rng.normal(size=shape)
    res = symdl.check_grad(y, {x: xv, w: w.value, b: b.value}, mode=mode)
    assert res.checked == xv.size + 2 * shape[1]
    # check_grad applies no implicit updates
    assert np.all(rm.value != 0)


def test_eval_gradient_wrt_running_stats(rng):
    shape = (4, 3, 2)
    x, rm, rv, w, b = _bn_layer(shape, rng=rng, batch=4)
    y = symdl.batch_norm(x, rm, rv, w, b)
    symdl.check_grad(y, {x: rng.normal(size=shape), rm: rng.normal(size=3), rv: rng.uniform(0.5, 2, 3)}, mode="eval")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_second_order_gradients(mode, rng):
    def f(xs, ws, bs):
        rm = symdl.parameter(rng.normal(size=3), trainable=False)
        rv = symdl.parameter(rng.uniform(0.5, 2, 3), trainable=False)
        y = symdl.batch_norm(xs, rm, rv, ws, bs)
        return symdl.grad((y * y * y).sum(), xs)

    symdl.check_grad(f, [rng.normal(size=(4, 3)), rng.uniform(0.5, 1.5, 3), rng.normal(size=3)], mode=mode)


def test_gradients_without_affine(rng):
    def f(xs):
        rm = symdl.parameter(np.zeros(2), trainable=False)
        rv = symdl.parameter(np.ones(2), trainable=False)
        return symdl.batch_norm(xs, rm, rv)

    for mode in ("train", "eval"):
        symdl.check_grad(f, [rng.normal(size=(3, 2, 4))], mode=mode)


# ----------------------------------------------------------------------------------------------------
# Build-time errors
# ----------------------------------------------------------------------------------------------------


def _raises_here(match, fn):
    with pytest.raises(ShapeError, match=match) as info:
        fn()
    msg = str(info.value)
    assert "batch_norm" in msg and THIS_FILE in msg, msg
    return msg


def test_channel_mismatch_errors():
    x = symdl.placeholder((None, 3, 5, 5), name="x")
    good = symdl.parameter(np.zeros(3, np.float32), trainable=False)
    bad = symdl.parameter(np.zeros(4, np.float32), trainable=False)
    msg = _raises_here("running_mean", lambda: symdl.batch_norm(x, bad, good))
    assert "(4,)" in msg and "(None, 3, 5, 5)" in msg
    _raises_here("running_var", lambda: symdl.batch_norm(x, good, bad))
    _raises_here("weight", lambda: symdl.batch_norm(x, good, good, weight=bad))
    _raises_here("bias", lambda: symdl.batch_norm(x, good, good, bias=bad))
    two_d = symdl.parameter(np.zeros((3, 1), np.float32), trainable=False)
    _raises_here("1-d", lambda: symdl.batch_norm(x, two_d, good))


def test_rank_and_dtype_errors():
    good = symdl.parameter(np.zeros(3, np.float32), trainable=False)
    _raises_here("rank >= 2", lambda: symdl.batch_norm(symdl.placeholder((3,)), good, good))
    _raises_here("floating-point", lambda: symdl.batch_norm(symdl.placeholder((2, 3), "int64"), good, good))
    msg = _raises_here("dtype", lambda: symdl.batch_norm(symdl.placeholder((2, 3), "float64"), good, good))
    assert "float32" in msg and "float64" in msg


def test_running_stats_must_be_parameters_for_training():
    x = symdl.placeholder((None, 3))
    stat = symdl.constant(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="running_mean must be a symdl.parameter"):
        symdl.batch_norm(x, stat, stat)
    y = symdl.batch_norm(x, stat, symdl.constant(np.ones(3, np.float32)), training=False)
    np.testing.assert_allclose(
        symdl.compile([x], [y], mode="eval")(np.ones((2, 3), np.float32))[0],
        np.ones((2, 3)) / np.sqrt(1 + 1e-5),
        rtol=1e-6,
    )


# ----------------------------------------------------------------------------------------------------
# Against PyTorch (skipped when torch is not importable)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch(shape, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, rm, rv, w, b = _bn_layer(shape, rng=rng)
    y = symdl.batch_norm(x, rm, rv, w, b, momentum=0.2, eps=1e-4)
    f_train = symdl.compile([x], [y], mode="train")
    f_eval = symdl.compile([x], [y], mode="eval")
    t_rm, t_rv = torch.zeros(shape[1]), torch.ones(shape[1])
    t_w, t_b = torch.tensor(w.value), torch.tensor(b.value)
    for _ in range(3):
        xv = (rng.normal(size=shape) * 2 + 0.5).astype(np.float32)
        expected = F.batch_norm(torch.tensor(xv), t_rm, t_rv, t_w, t_b, training=True, momentum=0.2, eps=1e-4)
        np.testing.assert_allclose(f_train(xv)[0], expected.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(rm.value, t_rm.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rv.value, t_rv.numpy(), rtol=1e-5, atol=1e-6)
    expected = F.batch_norm(torch.tensor(xv), t_rm, t_rv, t_w, t_b, training=False, eps=1e-4)
    np.testing.assert_allclose(f_eval(xv)[0], expected.numpy(), rtol=1e-4, atol=1e-5)


def test_gradients_match_torch(rng):
    torch = pytest.importorskip("torch")
    shape = (4, 3, 2, 2)
    x, rm, rv, w, b = _bn_layer(shape, dtype=np.float64, rng=rng)
    y = symdl.batch_norm(x, rm, rv, w, b)
    r = rng.normal(size=shape)
    loss = (y * symdl.constant(r)).sum()
    xv = rng.normal(size=shape)
    for mode, training in (("train", True), ("eval", False)):
        f = symdl.compile([x], symdl.grad(loss, [x, w, b]), mode=mode)
        tx = torch.tensor(xv, requires_grad=True)
        tw = torch.tensor(w.value, requires_grad=True)
        tb = torch.tensor(b.value, requires_grad=True)
        out = torch.nn.functional.batch_norm(
            tx, torch.tensor(rm.value), torch.tensor(rv.value), tw, tb, training=training
        )
        (out * torch.tensor(r)).sum().backward()
        for got, want in zip(f(xv), (tx.grad, tw.grad, tb.grad)):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-10)
