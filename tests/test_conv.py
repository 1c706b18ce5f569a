"""conv1d / conv2d: values against a plain loop reference, gradients (first and second order) by finite
differences, torch agreement when torch is importable, None batch dims and build-time errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import symdl
from symdl.errors import OpRuntimeError, ShapeError

# ----------------------------------------------------------------------------------------------------
# An independent, straightforward reference: loops over every output element
# ----------------------------------------------------------------------------------------------------


def ref_conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation by explicit loops. ``padding``: int, tuple of ints or tuple of (before, after)."""
    nsp = x.ndim - 2
    s = (stride,) * nsp if isinstance(stride, int) else tuple(stride)
    d = (dilation,) * nsp if isinstance(dilation, int) else tuple(dilation)
    if isinstance(padding, int):
        pads = ((padding, padding),) * nsp
    else:
        pads = tuple(p if isinstance(p, tuple) else (p, p) for p in padding)
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    n, cin = x.shape[:2]
    cout, cg = w.shape[:2]
    k = w.shape[2:]
    out = [(xp.shape[2 + i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(nsp)]
    y = np.zeros((n, cout, *out), dtype=np.float64)
    per_group = cout // groups
    for bi in range(n):
        for o in range(cout):
            grp = o // per_group
            for pos in itertools.product(*(range(e) for e in out)):
                acc = 0.0
                for c in range(cg):
                    for tap in itertools.product(*(range(e) for e in k)):
                        src = tuple(pos[i] * s[i] + tap[i] * d[i] for i in range(nsp))
                        acc += xp[(bi, grp * cg + c, *src)] * w[(o, c, *tap)]
                y[(bi, o, *pos)] = acc + (0.0 if b is None else b[o])
    return y


# (x shape, weight shape, kwargs): 1-d and 2-d, stride, padding, dilation, groups, depthwise, strides that do
# not divide the padded size, "same"/"valid", asymmetric per-dim settings
CONFIGS = [
    ((2, 3, 9), (4, 3, 3), {}),
    ((2, 2, 10), (3, 2, 4), dict(stride=3, padding=1)),  # 10+2-4 = 8, not divisible by 3
    ((1, 4, 11), (4, 2, 3), dict(stride=2, dilation=2, groups=2)),
    ((2, 3, 7), (3, 1, 3), dict(padding="same", groups=3)),  # depthwise 1-d
    ((2, 2, 8), (2, 2, 4), dict(padding="same", dilation=1)),  # even kernel: the odd pad goes after
    ((2, 3, 6, 5), (4, 3, 3, 3), {}),
    ((2, 2, 7, 8), (3, 2, 3, 2), dict(stride=(2, 3), padding=(1, 2))),  # non-dividing strides
    ((1, 4, 7, 7), (6, 2, 3, 3), dict(stride=2, padding=1, dilation=(1, 2), groups=2)),
    ((2, 3, 6, 6), (3, 1, 3, 3), dict(padding=1, groups=3)),  # depthwise
    ((2, 3, 5, 6), (6, 1, 2, 2), dict(stride=(1, 2), groups=3)),  # depthwise with multiplier 2
    ((1, 2, 6, 7), (2, 2, 2, 3), dict(padding="same", dilation=(3, 1))),
    ((2, 2, 5, 5), (3, 2, 5, 5), dict(padding="valid")),  # kernel as large as the input
]


def _conv(nsp):
    return symdl.conv1d if nsp == 1 else symdl.conv2d


def _ref_kwargs(kw, wshape):
    """Translate 'same'/'valid' into explicit (before, after) pairs for the loop reference."""
    kw = dict(kw)
    nsp = len(wshape) - 2
    if kw.get("padding") == "valid":
        kw["padding"] = 0
    elif kw.get("padding") == "same":
        d = kw.get("dilation", 1)
        d = (d,) * nsp if isinstance(d, int) else d
        total = [d[i] * (wshape[2 + i] - 1) for i in range(nsp)]
        kw["padding"] = tuple((t // 2, t - t // 2) for t in total)
    return kw


def _run(outputs, inputs, arrays):
    return symdl.compile(inputs, outputs)(*arrays)


@pytest.mark.parametrize("xs,ws,kw", CONFIGS)
def test_values_against_loop_reference(xs, ws, kw, rng):
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    X, W, B = symdl.placeholder(xs, "float64"), symdl.placeholder(ws, "float64"), symdl.placeholder(ws[:1], "float64")
    y = _conv(len(xs) - 2)(X, W, B, **kw)
    got = _run([y], [X, W, B], [x, w, b])[0]
    want = ref_conv(x, w, b, **_ref_kwargs(kw, ws))
    assert y.shape == want.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if kw.get("padding") == "same":
        assert y.shape[2:] == xs[2:]


@pytest.mark.parametrize("xs,ws,kw", [CONFIGS[i] for i in (1, 2, 4, 6, 7, 9, 10)])
def test_gradients_by_finite_differences(xs, ws, kw, rng):
    conv = _conv(len(xs) - 2)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    symdl.check_grad(lambda X, W, B: conv(X, W, B, **kw), [x, w, b], max_elements=40)


def test_gradient_zero_for_unreached_trailing_pixels(rng):
    # stride 3 over length 9 with k=2: windows read 0-1, 3-4, 6-7 -> pixels 2, 5 and the trailing 8 are unread
    x, w = rng.standard_normal((1, 1, 9)), rng.standard_normal((1, 1, 2))
    X, W = symdl.placeholder(x.shape, "float64"), symdl.placeholder(w.shape, "float64")
    y = symdl.conv1d(X, W, stride=3)
    assert y.shape == (1, 1, 3)
    gx = symdl.grad(y.sum(), X)
    got = _run([gx], [X, W], [x, w])[0]
    assert got.shape == x.shape
    np.testing.assert_array_equal(got[0, 0, [2, 5, 8]], 0.0)
    np.testing.assert_allclose(got[0, 0, [0, 3, 6]], w[0, 0, 0])

    x2 = rng.standard_normal((1, 2, 7, 6))
    w2 = rng.standard_normal((1, 2, 3, 3))
    symdl.check_grad(lambda X, W: symdl.conv2d(X, W, stride=(3, 2)), [x2, w2])  # 7-3=4 and 6-3=3: not divisible


@pytest.mark.parametrize(
    "xs,ws,kw",
    [
        ((1, 2, 5, 5), (2, 1, 3, 3), dict(stride=2, padding=1, groups=2)),
        ((2, 2, 7), (3, 2, 3), dict(dilation=2, padding=1)),
    ],
)
def test_second_order(xs, ws, kw, rng):
    conv = _conv(len(xs) - 2)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)

    def grad_x(X, W):
        return symdl.grad((conv(X, W, **kw) ** 2).sum(), X)

    def grad_w(X, W):
        return symdl.grad(symdl.tanh(conv(X, W, **kw)).sum(), W)

    symdl.check_grad(grad_x, [x, w], max_elements=30)
    symdl.check_grad(grad_w, [x, w], max_elements=30)


def test_second_order_graph_uses_conv_ops():
    X = symdl.placeholder((1, 1, 5, 5), "float64")
    W = symdl.placeholder((1, 1, 3, 3), "float64")
    gx = symdl.grad((symdl.conv2d(X, W) ** 2).sum(), X)
    hx = symdl.grad((gx * gx).sum(), W)
    names = {n.op.name for n in symdl.graph.toposort([hx])}
    assert {"conv", "conv_grad_input", "conv_grad_weight"} <= names


def test_float32_forward_and_backward(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    X = symdl.placeholder((2, 3, 6, 6), "float32")
    W = symdl.parameter(w, name="W")
    B = symdl.parameter(b, name="b")
    y = symdl.conv2d(X, W, B, stride=2, padding=1)
    assert y.dtype == np.float32
    gw, gb = symdl.grad(y.sum(), [W, B])
    out, dw, db = _run([y, gw, gb], [X], [x])
    assert out.dtype == dw.dtype == db.dtype == np.float32
    np.testing.assert_allclose(out, ref_conv(x.astype(np.float64), w, b, stride=2, padding=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, np.full(4, out.shape[0] * out.shape[2] * out.shape[3]), rtol=1e-6)


def test_none_batch_dim(rng):
    X = symdl.placeholder((None, 2, 6, 5), "float64")
    W = symdl.placeholder((3, 2, 3, 2), "float64")
    y = symdl.conv2d(X, W, stride=2, padding=1)
    assert y.shape == (None, 3, 3, 3)
    gx, gw = symdl.grad((y * y).sum(), [X, W])
    assert gx.shape == (None, 2, 6, 5) and gw.shape == (3, 2, 3, 2)
    f = symdl.compile([X, W], [y, gx, gw])
    w = rng.standard_normal((3, 2, 3, 2))
    for n in (1, 4):
        x = rng.standard_normal((n, 2, 6, 5))
        out, dx, dw = f(x, w)
        want = ref_conv(x, w, stride=2, padding=1)
        np.testing.assert_allclose(out, want, atol=1e-12)
        assert dx.shape == x.shape and dw.shape == w.shape
    out, dx, dw = f(np.zeros((0, 2, 6, 5)), w)  # an empty batch
    assert out.shape == (0, 3, 3, 3) and dx.shape == (0, 2, 6, 5)
    np.testing.assert_array_equal(dw, 0.0)


def test_none_spatial_dims(rng):
    X = symdl.placeholder((None, 1, None), "float64")
    W = symdl.placeholder((2, 1, 3), "float64")
    y = symdl.conv1d(X, W, padding=1)
    assert y.shape == (None, 2, None)
    f = symdl.compile([X, W], [y])
    x, w = rng.standard_normal((2, 1, 9)), rng.standard_normal((2, 1, 3))
    np.testing.assert_allclose(f(x, w)[0], ref_conv(x, w, padding=1), atol=1e-12)
    with pytest.raises(OpRuntimeError, match="conv"):
        f(rng.standard_normal((2, 1, 0)), w)


def test_unbatched_input(rng):
    x, w = rng.standard_normal((3, 6, 6)), rng.standard_normal((2, 3, 3, 3))
    X, W = symdl.placeholder(x.shape, "float64"), symdl.placeholder(w.shape, "float64")
    y = symdl.conv2d(X, W, padding=1)
    assert y.shape == (2, 6, 6)
    np.testing.assert_allclose(_run([y], [X, W], [x, w])[0], ref_conv(x[None], w, padding=1)[0], atol=1e-12)


def test_hash_consing_and_props():
    X = symdl.placeholder((None, 2, 5, 5))
    W = symdl.parameter(np.zeros((3, 2, 3, 3), np.float32))
    assert symdl.conv2d(X, W, stride=2) is symdl.conv2d(X, W, stride=(2, 2))
    assert symdl.conv2d(X, W, stride=2) is not symdl.conv2d(X, W, stride=1)


def test_tiny_cnn_trains(rng):
    """conv -> relu -> max_pool -> conv -> global average -> squared error, a few SGD steps."""
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    t = x[:, :, 2:6, 2:6].mean(axis=(1, 2, 3))[:, None].astype(np.float32) * 3
    X = symdl.placeholder((None, 1, 8, 8))
    T = symdl.placeholder((None, 1))
    init = np.random.default_rng(1)
    w1 = symdl.parameter(init.standard_normal((4, 1, 3, 3)).astype(np.float32) * 0.5, name="w1")
    b1 = symdl.parameter(np.zeros(4, np.float32), name="b1")
    w2 = symdl.parameter(init.standard_normal((1, 4, 3, 3)).astype(np.float32) * 0.3, name="w2")
    h = symdl.max_pool2d(symdl.relu(symdl.conv2d(X, w1, b1, padding=1)), 2)
    out = symdl.global_avg_pool2d(symdl.conv2d(h, w2, padding="same"))
    loss = ((out - T) ** 2).mean()
    params = [w1, b1, w2]
    grads = symdl.grad(loss, params)
    step = symdl.compile([X, T], [loss], {p: p - 0.03 * g for p, g in zip(params, grads)})
    losses = [float(step(x, t)[0]) for _ in range(30)]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.3 * losses[0]


# ----------------------------------------------------------------------------------------------------
# Build-time errors: the op/function name, the operands and the user's line
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "xs,ws,kw,msg",
    [
        ((2, 3, 8, 8), (4, 2, 3, 3), {}, r"conv2d: the input has 3 channels but the weight expects 2"),
        ((2, 4, 8, 8), (6, 2, 3, 3), dict(groups=3), r"groups=3 must divide the 4 input channels"),
        ((2, 4, 8, 8), (5, 2, 3, 3), dict(groups=2), r"groups=2 must divide the 5 output channels"),
        ((2, 3, 4, 4), (4, 3, 5, 3), {}, r"can't be greater than the padded input size 4"),
        ((2, 3, 4, 4), (4, 3, 3, 3), dict(dilation=2), r"can't be greater than the padded input"),
        ((3, 8, 8, 8, 8), (4, 8, 3, 3), {}, r"conv2d expects a 4-d input"),
        ((3, 8, 8, 8), (4, 8, 3), {}, r"conv2d expects a 4-d weight"),
    ],
)
def test_shape_errors_name_op_operands_and_line(xs, ws, kw, msg):
    X = symdl.placeholder(xs)
    W = symdl.placeholder(ws)
    with pytest.raises(ShapeError, match=msg) as info:
        symdl.conv2d(X, W, **kw)
    text = str(info.value)
    assert text.startswith("conv [")
    assert "operands: (" in text and "test_conv.py" in text


def test_argument_errors_name_line():
    X = symdl.placeholder((None, 2, 6, 6))
    W = symdl.placeholder((3, 2, 3, 3))
    cases = [
        (dict(padding="same", stride=2), "not supported for strided"),
        (dict(padding="full"), "invalid padding string"),
        (dict(stride=0), "stride must be >= 1"),
        (dict(padding=(1, 2, 3)), "padding must be an int or a sequence of 2 ints"),
        (dict(padding=-1), "padding must be >= 0"),
        (dict(groups=0), "groups must be a positive int"),
        (dict(bias=symdl.placeholder((4,))), r"bias must have shape \(3,\)"),
        (dict(bias=symdl.placeholder((3,), "float64")), "bias dtype float64"),
    ]
    for kw, msg in cases:
        with pytest.raises(ShapeError, match=msg) as info:
            symdl.conv2d(X, W, **kw)
        assert "conv2d" in str(info.value) and "test_conv.py" in str(info.value)


def test_dtype_errors():
    X = symdl.placeholder((1, 2, 5), "float64")
    with pytest.raises(ShapeError, match="share one dtype"):
        symdl.conv1d(X, symdl.placeholder((3, 2, 3), "float32"))
    with pytest.raises(ShapeError, match="floating-point"):
        symdl.conv1d(symdl.placeholder((1, 2, 5), "int64"), symdl.placeholder((3, 2, 3), "int64"))


# ----------------------------------------------------------------------------------------------------
# Against torch (skipped when torch is not importable)
# ----------------------------------------------------------------------------------------------------

TORCH_CONFIGS = [CONFIGS[i] for i in (1, 2, 3, 4, 6, 7, 8, 9, 10)] + [
    ((3, 4, 9, 10), (8, 2, 3, 4), dict(stride=(3, 2), padding=(2, 1), dilation=(2, 1), groups=2)),
    ((2, 6, 8, 8), (6, 1, 5, 5), dict(padding=2, groups=6)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("xs,ws,kw", TORCH_CONFIGS)
def test_against_torch(xs, ws, kw, rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    nsp = len(xs) - 2
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    X, W, B = symdl.placeholder(xs, "float64"), symdl.placeholder(ws, "float64"), symdl.placeholder(ws[:1], "float64")
    y = _conv(nsp)(X, W, B, **kw)
    r = rng.standard_normal(y.shape)
    gx, gw, gb = symdl.grad((y * symdl.constant(r)).sum(), [X, W, B])
    got = _run([y, gx, gw, gb], [X, W, B], [x, w, b])

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = (F.conv1d if nsp == 1 else F.conv2d)(tx, tw, tb, **kw)
    (ty * torch.tensor(r)).sum().backward()
    for a, t in zip(got, [ty, tx.grad, tw.grad, tb.grad]):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-10, atol=1e-10)


def test_against_torch_float32_and_second_order(rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    X, W = symdl.placeholder(x.shape), symdl.placeholder(w.shape)
    y = symdl.conv2d(X, W, stride=2, padding=1)
    gx = symdl.grad((y**2).sum(), X)
    hw = symdl.grad((gx**2).sum(), W)  # second order through conv_grad_input
    out, dx, ddw = _run([y, gx, hw], [X, W], [x, w])
    assert out.dtype == np.float32

    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = F.conv2d(tx, tw, stride=2, padding=1)
    (tdx,) = torch.autograd.grad((ty**2).sum(), tx, create_graph=True)
    (tddw,) = torch.autograd.grad((tdx**2).sum(), tw)
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, tdx.detach().numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(ddw, tddw.numpy(), rtol=1e-3, atol=1e-2)
