"""Losses: values against closed forms / NumPy references (and PyTorch when installed), reductions, gradients
(first and second order), float32 stability for extreme logits, and build/run-time error reporting."""

from functools import partial

import numpy as np
import pytest

import symdl

REDUCTIONS = ["mean", "sum", "none"]


def run(fn, *arrays):
    phs = [symdl.placeholder(a.shape, a.dtype) for a in arrays]
    outs = fn(*phs)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    return symdl.compile(phs, outs)(*arrays)


def reduce_np(loss, reduction):
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def np_nll(logp, t, weight=None, ignore_index=-100, reduction="mean"):
    cax = 1 if logp.ndim >= 2 else 0
    keep = t != ignore_index
    safe = np.where(keep, t, 0)
    picked = np.squeeze(np.take_along_axis(logp, np.expand_dims(safe, cax), cax), cax)
    wt = (weight[safe] if weight is not None else np.ones_like(picked)) * keep
    loss = -picked * wt
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / wt.sum()


def np_cross_entropy(x, t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    cax = 1 if x.ndim >= 2 else 0
    logp = np_log_softmax(x, cax)
    c = x.shape[cax]
    wshape = [1] * x.ndim
    wshape[cax] = c
    wb = np.ones(wshape) if weight is None else weight.reshape(wshape)
    if np.issubdtype(t.dtype, np.floating):
        tt = t * (1 - label_smoothing) + label_smoothing / c
        per = -(logp * tt * wb).sum(axis=cax)
        if reduction == "mean":
            return per.sum() / (x.size / c)
        return reduce_np(per, reduction)
    nll = np_nll(logp, t, weight, ignore_index, reduction)
    keep = t != ignore_index
    smooth = np.where(keep, -(logp * wb).sum(axis=cax), 0.0)
    if reduction == "mean":
        wt = (weight[np.where(keep, t, 0)] if weight is not None else np.ones(t.shape)) * keep
        smooth = smooth.sum() / wt.sum()
    else:
        smooth = reduce_np(smooth, reduction)
    return (1 - label_smoothing) * nll + label_smoothing / c * smooth


# ----------------------------------------------------------------------------------------------------
# regression losses
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5,), (3, 1, 4), ()])
def test_mse_l1_values_and_grads(rng, reduction, shape):
    x, y = rng.standard_normal(shape), rng.standard_normal(shape)
    mse, l1 = run(lambda a, b: [symdl.mse_loss(a, b, reduction), symdl.l1_loss(a, b, reduction=reduction)], x, y)
    np.testing.assert_allclose(mse, reduce_np((x - y) ** 2, reduction), rtol=1e-12)
    np.testing.assert_allclose(l1, reduce_np(np.abs(x - y), reduction), rtol=1e-12)
    symdl.check_grad(lambda a, b: symdl.mse_loss(a, b, reduction), [x, y])
    symdl.check_grad(lambda a, b: symdl.l1_loss(a, b, reduction), [x, y])


def test_regression_float32_none_dims_and_numpy_target(rng):
    x = symdl.placeholder((None, 3), "float32")
    target = rng.standard_normal((2, 3))  # float64 array: adopts the input's dtype
    loss = symdl.mse_loss(x, target)
    assert loss.dtype == np.float32 and loss.shape == ()
    xv = rng.standard_normal((2, 3)).astype(np.float32)
    out = symdl.compile([x], [loss])(xv)[0]
    np.testing.assert_allclose(out, ((xv - target.astype(np.float32)) ** 2).mean(), rtol=1e-6)


def test_l1_grad_is_zero_where_equal():
    x = np.array([1.0, 2.0, 3.0])
    g = run(lambda a, b: symdl.grad(symdl.l1_loss(a, b, "sum"), a), x, np.array([1.0, 0.0, 5.0]))[0]
    np.testing.assert_array_equal(g, [0.0, 1.0, -1.0])


# ----------------------------------------------------------------------------------------------------
# cross_entropy / nll_loss
# ----------------------------------------------------------------------------------------------------

CE_CASES = [
    # x shape, weight?, ignore_index, label_smoothing
    ((6, 4), False, -100, 0.0),
    ((6, 4), True, -100, 0.0),
    ((6, 4), True, 2, 0.1),
    ((3, 5, 2, 2), False, -1, 0.0),
    ((3, 5, 2), True, -1, 0.25),
    ((4,), False, -100, 0.0),
    ((4,), True, -100, 0.3),
    ((1, 1), False, -100, 0.0),
]


def _labels(rng, xshape, ignore_index):
    cax = 1 if len(xshape) >= 2 else 0
    c = xshape[cax]
    t = rng.integers(0, c, xshape[:cax] + xshape[cax + 1 :])
    if t.ndim and t.size > 2:
        t.reshape(-1)[1] = ignore_index
    return t


@pytest.mark.parametrize("xshape,use_weight,ignore_index,ls", CE_CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_class_targets(rng, xshape, use_weight, ignore_index, ls, reduction):
    x = rng.standard_normal(xshape) * 2
    t = _labels(rng, xshape, ignore_index)
    cax = 1 if len(xshape) >= 2 else 0
    w = rng.random(xshape[cax]) + 0.5 if use_weight else None
    kw = dict(weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=ls)
    out = run(lambda a, b: symdl.cross_entropy(a, b, **kw), x, t)[0]
    np.testing.assert_allclose(out, np_cross_entropy(x, t, **kw), rtol=1e-12, atol=1e-14)
    symdl.check_grad(lambda a, b: symdl.cross_entropy(a, b, **kw), [x, t])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_cross_entropy_probability_targets(rng, reduction, ls):
    x = rng.standard_normal((3, 4, 2))
    p = rng.random((3, 4, 2))
    p /= p.sum(axis=1, keepdims=True)
    w = rng.random(4) + 0.5
    for weight in (None, w):
        kw = dict(weight=weight, reduction=reduction, label_smoothing=ls)
        fn = partial(symdl.cross_entropy, **kw)
        out = run(fn, x, p)[0]
        np.testing.assert_allclose(out, np_cross_entropy(x, p, **kw), rtol=1e-12)
        symdl.check_grad(fn, [x, p])


def test_cross_entropy_closed_forms():
    x = np.zeros((2, 4))
    assert np.isclose(run(lambda a, b: symdl.cross_entropy(a, b), x, np.array([0, 3]))[0], np.log(4))
    x = np.array([[2.0, 0.0]])
    expected = np.log1p(np.exp(-2.0))
    assert np.isclose(run(lambda a, b: symdl.cross_entropy(a, b), x, np.array([0]))[0], expected)
    # gradient of the mean loss: (softmax - one_hot) / N
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    g = run(lambda a, b: symdl.grad(symdl.cross_entropy(a, b), a), x, np.array([2, 0]))[0]
    sm = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    np.testing.assert_allclose(g, (sm - np.eye(3)[[2, 0]]) / 2, rtol=1e-12)


def test_nll_loss_values(rng):
    logp = np_log_softmax(rng.standard_normal((5, 3)), 1)
    t = np.array([0, 2, -100, 1, 2])
    w = np.array([0.5, 2.0, 1.0])
    for reduction in REDUCTIONS:
        for weight in (None, w):
            out = run(partial(symdl.nll_loss, weight=weight, reduction=reduction), logp, t)[0]
            np.testing.assert_allclose(out, np_nll(logp, t, weight, -100, reduction), rtol=1e-12)
    # weighted mean: sum(-w[t] logp[t]) / sum(w[t]) over non-ignored targets
    out = run(lambda a, b: symdl.nll_loss(a, b, weight=w), logp, t)[0]
    keep = t != -100
    manual = -sum(w[t[i]] * logp[i, t[i]] for i in range(5) if keep[i]) / w[t[keep]].sum()
    np.testing.assert_allclose(out, manual, rtol=1e-12)
    symdl.check_grad(lambda a, b: symdl.nll_loss(a, b, weight=w), [logp, t])


def test_nll_loss_all_ignored_is_nan_like_torch():
    out = run(lambda a, b: symdl.nll_loss(a, b), np.zeros((2, 3)), np.array([-100, -100]))[0]
    assert np.isnan(out)
    out = run(lambda a, b: symdl.nll_loss(a, b, reduction="sum"), np.zeros((2, 3)), np.array([-100, -100]))[0]
    assert out == 0.0


def test_cross_entropy_weight_gradient(rng):
    x = rng.standard_normal((5, 3))
    t = np.array([0, 2, 2, 1, 0])
    w = rng.random(3) + 0.5
    symdl.check_grad(lambda ww, a: symdl.cross_entropy(a, t, weight=ww, label_smoothing=0.1), [w, x])


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"weight": np.array([0.5, 1.0, 2.0, 1.5]), "ignore_index": 1},
        {"weight": np.array([0.5, 1.0, 2.0, 1.5]), "label_smoothing": 0.1, "ignore_index": 1},
    ],
)
def test_cross_entropy_second_order(rng, kw):
    x = rng.standard_normal((3, 4))
    t = np.array([0, 1, 3])
    symdl.check_grad(lambda a, b: symdl.grad(symdl.cross_entropy(a, b, **kw), a), [x, t])
    xs = rng.standard_normal((2, 4, 3))
    ts = rng.integers(0, 4, (2, 3))
    symdl.check_grad(lambda a, b: symdl.grad(symdl.cross_entropy(a, b, **kw), a), [xs, ts])


def test_cross_entropy_second_order_probability_targets(rng):
    x = rng.standard_normal((3, 4))
    p = rng.dirichlet(np.ones(4), 3)
    symdl.check_grad(lambda a, b: symdl.grad(symdl.cross_entropy(a, b, label_smoothing=0.1), a), [x, p])


def test_cross_entropy_float32_extreme_logits():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [-1e4, -1e4, -1e4]], np.float32)
    t = np.array([1, 1, 2])
    for ls in (0.0, 0.1):
        loss, g = run(
            lambda a, b, ls=ls: [
                symdl.cross_entropy(a, b, label_smoothing=ls),
                symdl.grad(symdl.cross_entropy(a, b, label_smoothing=ls), a),
            ],
            x,
            t,
        )
        assert loss.dtype == np.float32 and np.isfinite(loss) and np.all(np.isfinite(g))
        np.testing.assert_allclose(loss, np_cross_entropy(x.astype(np.float64), t, label_smoothing=ls), rtol=1e-6)
    g = run(lambda a, b: symdl.grad(symdl.cross_entropy(a, b, reduction="sum"), a), x, t)[0]
    np.testing.assert_allclose(g, [[1, -1, 0], [0, 0, 0], [1 / 3, 1 / 3, -2 / 3]], atol=1e-6)
    # second order stays finite too
    h = run(lambda a, b: symdl.grad((symdl.grad(symdl.cross_entropy(a, b), a) ** 2).sum(), a), x, t)[0]
    assert np.all(np.isfinite(h))


def test_cross_entropy_class_targets_use_the_fused_op():
    """Class-index targets without smoothing build one softmax_cross_entropy op (no log-probability buffer);
    its adjoint is one op too, and the values equal the log_softmax + nll_loss composition."""
    x = symdl.placeholder((None, 5, 3), "float64")
    t = symdl.placeholder((None, 3), "int64")
    loss = symdl.cross_entropy(x, t, ignore_index=2)
    (gx,) = symdl.grad(loss, [x])
    ops = {n.op.name for n in symdl.graph.toposort([loss, gx])}
    assert "softmax_cross_entropy" in ops and "softmax_cross_entropy_grad" in ops
    assert "log_softmax" not in ops and "take_class" not in ops
    composed = symdl.nll_loss(symdl.log_softmax(x, 1), t, ignore_index=2)
    (gc,) = symdl.grad(composed, [x])
    rng = np.random.default_rng(0)
    xs, ts = rng.standard_normal((4, 5, 3)) * 3, rng.integers(0, 5, (4, 3))
    out = symdl.compile([x, t], [loss, gx, composed, gc])(xs, ts)
    np.testing.assert_allclose(out[0], out[2], rtol=1e-12)
    np.testing.assert_allclose(out[1], out[3], rtol=1e-12, atol=1e-15)


def test_cross_entropy_bad_label_at_run_time_names_the_label():
    x = symdl.placeholder((None, 3))
    t = symdl.placeholder((None,), "int64")
    f = symdl.compile([x, t], [symdl.cross_entropy(x, t)])
    with pytest.raises(symdl.OpRuntimeError, match="label"):
        f(np.zeros((2, 3), np.float32), np.array([0, 3]))


def test_cross_entropy_float32_dtype_and_none_batch():
    x = symdl.placeholder((None, 5), "float32")
    t = symdl.placeholder((None,), "int64")
    loss = symdl.cross_entropy(x, t, weight=np.ones(5), label_smoothing=0.1)
    assert loss.dtype == np.float32
    f = symdl.compile([x, t], [loss])
    assert f(np.zeros((3, 5), np.float32), np.array([0, 1, 4]))[0].dtype == np.float32


# ----------------------------------------------------------------------------------------------------
# binary losses
# ----------------------------------------------------------------------------------------------------


def np_bce(p, y, w=None):
    loss = -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
    return loss if w is None else loss * w


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy(rng, reduction):
    p = rng.uniform(0.05, 0.95, (4, 3))
    y = rng.random((4, 3))
    w = rng.random(3) + 0.5
    for weight in (None, w):
        fn = partial(symdl.binary_cross_entropy, weight=weight, reduction=reduction)
        out = run(fn, p, y)[0]
        np.testing.assert_allclose(out, reduce_np(np_bce(p, y, weight), reduction), rtol=1e-12)
        symdl.check_grad(fn, [p, y])


def test_binary_cross_entropy_clamps_at_exact_zero_and_one():
    for dtype in ("float32", "float64"):
        p = np.array([0.0, 1.0, 0.0, 1.0, 0.5], dtype)
        y = np.array([1.0, 0.0, 0.0, 1.0, 1.0], dtype)
        loss, g = run(
            lambda a, b: [
                symdl.binary_cross_entropy(a, b, reduction="none"),
                symdl.grad(symdl.binary_cross_entropy(a, b), a),
            ],
            p,
            y,
        )
        np.testing.assert_allclose(loss, [100, 100, 0, 0, np.log(2)], rtol=1e-5)
        assert np.all(np.isfinite(g))


def test_binary_cross_entropy_rejects_non_probabilities():
    p = symdl.placeholder((3,), "float32")
    f = symdl.compile([p], [symdl.binary_cross_entropy(p, np.ones(3))])
    with pytest.raises(symdl.OpRuntimeError, match=r"\[0, 1\](.|\n)*test_losses\.py"):
        f(np.array([0.5, 1.5, 0.2], np.float32))


def np_bce_logits(x, y, w=None, pw=None):
    lw = 1.0 if pw is None else 1 + (pw - 1) * y
    loss = (1 - y) * x + lw * (np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0))
    return loss if w is None else loss * w


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits(rng, reduction):
    x = rng.standard_normal((5, 3)) * 3
    y = rng.random((5, 3))
    w = rng.random((5, 1)) + 0.5  # broadcasts over the last axis
    pw = rng.random(3) * 3
    for weight in (None, w):
        for pos_weight in (None, pw):
            kw = dict(weight=weight, reduction=reduction, pos_weight=pos_weight)
            fn = partial(symdl.binary_cross_entropy_with_logits, **kw)
            out = run(fn, x, y)[0]
            np.testing.assert_allclose(out, reduce_np(np_bce_logits(x, y, weight, pos_weight), reduction), rtol=1e-12)
            symdl.check_grad(fn, [x, y])


def test_bce_with_logits_gradient_at_zero_logits(rng):
    # zero-initialised logits: the gradient must be sigmoid(0) - y = 0.5 - y (no kink at 0)
    y = np.array([0.0, 1.0, 0.3])
    g = run(lambda a, b: symdl.grad(symdl.binary_cross_entropy_with_logits(a, b, reduction="sum"), a), np.zeros(3), y)[
        0
    ]
    np.testing.assert_allclose(g, 0.5 - y, rtol=1e-12)
    pw = np.array([2.0, 3.0, 0.5])
    g = run(
        lambda a, b: symdl.grad(symdl.binary_cross_entropy_with_logits(a, b, reduction="sum", pos_weight=pw), a),
        np.zeros(3),
        y,
    )[0]
    np.testing.assert_allclose(g, (1 - y) * 0.5 - pw * y * 0.5, rtol=1e-12)


def test_bce_with_logits_float32_extremes():
    x = np.array([1e4, -1e4, 1e4, -1e4, 0.0], np.float32)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0], np.float32)
    loss, g, h = run(
        lambda a, b: [
            symdl.binary_cross_entropy_with_logits(a, b, reduction="none", pos_weight=np.float32(2.0)),
            symdl.grad(symdl.binary_cross_entropy_with_logits(a, b, reduction="sum"), a),
            symdl.grad((symdl.grad(symdl.binary_cross_entropy_with_logits(a, b, reduction="sum"), a) ** 2).sum(), a),
        ],
        x,
        y,
    )
    np.testing.assert_allclose(loss, [0, 0, 1e4, 2e4, 2 * np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(g, [0, 0, 1, -1, -0.5], atol=1e-6)
    assert np.all(np.isfinite(h))


# ----------------------------------------------------------------------------------------------------
# kl_div
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", [*REDUCTIONS, "batchmean"])
def test_kl_div(rng, reduction):
    logq = np.log(rng.dirichlet(np.ones(4), 3))
    p = rng.dirichlet(np.ones(4), 3)
    p[0, 1] = 0.0  # 0 * log 0 == 0
    pointwise = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - logq), 0.0)
    expect = pointwise.sum() / 3 if reduction == "batchmean" else reduce_np(pointwise, reduction)
    out = run(lambda a, b: symdl.kl_div(a, b, reduction=reduction), logq, p)[0]
    np.testing.assert_allclose(out, expect, rtol=1e-12)
    logp = np.log(rng.dirichlet(np.ones(4), 3))
    pointwise = np.exp(logp) * (logp - logq)
    expect = pointwise.sum() / 3 if reduction == "batchmean" else reduce_np(pointwise, reduction)
    out = run(lambda a, b: symdl.kl_div(a, b, reduction=reduction, log_target=True), logq, logp)[0]
    np.testing.assert_allclose(out, expect, rtol=1e-12)
    symdl.check_grad(lambda a, b: symdl.kl_div(a, b, reduction=reduction, log_target=True), [logq, logp])
    p = rng.dirichlet(np.ones(4), 3)
    symdl.check_grad(lambda a, b: symdl.kl_div(a, b, reduction=reduction), [logq, p])


def test_kl_div_zero_target_gradient_is_finite():
    g = run(
        lambda a, b: symdl.grad(symdl.kl_div(a, b, "sum"), [a, b]), np.log(np.array([0.5, 0.5])), np.array([0.0, 1.0])
    )
    assert all(np.all(np.isfinite(v)) for v in g)


def test_kl_div_batchmean_with_none_batch():
    x = symdl.placeholder((None, 2), "float64")
    y = symdl.placeholder((None, 2), "float64")
    f = symdl.compile([x, y], [symdl.kl_div(x, y, reduction="batchmean")])
    q = np.log(np.full((4, 2), 0.5))
    p = np.tile([[0.25, 0.75]], (4, 1))
    np.testing.assert_allclose(f(q, p)[0], (p * (np.log(p) - q)).sum() / 4)


# ----------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------

ALL_LOSSES = [
    ("mse_loss", lambda a, b, **k: symdl.mse_loss(a, b, **k)),
    ("l1_loss", lambda a, b, **k: symdl.l1_loss(a, b, **k)),
    ("binary_cross_entropy", lambda a, b, **k: symdl.binary_cross_entropy(a, b, **k)),
    ("binary_cross_entropy_with_logits", lambda a, b, **k: symdl.binary_cross_entropy_with_logits(a, b, **k)),
    ("kl_div", lambda a, b, **k: symdl.kl_div(a, b, **k)),
    ("cross_entropy", lambda a, b, **k: symdl.cross_entropy(a, b, **k)),
]


@pytest.mark.parametrize("name,fn", ALL_LOSSES)
def test_shape_mismatch_names_loss_shapes_and_line(name, fn):
    x = symdl.placeholder((4, 3))
    y = symdl.placeholder((4, 2))
    with pytest.raises(symdl.ShapeError, match=rf"{name}:.*\(4, 3\).*\(4, 2\)(.|\n)*test_losses\.py"):
        fn(x, y)


@pytest.mark.parametrize("name,fn", ALL_LOSSES + [("nll_loss", lambda a, b, **k: symdl.nll_loss(a, b, **k))])
def test_bad_reduction(name, fn):
    x = symdl.placeholder((4, 3))
    with pytest.raises(ValueError, match=rf"{name}: reduction must be one of .*'avg'(.|\n)*test_losses\.py"):
        fn(x, symdl.placeholder((4, 3)), reduction="avg")
    if name != "kl_div":
        with pytest.raises(ValueError, match="batchmean"):
            fn(x, symdl.placeholder((4, 3)), reduction="batchmean")


def test_class_target_errors():
    x = symdl.placeholder((None, 10))
    with pytest.raises(symdl.ShapeError, match=r"nll_loss: expected a target of shape \(None,\)(.|\n)*test_losses"):
        symdl.nll_loss(x, symdl.placeholder((4, 2), "int64"))
    with pytest.raises(symdl.ShapeError, match=r"nll_loss.*integers"):
        symdl.nll_loss(x, symdl.placeholder((4,), "float32"))
    with pytest.raises(symdl.ShapeError, match=r"cross_entropy: weight must be a 1-d tensor of C = 10"):
        symdl.cross_entropy(x, symdl.placeholder((4,), "int64"), weight=np.ones(3))
    with pytest.raises(symdl.ShapeError, match=r"cross_entropy: the input must have a class axis"):
        symdl.cross_entropy(symdl.placeholder(()), symdl.placeholder((), "int64"))
    with pytest.raises(ValueError, match="label_smoothing"):
        symdl.cross_entropy(x, symdl.placeholder((4,), "int64"), label_smoothing=1.5)
    with pytest.raises(ValueError, match="ignore_index is not supported"):
        symdl.cross_entropy(x, symdl.placeholder((4, 10)), ignore_index=0)
    with pytest.raises(symdl.ShapeError, match="pos_weight"):
        symdl.binary_cross_entropy_with_logits(x, symdl.placeholder((4, 10)), pos_weight=np.ones(3))


def test_label_out_of_range_at_run_time():
    x = symdl.placeholder((None, 10))
    t = symdl.placeholder((None,), "int64")
    f = symdl.compile([x, t], [symdl.cross_entropy(x, t, weight=np.ones(10))])
    with pytest.raises(symdl.OpRuntimeError, match=r"label 12 is out of range for 10 classes(.|\n)*test_losses\.py"):
        f(np.zeros((3, 10), np.float32), np.array([1, 12, 3]))
    with pytest.raises(symdl.OpRuntimeError, match=r"label -1 is out of range for 10 classes"):
        f(np.zeros((3, 10), np.float32), np.array([1, -1, 3]))
    assert np.isfinite(f(np.zeros((3, 10), np.float32), np.array([1, -100, 9]))[0])


def test_gradient_wrt_labels_is_refused():
    x = symdl.placeholder((3, 4))
    t = symdl.placeholder((3,), "int64")
    with pytest.raises(symdl.GradientError, match=r"int64"):
        symdl.grad(symdl.cross_entropy(x, t), t)
    # a float path into the labels (through a cast) is reported as not differentiable
    s = symdl.placeholder((3,))
    labels = symdl.cast(s, "int64")
    with pytest.raises(symdl.GradientError, match=r"not differentiable"):
        symdl.grad(symdl.cross_entropy(x, labels), [x, s])


# ----------------------------------------------------------------------------------------------------
# against PyTorch (skipped without torch)
# ----------------------------------------------------------------------------------------------------


def _both(ours, theirs, arrays, grad_args):
    """Values and gradients (of sum(loss * r)) from symdl and torch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)

    def fn(*phs):
        loss = ours(*phs)
        r = rng.standard_normal(loss.shape) if loss.ndim else np.array(1.0)
        return [loss, *symdl.grad((loss * r).sum(), [phs[i] for i in grad_args])], r

    phs = [symdl.placeholder(a.shape, a.dtype) for a in arrays]
    outs, r = fn(*phs)
    got = symdl.compile(phs, outs)(*arrays)
    ts = [torch.tensor(a, requires_grad=i in grad_args) for i, a in enumerate(arrays)]
    tl = theirs(*ts)
    (tl * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(got[0], tl.detach().numpy(), rtol=1e-10, atol=1e-12)
    for g, i in zip(got[1:], grad_args):
        np.testing.assert_allclose(g, ts[i].grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("xshape,use_weight,ignore_index,ls", CE_CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_against_torch(rng, xshape, use_weight, ignore_index, ls, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal(xshape)
    t = _labels(rng, xshape, ignore_index)
    cax = 1 if len(xshape) >= 2 else 0
    w = rng.random(xshape[cax]) + 0.5 if use_weight else None
    kw = dict(ignore_index=ignore_index, reduction=reduction)
    _both(
        lambda a, b: symdl.cross_entropy(a, b, weight=w, label_smoothing=ls, **kw),
        lambda a, b: F.cross_entropy(a, b, weight=None if w is None else torch.tensor(w), label_smoothing=ls, **kw),
        [x, t],
        [0],
    )
    lp = np_log_softmax(x, cax)
    _both(
        lambda a, b: symdl.nll_loss(a, b, weight=w, **kw),
        lambda a, b: F.nll_loss(a, b, weight=None if w is None else torch.tensor(w), **kw),
        [lp, t],
        [0],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_probability_cross_entropy_against_torch(rng, reduction):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4, 2))
    p = rng.dirichlet(np.ones(4), (3, 2)).transpose(0, 2, 1).copy()
    w = rng.random(4) + 0.5
    _both(
        lambda a, b: symdl.cross_entropy(a, b, weight=w, reduction=reduction, label_smoothing=0.15),
        lambda a, b: torch.nn.functional.cross_entropy(
            a, b, weight=torch.tensor(w), reduction=reduction, label_smoothing=0.15
        ),
        [x, p],
        [0, 1],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_losses_against_torch(rng, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((5, 3)) * 3
    y = rng.random((5, 3))
    w = rng.random(3) + 0.5
    pw = rng.random(3) * 3
    p = rng.uniform(0.05, 0.95, (5, 3))
    _both(
        lambda a, b: symdl.binary_cross_entropy(a, b, weight=w, reduction=reduction),
        lambda a, b: F.binary_cross_entropy(a, b, weight=torch.tensor(w), reduction=reduction),
        [p, y],
        [0, 1],
    )
    _both(
        lambda a, b: symdl.binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=pw, reduction=reduction),
        lambda a, b: F.binary_cross_entropy_with_logits(
            a, b, weight=torch.tensor(w), pos_weight=torch.tensor(pw), reduction=reduction
        ),
        [x, y],
        [0, 1],
    )
    _both(
        lambda a, b: symdl.mse_loss(a, b, reduction), lambda a, b: F.mse_loss(a, b, reduction=reduction), [x, y], [0, 1]
    )
    _both(
        lambda a, b: symdl.l1_loss(a, b, reduction), lambda a, b: F.l1_loss(a, b, reduction=reduction), [x, y], [0, 1]
    )


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("reduction", [*REDUCTIONS, "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_against_torch(rng, reduction, log_target):
    torch = pytest.importorskip("torch")
    logq = np.log(rng.dirichlet(np.ones(4), 3))
    p = rng.dirichlet(np.ones(4), 3)
    target = np.log(p) if log_target else p
    _both(
        lambda a, b: symdl.kl_div(a, b, reduction=reduction, log_target=log_target),
        lambda a, b: torch.nn.functional.kl_div(a, b, reduction=reduction, log_target=log_target),
        [logq, target],
        [0, 1],
    )


def test_extreme_logits_against_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], np.float32)
    t = np.array([1, 1])
    loss, g = run(lambda a, b: [symdl.cross_entropy(a, b), symdl.grad(symdl.cross_entropy(a, b), a)], x, t)
    tx = torch.tensor(x, requires_grad=True)
    tl = F.cross_entropy(tx, torch.tensor(t))
    tl.backward()
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-6)
    np.testing.assert_allclose(g, tx.grad.numpy(), atol=1e-6)
    y = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], np.float32)
    loss, g = run(
        lambda a, b: [
            symdl.binary_cross_entropy_with_logits(a, b),
            symdl.grad(symdl.binary_cross_entropy_with_logits(a, b), a),
        ],
        x,
        y,
    )
    tx = torch.tensor(x, requires_grad=True)
    tl = F.binary_cross_entropy_with_logits(tx, torch.tensor(y))
    tl.backward()
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-6)
    np.testing.assert_allclose(g, tx.grad.numpy(), atol=1e-6)
