"""softmax, log_softmax, logsumexp and prelu: values, stability, gradients (first and second order)."""

import numpy as np
import pytest

import symdl


def run(fn, *arrays):
    phs = [symdl.placeholder(a.shape, a.dtype) for a in arrays]
    outs = fn(*phs)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    return symdl.compile(phs, outs)(*arrays)


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


SHAPES_AXES = [((5,), -1), ((3, 4), 1), ((3, 4), 0), ((2, 1, 4), 1), ((2, 3, 4), -2), ((1, 1), -1)]


# ----------------------------------------------------------------------------------------------------
# forward values
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_family_values(rng, shape, axis, dtype):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    s, ls, lse, lsek = run(
        lambda t: [
            symdl.softmax(t, axis),
            symdl.log_softmax(t, axis),
            symdl.logsumexp(t, axis),
            symdl.logsumexp(t, axis, keepdims=True),
        ],
        x,
    )
    tol = 1e-6 if dtype == "float32" else 1e-12
    for out in (s, ls, lse, lsek):
        assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(s, np_softmax(x.astype(np.float64), axis), rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(ls, np.log(np_softmax(x.astype(np.float64), axis)), rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(lse, np_logsumexp(x.astype(np.float64), axis), rtol=tol * 10, atol=tol)
    assert lsek.shape == np_logsumexp(x, axis, keepdims=True).shape
    np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=tol * 10)


def test_logsumexp_axes(rng):
    x = rng.standard_normal((2, 3, 4))
    a, b, c = run(lambda t: [symdl.logsumexp(t), symdl.logsumexp(t, (0, 2)), symdl.logsumexp(t, (0, 2), True)], x)
    assert a.shape == ()
    np.testing.assert_allclose(a, np_logsumexp(x), rtol=1e-12)
    np.testing.assert_allclose(b, np_logsumexp(x, (0, 2)), rtol=1e-12)
    assert c.shape == (1, 3, 1)


def test_none_dims_and_int_promotion(rng):
    x = symdl.placeholder((None, 4), "float32")
    s = symdl.softmax(x)
    assert s.shape == (None, 4)
    assert symdl.logsumexp(x, 1).shape == (None,)
    i = symdl.placeholder((3,), "int64")
    assert symdl.softmax(i).dtype == np.float32
    out = symdl.compile([i], [symdl.log_softmax(i)])(np.array([0, 1, 2]))[0]
    np.testing.assert_allclose(out, np.log(np_softmax(np.array([0.0, 1, 2]), 0)), rtol=1e-6)


def test_zero_d_softmax():
    s, ls, lse = run(lambda t: [symdl.softmax(t), symdl.log_softmax(t), symdl.logsumexp(t)], np.array(3.5))
    assert s.shape == () and s == 1.0
    assert ls == 0.0
    assert lse == 3.5


def test_stable_float32_extremes():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], np.float32)

    def fn(t):
        s = symdl.softmax(t)
        ls = symdl.log_softmax(t)
        lse = symdl.logsumexp(t, 1)
        r = np.arange(9, dtype=np.float32).reshape(3, 3)
        gs = symdl.grad((s * r).sum(), t)
        gls = symdl.grad((ls * r).sum(), t)
        glse = symdl.grad((lse * r[:, 0]).sum(), t)
        return [s, ls, lse, gs, gls, glse]

    s, ls, lse, *grads = run(fn, x)
    for out in (s, ls, lse, *grads):
        assert np.all(np.isfinite(out)), out
    np.testing.assert_allclose(s[0], [1, 0, 0])
    np.testing.assert_allclose(s[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(s[2], [0.5, 0.5, 0], rtol=1e-6)
    np.testing.assert_allclose(ls[0], [0, -2e4, -1e4], rtol=1e-6)
    np.testing.assert_allclose(lse, [1e4, -1e4 + np.log(3), 1e4 + np.log(2)], rtol=1e-6)


def test_logsumexp_infinities():
    x = np.array([[-np.inf, -np.inf], [np.inf, 0.0], [-np.inf, 1.0]])
    out = run(lambda t: symdl.logsumexp(t, 1), x)[0]
    assert out[0] == -np.inf and out[1] == np.inf
    np.testing.assert_allclose(out[2], 1.0)


def test_bad_axis_names_user_line():
    x = symdl.placeholder((2, 3))
    with pytest.raises(symdl.ShapeError, match=r"softmax.*out of range(.|\n)*test_nn_ops\.py"):
        symdl.softmax(x, axis=2)
    with pytest.raises(symdl.ShapeError, match=r"logsumexp(.|\n)*test_nn_ops\.py"):
        symdl.logsumexp(x, axis=(0, 5))


# ----------------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
def test_softmax_log_softmax_grad(rng, shape, axis):
    x = rng.standard_normal(shape)
    symdl.check_grad(lambda t: symdl.softmax(t, axis), [x])
    symdl.check_grad(lambda t: symdl.log_softmax(t, axis), [x])


@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), ((0, 2), True), (-1, True)])
def test_logsumexp_grad(rng, axis, keepdims):
    x = rng.standard_normal((3, 1, 4))
    symdl.check_grad(lambda t: symdl.logsumexp(t, axis, keepdims), [x])


def test_softmax_grad_with_broadcasting(rng):
    x = rng.standard_normal((3, 1))
    b = rng.standard_normal((1, 4))
    symdl.check_grad(lambda u, v: symdl.log_softmax(u + v, axis=1) * symdl.softmax(u * v, axis=0), [x, b])


@pytest.mark.parametrize("fn", [symdl.softmax, symdl.log_softmax, lambda t, axis: symdl.logsumexp(t, axis)])
def test_second_order(rng, fn):
    x = rng.standard_normal((3, 4))
    r = rng.standard_normal((3, 4))

    def first_grad(t):
        y = fn(t, 1)
        w = r if y.ndim == 2 else r[:, 0]
        return symdl.grad((symdl.tanh(y) * w).sum(), t)

    symdl.check_grad(first_grad, [x])


def test_third_order_softmax(rng):
    x = rng.standard_normal((4,))

    def second(t):
        g = symdl.grad((symdl.softmax(t) ** 2).sum(), t)
        return symdl.grad((g * np.arange(4.0)).sum(), t)

    symdl.check_grad(second, [x])


# ----------------------------------------------------------------------------------------------------
# prelu
# ----------------------------------------------------------------------------------------------------


def _away_from_zero(rng, shape):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, 0.5, x)


@pytest.mark.parametrize(
    "shape,wshape",
    [((4, 3), (3,)), ((2, 3, 5), (3,)), ((2, 3, 2, 2), (1,)), ((5,), (1,)), ((2, 1, 3), (1,)), ((), (1,))],
)
def test_prelu_values_and_grads(rng, shape, wshape):
    x = _away_from_zero(rng, shape)
    w = rng.random(wshape) + 0.1
    out = run(lambda a, b: symdl.prelu(a, b), x, w)[0]
    wb = w.reshape(()) if w.size == 1 else w.reshape((-1,) + (1,) * (x.ndim - 2))
    np.testing.assert_allclose(out, np.where(x > 0, x, wb * x))
    assert out.shape == x.shape
    symdl.check_grad(lambda a, b: symdl.prelu(a, b), [x, w])


def test_prelu_at_zero_uses_weight_slope():
    x = np.array([0.0, -1.0, 2.0])
    g = run(lambda a: symdl.grad(symdl.prelu(a, np.array([0.25])).sum(), a), x)[0]
    np.testing.assert_allclose(g, [0.25, 0.25, 1.0])


def test_prelu_numpy_weight_adopts_dtype():
    x = symdl.placeholder((2, 3), "float32")
    assert symdl.prelu(x, np.array([0.1, 0.2, 0.3])).dtype == np.float32


def test_prelu_bad_weight():
    x = symdl.placeholder((2, 3, 4))
    with pytest.raises(symdl.ShapeError, match=r"prelu.*4 elements(.|\n)*test_nn_ops\.py"):
        symdl.prelu(x, symdl.parameter(np.ones(4, np.float32)))
    with pytest.raises(symdl.ShapeError, match=r"prelu"):
        symdl.prelu(symdl.placeholder((5,)), symdl.parameter(np.ones(5, np.float32)))


# ----------------------------------------------------------------------------------------------------
# against PyTorch (skipped without torch)
# ----------------------------------------------------------------------------------------------------


def _grad_of(fn, x, r):
    return run(lambda t: [fn(t), symdl.grad((fn(t) * r).sum(), t)], x)


def test_softmax_family_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 5, 2))
    for axis in (0, 1, -1):
        r = rng.standard_normal(x.shape)
        for ours, theirs in [(symdl.softmax, torch.softmax), (symdl.log_softmax, torch.log_softmax)]:
            out, g = _grad_of(lambda t, o=ours, a=axis: o(t, a), x, r)
            tx = torch.tensor(x, requires_grad=True)
            ty = theirs(tx, axis)
            (ty * torch.tensor(r)).sum().backward()
            np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
        rr = rng.standard_normal(np.delete(np.array(x.shape), axis))
        out, g = _grad_of(lambda t, a=axis: symdl.logsumexp(t, a), x, rr)
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.logsumexp(tx, axis)
        (ty * torch.tensor(rr)).sum().backward()
        np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_softmax_float32_extremes_against_torch():
    torch = pytest.importorskip("torch")
    x = np.array([[1e4, -1e4, 3.0], [-1e4, 0.0, 1e4]], np.float32)
    s, ls = run(lambda t: [symdl.softmax(t, 1), symdl.log_softmax(t, 1)], x)
    np.testing.assert_allclose(s, torch.softmax(torch.tensor(x), 1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(ls, torch.log_softmax(torch.tensor(x), 1).numpy(), rtol=1e-6)


def test_prelu_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = _away_from_zero(rng, (2, 3, 4))
    w = rng.random(3)
    r = rng.standard_normal(x.shape)
    out, gx, gw = run(lambda a, b: [symdl.prelu(a, b), *symdl.grad((symdl.prelu(a, b) * r).sum(), [a, b])], x, w)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.prelu(tx, tw)
    (ty * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(out, ty.detach().numpy())
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-12)
