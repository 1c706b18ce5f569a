"""symdl.nn layers: forward values against NumPy formulas (and PyTorch when installed), BatchNorm statistics,
dropout, gradients, reprs, input checks, and one compiled (target="cpu") network against the reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import symdl
from symdl import nn
from symdl.errors import ShapeError
from symdl.ops.random import Generator, dropout_mask_array


def run(module, *arrays, mode="train", **kw):
    """Build ``module`` on placeholders shaped like ``arrays`` (batch dim free) and run it once."""
    phs = [symdl.placeholder((None, *a.shape[1:]), a.dtype, name=f"in{k}") for k, a in enumerate(arrays)]
    out = module(*phs)
    outs = list(out) if isinstance(out, tuple) else [out]
    got = symdl.compile(phs, outs, mode=mode, **kw)(*arrays)
    return got if isinstance(out, tuple) else got[0]


# ----------------------------------------------------------------------------------------------------
# NumPy references
# ----------------------------------------------------------------------------------------------------


def conv2d_ref(x, w, b, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Direct cross-correlation, NCHW, zero padding."""
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    hp, wp = xp.shape[2:]
    oh = (hp - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wp - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow), dtype=np.float64)
    og = o // groups
    for g in range(groups):
        xs = xp[:, g * cg : (g + 1) * cg].astype(np.float64)
        ws = w[g * og : (g + 1) * og].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                hi, wj = i * dilation[0], j * dilation[1]
                patch = xs[
                    :, :, hi : hi + stride[0] * (oh - 1) + 1 : stride[0], wj : wj + stride[1] * (ow - 1) + 1 : stride[1]
                ]
                out[:, g * og : (g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def conv1d_ref(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    return conv2d_ref(x[:, :, None], w[:, :, None], b, (1, stride), (0, padding), (1, dilation), groups)[:, :, 0]


def pool2d_ref(x, k, s, reduce):
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.empty((n, c, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = reduce(x[:, :, i * s : i * s + k, j * s : j * s + k], axis=(2, 3))
    return out


# ----------------------------------------------------------------------------------------------------
# Linear
# ----------------------------------------------------------------------------------------------------


def test_linear_forward_matches_the_formula(rng):
    lin = nn.Linear(5, 3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    got = run(lin, x)
    assert got.dtype == np.float32 and got.shape == (4, 3)
    np.testing.assert_allclose(got, x @ lin.weight.value.T + lin.bias.value, rtol=1e-5, atol=1e-6)
    # leading dims are kept: (B, T, in) -> (B, T, out)
    x3 = rng.standard_normal((2, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(run(lin, x3), x3 @ lin.weight.value.T + lin.bias.value, rtol=1e-5, atol=1e-6)
    nobias = nn.Linear(5, 2, bias=False)
    assert nobias.bias is None and [n for n, _ in nobias.named_parameters()] == ["weight"]
    np.testing.assert_allclose(run(nobias, x), x @ nobias.weight.value.T, rtol=1e-5, atol=1e-6)


def test_linear_gradients_against_finite_differences(rng):
    lin = nn.Linear(4, 3, dtype="float64")
    x = symdl.placeholder((None, 4), "float64", name="x")
    loss = symdl.tanh(lin(x)).sum()
    xb = rng.standard_normal((5, 4))
    symdl.check_grad(loss, {x: xb, lin.weight: lin.weight.value, lin.bias: lin.bias.value})
    gw, gb = symdl.grad(loss, [lin.weight, lin.bias])
    gwv, gbv = symdl.compile([x], [gw, gb])(xb)
    d = 1 - np.tanh(xb @ lin.weight.value.T + lin.bias.value) ** 2
    np.testing.assert_allclose(gwv, d.T @ xb, rtol=1e-12)
    np.testing.assert_allclose(gbv, d.sum(0), rtol=1e-12)


# ----------------------------------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(stride=2, padding=1),
        dict(padding=(2, 1), dilation=(2, 1)),
        dict(groups=2, bias=False),
        dict(stride=(2, 1), groups=4),
    ],
)
def test_conv2d_forward_matches_the_formula(rng, kw):
    conv = nn.Conv2d(4, 6 if kw.get("groups") != 4 else 8, (3, 2), **kw)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    b = None if conv.bias is None else conv.bias.value
    want = conv2d_ref(x, conv.weight.value, b, conv.stride, conv.padding, conv.dilation, conv.groups)
    got = run(conv, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conv2d_same_padding_and_unbatched_input(rng):
    conv = nn.Conv2d(2, 3, (3, 4), padding="same")
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    # torch's rule: total padding d*(k-1), the odd pixel after; for kW=4: 1 before, 2 after
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 2)))
    want = conv2d_ref(xp, conv.weight.value, conv.bias.value)
    got = run(conv, x)
    assert got.shape == (1, 3, 5, 6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    ph = symdl.placeholder((2, 5, 6), name="chw")
    (unbatched,) = symdl.compile([ph], [conv(ph)])(x[0])
    np.testing.assert_allclose(unbatched, want[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=2, dilation=2), dict(groups=3), dict(padding="same")])
def test_conv1d_forward_matches_the_formula(rng, kw):
    conv = nn.Conv1d(3, 6, 3, **kw)
    x = rng.standard_normal((2, 3, 11)).astype(np.float32)
    pad = 1 if kw.get("padding") == "same" else conv.padding[0]
    want = conv1d_ref(x, conv.weight.value, conv.bias.value, conv.stride[0], pad, conv.dilation[0], conv.groups)
    np.testing.assert_allclose(run(conv, x), want, rtol=1e-4, atol=1e-5)


def test_conv_constructor_validation():
    with pytest.raises(ValueError, match=r"Conv2d: in_channels \(3\) must be divisible by groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"Conv2d: out_channels \(5\) must be divisible by groups \(2\)"):
        nn.Conv2d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        nn.Conv1d(2, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="invalid padding string 'full'"):
        nn.Conv2d(2, 2, 3, padding="full")
    with pytest.raises(ValueError, match="padding_mode 'reflect' is not supported"):
        nn.Conv2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"Conv2d: kernel_size must be an int or 2 ints, got \(3, 3, 3\)"):
        nn.Conv2d(2, 2, (3, 3, 3))
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int32"):
        nn.Conv2d(2, 2, 3, dtype="int32")


# ----------------------------------------------------------------------------------------------------
# Pooling, flatten
# ----------------------------------------------------------------------------------------------------


def test_pooling_layers_match_the_formulas(rng):
    x = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(nn.MaxPool2d(2), x), pool2d_ref(x, 2, 2, np.max))
    np.testing.assert_array_equal(run(nn.MaxPool2d(3, stride=1), x), pool2d_ref(x, 3, 1, np.max))
    np.testing.assert_allclose(run(nn.AvgPool2d(2), x), pool2d_ref(x, 2, 2, np.mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(nn.GlobalAvgPool2d(), x), x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    assert run(nn.GlobalAvgPool2d(keepdims=True), x).shape == (2, 3, 1, 1)
    x1 = rng.standard_normal((2, 3, 9)).astype(np.float32)
    np.testing.assert_array_equal(run(nn.MaxPool1d(3), x1), x1.reshape(2, 3, 3, 3).max(-1))
    np.testing.assert_allclose(run(nn.AvgPool1d(3), x1), x1.reshape(2, 3, 3, 3).mean(-1), rtol=1e-5, atol=1e-6)
    # return_indices: the flat index h * W + w of each maximum
    vals, idx = run(nn.MaxPool2d(2, return_indices=True), x)
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, idx.reshape(2, 3, -1), axis=2).reshape(vals.shape), vals)
    # ceil_mode keeps the partial last window
    assert run(nn.MaxPool2d(4, ceil_mode=True), x).shape == (2, 3, 2, 2)


def test_flatten(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(run(nn.Flatten(), x), x.reshape(2, -1))
    np.testing.assert_array_equal(run(nn.Flatten(2), x), x.reshape(2, 3, 20))
    np.testing.assert_array_equal(run(nn.Flatten(0, 1), x), x.reshape(6, 4, 5))


# ----------------------------------------------------------------------------------------------------
# BatchNorm
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, shape", [(nn.BatchNorm2d, (4, 3, 5, 2)), (nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 5))]
)
def test_batchnorm_running_stats_after_compiled_train_steps(rng, layer, shape):
    bn = layer(3)
    bn.weight.value = np.array([1.5, 0.5, 2.0], np.float32)
    bn.bias.value = np.array([0.1, -0.2, 0.3], np.float32)
    x = symdl.placeholder((None, *shape[1:]), name="x")
    y = bn(x)
    step = symdl.compile([x], [y], mode="train")
    axes = (0,) + tuple(range(2, len(shape)))
    cshape = (1, 3) + (1,) * (len(shape) - 2)
    rm, rv = np.zeros(3), np.ones(3)
    w, b = bn.weight.value.astype(np.float64), bn.bias.value.astype(np.float64)
    for _ in range(2):
        xb = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        (out,) = step(xb)
        x64 = xb.astype(np.float64)
        mean, var = x64.mean(axes), x64.var(axes)
        n = x64.size // 3
        want = (x64 - mean.reshape(cshape)) / np.sqrt(var.reshape(cshape) + 1e-5) * w.reshape(cshape) + b.reshape(
            cshape
        )
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
        rm = 0.9 * rm + 0.1 * mean
        rv = 0.9 * rv + 0.1 * var * n / (n - 1)  # unbiased variance in the running estimate
    np.testing.assert_allclose(bn.running_mean.value, rm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.value, rv, rtol=1e-5, atol=1e-6)
    assert bn.num_batches_tracked.value == 2
    # eval mode: the running statistics, and nothing is updated
    predict = symdl.compile([x], [y], mode="eval")
    xe = rng.standard_normal(shape).astype(np.float32)
    (out,) = predict(xe)
    want = (xe - rm.reshape(cshape)) / np.sqrt(rv.reshape(cshape) + 1e-5) * w.reshape(cshape) + b.reshape(cshape)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    assert bn.num_batches_tracked.value == 2
    np.testing.assert_allclose(bn.running_mean.value, rm, rtol=1e-5, atol=1e-6)


def test_batchnorm_options(rng):
    x = rng.standard_normal((5, 2)).astype(np.float32)
    bn = nn.BatchNorm1d(2, affine=False, momentum=0.5, eps=1e-3)
    assert list(bn.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    out = run(bn, x)
    np.testing.assert_allclose(out, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.value, 0.5 * x.mean(0), rtol=1e-5)
    free = nn.BatchNorm1d(2, track_running_stats=False)
    assert list(free.state_dict()) == ["weight", "bias"]
    # without running statistics both modes use the batch statistics
    np.testing.assert_allclose(
        run(free, x, mode="eval"), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="momentum=None .* is not supported"):
        nn.BatchNorm2d(3, momentum=None)


def test_batchnorm_gradients_against_finite_differences(rng):
    bn = nn.BatchNorm1d(3, dtype="float64")
    bn.weight.value = rng.uniform(0.5, 1.5, 3)
    bn.bias.value = rng.standard_normal(3)
    x = symdl.placeholder((None, 3), "float64", name="x")
    loss = (symdl.tanh(bn(x)) * np.arange(1.0, 4.0)).sum()
    symdl.check_grad(loss, {x: rng.standard_normal((6, 3)), bn.weight: bn.weight.value, bn.bias: bn.bias.value})


# ----------------------------------------------------------------------------------------------------
# Dropout, Embedding
# ----------------------------------------------------------------------------------------------------


def test_dropout_train_mask_and_eval_identity(rng):
    gen = Generator(seed=5)
    drop = nn.Dropout(0.25, generator=gen)
    x = symdl.placeholder((None, 40), name="x")
    y = drop(x)
    xb = rng.standard_normal((30, 40)).astype(np.float32)
    state = gen.get_state()
    (got,) = symdl.compile([x], [y], mode="train")(xb)
    mask = dropout_mask_array(xb.shape, state, 0.25, 0, np.float32)
    np.testing.assert_array_equal(got, xb * mask)
    kept = mask != 0
    assert 0.65 < kept.mean() < 0.85
    np.testing.assert_allclose(got[kept], xb[kept] / 0.75, rtol=1e-6)
    assert gen.counter == 1
    (ev,) = symdl.compile([x], [y], mode="eval")(xb)
    np.testing.assert_array_equal(ev, xb)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


def test_embedding_lookup_padding_and_gradient(rng):
    emb = nn.Embedding(6, 3, padding_idx=-1)
    assert emb.padding_idx == 5 and not emb.weight.value[5].any()
    idx = np.array([[0, 5, 2], [2, 2, 1]], np.int64)
    ph = symdl.placeholder((None, 3), "int64", name="idx")
    out = emb(ph)
    (got,) = symdl.compile([ph], [out])(idx)
    np.testing.assert_array_equal(got, emb.weight.value[idx])
    (g,) = symdl.grad(out.sum(), [emb.weight])
    (gv,) = symdl.compile([ph], [g])(idx)
    want = np.zeros((6, 3), np.float32)
    np.add.at(want, idx.ravel(), 1.0)
    want[5] = 0.0  # the padding row gets no gradient
    np.testing.assert_array_equal(gv, want)
    pre = nn.Embedding.from_pretrained(np.eye(4, 2, dtype=np.float32))
    assert not pre.weight.trainable and pre.weight.shape == (4, 2)
    np.testing.assert_array_equal(pre.weight.value, np.eye(4, 2))


# ----------------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------------


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize(
    "module, formula",
    [
        (nn.ReLU(), lambda x: np.maximum(x, 0)),
        (nn.LeakyReLU(), lambda x: np.where(x > 0, x, 0.01 * x)),
        (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
        (nn.ELU(), lambda x: np.where(x > 0, x, np.expm1(x))),
        (nn.ELU(alpha=0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
        (nn.Sigmoid(), _sigmoid),
        (nn.Tanh(), np.tanh),
        (nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
        (nn.Softmax(dim=-1), lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
        (nn.LogSoftmax(dim=1), lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))),
        (nn.PReLU(), lambda x: np.where(x > 0, x, 0.25 * x)),
        (nn.Identity(), lambda x: x),
    ],
    ids=lambda v: repr(v) if isinstance(v, nn.Module) else "",
)
def test_activation_modules_match_their_formulas(rng, module, formula):
    x = rng.standard_normal((3, 4, 5))
    got = run(module, x.astype(np.float32))
    np.testing.assert_allclose(got, formula(x), rtol=1e-5, atol=1e-6)


def test_prelu_per_channel_slopes_are_learnable(rng):
    pr = nn.PReLU(3, init=0.1, dtype="float64")
    pr.weight.value = np.array([0.1, 0.2, 0.3])
    assert list(pr.parameters()) == [pr.weight] and pr.weight.trainable
    x = symdl.placeholder((None, 3, 4), "float64", name="x")
    r = rng.standard_normal((2, 3, 4))
    xb = rng.standard_normal((2, 3, 4))
    y = pr(x)
    loss = (y * r).sum()
    (gw,) = symdl.grad(loss, [pr.weight])
    out, gwv = symdl.compile([x], [y, gw])(xb)
    np.testing.assert_allclose(out, np.where(xb > 0, xb, pr.weight.value.reshape(1, 3, 1) * xb), rtol=1e-12)
    np.testing.assert_allclose(gwv, np.where(xb > 0, 0.0, xb * r).sum(axis=(0, 2)), rtol=1e-12)
    symdl.check_grad(loss, {x: xb, pr.weight: pr.weight.value})


def test_maxout(rng):
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    got = run(nn.Maxout(3), x)
    np.testing.assert_array_equal(got, x.reshape(2, 2, 3, 3).max(axis=2))  # groups of 3 consecutive features
    x2 = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(nn.Maxout(2), x2), x2.reshape(4, 4, 2).max(-1))
    np.testing.assert_array_equal(run(nn.Maxout(1), x2), x2)
    with pytest.raises(
        ShapeError,
        match=r"^model \(Maxout\(pool_size=3\)\): expected an input \(N, C, \.\.\.\) with a static C divisible by "
        r"pool_size=3, got \(None, 8\) float32",
    ):
        nn.Maxout(3)(symdl.placeholder((None, 8)))


def test_softmax_without_dim_warns_and_uses_torchs_implicit_choice(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax has been deprecated"):
        got = run(nn.Softmax(), x)
    np.testing.assert_allclose(got, np.exp(x) / np.exp(x).sum(1, keepdims=True), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Reprs
# ----------------------------------------------------------------------------------------------------

REPRS = [
    (lambda m: m.Linear(784, 512), "Linear(in_features=784, out_features=512, bias=True)"),
    (lambda m: m.Linear(3, 2, bias=False), "Linear(in_features=3, out_features=2, bias=False)"),
    (lambda m: m.Conv2d(3, 16, 3), "Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1))"),
    (
        lambda m: m.Conv2d(4, 8, (3, 5), stride=2, padding=1, dilation=2, groups=2, bias=False),
        "Conv2d(4, 8, kernel_size=(3, 5), stride=(2, 2), padding=(1, 1), dilation=(2, 2), groups=2, bias=False)",
    ),
    (lambda m: m.Conv2d(2, 2, 3, padding="same"), "Conv2d(2, 2, kernel_size=(3, 3), stride=(1, 1), padding=same)"),
    (lambda m: m.Conv1d(2, 4, 3, padding=1), "Conv1d(2, 4, kernel_size=(3,), stride=(1,), padding=(1,))"),
    (lambda m: m.MaxPool2d(2), "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"),
    (lambda m: m.MaxPool1d(3, 2), "MaxPool1d(kernel_size=3, stride=2, padding=0, dilation=1, ceil_mode=False)"),
    (lambda m: m.AvgPool2d(2), "AvgPool2d(kernel_size=2, stride=2, padding=0)"),
    (
        lambda m: m.BatchNorm2d(16),
        "BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)",
    ),
    (
        lambda m: m.BatchNorm1d(4, affine=False),
        "BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=True)",
    ),
    (
        lambda m: m.BatchNorm2d(3, bias=False),
        "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, bias=False, track_running_stats=True)",
    ),
    (lambda m: m.Flatten(), "Flatten(start_dim=1, end_dim=-1)"),
    (lambda m: m.Embedding(10, 3, padding_idx=0), "Embedding(10, 3, padding_idx=0)"),
    (lambda m: m.ReLU(), "ReLU()"),
    (lambda m: m.LeakyReLU(0.2), "LeakyReLU(negative_slope=0.2)"),
    (lambda m: m.PReLU(), "PReLU(num_parameters=1)"),
    (lambda m: m.ELU(), "ELU(alpha=1.0)"),
    (lambda m: m.Sigmoid(), "Sigmoid()"),
    (lambda m: m.Tanh(), "Tanh()"),
    (lambda m: m.Softmax(dim=1), "Softmax(dim=1)"),
    (lambda m: m.LogSoftmax(dim=1), "LogSoftmax(dim=1)"),
    (lambda m: m.Identity(), "Identity()"),
    (
        lambda m: m.Sequential(m.Linear(2, 3), m.ReLU()),
        "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n  (1): ReLU()\n)",
    ),
]


@pytest.mark.parametrize("build, text", REPRS)
def test_reprs_are_pytorchs(build, text):
    assert repr(build(nn)) == text


def test_reprs_match_torch():
    torch = pytest.importorskip("torch")
    for build, _ in REPRS:
        assert repr(build(nn)) == repr(build(torch.nn))
    assert repr(nn.Dropout(0.3)) == "Dropout(p=0.3)"
    assert repr(nn.Maxout(2)) == "Maxout(pool_size=2)"
    assert repr(nn.GlobalAvgPool2d()) == "GlobalAvgPool2d()"


# ----------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------


def test_layer_input_errors_name_the_layer_and_the_shapes():
    with pytest.raises(
        ShapeError,
        match=r"^model \(Conv2d\(3, 4, kernel_size=\(3, 3\), stride=\(1, 1\)\)\): the input's channel dim is 1 but "
        r"in_channels=3: got an input \(None, 1, 8, 8\) float32, expected \(N, C_in, H, W\) or \(C_in, H, W\)",
    ):
        nn.Conv2d(3, 4, 3)(symdl.placeholder((None, 1, 8, 8)))
    with pytest.raises(
        ShapeError,
        match=r"Conv1d\(.*\)\): expected a 3-d or 2-d input \(N, C_in, L\) or \(C_in, L\), got \(None, 2, 3, 4\)",
    ):
        nn.Conv1d(2, 2, 1)(symdl.placeholder((None, 2, 3, 4)))
    with pytest.raises(
        ShapeError, match=r"BatchNorm2d\(.*\)\): expected a 4-d input \(N, C, H, W\), got \(None, 3, 5\) float32"
    ):
        nn.BatchNorm2d(3)(symdl.placeholder((None, 3, 5)))
    with pytest.raises(ShapeError, match=r"the input's channel dim \(axis 1\) is 4 but num_features=3"):
        nn.BatchNorm1d(3)(symdl.placeholder((None, 4)))
    with pytest.raises(
        ShapeError,
        match=r"input dtype float64 differs from the layer's float32 parameters \(input \(None, 3\) float64\); cast "
        r"the input with .astype\('float32'\) or build the layer with dtype='float64'",
    ):
        nn.Linear(3, 2)(symdl.placeholder((None, 3), "float64"))
    with pytest.raises(
        ShapeError, match=r"^model \(Embedding\(4, 2\)\): embedding: the input must hold integer indices"
    ):
        nn.Embedding(4, 2)(symdl.placeholder((None, 3)))
    with pytest.raises(ShapeError, match=r"^model \(MaxPool2d\(.*\)\): expected a 4-d or 3-d input"):
        nn.MaxPool2d(2)(symdl.placeholder((None, 8)))
    with pytest.raises(TypeError, match=r"model \(Linear\(.*\)\): input: cannot use str"):
        nn.Linear(3, 2)("x")


# ----------------------------------------------------------------------------------------------------
# PyTorch comparisons (skipped without torch)
# ----------------------------------------------------------------------------------------------------


def _to_torch(torch, symdl_module, torch_module):
    torch_module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in symdl_module.state_dict().items()})
    return torch_module


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda m: m.Linear(6, 4), (3, 6)),
        (lambda m: m.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (2, 4, 13)),
        (lambda m: m.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2), (2, 4, 9, 8)),
        (lambda m: m.Conv2d(3, 5, 4, padding="same"), (2, 3, 7, 6)),
        (lambda m: m.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 9, 8)),
        (lambda m: m.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 3, 9, 8)),
        (lambda m: m.MaxPool1d(2), (2, 3, 9)),
        (lambda m: m.PReLU(3), (2, 3, 4)),
        (lambda m: m.ELU(0.7), (2, 3, 4)),
        (lambda m: m.LogSoftmax(dim=1), (2, 3, 4)),
    ],
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
def test_forward_matches_torch(rng, build, shape):
    torch = pytest.importorskip("torch")
    ours = build(nn)
    theirs = _to_torch(torch, ours, build(torch.nn))
    x = rng.standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(ours, x), want, rtol=1e-4, atol=1e-5)


def test_embedding_matches_torch(rng):
    torch = pytest.importorskip("torch")
    ours = nn.Embedding(7, 3, padding_idx=2)
    theirs = _to_torch(torch, ours, torch.nn.Embedding(7, 3, padding_idx=2))
    idx = rng.integers(0, 7, size=(4, 5))
    with torch.no_grad():
        want = theirs(torch.from_numpy(idx)).numpy()
    np.testing.assert_array_equal(run(ours, idx), want)


def test_batchnorm_train_and_eval_match_torch(rng):
    torch = pytest.importorskip("torch")
    ours = nn.BatchNorm2d(3, momentum=0.2)
    ours.weight.value = rng.uniform(0.5, 2, 3).astype(np.float32)
    ours.bias.value = rng.standard_normal(3).astype(np.float32)
    theirs = _to_torch(torch, ours, torch.nn.BatchNorm2d(3, momentum=0.2))
    x = symdl.placeholder((None, 3, 4, 4), name="x")
    y = ours(x)
    step, predict = symdl.compile([x], [y], mode="train"), symdl.compile([x], [y], mode="eval")
    theirs.train()
    for _ in range(3):
        xb = (rng.standard_normal((5, 3, 4, 4)) * 3 + 1).astype(np.float32)
        with torch.no_grad():
            want = theirs(torch.from_numpy(xb)).numpy()
        np.testing.assert_allclose(step(xb)[0], want, rtol=1e-4, atol=1e-4)
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    theirs.eval()
    xe = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        want = theirs(torch.from_numpy(xe)).numpy()
    np.testing.assert_allclose(predict(xe)[0], want, rtol=1e-4, atol=1e-5)


def test_a_torch_state_dict_loads_into_the_same_architecture(rng):
    torch = pytest.importorskip("torch")

    def build(m):
        return m.Sequential(
            m.Conv2d(1, 4, 3, padding=1),
            m.BatchNorm2d(4),
            m.ReLU(),
            m.MaxPool2d(2),
            m.Flatten(),
            m.Linear(4 * 3 * 3, 5),
            m.Tanh(),
            m.Linear(5, 2),
        )

    torch.manual_seed(0)
    theirs = build(torch.nn)
    theirs.train()
    with torch.no_grad():  # move the running statistics away from their defaults
        theirs(torch.randn(8, 1, 6, 6) * 2 + 1)
    theirs.eval()
    ours = build(nn)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert ours[1].num_batches_tracked.value == 1
    xb = rng.standard_normal((3, 1, 6, 6)).astype(np.float32)
    with torch.no_grad():
        want = theirs(torch.from_numpy(xb)).numpy()
    np.testing.assert_allclose(run(ours, xb, mode="eval"), want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# A compiled network
# ----------------------------------------------------------------------------------------------------


def test_sequential_compiled_for_cpu_matches_the_reference(rng):
    symdl.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 3),
    )
    x = symdl.placeholder((None, 1, 6, 6), name="x")
    t = symdl.placeholder((None,), "int64", name="t")
    logits = model(x)
    loss = symdl.cross_entropy(logits, t)
    params = list(model.parameters())
    grads = symdl.grad(loss, params)
    updates = {p: p - 0.1 * g for p, g in zip(params, grads)}
    xb = rng.standard_normal((5, 1, 6, 6)).astype(np.float32)
    tb = rng.integers(0, 3, size=5)
    start = model.state_dict()

    results = {}
    for target in ("reference", "cpu"):
        model.load_state_dict(start)
        step = symdl.compile([x, t], [loss, logits], updates=updates, target=target)
        predict = symdl.compile([x], [logits], mode="eval", target=target)
        outs = [step(xb, tb) for _ in range(2)]
        results[target] = (outs, model.state_dict(), predict(xb)[0])
    (ref_outs, ref_state, ref_pred), (cpu_outs, cpu_state, cpu_pred) = results["reference"], results["cpu"]
    for r, c in zip(ref_outs, cpu_outs):
        np.testing.assert_allclose(c[0], r[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(c[1], r[1], rtol=1e-4, atol=1e-5)
    for k in ref_state:
        np.testing.assert_allclose(cpu_state[k], ref_state[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert ref_state["1.num_batches_tracked"] == 2 and cpu_state["1.num_batches_tracked"] == 2
    assert not np.array_equal(ref_state["5.weight"], start["5.weight"])  # the step did train
    np.testing.assert_allclose(cpu_pred, ref_pred, rtol=1e-4, atol=1e-5)


def test_no_warnings_in_normal_use(rng):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=-1))
        run(model, rng.standard_normal((2, 3)).astype(np.float32))
    assert math.isfinite(float(model[0].weight.value.sum()))
