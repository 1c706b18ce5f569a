"""max_pool1d/2d, avg_pool1d/2d, global_avg_pool2d: values against plain loop references, PyTorch's
output-size rules (floor/ceil_mode, padding limits), first-max gradient routing, finite-difference gradients
(first and second order), torch agreement when importable, None batch dims and build-time errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import symdl
from symdl.errors import ShapeError

# ----------------------------------------------------------------------------------------------------
# Independent loop references (PyTorch's documented rules)
# ----------------------------------------------------------------------------------------------------


def _tuple(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def ref_out_size(n, k, s, p, d, ceil_mode):
    """torch.nn.MaxPool2d docs: floor/ceil((n + 2p - d(k-1) - 1) / s + 1); with ceil_mode the last window must
    start inside the input or the left padding."""
    q = (n + 2 * p - d * (k - 1) - 1) / s
    o = (math.ceil(q) if ceil_mode else math.floor(q)) + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


def _geometry(x, kernel_size, stride, padding, dilation, ceil_mode):
    nsp = x.ndim - 2
    k = _tuple(kernel_size, nsp)
    s = k if stride is None else _tuple(stride, nsp)
    p, d = _tuple(padding, nsp), _tuple(dilation, nsp)
    out = [ref_out_size(x.shape[2 + i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(nsp)]
    return k, s, p, d, out


def ref_max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Returns (values, first-max source index tuple per output element)."""
    k, s, p, d, out = _geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    nsp = x.ndim - 2
    y = np.full(x.shape[:2] + tuple(out), -np.inf)
    arg = {}
    for nc in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for pos in itertools.product(*(range(o) for o in out)):
            for tap in itertools.product(*(range(e) for e in k)):
                src = tuple(pos[i] * s[i] - p[i] + tap[i] * d[i] for i in range(nsp))
                if all(0 <= src[i] < x.shape[2 + i] for i in range(nsp)) and x[nc + src] > y[nc + pos]:
                    y[nc + pos] = x[nc + src]  # strict '>': the first maximum in row-major window order wins
                    arg[nc + pos] = nc + src
    return y, arg


def ref_max_pool_grad(x, g, **kw):
    _, arg = ref_max_pool(x, **kw)
    dx = np.zeros_like(x)
    for o, src in arg.items():
        dx[src] += g[o]
    return dx


def ref_avg_pool(
    x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    k, s, p, _, out = _geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    nsp = x.ndim - 2
    y = np.zeros(x.shape[:2] + tuple(out))
    for pos in itertools.product(*(range(o) for o in out)):
        ranges, pool_size, count = [], 1, 1
        for i in range(nsp):
            n = x.shape[2 + i]
            start = pos[i] * s[i] - p[i]
            end = min(start + k[i], n + p[i])
            pool_size *= end - start
            start, end = max(start, 0), min(end, n)
            count *= max(end - start, 0)
            ranges.append(slice(start, max(end, start)))
        total = x[(slice(None), slice(None), *ranges)].sum(axis=tuple(range(2, 2 + nsp)))
        if divisor_override is not None:
            div = divisor_override
        else:
            div = pool_size if count_include_pad else count
        y[(slice(None), slice(None), *pos)] = total / div if count else 0.0
    return y


MAX_CONFIGS = [
    ((2, 3, 9), dict(kernel_size=2)),
    ((2, 2, 10), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 2, 10), dict(kernel_size=3, stride=2, ceil_mode=True)),  # ceil adds a last partial window
    ((1, 2, 11), dict(kernel_size=2, stride=2, padding=1, dilation=3, ceil_mode=True)),
    ((2, 3, 6, 6), dict(kernel_size=2)),
    ((2, 2, 7, 8), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 3, 7, 7), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True)),
    ((1, 2, 8, 9), dict(kernel_size=3, stride=(2, 1), padding=(0, 1), dilation=(2, 1))),
    ((2, 2, 5, 5), dict(kernel_size=2, stride=2, ceil_mode=True)),  # 5 = 2*2 + 1: ceil keeps a 1-pixel window
    ((1, 1, 6, 6), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),  # ceil drops a window
    ((1, 2, 7, 5), dict(kernel_size=3, stride=1)),  # overlapping windows
]

AVG_CONFIGS = [
    ((2, 3, 9), dict(kernel_size=3)),
    ((1, 2, 10), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=False)),
    ((1, 2, 10), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    ((2, 3, 6, 6), dict(kernel_size=2)),
    ((2, 2, 7, 8), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 2, 7, 8), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ((1, 3, 7, 7), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True)),
    ((1, 3, 7, 7), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True, count_include_pad=False)),
    ((2, 2, 6, 7), dict(kernel_size=3, stride=2, padding=1, divisor_override=5, ceil_mode=True)),
    ((1, 2, 5, 5), dict(kernel_size=2, stride=1)),  # overlapping windows
]


def _fn(kind, nsp):
    return getattr(symdl, f"{kind}_pool{nsp}d")


def _eval(outputs, inputs, arrays):
    return symdl.compile(inputs, outputs)(*arrays)


@pytest.mark.parametrize("xs,kw", MAX_CONFIGS)
def test_max_pool_values_and_gradient_routing(xs, kw, rng):
    x = rng.standard_normal(xs)
    X = symdl.placeholder(xs, "float64")
    y = _fn("max", len(xs) - 2)(X, **kw)
    want, _ = ref_max_pool(x, **kw)
    assert y.shape == want.shape
    g = rng.standard_normal(want.shape)
    dx = symdl.grad((y * symdl.constant(g)).sum(), X)
    got_y, got_dx = _eval([y, dx], [X], [x])
    np.testing.assert_array_equal(got_y, want)
    np.testing.assert_allclose(got_dx, ref_max_pool_grad(x, g, **kw), atol=1e-12)


@pytest.mark.parametrize("xs,kw", AVG_CONFIGS)
def test_avg_pool_values(xs, kw, rng):
    x = rng.standard_normal(xs)
    X = symdl.placeholder(xs, "float64")
    y = _fn("avg", len(xs) - 2)(X, **kw)
    want = ref_avg_pool(x, **kw)
    assert y.shape == want.shape
    np.testing.assert_allclose(_eval([y], [X], [x])[0], want, rtol=1e-12, atol=1e-12)


def test_output_sizes_follow_torch_rules():
    X = symdl.placeholder((1, 1, 5, 5))
    assert symdl.max_pool2d(X, 2).shape == (1, 1, 2, 2)  # floor
    assert symdl.max_pool2d(X, 2, ceil_mode=True).shape == (1, 1, 3, 3)
    X6 = symdl.placeholder((1, 1, 6))
    # ceil((6 + 4 - 3 - 1) / 3) + 1 = 3, but window 2 would start at 6 >= 6 + 2 - ... -> kept only if inside
    assert symdl.max_pool1d(X6, 4, stride=3, padding=2, ceil_mode=True).shape == (1, 1, 3)
    X4 = symdl.placeholder((1, 1, 4))
    # ceil((4 + 2 - 2 - 1) / 3) + 1 = 2; window 1 starts at 3 - 1 = 2 < 4 + 1: kept
    assert symdl.avg_pool1d(X4, 2, stride=3, padding=1, ceil_mode=True).shape == (1, 1, 2)
    X3 = symdl.placeholder((1, 1, 3))
    # ceil((3 + 2 - 2 - 1) / 2) + 1 = 2, then (2 - 1) * 2 = 2 >= 3 + 1? no: kept; with stride 4 it is dropped
    assert symdl.max_pool1d(X3, 2, stride=2, padding=1, ceil_mode=True).shape == (1, 1, 2)
    assert symdl.max_pool1d(symdl.placeholder((1, 1, 2)), 2, stride=2, padding=1, ceil_mode=True).shape == (1, 1, 2)
    assert symdl.max_pool2d(X, 2, stride=None).shape == symdl.max_pool2d(X, 2, stride=2).shape


def test_max_pool_gradient_goes_to_first_max_on_ties():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = 1.0  # a tie inside the top-left window: row-major first is (1, 0)
    X = symdl.placeholder(x.shape, "float64")
    y = symdl.max_pool2d(X, 2)
    dx = _eval([symdl.grad(y.sum(), X)], [X], [x])[0]
    want = np.zeros_like(x)
    want[0, 0, 1, 0] = 1.0
    want[0, 0, 0, 2] = want[0, 0, 2, 0] = want[0, 0, 2, 2] = 1.0  # all-zero windows: their first element
    np.testing.assert_array_equal(dx, want)
    # overlapping windows sharing one maximum accumulate
    x1 = np.array([[[0.0, 5.0, 1.0, 2.0]]])
    X1 = symdl.placeholder(x1.shape, "float64")
    d1 = _eval([symdl.grad(symdl.max_pool1d(X1, 2, stride=1).sum(), X1)], [X1], [x1])[0]
    np.testing.assert_array_equal(d1, [[[0.0, 2.0, 0.0, 1.0]]])


@pytest.mark.parametrize("xs,kw", [MAX_CONFIGS[i] for i in (1, 3, 6, 7, 10)])
def test_max_pool_check_grad(xs, kw, rng):
    x = rng.standard_normal(xs)
    fn = _fn("max", len(xs) - 2)
    symdl.check_grad(lambda X: fn(X, **kw), [x], max_elements=40)
    symdl.check_grad(lambda X: symdl.grad((fn(X, **kw) ** 2).sum(), X), [x], max_elements=40)  # second order


@pytest.mark.parametrize("xs,kw", [AVG_CONFIGS[i] for i in (1, 5, 6, 8, 9)])
def test_avg_pool_check_grad(xs, kw, rng):
    x = rng.standard_normal(xs)
    fn = _fn("avg", len(xs) - 2)
    symdl.check_grad(lambda X: fn(X, **kw), [x], max_elements=40)
    symdl.check_grad(lambda X: symdl.grad((fn(X, **kw) ** 2).sum(), X), [x], max_elements=40)  # second order


def test_second_order_graph_ops():
    X = symdl.placeholder((1, 1, 4, 4), "float64")
    h = symdl.grad((symdl.max_pool2d(X, 2) ** 2).sum(), X)
    hh = symdl.grad((h * h).sum(), X)
    names = {n.op.name for n in symdl.graph.toposort([hh])}
    assert {"max_pool", "max_pool_grad", "max_pool_gather"} <= names
    a = symdl.grad((symdl.avg_pool2d(X, 2) ** 2).sum(), X)
    aa = symdl.grad((a * a).sum(), X)
    assert {"avg_pool", "avg_pool_grad"} <= {n.op.name for n in symdl.graph.toposort([aa])}


@pytest.mark.parametrize("xs,kw", [MAX_CONFIGS[i] for i in (1, 3, 6, 7)])
def test_return_indices(xs, kw, rng):
    x = rng.standard_normal(xs)
    X = symdl.placeholder(xs, "float64")
    y, idx = _fn("max", len(xs) - 2)(X, return_indices=True, **kw)
    assert idx.dtype == np.int64
    got = _eval([idx], [X], [x])[0]
    _, arg = ref_max_pool(x, **kw)
    spatial = xs[2:]
    for o, src in arg.items():
        assert got[o] == np.ravel_multi_index(src[2:], spatial)
    assert isinstance(idx.op.grad(idx.inputs, idx, y)[0], symdl.NotDifferentiable)


def test_float32(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    X = symdl.placeholder(x.shape)
    m = symdl.max_pool2d(X, 3, stride=2, padding=1)
    a = symdl.avg_pool2d(X, 3, stride=2, padding=1, count_include_pad=False)
    gm, ga = symdl.grad(m.sum(), X), symdl.grad(a.sum(), X)
    outs = _eval([m, a, gm, ga], [X], [x])
    assert all(o.dtype == np.float32 for o in outs)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(outs[0], ref_max_pool(x64, 3, 2, 1)[0].astype(np.float32))
    np.testing.assert_allclose(outs[1], ref_avg_pool(x64, 3, 2, 1, count_include_pad=False), rtol=1e-5, atol=1e-6)


def test_none_batch_and_unbatched(rng):
    X = symdl.placeholder((None, 2, 7, 6), "float64")
    m = symdl.max_pool2d(X, 2, ceil_mode=True)
    a = symdl.avg_pool2d(X, 3, stride=2, padding=1)
    assert m.shape == (None, 2, 4, 3) and a.shape == (None, 2, 4, 3)
    gm, ga = symdl.grad((m * a).sum(), X), symdl.grad(a.sum(), X)
    f = symdl.compile([X], [m, a, gm, ga])
    for n in (1, 3):
        x = rng.standard_normal((n, 2, 7, 6))
        om, oa, dm, da = f(x)
        np.testing.assert_array_equal(om, ref_max_pool(x, 2, ceil_mode=True)[0])
        np.testing.assert_allclose(oa, ref_avg_pool(x, 3, 2, 1), atol=1e-12)
        assert dm.shape == da.shape == x.shape
    empty = f(np.zeros((0, 2, 7, 6)))
    assert [e.shape for e in empty] == [(0, 2, 4, 3)] * 2 + [(0, 2, 7, 6)] * 2
    U = symdl.placeholder((2, 9), "float64")
    u = rng.standard_normal((2, 9))
    y = symdl.max_pool1d(U, 3)
    assert y.shape == (2, 3)
    np.testing.assert_array_equal(_eval([y], [U], [u])[0], ref_max_pool(u[None], 3)[0][0])


def test_global_avg_pool2d(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    X = symdl.placeholder((None, 3, None, None), "float64")
    y, yk = symdl.global_avg_pool2d(X), symdl.global_avg_pool2d(X, keepdims=True)
    assert y.shape == (None, 3) and yk.shape == (None, 3, 1, 1)
    oy, oyk = _eval([y, yk], [X], [x])
    np.testing.assert_allclose(oy, x.mean(axis=(2, 3)), atol=1e-12)
    np.testing.assert_allclose(oyk, x.mean(axis=(2, 3), keepdims=True), atol=1e-12)
    symdl.check_grad(lambda t: symdl.global_avg_pool2d(t), [x[:, :, :2, :3]])
    with pytest.raises(ShapeError, match=r"(?s)global_avg_pool2d expects a 4-d input.*test_pool\.py"):
        symdl.global_avg_pool2d(symdl.placeholder((3, 4, 5)))


# ----------------------------------------------------------------------------------------------------
# Build-time errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,msg",
    [
        (lambda X: symdl.max_pool2d(X, 2, padding=2), r"max_pool2d: padding \(2, 2\) should be at most half"),
        (lambda X: symdl.avg_pool2d(X, 3, padding=2), r"avg_pool2d: padding \(2, 2\) should be at most half"),
        (lambda X: symdl.max_pool2d(X, 9), r"max_pool2d: the output size is too small"),
        (lambda X: symdl.max_pool2d(X, 3, dilation=4), r"output size is too small"),
        (lambda X: symdl.max_pool1d(X, 2), r"max_pool1d expects a 3-d input"),
        (lambda X: symdl.max_pool2d(symdl.cast(X, "int64"), 2), r"needs a floating-point input, got int64"),
    ],
)
def test_shape_errors_name_op_operands_and_line(call, msg):
    X = symdl.placeholder((None, 3, 8, 8))
    with pytest.raises(ShapeError, match=msg) as info:
        call(X)
    text = str(info.value)
    assert "operands: (None, 3, 8, 8)" in text and "test_pool.py" in text


@pytest.mark.parametrize(
    "call,msg",
    [
        (lambda X: symdl.max_pool2d(X, 0), "kernel_size must be >= 1"),
        (lambda X: symdl.max_pool2d(X, (2, 2, 2)), "kernel_size must be an int or a sequence of 2 ints"),
        (lambda X: symdl.avg_pool2d(X, 2, stride=0), "stride must be >= 1"),
        (lambda X: symdl.avg_pool2d(X, 2, padding=-1), "padding must be >= 0"),
        (lambda X: symdl.avg_pool2d(X, 2, divisor_override=0), "divisor_override must be a non-zero int"),
    ],
)
def test_argument_errors(call, msg):
    X = symdl.placeholder((None, 3, 8, 8))
    with pytest.raises(ShapeError, match=msg) as info:
        call(X)
    assert "test_pool.py" in str(info.value)


# ----------------------------------------------------------------------------------------------------
# Against torch (skipped when torch is not importable)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,xs,kw", [("max", xs, kw) for xs, kw in MAX_CONFIGS] + [("avg", xs, kw) for xs, kw in AVG_CONFIGS]
)
def test_against_torch(kind, xs, kw, rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    nsp = len(xs) - 2
    x = rng.standard_normal(xs)
    X = symdl.placeholder(xs, "float64")
    y = _fn(kind, nsp)(X, **kw)
    r = rng.standard_normal(y.shape)
    dx = symdl.grad((y * symdl.constant(r)).sum(), X)
    got_y, got_dx = _eval([y, dx], [X], [x])
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(F, f"{kind}_pool{nsp}d")(tx, **kw)
    (ty * torch.tensor(r)).sum().backward()
    assert tuple(ty.shape) == y.shape
    np.testing.assert_allclose(got_y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    if kind == "max":
        _, idx = _fn(kind, nsp)(X, return_indices=True, **kw)
        _, tidx = getattr(F, f"max_pool{nsp}d")(torch.tensor(x), return_indices=True, **kw)
        np.testing.assert_array_equal(_eval([idx], [X], [x])[0], tidx.numpy())


def test_against_torch_errors_and_global_pool(rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    t = torch.zeros(1, 1, 8, 8)
    X = symdl.placeholder((1, 1, 8, 8))
    for k, p in [(3, 2), (2, 2), (4, 2), (5, 2), (1, 1)]:
        try:
            F.max_pool2d(t, k, padding=p)
            torch_ok = True
        except RuntimeError:
            torch_ok = False
        try:
            symdl.max_pool2d(X, k, padding=p)
            ok = True
        except ShapeError:
            ok = False
        assert ok == torch_ok, (k, p)
    x = rng.standard_normal((2, 3, 5, 4))
    Xg = symdl.placeholder(x.shape, "float64")
    got = _eval([symdl.global_avg_pool2d(Xg, keepdims=True)], [Xg], [x])[0]
    np.testing.assert_allclose(got, F.adaptive_avg_pool2d(torch.tensor(x), 1).numpy(), atol=1e-12)
