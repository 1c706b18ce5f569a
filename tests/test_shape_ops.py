"""Shape ops: reshape, transpose, flatten, expand_dims, squeeze, concat, stack, broadcast_to, pad, getitem."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_value, evaluate, line_here, run

import symdl
import symdl.ops as O
from symdl import ShapeError, placeholder

# name -> (input shape, symbolic fn, numpy reference)
CASES = {
    "reshape": ((2, 3, 4), lambda t: symdl.reshape(t, (4, 6)), lambda x: x.reshape(4, 6)),
    "reshape_m1": ((2, 3, 4), lambda t: symdl.reshape(t, (-1, 4)), lambda x: x.reshape(-1, 4)),
    "reshape_none": ((2, 3, 4), lambda t: symdl.reshape(t, (None, 2)), lambda x: x.reshape(-1, 2)),
    "reshape_method": ((2, 3, 4), lambda t: t.reshape(3, -1), lambda x: x.reshape(3, -1)),
    "reshape_method_tuple": ((2, 3, 4), lambda t: t.reshape((24,)), lambda x: x.reshape(24)),
    "reshape_scalar": ((1, 1), lambda t: symdl.reshape(t, ()), lambda x: x.reshape(())),
    "transpose_rev": ((2, 3, 4), symdl.transpose, lambda x: x.transpose()),
    "transpose_perm": ((2, 3, 4), lambda t: symdl.transpose(t, (1, 2, 0)), lambda x: x.transpose(1, 2, 0)),
    "transpose_star_perm": ((2, 3, 4), lambda t: t.transpose(2, 0, 1), lambda x: x.transpose(2, 0, 1)),
    "transpose_torch_3d": ((2, 3, 4), lambda t: symdl.transpose(t, 0, 2), lambda x: np.swapaxes(x, 0, 2)),
    "transpose_torch_neg": ((2, 3, 4), lambda t: t.transpose(-1, -2), lambda x: np.swapaxes(x, -1, -2)),
    "transpose_torch_2d": ((2, 3), lambda t: t.transpose(0, 1), lambda x: x.T),  # torch: x.transpose(0, 1) == x.T
    "transpose_torch_4d": ((2, 3, 4, 5), lambda t: symdl.transpose(t, 1, 3), lambda x: np.swapaxes(x, 1, 3)),
    "T": ((2, 3), lambda t: t.T, lambda x: x.T),
    "T_3d": ((2, 3, 4), lambda t: t.T, lambda x: x.T),
    "swapaxes": ((2, 3, 4), lambda t: O.swapaxes(t, 0, 1), lambda x: np.swapaxes(x, 0, 1)),
    "flatten": ((2, 3, 4), symdl.flatten, lambda x: x.reshape(-1)),
    "flatten_1": ((2, 3, 4), lambda t: symdl.flatten(t, 1), lambda x: x.reshape(len(x), 12)),
    "flatten_mid": ((2, 3, 4, 5), lambda t: t.flatten(1, 2), lambda x: x.reshape(2, 12, 5)),
    "flatten_neg": ((2, 3, 4), lambda t: symdl.flatten(t, 0, -2), lambda x: x.reshape(6, 4)),
    "expand_dims": ((2, 3), lambda t: O.expand_dims(t, 1), lambda x: np.expand_dims(x, 1)),
    "expand_dims_multi": ((2, 3), lambda t: O.expand_dims(t, (0, -1)), lambda x: np.expand_dims(x, (0, -1))),
    "squeeze_all": ((1, 3, 1), O.squeeze, lambda x: np.squeeze(x)),
    "squeeze_axis": ((1, 3, 1), lambda t: O.squeeze(t, -1), lambda x: np.squeeze(x, -1)),
    "broadcast_to": ((3, 1), lambda t: symdl.broadcast_to(t, (2, 3, 4)), lambda x: np.broadcast_to(x, (2, 3, 4))),
    "broadcast_to_same": ((3,), lambda t: symdl.broadcast_to(t, (3,)), lambda x: x),
    "pad_last": ((2, 3), lambda t: symdl.pad(t, (1, 2)), lambda x: np.pad(x, ((0, 0), (1, 2)))),
    "pad_two": (
        (2, 3, 4),
        lambda t: symdl.pad(t, (1, 0, 0, 2), value=-1.5),
        lambda x: np.pad(x, ((0, 0), (0, 2), (1, 0)), constant_values=-1.5),
    ),
    "pad_all": ((2, 3), lambda t: symdl.pad(t, (0, 1, 2, 3)), lambda x: np.pad(x, ((2, 3), (0, 1)))),
    "getitem_int": ((3, 4), lambda t: t[1], lambda x: x[1]),
    "getitem_negint": ((3, 4), lambda t: t[-1, -2], lambda x: x[-1, -2]),
    "getitem_slice": ((5, 4), lambda t: t[1:4, ::2], lambda x: x[1:4, ::2]),
    "getitem_negstep": ((5, 4), lambda t: t[::-1, 3:0:-2], lambda x: x[::-1, 3:0:-2]),
    "getitem_negstep_full": ((6,), lambda t: t[-2::-3], lambda x: x[-2::-3]),
    "getitem_ellipsis": ((2, 3, 4), lambda t: t[..., 1], lambda x: x[..., 1]),
    "getitem_ellipsis_mid": ((2, 3, 4), lambda t: t[0, ..., 1:], lambda x: x[0, ..., 1:]),
    "getitem_none": ((2, 3), lambda t: t[:, None, 1:], lambda x: x[:, None, 1:]),
    "getitem_none_lead": ((2, 3), lambda t: t[None, ..., None], lambda x: x[None, ..., None]),
    "getitem_mixed": ((2, 3, 4), lambda t: t[1, None, ::-1, ..., -1], lambda x: x[1, None, ::-1, ..., -1]),
    "getitem_empty": ((4, 3), lambda t: t[3:1], lambda x: x[3:1]),
    "getitem_oob_slice": ((4,), lambda t: t[2:100], lambda x: x[2:100]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shape_op(name):
    shape, fn, ref = CASES[name]
    rng = np.random.default_rng(20)
    x = rng.normal(size=shape)
    out, v = evaluate(fn, x)
    assert_value(out, v, ref(x), rtol=0, atol=0)
    out32, v32 = evaluate(fn, x.astype(np.float32))
    assert_value(out32, v32, ref(x.astype(np.float32)), rtol=0, atol=0)
    if np.size(ref(x)):
        symdl.check_grad(fn, [x])


@pytest.mark.parametrize(
    "name",
    [
        "reshape_m1",
        "transpose_perm",
        "transpose_torch_3d",
        "flatten_1",
        "expand_dims",
        "getitem_negstep",
        "getitem_mixed",
        "pad_two",
        "T_3d",
    ],
)
def test_shape_op_with_none_batch(name):
    shape, fn, ref = CASES[name]
    x = placeholder((None,) + shape[1:], name="x")
    y = fn(x)
    g = symdl.grad((y * y).sum(), x)
    f = symdl.compile([x], [y, g])
    for n in (2, 3) if name == "getitem_mixed" else (1, 3):
        xs = np.random.default_rng(n).normal(size=(n,) + shape[1:]).astype(np.float32)
        yv, gv = f(xs)
        np.testing.assert_array_equal(yv, ref(xs))
        assert gv.shape == xs.shape
        # d/dx sum(y^2) = 2x at the positions y reads (each position at most once), 0 elsewhere
        assert np.all((gv == 0) | np.isclose(gv, 2 * xs))


def test_static_shapes_with_none():
    x = placeholder((None, 3, 4), name="x")
    assert symdl.reshape(x, (-1, 12)).shape == (None, 12)
    assert symdl.reshape(x, (None, 4)).shape == (None, 4)
    assert x.reshape(-1).shape == (None,)
    assert symdl.transpose(x, (2, 0, 1)).shape == (4, None, 3)
    assert x.T.shape == (4, 3, None)
    assert symdl.flatten(x, 1).shape == (None, 12)
    assert symdl.flatten(x).shape == (None,)
    assert O.expand_dims(x, 0).shape == (1, None, 3, 4)
    assert O.squeeze(placeholder((None, 1, 2)), 1).shape == (None, 2)
    assert symdl.concat([x, x], axis=0).shape == (None, 3, 4)
    assert symdl.concat([x, placeholder((2, 3, 4))], axis=0).shape == (None, 3, 4)
    assert symdl.concat([x, x], axis=1).shape == (None, 6, 4)
    assert symdl.stack([x, x], axis=1).shape == (None, 2, 3, 4)
    assert symdl.pad(x, (1, 1, 0, 0, 2, 2)).shape == (None, 3, 6)
    assert x[1:, ::-1].shape == (None, 3, 4)
    assert x[0].shape == (3, 4)
    assert x[..., None, 2].shape == (None, 3, 1)
    assert x.reshape(-1, 2, 2).dtype == np.float32


def test_reshape_same_shape_returns_input_and_errors():
    x = placeholder((2, 3), name="x")
    assert symdl.reshape(x, (2, 3)) is x
    with pytest.raises(ShapeError) as ei:
        line = line_here() + 1
        symdl.reshape(x, (4,))
    msg = str(ei.value)
    assert "reshape" in msg and "(2, 3) float32" in msg and f"test_shape_ops.py:{line}" in msg
    with pytest.raises(ShapeError):
        symdl.reshape(x, (-1, -1))
    with pytest.raises(ShapeError):
        symdl.reshape(x, (-1, 4))


def test_reshape_none_batch_runtime_error():
    x = placeholder((None, 3), name="x")
    f = symdl.compile([x], [symdl.reshape(x, (-1, 2))])
    assert f(np.zeros((4, 3), np.float32))[0].shape == (6, 2)
    with pytest.raises(symdl.OpRuntimeError):
        f(np.zeros((3, 3), np.float32))


def test_axis_errors():
    x = placeholder((2, 3), name="x")
    with pytest.raises(ShapeError):
        symdl.transpose(x, (0, 0))
    with pytest.raises(ShapeError):
        symdl.transpose(x, (0, 2))  # out of range, must not wrap around
    with pytest.raises(ShapeError):
        symdl.transpose(placeholder((2, 3, 4)), 0, 3)
    with pytest.raises(ShapeError):
        O.expand_dims(x, 3)
    with pytest.raises(ShapeError):
        O.squeeze(x, 0)  # size 2
    with pytest.raises(ShapeError):
        O.squeeze(x, 2)
    with pytest.raises(ShapeError):
        symdl.stack([x, x], axis=3)
    with pytest.raises(ShapeError):
        symdl.broadcast_to(x, (3, 3))
    with pytest.raises(ShapeError):
        x[0, 0, 0]
    with pytest.raises(ShapeError):
        x[5]
    with pytest.raises(IndexError):
        x[..., 0, ...]
    with pytest.raises(TypeError):
        x[placeholder((2,), "int64")]
    with pytest.raises(TypeError):
        x[True]  # a mask in NumPy/PyTorch, never the int 1


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_concat_and_stack(axis):
    rng = np.random.default_rng(21)
    shapes = [(2, 3, 4), (2, 3, 4), (2, 3, 4)]
    if axis in (0, 1, -1, 2):
        shapes = [list(s) for s in shapes]
        for k, s in enumerate(shapes):
            s[axis] = k + 1
        shapes = [tuple(s) for s in shapes]
    xs = [rng.normal(size=s) for s in shapes]
    out, v = evaluate(lambda *ts: symdl.concat(list(ts), axis=axis), *xs)
    assert_value(out, v, np.concatenate(xs, axis=axis), rtol=0, atol=0)
    symdl.check_grad(lambda *ts: symdl.concat(list(ts), axis=axis), xs)
    same = [rng.normal(size=(2, 3)) for _ in range(3)]
    ax = axis if axis != 2 else 2
    out, v = evaluate(lambda *ts: symdl.stack(list(ts), axis=ax), *same)
    assert_value(out, v, np.stack(same, axis=ax), rtol=0, atol=0)
    symdl.check_grad(lambda *ts: symdl.stack(list(ts), axis=ax), same)


def test_concat_none_axis_grads_and_promotion():
    a = placeholder((None, 2), "float64", name="a")
    b = placeholder((None, 2), "float64", name="b")
    c = symdl.concat([a, b], axis=0)
    w = np.array([1.0, 10.0])
    ga, gb = symdl.grad((c * c * w).sum(), [a, b])
    f = symdl.compile([a, b], [c, ga, gb])
    av, bv = np.arange(6.0).reshape(3, 2), np.arange(2.0).reshape(1, 2) + 7
    cv, gav, gbv = f(av, bv)
    np.testing.assert_array_equal(cv, np.concatenate([av, bv]))
    np.testing.assert_array_equal(gav, 2 * av * w)
    np.testing.assert_array_equal(gbv, 2 * bv * w)
    # second order through the run-time-sized adjoint
    h = symdl.grad((ga * ga).sum(), a)
    np.testing.assert_array_equal(run([a, b], [h], av, bv)[0], 8 * av * w * w)
    # mixed dtypes are promoted, Python scalars and arrays accepted
    assert symdl.concat([placeholder((2,)), placeholder((3,), "float64")]).dtype == np.float64


def test_concat_shape_error_names_op_shapes_and_line():
    a, b = placeholder((2, 3), name="a"), placeholder((4, 5), name="b")
    with pytest.raises(ShapeError) as ei:
        line = line_here() + 1
        symdl.concat([a, b], axis=0)
    msg = str(ei.value)
    assert "concat" in msg and "(2, 3) float32" in msg and "(4, 5) float32" in msg
    assert f"test_shape_ops.py:{line}" in msg
    with pytest.raises(ShapeError):
        symdl.concat([a, placeholder((2, 3, 1))], axis=0)


def test_pad_torch_order_and_errors():
    x = placeholder((2, 3), name="x")
    assert symdl.pad(x, (1, 2)).shape == (2, 6)  # last dim first, like torch.nn.functional.pad
    assert symdl.pad(x, (1, 2, 3, 4)).shape == (9, 6)
    assert symdl.pad(x, (0, 0)) is x
    with pytest.raises(ValueError):
        symdl.pad(x, (1,))
    with pytest.raises(ValueError):
        symdl.pad(x, (1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError):
        symdl.pad(x, (-1, 0))
    with pytest.raises(NotImplementedError):
        symdl.pad(x, (1, 1), mode="reflect")


def test_broadcast_to_grad_sums():
    x = placeholder((3, 1), "float64", name="x")
    y = symdl.broadcast_to(x, (2, 3, 4))
    g = symdl.grad((y * np.arange(24.0).reshape(2, 3, 4)).sum(), x)
    (gv,) = run([x], [g], np.ones((3, 1)))
    np.testing.assert_array_equal(gv, np.arange(24.0).reshape(2, 3, 4).sum((0, 2))[:, None])


def test_getitem_grad_writes_back_with_repeats():
    x = placeholder((4,), "float64", name="x")
    y = x[::-1] * np.array([1.0, 2.0, 3.0, 4.0]) + x[1:3].sum() + x[-1]
    (g,) = run([x], [symdl.grad(y.sum(), x)], np.zeros(4))
    np.testing.assert_array_equal(g, [4.0, 3.0 + 4, 2.0 + 4, 1.0 + 4])


def test_getitem_no_op_returns_input():
    x = placeholder((2, 3), name="x")
    assert x[:] is x and x[...] is x and x[:, :] is x


def test_op_inference_checks_axis_props_of_directly_built_ops():
    """Op classes built directly (as a model-file loader does) validate their axis props in ``infer``."""
    from symdl.graph import apply
    from symdl.ops.nn import Softmax
    from symdl.ops.reduce import Sum
    from symdl.ops.shape import Transpose

    x = symdl.placeholder((None, 5))
    for op, match in [
        (Softmax(7), "axis 7 is out of range"),
        (Sum((5,), False), "not distinct axes"),
        (Sum((1, 1), False), "not distinct axes"),
        (Transpose((0, 0)), "not a permutation"),
    ]:
        with pytest.raises(symdl.ShapeError, match=match):
            apply(op, x)
