"""Property-based tests: random small graphs of elementwise ops and reductions with broadcasting.

Each graph is built twice, symbolically and with NumPy; values must agree and symbolic gradients must match
central finite differences (``symdl.check_grad``, float64).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symdl


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


UNARY = {
    "tanh": (symdl.tanh, np.tanh),
    "sigmoid": (symdl.sigmoid, _np_sigmoid),
    "exp_bounded": (lambda t: symdl.exp(symdl.tanh(t) * 2.0), lambda x: np.exp(np.tanh(x) * 2.0)),
    "square": (symdl.square, np.square),
    "neg": (lambda t: -t, np.negative),
    "softplus": (symdl.softplus, lambda x: np.log1p(np.exp(x))),
    "affine": (lambda t: t * 0.5 + 1.0, lambda x: x * 0.5 + 1.0),
    "pow3": (lambda t: t**3, lambda x: x**3),
}

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "maximum": (symdl.maximum, np.maximum),
    "minimum": (symdl.minimum, np.minimum),
    "safe_div": (lambda a, b: a / (symdl.square(b) + 1.0), lambda a, b: a / (b * b + 1.0)),
}

REDUCE = {
    "sum": (symdl.sum, np.sum),
    "mean": (symdl.mean, np.mean),
    "max": (symdl.max, np.amax),
    "min": (symdl.min, np.amin),
    "var0": (
        lambda t, axis, keepdims: symdl.var(t, axis=axis, keepdims=keepdims, correction=0),
        lambda x, axis, keepdims: np.var(x, axis=axis, keepdims=keepdims),
    ),
}


@st.composite
def graphs(draw):
    ndim = draw(st.integers(1, 3))
    base = tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    shapes = []
    for _ in range(draw(st.integers(1, 3))):
        drop = draw(st.integers(0, ndim))  # fewer leading dims
        shp = [1 if draw(st.booleans()) and draw(st.booleans()) else d for d in base[drop:]]
        shapes.append(tuple(shp))
    steps = []
    n_nodes = len(shapes)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["unary", "binary", "binary", "reduce"]))
        if kind == "unary":
            steps.append(("unary", draw(st.sampled_from(sorted(UNARY))), draw(st.integers(0, n_nodes - 1))))
        elif kind == "binary":
            steps.append(
                (
                    "binary",
                    draw(st.sampled_from(sorted(BINARY))),
                    draw(st.integers(0, n_nodes - 1)),
                    draw(st.integers(0, n_nodes - 1)),
                )
            )
        else:
            steps.append(
                (
                    "reduce",
                    draw(st.sampled_from(sorted(REDUCE))),
                    draw(st.integers(0, n_nodes - 1)),
                    draw(st.integers(0, 2**3 - 1)),
                    draw(st.booleans()),
                    draw(st.booleans()),
                )
            )
        n_nodes += 1
    seed = draw(st.integers(0, 2**16))
    return shapes, steps, seed


def _build(steps, leaves, lib):
    """Run the recipe on ``leaves`` (symbolic tensors or NumPy arrays)."""
    nodes = list(leaves)
    for step in steps:
        if step[0] == "unary":
            fn = UNARY[step[1]][lib]
            nodes.append(fn(nodes[step[2]]))
        elif step[0] == "binary":
            fn = BINARY[step[1]][lib]
            a, b = nodes[step[2]], nodes[step[3]]
            try:  # reductions can leave shapes that no longer broadcast: such a step is skipped
                np.broadcast_shapes(np.shape(a) if lib else a.shape, np.shape(b) if lib else b.shape)
            except ValueError:
                nodes.append(a)
                continue
            nodes.append(fn(a, b))
        else:
            _, name, k, mask, keepdims, all_axes = step
            x = nodes[k]
            nd = np.ndim(x) if lib else x.ndim
            axes = None if all_axes else tuple(a for a in range(nd) if mask >> a & 1)
            if axes == () or nd == 0:
                nodes.append(x)
                continue
            if not lib and name != "var0" and axes is not None and len(axes) == 1 and mask & 8:
                axes = axes[0] - nd  # also exercise negative int axes
            fn = REDUCE[name][lib]
            nodes.append(fn(x, axis=axes, keepdims=keepdims))
    # combine everything into one output so that every leaf and step matters
    out = nodes[-1]
    for n in nodes[:-1]:
        out = out + (symdl.sum(n) if not lib else np.sum(n)) * 0.1
    return out


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_graph_values_and_gradients(g):
    shapes, steps, seed = g
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1.5, 1.5, size=s) for s in shapes]
    expected = _build(steps, arrays, 1)
    phs = [symdl.placeholder(s, "float64", name=f"x{k}") for k, s in enumerate(shapes)]
    y = _build(steps, phs, 0)
    assert y.shape == np.shape(expected) and y.dtype == np.float64
    (value,) = symdl.compile(phs, [y])(*arrays)
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)
    symdl.check_grad(lambda *ts: _build(steps, ts, 0), arrays, max_elements=12)


@settings(max_examples=30, deadline=None)
@given(graphs())
def test_random_graph_float32_forward_and_grad_shapes(g):
    shapes, steps, seed = g
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1.5, 1.5, size=s).astype(np.float32) for s in shapes]
    expected = _build(steps, [a.astype(np.float64) for a in arrays], 1)
    phs = [symdl.placeholder(s, "float32", name=f"x{k}") for k, s in enumerate(shapes)]
    y = _build(steps, phs, 0)
    grads = symdl.grad(symdl.sum(y), phs)
    out = symdl.compile(phs, [y, *grads])(*arrays)
    assert out[0].dtype == np.float32
    np.testing.assert_allclose(out[0], expected, rtol=1e-4, atol=1e-4)
    for gv, a in zip(out[1:], arrays):
        assert gv.shape == a.shape and gv.dtype == np.float32
