"""Elementwise ops: static types, values against NumPy, gradients against finite differences, dtype rules."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_value, away_from, evaluate, run

import symdl
import symdl.ops as O
from symdl import ShapeError, placeholder


def _softplus(x, beta=1.0, threshold=20.0):
    bx = x * beta
    return np.where(bx > threshold, x, np.log1p(np.exp(bx)) / beta)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# name -> (symbolic fn, numpy reference, sampler of valid float64 inputs, differentiable?)
UNARY = {
    "neg": (lambda x: -x, np.negative, lambda r, s: r.uniform(-2, 2, s), True),
    "neg_fn": (O.neg, np.negative, lambda r, s: r.uniform(-2, 2, s), True),
    "exp": (symdl.exp, np.exp, lambda r, s: r.uniform(-2, 2, s), True),
    "log": (symdl.log, np.log, lambda r, s: r.uniform(0.2, 3, s), True),
    "log1p": (O.log1p, np.log1p, lambda r, s: r.uniform(-0.8, 3, s), True),
    "sqrt": (symdl.sqrt, np.sqrt, lambda r, s: r.uniform(0.2, 3, s), True),
    "abs": (symdl.abs, np.abs, lambda r, s: away_from(r, s), True),
    "abs_op": (lambda x: abs(x), np.abs, lambda r, s: away_from(r, s), True),
    "sign": (O.sign, np.sign, lambda r, s: away_from(r, s), False),
    "square": (symdl.square, np.square, lambda r, s: r.uniform(-2, 2, s), True),
    "relu": (symdl.relu, lambda x: np.maximum(x, 0), lambda r, s: away_from(r, s), True),
    "leaky_relu": (
        lambda x: symdl.leaky_relu(x, 0.1),
        lambda x: np.where(x > 0, x, 0.1 * x),
        lambda r, s: away_from(r, s),
        True,
    ),
    "leaky_relu_default": (
        symdl.leaky_relu,
        lambda x: np.where(x > 0, x, 0.01 * x),
        lambda r, s: away_from(r, s),
        True,
    ),
    "elu": (
        lambda x: symdl.elu(x, alpha=0.7),
        lambda x: np.where(x > 0, x, 0.7 * np.expm1(x)),
        lambda r, s: away_from(r, s),
        True,
    ),
    "sigmoid": (symdl.sigmoid, _sigmoid, lambda r, s: r.uniform(-4, 4, s), True),
    "tanh": (symdl.tanh, np.tanh, lambda r, s: r.uniform(-2, 2, s), True),
    "softplus": (symdl.softplus, _softplus, lambda r, s: r.uniform(-4, 4, s), True),
    "softplus_beta": (
        lambda x: symdl.softplus(x, beta=2.0, threshold=3.0),
        lambda x: _softplus(x, 2.0, 3.0),
        lambda r, s: away_from(r, s, points=(1.5,), low=-3, high=4),
        True,
    ),
    "clip": (
        lambda x: symdl.clip(x, -0.5, 0.8),
        lambda x: np.clip(x, -0.5, 0.8),
        lambda r, s: away_from(r, s, points=(-0.5, 0.8)),
        True,
    ),
    "clip_min": (
        lambda x: symdl.clip(x, min=0.3),
        lambda x: np.maximum(x, 0.3),
        lambda r, s: away_from(r, s, points=(0.3,)),
        True,
    ),
    "clip_max": (
        lambda x: symdl.clip(x, max=0.3),
        lambda x: np.minimum(x, 0.3),
        lambda r, s: away_from(r, s, points=(0.3,)),
        True,
    ),
    "pow_const": (lambda x: x**3, lambda x: x**3, lambda r, s: r.uniform(-2, 2, s), True),
    "pow_half": (lambda x: x**0.5, np.sqrt, lambda r, s: r.uniform(0.2, 3, s), True),
    "pow_square": (lambda x: x**2, np.square, lambda r, s: r.uniform(-2, 2, s), True),
    "rpow": (lambda x: 2.0**x, lambda x: 2.0**x, lambda r, s: r.uniform(-2, 2, s), True),
    "scalar_arith": (
        lambda x: (3.0 - x) / 2.0 + 1 * x - 0.5 / (x + 3.0),
        lambda x: (3.0 - x) / 2.0 + x - 0.5 / (x + 3.0),
        lambda r, s: r.uniform(-2, 2, s),
        True,
    ),
    "stop_gradient": (O.stop_gradient, lambda x: x, lambda r, s: r.uniform(-2, 2, s), False),
}

SHAPES = [(), (1,), (5,), (2, 3), (3, 1, 2)]


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", SHAPES)
def test_unary_float64_values(name, shape):
    fn, ref, sample, _ = UNARY[name]
    x = sample(np.random.default_rng(1), shape)
    out, v = evaluate(fn, x)
    assert out.dtype == np.float64 and out.shape == shape
    assert_value(out, v, ref(x))


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_float32_values(name):
    fn, ref, sample, _ = UNARY[name]
    x = sample(np.random.default_rng(2), (4, 3)).astype(np.float32)
    out, v = evaluate(fn, x)
    assert out.dtype == np.float32 and v.dtype == np.float32  # Python scalars do not widen float32
    assert_value(out, v, ref(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(k for k, v in UNARY.items() if v[3]))
@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_unary_grad(name, shape):
    fn, _, sample, _ = UNARY[name]
    x = sample(np.random.default_rng(3), shape)
    res = symdl.check_grad(fn, [x])
    assert res.checked == max(x.size, 1)


def test_unary_none_dims():
    x = placeholder((None, 3), name="x")
    for fn in (symdl.exp, symdl.tanh, symdl.relu, lambda t: symdl.clip(t, 0, 1), O.stop_gradient):
        y = fn(x)
        assert y.shape == (None, 3) and y.dtype == np.float32


# ------------------------------------------------------------------------------------------------
# Binary ops with broadcasting
# ------------------------------------------------------------------------------------------------

BINARY = {
    "add": (symdl.add, np.add, (-2, 2)),
    "add_op": (lambda a, b: a + b, np.add, (-2, 2)),
    "sub": (symdl.sub, np.subtract, (-2, 2)),
    "sub_op": (lambda a, b: a - b, np.subtract, (-2, 2)),
    "mul": (symdl.mul, np.multiply, (-2, 2)),
    "mul_op": (lambda a, b: a * b, np.multiply, (-2, 2)),
    "div": (symdl.div, np.divide, (0.5, 2)),
    "div_op": (lambda a, b: a / b, np.divide, (0.5, 2)),
    "pow": (symdl.pow, np.power, (0.5, 2)),
    "pow_op": (lambda a, b: a**b, np.power, (0.5, 2)),
    "maximum": (symdl.maximum, np.maximum, (-2, 2)),
    "minimum": (symdl.minimum, np.minimum, (-2, 2)),
    "where_gt": (lambda a, b: symdl.where(a > b, a * b, a - b), lambda a, b: np.where(a > b, a * b, a - b), (-2, 2)),
    "clip_tensor_bounds": (lambda a, b: symdl.clip(a, min=b), np.maximum, (-2, 2)),
}

BCAST = [((3, 4), (3, 4)), ((2, 1, 4), (3, 1)), ((4,), (2, 3, 4)), ((1,), (2, 1)), ((), (2, 3)), ((2, 3), ())]


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("sa,sb", BCAST)
def test_binary_values_and_grads(name, sa, sb):
    fn, ref, (lo, hi) = BINARY[name]
    rng = np.random.default_rng(4)
    a, b = rng.uniform(lo, hi, sa), rng.uniform(lo, hi, sb)
    out, v = evaluate(fn, a, b)
    assert out.shape == np.broadcast_shapes(sa, sb)
    assert_value(out, v, ref(a, b))
    symdl.check_grad(fn, [a, b])
    # float32 forward
    out32, v32 = evaluate(fn, a.astype(np.float32), b.astype(np.float32))
    assert v32.dtype == np.float32
    np.testing.assert_allclose(
        v32, ref(a.astype(np.float32).astype(np.float64), b.astype(np.float32)), rtol=2e-6, atol=1e-6
    )


def test_binary_static_shapes_with_none():
    a = placeholder((None, 1, 4))
    b = placeholder((3, 1))
    assert (a + b).shape == (None, 3, 4)
    c = placeholder((None, 4))
    assert (a * c).shape == (None, None, 4)
    assert (placeholder((None,)) - placeholder((5,))).shape == (5,)
    assert (placeholder((None,)) - placeholder((1,))).shape == (None,)


def test_binary_none_batch_runtime():
    a = placeholder((None, 3), name="a")
    b = placeholder((3,), name="b")
    f = symdl.compile([a, b], [a * b, symdl.grad((a * b).sum(), b)])
    for n in (0, 1, 5):
        x = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
        y = np.array([1, 2, 3], np.float32)
        out, gb = f(x, y)
        np.testing.assert_array_equal(out, x * y)
        np.testing.assert_array_equal(gb, x.sum(0))


def test_shape_error_add():
    with pytest.raises(ShapeError):
        placeholder((2, 3)) + placeholder((4,))


@pytest.mark.parametrize(
    "fn,da,db",
    [
        (symdl.maximum, [1.0, 0.5, 0.0], [0.0, 0.5, 1.0]),
        (symdl.minimum, [0.0, 0.5, 1.0], [1.0, 0.5, 0.0]),
    ],
)
def test_maximum_minimum_tie_split(fn, da, db):
    a, b = placeholder((3,), "float64"), placeholder((3,), "float64")
    ga, gb = symdl.grad(fn(a, b).sum(), [a, b])
    got = run([a, b], [ga, gb], np.array([2.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(got[0], da)
    np.testing.assert_array_equal(got[1], db)


def test_kink_gradients_match_torch():
    x = placeholder((5,), "float64", name="x")
    xs = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    cases = {
        "relu": (symdl.relu, [0, 0, 0, 1, 1]),
        "clip": (lambda t: symdl.clip(t, -0.5, 0.5), [0, 1, 1, 1, 0]),  # inclusive at the bounds
        "abs": (symdl.abs, [-1, -1, 0, 1, 1]),
        "leaky_relu": (lambda t: symdl.leaky_relu(t, 0.2), [0.2, 0.2, 0.2, 1, 1]),
        "elu": (lambda t: symdl.elu(t, 0.5), [0.5 * np.exp(-1), 0.5 * np.exp(-0.5), 0.5, 1, 1]),
        "sign": (lambda t: O.sign(t) * 0 + t * 0, [0, 0, 0, 0, 0]),
    }
    for name, (fn, expected) in cases.items():
        (g,) = run([x], [symdl.grad(fn(x).sum(), x)], xs)
        np.testing.assert_allclose(g, expected, rtol=1e-12, err_msg=name)


def test_softplus_threshold_and_beta():
    x = placeholder((4,), "float64")
    xs = np.array([-1.0, 0.25, 1.0, 30.0])
    y = symdl.softplus(x, beta=2.0, threshold=1.0)
    g = symdl.grad(y.sum(), x)
    v, gv = run([x], [y, g], xs)
    # torch: x where beta*x > threshold, else log1p(exp(beta*x))/beta
    np.testing.assert_allclose(v, [np.log1p(np.exp(-2.0)) / 2, np.log1p(np.exp(0.5)) / 2, 1.0, 30.0], rtol=1e-12)
    np.testing.assert_allclose(gv, [_sigmoid(-2.0), _sigmoid(0.5), 1.0, 1.0], rtol=1e-12)
    big = run([x], [symdl.softplus(x)], np.array([-800.0, 800.0, 0.0, 19.0]))[0]
    np.testing.assert_allclose(big, [0.0, 800.0, np.log(2.0), np.log1p(np.exp(19.0))], rtol=1e-12)


def test_sigmoid_is_stable_for_large_inputs():
    _, v = evaluate(symdl.sigmoid, np.array([-1000.0, 1000.0, 0.0], np.float32))
    np.testing.assert_array_equal(v, np.array([0.0, 1.0, 0.5], np.float32))


# ------------------------------------------------------------------------------------------------
# Comparisons, logic, where, cast, fill
# ------------------------------------------------------------------------------------------------

COMPARE = {
    "less": (O.less, np.less, lambda a, b: a < b),
    "less_equal": (O.less_equal, np.less_equal, lambda a, b: a <= b),
    "greater": (O.greater, np.greater, lambda a, b: a > b),
    "greater_equal": (O.greater_equal, np.greater_equal, lambda a, b: a >= b),
    "equal": (O.equal, np.equal, lambda a, b: a == b),
    "not_equal": (O.not_equal, np.not_equal, lambda a, b: a != b),
}


@pytest.mark.parametrize("name", sorted(COMPARE))
def test_comparisons(name):
    fn, ref, op = COMPARE[name]
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    b = np.array([2.0, 2.0, 2.0], np.float32)
    for f in (fn, op):
        out, v = evaluate(f, a, b)
        assert out.dtype == np.bool_ and out.shape == (2, 3)
        assert_value(out, v, ref(a, b))
    # against a Python scalar, and an int tensor against a float scalar (promoted)
    out, v = evaluate(lambda t: op(t, 2.0), a)
    assert_value(out, v, ref(a, 2.0))
    out, v = evaluate(lambda t: op(t, 1.5), np.array([1, 2], np.int32))
    assert_value(out, v, ref(np.array([1, 2]), 1.5))


def test_logical_ops():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    for fn, ref in ((O.logical_and, np.logical_and), (O.logical_or, np.logical_or)):
        out, v = evaluate(fn, a, b)
        assert_value(out, v, ref(a, b))
    out, v = evaluate(O.logical_not, a)
    assert_value(out, v, ~a)
    # non-bool operands are cast to bool (nonzero is true)
    out, v = evaluate(O.logical_and, np.array([0.0, 2.0, 3.0]), np.array([1, 0, 5], np.int64))
    assert_value(out, v, [False, False, True])


def test_comparison_gradient_is_disconnected():
    x = placeholder((3,), "float64", name="x")
    y = symdl.where(x > 0, x * 3.0, -x)
    (g,) = run([x], [symdl.grad(y.sum(), x)], np.array([-1.0, 2.0, 0.0]))
    np.testing.assert_array_equal(g, [-1.0, 3.0, -1.0])


def test_where_broadcast_values_grads():
    rng = np.random.default_rng(5)
    c = rng.uniform(size=(3, 1)) > 0.5
    a, b = rng.normal(size=(4,)), rng.normal(size=(3, 4))
    out, v = evaluate(symdl.where, c, a, b)
    assert_value(out, v, np.where(c, a, b))
    symdl.check_grad(lambda c_, a_, b_: symdl.where(c_, a_, b_), [c, a, b])
    # scalar branches and a non-bool condition (cast to bool)
    out, v = evaluate(lambda t: symdl.where(t, 1.0, t * 2), np.array([0.0, 3.0]))
    assert_value(out, v, [0.0, 1.0])
    with pytest.raises(ShapeError):
        symdl.where(placeholder((2,), "bool"), placeholder((3,)), placeholder((3,)))


@pytest.mark.parametrize(
    "src,dst",
    [
        ("float32", "float64"),
        ("float64", "float32"),
        ("float32", "int32"),
        ("int64", "float32"),
        ("bool", "float32"),
        ("float32", "bool"),
        ("int32", "int64"),
        ("float64", "uint8"),
    ],
)
def test_cast(src, dst):
    x = (np.array([[-1.7, 0.0, 2.5], [3.9, 1.0, 0.2]]) * (1 if dst != "uint8" else -1) ** 0).astype(src)
    if dst == "uint8":
        x = np.abs(x)
    out, v = evaluate(lambda t: symdl.cast(t, dst), x)
    assert out.dtype == np.dtype(dst)
    assert_value(out, v, x.astype(dst))
    out, v = evaluate(lambda t: t.astype(dst), x)
    assert_value(out, v, x.astype(dst))


def test_cast_same_dtype_is_identity_and_grad():
    x = placeholder((3,), name="x")
    assert symdl.cast(x, "float32") is x
    x64 = placeholder((2,), "float64")
    g = symdl.grad(symdl.cast(x64, "float32").sum(), x64)
    assert g.dtype == np.float64
    np.testing.assert_array_equal(run([x64], [g], np.array([1.0, 2.0]))[0], [1.0, 1.0])


def test_fill_like():
    x = placeholder((None, 3), name="x")
    z, o = O.zeros_like(x), O.ones_like(x, dtype="int32")
    f7 = O.full_like(x, 7.5)
    assert z.shape == (None, 3) and z.dtype == np.float32 and o.dtype == np.int32
    for n in (0, 1, 4):
        vz, vo, vf = run([x], [z, o, f7], np.ones((n, 3), np.float32))
        assert vz.shape == (n, 3) and vz.dtype == np.float32 and not vz.any()
        assert vo.dtype == np.int32 and (vo == 1).all() and vo.shape == (n, 3)
        assert (vf == 7.5).all()


def test_stop_gradient_blocks():
    x = placeholder((3,), "float64", name="x")
    y = (x * O.stop_gradient(x)).sum()
    xs = np.array([1.0, 2.0, 3.0])
    (g,) = run([x], [symdl.grad(y, x)], xs)
    np.testing.assert_array_equal(g, xs)  # only the un-stopped factor contributes


# ------------------------------------------------------------------------------------------------
# Dtype rules
# ------------------------------------------------------------------------------------------------


def test_dtype_rules():
    f32, f64 = placeholder((2,), "float32"), placeholder((2,), "float64")
    i32, i64 = placeholder((2,), "int32"), placeholder((2,), "int64")
    b = placeholder((2,), "bool")
    assert (f32 * 2.0).dtype == np.float32  # weak Python scalars
    assert (2.0 * f32).dtype == np.float32
    assert (f32 + 1).dtype == np.float32
    assert (f32 + np.float64(1.5)).dtype == np.float32
    assert (f32 + f64).dtype == np.float64
    assert (f64 - f32).dtype == np.float64
    assert (i32 / i32).dtype == np.float32  # true division of ints
    assert (i32 / 2).dtype == np.float32
    assert (i32 * 0.5).dtype == np.float32
    assert (i32 * 2).dtype == np.int32
    assert (i32 + i64).dtype == np.int64
    assert (i32 + f64).dtype == np.float64
    assert (b + 1).dtype == np.int64
    assert O.logical_and(b, True).dtype == np.bool_
    assert symdl.exp(i32).dtype == np.float32
    assert symdl.maximum(f32, 0).dtype == np.float32
    assert symdl.where(b, f32, 0.0).dtype == np.float32


def test_dtype_values():
    i = np.array([1, 2, 7], np.int32)
    out, v = evaluate(lambda t: t / t[1:2], i)  # int / int -> float32 true division
    assert_value(out, v, np.array([0.5, 1.0, 3.5], np.float32))
    out, v = evaluate(lambda t: t * 0.5, i)
    assert_value(out, v, np.array([0.5, 1.0, 3.5], np.float32))
    out, v = evaluate(lambda a, b: a + b, np.float32([1.5, 2]), np.float64([0.25, 1e-10]))
    assert v.dtype == np.float64
    assert_value(out, v, np.float64([1.75, 2 + 1e-10]))


def test_no_implicit_casts_in_ops():
    # every elementwise node has operands of one dtype: promotions are explicit cast nodes
    y = placeholder((2,), "float32") + placeholder((2,), "float64")
    assert y.inputs[0].op.name == "cast" and y.inputs[0].dtype == np.float64
    with pytest.raises(ShapeError, match="floating-point"):
        symdl.graph.apply(type(symdl.exp(placeholder((2,))).op)(), placeholder((2,), "int32"))
    with pytest.raises(ShapeError, match="one dtype"):
        symdl.graph.apply(type(y.op)(), placeholder((2,), "float32"), placeholder((2,), "float64"))


def test_clip_with_tensor_bounds_gradient_like_torch():
    x, lo, hi = (placeholder((5,), "float64", name=n) for n in ("x", "lo", "hi"))
    y = symdl.clip(x, lo, hi)
    gx, glo, ghi = symdl.grad((y * np.arange(1.0, 6.0)).sum(), [x, lo, hi])
    xs = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    v, vx, vlo, vhi = run([x, lo, hi], [y, gx, glo, ghi], xs, np.full(5, -1.0), np.full(5, 1.0))
    np.testing.assert_array_equal(v, np.clip(xs, -1, 1))
    np.testing.assert_array_equal(vx, [0, 2, 3, 4, 0])  # inclusive at the bounds, not split
    np.testing.assert_array_equal(vlo, [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(vhi, [0, 0, 0, 0, 5])
    _, nan = evaluate(lambda t: symdl.clip(t, symdl.constant(0.0), symdl.constant(1.0)), np.array([np.nan, 3.0]))
    assert np.isnan(nan[0]) and nan[1] == 1.0
