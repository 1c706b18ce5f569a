"""one_hot, embedding and take_class: values, run-time range checks, gradients (first and second order)."""

import numpy as np
import pytest

import symdl
from symdl.graph import apply
from symdl.ops.indexing import Embedding, EmbeddingGrad, TakeAlongClass, TakeAlongClassGrad


def run(fn, *arrays):
    phs = [symdl.placeholder(a.shape, a.dtype) for a in arrays]
    outs = fn(*phs)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    return symdl.compile(phs, outs)(*arrays)


# ----------------------------------------------------------------------------------------------------
# one_hot
# ----------------------------------------------------------------------------------------------------


def test_one_hot_values():
    labels = np.array([[0, 2], [1, 3]])
    out = run(lambda t: symdl.one_hot(t, 5), labels)[0]
    assert out.dtype == np.int64 and out.shape == (2, 2, 5)
    np.testing.assert_array_equal(out, np.eye(5, dtype=np.int64)[labels])


def test_one_hot_inferred_classes():
    t = symdl.placeholder((None,), "int32")
    oh = symdl.one_hot(t)
    assert oh.shape == (None, None) and oh.dtype == np.int64
    f = symdl.compile([t], [oh])
    np.testing.assert_array_equal(f(np.array([0, 3, 1], np.int32))[0], np.eye(4, dtype=np.int64)[[0, 3, 1]])
    np.testing.assert_array_equal(f(np.array([1], np.int32))[0], [[0, 1]])
    with pytest.raises(symdl.OpRuntimeError, match="empty"):
        f(np.zeros(0, np.int32))


def test_one_hot_range_errors_name_value_and_line():
    t = symdl.placeholder((3,), "int64")
    f = symdl.compile([t], [symdl.one_hot(t, 10)])
    with pytest.raises(
        symdl.OpRuntimeError,
        match=r"label 12 is out of range for 10 classes \(valid: 0\.\.9\)"
        r"(.|\n)*test_indexing\.py",
    ):
        f(np.array([1, 12, 3]))
    with pytest.raises(symdl.OpRuntimeError, match=r"label -1 is out of range for 10 classes"):
        f(np.array([1, -1, 3]))
    g = symdl.compile([t], [symdl.one_hot(t)])
    with pytest.raises(symdl.OpRuntimeError, match=r"label -2 is out of range"):
        g(np.array([-2, -1, -3]))


def test_one_hot_rejects_floats_and_bad_num_classes():
    with pytest.raises(symdl.ShapeError, match=r"integer(.|\n)*test_indexing\.py"):
        symdl.one_hot(symdl.placeholder((3,), "float32"), 4)
    with pytest.raises(ValueError, match="num_classes"):
        symdl.one_hot(symdl.placeholder((3,), "int64"), -5)


def test_one_hot_against_torch():
    torch = pytest.importorskip("torch")
    labels = np.array([[0, 2, 1], [4, 3, 0]])
    for n in (-1, 5, 7):
        ours = run(lambda t, n=n: symdl.one_hot(t, n), labels)[0]
        np.testing.assert_array_equal(ours, torch.nn.functional.one_hot(torch.tensor(labels), n).numpy())


# ----------------------------------------------------------------------------------------------------
# embedding
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("idx_shape", [(), (4,), (2, 3), (2, 1, 3)])
def test_embedding_values_and_grad(rng, idx_shape):
    w = rng.standard_normal((6, 3))
    idx = rng.integers(0, 6, idx_shape)
    out = run(symdl.embedding, idx, w)[0]
    assert out.shape == idx_shape + (3,)
    np.testing.assert_array_equal(out, w[idx])
    symdl.check_grad(lambda i, ww: symdl.embedding(i, ww), [idx, w])


def test_embedding_grad_accumulates_repeats_and_skips_padding(rng):
    w = rng.standard_normal((5, 2))
    idx = np.array([[1, 1, 4], [0, 1, 2]])
    for padding_idx, row in [(None, None), (1, 1), (-1, 4), (-5, 0)]:
        out, gw = run(
            lambda i, ww, p=padding_idx: [symdl.embedding(i, ww, p), symdl.grad(symdl.embedding(i, ww, p).sum(), ww)],
            idx,
            w,
        )
        np.testing.assert_array_equal(out, w[idx])  # the padding row's value is returned as stored
        expect = np.zeros_like(w)
        np.add.at(expect, idx.reshape(-1), 1.0)
        if row is not None:
            expect[row] = 0
        np.testing.assert_array_equal(gw, expect)


def test_embedding_check_grad_with_padding(rng):
    w = rng.standard_normal((5, 2))
    idx = np.array([[1, 1, 4], [0, 4, 2]])  # row 3 (padding) is unused: its zero gradient is then exact
    symdl.check_grad(lambda i, ww: symdl.tanh(symdl.embedding(i, ww, padding_idx=3)), [idx, w])


def test_embedding_second_order(rng):
    w = rng.standard_normal((4, 3))
    idx = np.array([0, 2, 2, 3, 1, 0])
    for p in (None, 2):
        symdl.check_grad(lambda i, ww, p=p: symdl.grad((symdl.embedding(i, ww, p) ** 3).sum(), ww), [idx, w])


def test_embedding_range_errors():
    i = symdl.placeholder((None,), "int64")
    w = symdl.parameter(np.zeros((10, 2), np.float32))
    f = symdl.compile([i], [symdl.embedding(i, w)])
    with pytest.raises(
        symdl.OpRuntimeError,
        match=r"index 10 is out of range for 10 embedding rows "
        r"\(valid: 0\.\.9\)(.|\n)*test_indexing\.py",
    ):
        f(np.array([3, 10]))
    with pytest.raises(symdl.OpRuntimeError, match=r"index -1 is out of range"):
        f(np.array([-1]))
    assert f(np.array([9, 0]))[0].shape == (2, 2)


def test_embedding_bad_arguments():
    w = symdl.parameter(np.zeros((4, 2), np.float32))
    with pytest.raises(symdl.ShapeError, match=r"integer indices(.|\n)*test_indexing\.py"):
        symdl.embedding(symdl.placeholder((3,)), w)
    with pytest.raises(symdl.ShapeError, match="2-d"):
        symdl.embedding(symdl.placeholder((3,), "int64"), symdl.parameter(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="padding_idx"):
        symdl.embedding(symdl.placeholder((3,), "int64"), w, padding_idx=4)
    with pytest.raises(ValueError, match="padding_idx"):
        symdl.embedding(symdl.placeholder((3,), "int64"), w, padding_idx=-5)


def test_embedding_ignore_index_op(rng):
    w = rng.standard_normal((3, 2))
    idx = np.array([0, -100, 2])
    out = run(lambda i, ww: apply(Embedding(None, -100), i, ww), idx, w)[0]
    np.testing.assert_array_equal(out, [w[0], [0, 0], w[2]])
    g = rng.standard_normal((3, 2))
    scattered = run(lambda gg, i, ww: apply(EmbeddingGrad(2, -100), gg, i, ww), g, idx, w)[0]
    np.testing.assert_array_equal(scattered, [g[0], [0, 0], [0, 0]])


def test_embedding_against_torch(rng):
    torch = pytest.importorskip("torch")
    w = rng.standard_normal((7, 3))
    idx = rng.integers(0, 7, (4, 5))
    r = rng.standard_normal((4, 5, 3))
    for p in (None, 2, -1):
        out, gw = run(
            lambda i, ww, p=p: [symdl.embedding(i, ww, p), symdl.grad((symdl.embedding(i, ww, p) * r).sum(), ww)],
            idx,
            w,
        )
        tw = torch.tensor(w, requires_grad=True)
        ty = torch.nn.functional.embedding(torch.tensor(idx), tw, padding_idx=p)
        (ty * torch.tensor(r)).sum().backward()
        np.testing.assert_array_equal(out, ty.detach().numpy())
        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------------------
# take_class
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("xshape", [(4, 3), (2, 5, 3), (2, 4, 1, 3), (1, 1)])
def test_take_class_values(rng, xshape):
    x = rng.standard_normal(xshape)
    idx = rng.integers(0, xshape[1], xshape[:1] + xshape[2:])
    out = run(symdl.take_class, x, idx)[0]
    np.testing.assert_array_equal(out, np.take_along_axis(x, idx[:, None], 1)[:, 0])
    symdl.check_grad(lambda a, i: symdl.take_class(a, i) ** 2, [x, idx])


def test_take_class_unbatched_and_ignore_index(rng):
    x = rng.standard_normal(5)
    out = run(lambda a, i: symdl.take_class(a, i, axis=0), x, np.array(3))[0]
    assert out.shape == () and out == x[3]
    x2 = rng.standard_normal((4, 3))
    idx = np.array([2, -100, 0, 1])
    out = run(lambda a, i: symdl.take_class(a, i, ignore_index=-100), x2, idx)[0]
    np.testing.assert_array_equal(out, [x2[0, 2], 0.0, x2[2, 0], x2[3, 1]])
    g = run(lambda a, i: symdl.grad(symdl.take_class(a, i, ignore_index=-100).sum(), a), x2, idx)[0]
    expect = np.zeros_like(x2)
    expect[[0, 2, 3], [2, 0, 1]] = 1
    np.testing.assert_array_equal(g, expect)
    # an ignore_index that is also a valid class: those entries are ignored too
    out = run(lambda a, i: symdl.take_class(a, i, ignore_index=0), x2, np.array([0, 1, 0, 2]))[0]
    np.testing.assert_array_equal(out, [0.0, x2[1, 1], 0.0, x2[3, 2]])


def test_take_class_second_order(rng):
    x = rng.standard_normal((3, 4, 2))
    idx = np.array([[0, 3], [2, -1], [1, 1]])
    symdl.check_grad(
        lambda a, i: symdl.grad((symdl.exp(symdl.take_class(a, i, ignore_index=-1)) ** 2).sum(), a), [x, idx]
    )


def test_take_class_adjoint_ops_second_order(rng):
    g = rng.standard_normal((3, 2))
    ref = rng.standard_normal((3, 4, 2))
    idx = np.array([[0, 3], [2, 1], [1, 1]])

    def fn(gg, i, r):
        s = apply(TakeAlongClassGrad(1, None), gg, i, r)
        return symdl.grad((s**2).sum(), gg)

    symdl.check_grad(lambda gg, i: fn(gg, i, symdl.constant(ref)), [g, idx])
    symdl.check_grad(lambda gg, i: apply(TakeAlongClassGrad(1, None), gg, i, symdl.constant(ref)) * 1.0, [g, idx])
    assert TakeAlongClass(1, None) == TakeAlongClass(1, None)


def test_take_class_range_error_message():
    x = symdl.placeholder((None, 10))
    i = symdl.placeholder((None,), "int64")
    f = symdl.compile([x, i], [symdl.take_class(x, i, ignore_index=-100)])
    with pytest.raises(
        symdl.OpRuntimeError,
        match=r"label 12 is out of range for 10 classes "
        r"\(valid: 0\.\.9, or ignore_index=-100\)(.|\n)*test_indexing\.py",
    ):
        f(np.zeros((3, 10), np.float32), np.array([1, 12, -100]))
    with pytest.raises(symdl.OpRuntimeError, match=r"label -3 is out of range"):
        f(np.zeros((3, 10), np.float32), np.array([1, -3, -100]))
    with pytest.raises(symdl.OpRuntimeError, match=r"labels have shape \(2,\), expected \(3,\)"):
        f(np.zeros((3, 10), np.float32), np.array([1, 2]))


def test_take_class_static_errors():
    x = symdl.placeholder((4, 10))
    with pytest.raises(symdl.ShapeError, match=r"take_class(.|\n)*test_indexing\.py"):
        symdl.take_class(x, symdl.placeholder((5,), "int64"))
    with pytest.raises(symdl.ShapeError, match=r"integers"):
        symdl.take_class(x, symdl.placeholder((4,), "float32"))
    with pytest.raises(symdl.ShapeError, match=r"rank"):
        symdl.take_class(x, symdl.placeholder((4, 1), "int64"))


def test_gradient_through_integer_index_is_refused(rng):
    x = symdl.placeholder((3,), "float64")
    table = symdl.placeholder((3, 4), "float64")
    idx = symdl.cast(symdl.abs(x) * 2.0, "int64")
    y = symdl.take_class(table, idx).sum()
    with pytest.raises(symdl.GradientError, match=r"take_class.*not differentiable(.|\n)*test_indexing\.py"):
        symdl.grad(y, x)
    w = symdl.placeholder((5, 2), "float64")
    z = symdl.embedding(idx, w).sum()
    with pytest.raises(symdl.GradientError, match=r"embedding.*integer"):
        symdl.grad(z, [x, w])
    # with respect to the table alone, everything is fine
    g = symdl.grad(y, table)
    assert g.shape == (3, 4)
