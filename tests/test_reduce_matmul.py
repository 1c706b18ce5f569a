"""Reductions (sum, mean, max, min, argmax, var) and matmul: types, values, gradients."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_value, evaluate, line_here, run

import symdl
from symdl import ShapeError, placeholder

AXES = [None, 0, -1, 1, (0, 2), (2, 0), (0, 1, 2), ()]


def _np_reduce(name, x, axis, keepdims):
    if name == "var0":
        return np.var(x, axis=axis, keepdims=keepdims, ddof=0)
    if name == "var1":
        return np.var(x, axis=axis, keepdims=keepdims, ddof=1)
    return getattr(np, {"sum": "sum", "mean": "mean", "max": "amax", "min": "amin"}[name])(
        x, axis=axis, keepdims=keepdims
    )


REDUCE = {
    "sum": lambda x, a, k: symdl.sum(x, axis=a, keepdims=k),
    "mean": lambda x, a, k: symdl.mean(x, axis=a, keepdims=k),
    "max": lambda x, a, k: symdl.max(x, axis=a, keepdims=k),
    "min": lambda x, a, k: symdl.min(x, axis=a, keepdims=k),
    "var0": lambda x, a, k: symdl.var(x, axis=a, keepdims=k, correction=0),
    "var1": lambda x, a, k: symdl.var(x, axis=a, keepdims=k),
}


# variance over no axis is not meaningful, so var is not paired with axis=()
REDUCE_CASES = [(n, a) for n in sorted(REDUCE) for a in AXES if not (n.startswith("var") and a == ())]


@pytest.mark.parametrize("name,axis", REDUCE_CASES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduce_values_and_grads(name, axis, keepdims):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(3, 4, 2))
    fn = REDUCE[name]
    out, v = evaluate(lambda t: fn(t, axis, keepdims), x)
    np_axis = axis if axis != () else ()
    expected = x if axis == () else _np_reduce(name, x, np_axis, keepdims)
    assert_value(out, v, expected, rtol=1e-12, atol=1e-13)
    symdl.check_grad(lambda t: fn(t, axis, keepdims), [x])
    # float32 forward
    out32, v32 = evaluate(lambda t: fn(t, axis, keepdims), x.astype(np.float32))
    assert v32.dtype == np.float32
    np.testing.assert_allclose(v32, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "var1"])
def test_reduce_methods_and_size1_dims(name):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1, 5, 1))
    method = {"sum": "sum", "mean": "mean", "max": "max", "min": "min", "var1": "var"}[name]
    out, v = evaluate(lambda t: getattr(t, method)(axis=1, keepdims=True), x)
    assert_value(out, v, _np_reduce(name, x, 1, True), atol=1e-14)
    symdl.check_grad(lambda t: getattr(t, method)(axis=(0, 1)), [x])


def test_reduce_static_shapes_with_none():
    x = placeholder((None, 3, 4), name="x")
    assert symdl.sum(x, axis=1).shape == (None, 4)
    assert symdl.mean(x, axis=0).shape == (3, 4)
    assert symdl.max(x, axis=(0, 2), keepdims=True).shape == (1, 3, 1)
    assert symdl.var(x, axis=-1).shape == (None, 3)
    assert symdl.argmax(x, axis=2).shape == (None, 3)
    assert symdl.argmax(x).shape == ()
    assert symdl.sum(x).shape == ()


def test_mean_var_none_batch_runtime():
    x = placeholder((None, 3), "float64", name="x")
    m, v0, v1 = symdl.mean(x, axis=0), symdl.var(x, axis=0, correction=0), symdl.var(x, axis=0)
    gm = symdl.grad(m.sum(), x)
    f = symdl.compile([x], [m, v0, v1, gm, symdl.mean(x)])
    rng = np.random.default_rng(0)
    for n in (2, 7):
        xs = rng.normal(size=(n, 3))
        om, o0, o1, og, oall = f(xs)
        np.testing.assert_allclose(om, xs.mean(0), rtol=1e-12)
        np.testing.assert_allclose(o0, xs.var(0), rtol=1e-12)
        np.testing.assert_allclose(o1, xs.var(0, ddof=1), rtol=1e-12)
        np.testing.assert_allclose(og, np.full((n, 3), 1.0 / n), rtol=1e-12)
        np.testing.assert_allclose(oall, xs.mean(), rtol=1e-12)
    assert f(np.zeros((0, 3)))[0].shape == (3,)


def test_var_correction_matches_torch_defaults():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    _, v = evaluate(symdl.var, x)
    assert v == pytest.approx(np.var(x, ddof=1), rel=1e-14)  # torch.var default: correction=1
    _, v = evaluate(lambda t: symdl.var(t, unbiased=False), x)
    assert v == pytest.approx(np.var(x), rel=1e-14)
    _, v = evaluate(lambda t: t.var(correction=0), x)
    assert v == pytest.approx(np.var(x), rel=1e-14)
    _, v = evaluate(lambda t: symdl.var(t, correction=2), x)
    assert v == pytest.approx(np.var(x, ddof=2), rel=1e-14)
    symdl.check_grad(lambda t: symdl.var(t, axis=0), [np.random.default_rng(1).normal(size=(4, 3))])


def test_mean_of_ints_is_float32():
    out, v = evaluate(symdl.mean, np.array([1, 2, 4], np.int32))
    assert out.dtype == np.float32
    assert_value(out, v, np.float32(7 / 3))


def test_sum_dtypes():
    out, v = evaluate(symdl.sum, np.array([True, True, False, True]))
    assert out.dtype == np.int64 and v == 3  # like torch.sum: bools count
    out, v = evaluate(lambda t: t.sum(axis=0), np.array([[1, 2], [3, 4]], np.int32))
    assert out.dtype == np.int64
    assert_value(out, v, [4, 6])


@pytest.mark.parametrize(
    "fn,x,expected",
    [
        (symdl.max, [1.0, 3.0, 3.0, 2.0], [0, 0.5, 0.5, 0]),
        (symdl.min, [1.0, 3.0, 1.0, 1.0], [1 / 3, 0, 1 / 3, 1 / 3]),
        (lambda t: symdl.max(t) * 2, [5.0, 5.0], [1.0, 1.0]),
    ],
)
def test_max_min_gradient_split_among_ties(fn, x, expected):
    xp = placeholder((len(x),), "float64")
    (g,) = run([xp], [symdl.grad(fn(xp), xp)], np.array(x))
    np.testing.assert_allclose(g, expected, rtol=1e-15)


def test_max_ties_along_axis_keepdims():
    x = np.array([[1.0, 4.0, 4.0], [2.0, 2.0, 2.0]])
    xp = placeholder((2, 3), "float64")
    for keepdims in (False, True):
        y = symdl.max(xp, axis=1, keepdims=keepdims)
        w = np.array([1.0, 3.0]).reshape((2, 1) if keepdims else (2,))
        (g,) = run([xp], [symdl.grad((y * w).sum(), xp)], x)
        np.testing.assert_allclose(g, [[0, 0.5, 0.5], [1, 1, 1]], rtol=1e-15)


def test_max_of_ints():
    out, v = evaluate(lambda t: symdl.max(t, axis=0), np.array([[1, 9], [5, 2]], np.int64))
    assert out.dtype == np.int64
    assert_value(out, v, [5, 9])


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), (-1, False), (None, True)])
def test_argmax(axis, keepdims):
    x = np.array([[1.0, 7.0, 7.0], [9.0, 2.0, 9.0]], np.float32)  # ties: first index wins
    out, v = evaluate(lambda t: symdl.argmax(t, axis=axis, keepdims=keepdims), x)
    assert out.dtype == np.int64
    assert_value(out, v, np.argmax(x, axis=axis, keepdims=keepdims))
    out, v = evaluate(lambda t: t.argmax(axis=axis, keepdims=keepdims), x)
    assert_value(out, v, np.argmax(x, axis=axis, keepdims=keepdims))


def test_reduce_axis_errors():
    x = placeholder((2, 3), name="x")
    for fn in (symdl.sum, symdl.mean, symdl.max, symdl.var):
        with pytest.raises(ShapeError, match="out of range"):
            fn(x, axis=2)
    with pytest.raises(ShapeError, match="repeated"):
        symdl.sum(x, axis=(0, -2))
    with pytest.raises(ShapeError):
        symdl.argmax(x, axis=-3)


def test_max_of_empty_raises_at_run_time():
    x = placeholder((None,), name="x")
    f = symdl.compile([x], [symdl.max(x)])
    assert f(np.array([1.0, 3.0], np.float32))[0] == 3.0
    with pytest.raises(symdl.OpRuntimeError, match="empty"):
        f(np.zeros((0,), np.float32))


# ------------------------------------------------------------------------------------------------
# matmul
# ------------------------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((1, 3, 4), (2, 4, 1)),
    ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
    ((1, 1), (1, 1)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul(sa, sb):
    rng = np.random.default_rng(12)
    a, b = rng.normal(size=sa), rng.normal(size=sb)
    for fn in (symdl.matmul, lambda x, y: x @ y):
        out, v = evaluate(fn, a, b)
        assert_value(out, v, np.matmul(a, b), rtol=1e-12, atol=1e-13)
    symdl.check_grad(symdl.matmul, [a, b])
    out, v = evaluate(symdl.matmul, a.astype(np.float32), b.astype(np.float32))
    np.testing.assert_allclose(v, np.matmul(a, b), rtol=1e-5, atol=1e-5)


def test_matmul_static_shapes_with_none():
    assert (placeholder((None, 4)) @ placeholder((4, 5))).shape == (None, 5)
    assert (placeholder((None, 3, 4)) @ placeholder((4,))).shape == (None, 3)
    assert (placeholder((4,)) @ placeholder((None, 4, 2))).shape == (None, 2)
    assert (placeholder((3, None)) @ placeholder((None, 2))).shape == (3, 2)
    assert (placeholder((7, 1, 3, 4)) @ placeholder((None, 4, 6))).shape == (7, None, 3, 6)
    assert (placeholder((4,), "float64") @ placeholder((4,), "float32")).dtype == np.float64


def test_matmul_grad_with_none_batch():
    x = placeholder((None, 3), "float64", name="x")
    w = placeholder((3, 2), "float64", name="w")
    gw = symdl.grad(symdl.sum(x @ w), w)
    f = symdl.compile([x, w], [gw])
    xs = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(f(xs, np.ones((3, 2)))[0], xs.sum(0)[:, None] * np.ones((1, 2)))
    w3 = placeholder((2, 3, 2), "float64", name="w3")
    x3 = placeholder((None, 1, 4, 3), "float64", name="x3")
    g3 = symdl.grad(symdl.sum(x3 @ w3), w3)
    assert g3.shape == (2, 3, 2)
    xs3 = np.random.default_rng(0).normal(size=(5, 1, 4, 3))
    (got,) = run([x3, w3], [g3], xs3, np.ones((2, 3, 2)))
    np.testing.assert_allclose(got, np.broadcast_to(xs3.sum((0, 1, 2))[:, None], (2, 3, 2)), rtol=1e-12)


def test_matmul_shape_errors_name_op_operands_and_line():
    a, b = placeholder((2, 3), name="a"), placeholder((4, 5), name="b")
    with pytest.raises(ShapeError) as ei:
        line = line_here() + 1
        a @ b
    msg = str(ei.value)
    assert "matmul" in msg and "(2, 3) float32" in msg and "(4, 5) float32" in msg
    assert f"test_reduce_matmul.py:{line}" in msg
    with pytest.raises(ShapeError, match="0-d"):
        symdl.matmul(placeholder(()), placeholder((2,)))
