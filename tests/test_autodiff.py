"""Symbolic reverse-mode autodiff: higher order, HVP, broadcasting, errors, naming, hash-consing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import line_here, run

import symdl
import symdl.ops as O
from symdl import GradientError, parameter, placeholder

HERE = os.path.basename(__file__)


def test_second_and_third_order():
    x = placeholder((4,), "float64", name="x")
    y = (x**3).sum()
    g1 = symdl.grad(y, x)
    g2 = symdl.grad(g1.sum(), x)
    g3 = symdl.grad(g2.sum(), x)
    xs = np.array([-1.5, 0.5, 2.0, 3.0])
    v1, v2, v3 = run([x], [g1, g2, g3], xs)
    np.testing.assert_allclose(v1, 3 * xs**2, rtol=1e-14)
    np.testing.assert_allclose(v2, 6 * xs, rtol=1e-14)
    np.testing.assert_allclose(v3, 6 * np.ones(4), rtol=1e-14)


@pytest.mark.parametrize(
    "name,fn",
    [
        ("tanh", lambda x: symdl.tanh(x) * x),
        ("sigmoid_exp", lambda x: symdl.sigmoid(x) * symdl.exp(x * 0.3)),
        ("softplus", lambda x: symdl.softplus(x, beta=1.5) ** 2),
        ("log_sqrt", lambda x: symdl.log(x * x + 1.0) * symdl.sqrt(x * x + 2.0)),
        ("div_pow", lambda x: (x + 3.0) ** 1.5 / (x * x + 1.0)),
        (
            "reductions",
            lambda x: (
                symdl.mean(x, axis=0, keepdims=True) * symdl.var(x, axis=1, keepdims=True)
                + symdl.max(x * x, axis=1, keepdims=True)
            ),
        ),
        ("matmul", lambda x: (x @ x.T) @ x),
        ("shape_ops", lambda x: symdl.concat([x[::-1], symdl.pad(x, (1, 0))[:, :2]], axis=1).reshape(-1) ** 2),
    ],
)
def test_gradient_of_gradient_matches_finite_differences(name, fn):
    def g_of(x):
        return symdl.grad(fn(x).sum(), x)

    xs = np.random.default_rng(30).uniform(0.3, 1.5, size=(3, 3))
    symdl.check_grad(g_of, [xs])


def _mlp_loss(x, t, W1, b1, W2):
    h = symdl.tanh(x @ W1 + b1)
    return symdl.mean(symdl.square(h @ W2 - t))


def test_hessian_vector_product_of_mlp_matches_finite_differences():
    rng = np.random.default_rng(31)
    n = 6
    xs, ts = rng.normal(size=(n, 5)), rng.normal(size=(n, 3))
    W1v, b1v, W2v = rng.normal(size=(5, 4)) * 0.7, rng.normal(size=(4,)) * 0.2, rng.normal(size=(4, 3)) * 0.7
    vv = rng.normal(size=(5, 4))
    x, t = placeholder((None, 5), "float64", name="x"), placeholder((None, 3), "float64", name="t")
    W1, b1, W2 = (placeholder(s, "float64", name=nm) for s, nm in (((5, 4), "W1"), ((4,), "b1"), ((4, 3), "W2")))
    v = placeholder((5, 4), "float64", name="v")
    loss = _mlp_loss(x, t, W1, b1, W2)
    gW1 = symdl.grad(loss, W1)
    hvp = symdl.grad(symdl.sum(gW1 * v), W1)
    hvp_b1 = symdl.grad(symdl.sum(gW1 * v), b1)  # mixed second derivative d/db1 (v . dL/dW1)
    assert hvp.shape == (5, 4) and hvp_b1.shape == (4,)
    f = symdl.compile([x, t, W1, b1, W2, v], [hvp, hvp_b1])
    fg = symdl.compile([x, t, W1, b1, W2], [gW1, symdl.grad(loss, b1)])
    got, got_b1 = f(xs, ts, W1v, b1v, W2v, vv)
    eps = 1e-5
    gp, _ = fg(xs, ts, W1v + eps * vv, b1v, W2v)
    gm, _ = fg(xs, ts, W1v - eps * vv, b1v, W2v)
    np.testing.assert_allclose(got, (gp - gm) / (2 * eps), rtol=1e-6, atol=1e-9)
    _, gbp = fg(xs, ts, W1v + eps * vv, b1v, W2v)
    _, gbm = fg(xs, ts, W1v - eps * vv, b1v, W2v)
    np.testing.assert_allclose(got_b1, (gbp - gbm) / (2 * eps), rtol=1e-6, atol=1e-9)
    # the HVP is linear in v
    got2, _ = f(xs, ts, W1v, b1v, W2v, 3 * vv)
    np.testing.assert_allclose(got2, 3 * got, rtol=1e-12)


def test_gradient_with_parameters_in_float32():
    rng = np.random.default_rng(32)
    W1 = parameter(rng.normal(size=(5, 4)).astype(np.float32), name="W1")
    b1 = parameter(np.zeros(4, np.float32), name="b1")
    W2 = parameter(rng.normal(size=(4, 3)).astype(np.float32), name="W2")
    x, t = placeholder((None, 5), name="x"), placeholder((None, 3), name="t")
    loss = _mlp_loss(x, t, W1, b1, W2)
    grads = symdl.grad(loss, [W1, b1, W2])
    assert [g.shape for g in grads] == [(5, 4), (4,), (4, 3)]
    assert all(g.dtype == np.float32 for g in grads)
    xs, ts = rng.normal(size=(7, 5)), rng.normal(size=(7, 3))
    symdl.check_grad(loss, {x: xs, t: ts, W1: W1.value, b1: b1.value, W2: W2.value})


def test_grad_through_broadcasting_reduces_to_input_shape():
    x = placeholder((None, 3, 4), "float64", name="x")
    b = placeholder((4,), "float64", name="b")
    c = placeholder((3, 1), "float64", name="c")
    s = placeholder((), "float64", name="s")
    y = ((x + b) * c * s).sum()
    gx, gb, gc, gs = symdl.grad(y, [x, b, c, s])
    assert (gx.shape, gb.shape, gc.shape, gs.shape) == ((None, 3, 4), (4,), (3, 1), ())
    rng = np.random.default_rng(33)
    xs, bs, cs, ss = rng.normal(size=(2, 3, 4)), rng.normal(size=4), rng.normal(size=(3, 1)), np.float64(1.7)
    vx, vb, vc, vs = run([x, b, c, s], [gx, gb, gc, gs], xs, bs, cs, ss)
    np.testing.assert_allclose(vx, np.broadcast_to(cs * ss, (2, 3, 4)), rtol=1e-14)
    np.testing.assert_allclose(vb, (cs * ss * np.ones((2, 3, 4))).sum((0, 1)), rtol=1e-14)
    np.testing.assert_allclose(vc, ((xs + bs) * ss).sum((0, 2))[:, None], rtol=1e-13)
    np.testing.assert_allclose(vs, ((xs + bs) * cs).sum(), rtol=1e-13)
    assert vb.shape == (4,) and vc.shape == (3, 1) and vs.shape == ()


def test_shared_subexpressions_accumulate():
    x = placeholder((3,), "float64", name="x")
    a = x * x
    y = (a + a * x + symdl.exp(a)).sum()
    xs = np.array([0.1, -0.4, 0.9])
    (g,) = run([x], [symdl.grad(y, x)], xs)
    np.testing.assert_allclose(g, 2 * xs + 3 * xs**2 + 2 * xs * np.exp(xs**2), rtol=1e-14)


def test_grad_of_y_wrt_itself_and_single_vs_list():
    x = placeholder((), "float64", name="x")
    y = x * 2.0
    g = symdl.grad(y, y)
    assert isinstance(g, symdl.Tensor) and run([x], [g], np.float64(3.0))[0] == 1.0
    gl = symdl.grad(y, [x])
    assert isinstance(gl, list) and len(gl) == 1


def test_unconnected_raises_naming_it_unless_zero():
    x = placeholder((None, 3), name="x")
    lonely = placeholder((None, 2), name="lonely_input")
    y = symdl.sum(x * 2.0)
    with pytest.raises(GradientError, match="lonely_input") as ei:
        symdl.grad(y, [x, lonely])
    assert HERE in str(ei.value)  # points at the line that created it
    gx, gl = symdl.grad(y, [x, lonely], unconnected="zero")
    assert gl.shape == (None, 2) and gl.dtype == np.float32
    vx, vl = run([x, lonely], [gx, gl], np.ones((4, 3), np.float32), np.ones((5, 2), np.float32))
    np.testing.assert_array_equal(vx, np.full((4, 3), 2.0, np.float32))
    assert vl.shape == (5, 2) and not vl.any()
    with pytest.raises(ValueError):
        symdl.grad(y, x, unconnected="ignore")


def test_grad_wrt_int_tensor_raises():
    i = placeholder((3,), "int64", name="int_input")
    y = symdl.sum(symdl.cast(i, "float32") * 2.0)
    with pytest.raises(GradientError, match="int_input"):
        symdl.grad(y, i)


def test_grad_requires_scalar_float_y():
    x = placeholder((3,), name="x")
    with pytest.raises(GradientError, match="scalar"):
        symdl.grad(x * 2.0, x)
    with pytest.raises(GradientError, match="floating"):
        symdl.grad(symdl.argmax(x), x)
    with pytest.raises(TypeError):
        symdl.grad(1.0, x)


def test_grad_through_argmax_names_argmax_line():
    x = placeholder((4, 3), name="scores")
    w = placeholder((4,), name="w")
    line = line_here() + 1
    idx = symdl.argmax(x, axis=1)
    y = symdl.sum(idx * w)
    with pytest.raises(GradientError) as ei:
        symdl.grad(y, x)
    msg = str(ei.value)
    assert "argmax" in msg and f"{HERE}:{line}" in msg and "scores" in msg
    # the other operand still has a gradient
    (gw,) = run([x, w], [symdl.grad(y, [w])[0]], np.eye(4, 3, dtype=np.float32), np.ones(4, np.float32))
    np.testing.assert_array_equal(gw, [0, 1, 2, 0])


def test_grad_through_stop_gradient_only_names_it():
    x = placeholder((3,), name="x")
    line = line_here() + 1
    y = symdl.sum(O.stop_gradient(x) * 3.0)
    with pytest.raises(GradientError) as ei:
        symdl.grad(y, x)
    assert "stop_gradient" in str(ei.value) and f"{HERE}:{line}" in str(ei.value)


def test_gradient_names_roles_and_frames():
    x = placeholder((3,), name="x")
    w = parameter(np.ones(3, np.float32), name="w")
    line = line_here() + 1
    loss = symdl.sum(symdl.tanh(x * w))
    loss.name = "loss"
    gx, gw = symdl.grad(loss, [x, w])
    assert gw.name == "dloss/dw" and gx.name == "dloss/dx"
    assert gw.role == "backward" and gx.role == "backward"
    # backward nodes are attributed to the forward op's user line
    assert gw.frame.lineno == line and os.path.basename(gw.frame.filename) == HERE
    order = symdl.graph.toposort([gw])
    assert any(n.role == "forward" for n in order) and any(n.role == "backward" for n in order)
    assert all(n.role == "forward" for n in symdl.graph.toposort([loss]))


def test_hash_consing():
    x = placeholder((2, 3), name="x")
    two = symdl.constant(2.0)
    a1 = symdl.tanh(x * two)
    a2 = symdl.tanh(x * two)
    assert a1 is a2
    assert symdl.sum(x, axis=1) is symdl.sum(x, axis=1)
    assert symdl.sum(x, axis=1) is not symdl.sum(x, axis=0)
    assert symdl.sum(x, axis=1) is not symdl.sum(x, axis=1, keepdims=True)
    assert symdl.max(x, axis=0) is not symdl.min(x, axis=0)
    assert symdl.reshape(x, (3, 2)) is x.reshape(3, 2)
    assert x[0, 1:] is x[0, 1:]
    assert symdl.leaky_relu(x, 0.1) is not symdl.leaky_relu(x, 0.2)
    assert (x + x) is symdl.add(x, x)
    # leaves are always new
    assert placeholder((2,)) is not placeholder((2,))
    assert symdl.constant(1.0) is not symdl.constant(1.0)
    # the same gradient requested twice reuses the same nodes
    g1 = symdl.grad(symdl.sum(a1), x)
    n_before = symdl.graph.node_count()
    g2 = symdl.grad(symdl.sum(a1), x)
    assert g2.op == g1.op
    assert symdl.graph.node_count() - n_before < 10


def test_deep_graph_no_recursion_limit():
    x = placeholder((), "float64", name="x")
    y = x
    for _ in range(3000):
        y = y * 1.0001 + 0.0
    g = symdl.grad(y, x)
    (v,) = run([x], [g], np.float64(1.0))
    assert v == pytest.approx(1.0001**3000, rel=1e-9)


def test_grad_through_mode_switch():
    x = placeholder((3,), "float64", name="x")
    y = symdl.sum(O.mode_switch(x * 2.0, x * 5.0))
    g = symdl.grad(y, x)
    for mode, k in (("train", 2.0), ("eval", 5.0)):
        (v,) = symdl.compile([x], [g], mode=mode)(np.ones(3))
        np.testing.assert_array_equal(v, np.full(3, k))


def test_shared_gradient_nodes_get_their_own_names():
    a, b = placeholder((3,), name="a"), placeholder((3,), name="b")
    y = symdl.sum(a + b)
    y.name = "y"
    ga, gb = symdl.grad(y, [a, b])
    assert ga is not gb
    assert (ga.name, gb.name) == ("dy/da", "dy/db")
    va, vb = run([a, b], [ga, gb], np.zeros(3, np.float32), np.zeros(3, np.float32))
    np.testing.assert_array_equal(va, np.ones(3))
    np.testing.assert_array_equal(vb, np.ones(3))
