"""symdl.compile: input validation, updates, check_numerics, modes, graph-build errors, no growth per call."""

from __future__ import annotations

import gc
import os
import tracemalloc

import numpy as np
import pytest
from helpers import line_here, run

import symdl
import symdl.ops as O
from symdl import GraphError, NumericsError, ShapeError, parameter, placeholder

HERE = os.path.basename(__file__)


@pytest.fixture
def xf():
    x = placeholder((None, 3), name="xin")
    return x, symdl.compile([x], [x * 2.0])


def test_wrong_number_of_arrays(xf):
    _, f = xf
    with pytest.raises(ValueError, match="xin"):
        f()
    with pytest.raises(ValueError, match="xin"):
        f(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32))


def test_wrong_dtype(xf):
    _, f = xf
    with pytest.raises(ValueError, match="xin") as ei:
        f(np.zeros((2, 3), np.float64))
    assert "float32" in str(ei.value) and "float64" in str(ei.value)
    with pytest.raises(ValueError, match="xin"):
        f(np.zeros((2, 3), np.int32))


def test_wrong_rank(xf):
    _, f = xf
    with pytest.raises(ValueError, match="xin"):
        f(np.zeros((3,), np.float32))
    with pytest.raises(ValueError, match="xin"):
        f(np.zeros((1, 2, 3), np.float32))


def test_size_contradicting_fixed_dim(xf):
    _, f = xf
    with pytest.raises(ValueError, match="xin"):
        f(np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("n", [0, 1, 7])
def test_none_dims_accept_any_batch(xf, n):
    _, f = xf
    xs = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
    (out,) = f(xs)
    assert out.shape == (n, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, xs * 2)


def test_none_dims_must_agree_at_run_time():
    a, b = placeholder((None,), name="a"), placeholder((None,), name="b")
    f = symdl.compile([a, b], [a + b])
    np.testing.assert_array_equal(f(np.ones(2, np.float32), np.ones(2, np.float32))[0], [2, 2])
    with pytest.raises(symdl.OpRuntimeError):
        f(np.ones(2, np.float32), np.ones(3, np.float32))


def test_lists_and_scalars_as_inputs():
    s = placeholder((), "float64", name="s")
    v = placeholder((2,), "int64", name="v")
    (out,) = symdl.compile([s, v], [s * v])(2.5, [1, 2])
    np.testing.assert_array_equal(out, [2.5, 5.0])


def test_missing_placeholder_raises_graph_error_naming_it():
    x = placeholder((3,), name="x")
    forgotten = placeholder((3,), name="forgotten_one")
    with pytest.raises(GraphError, match="forgotten_one"):
        symdl.compile([x], [x + forgotten])


def test_compile_argument_errors():
    x = placeholder((3,), name="x")
    p = parameter(np.zeros(3, np.float32), name="p")
    with pytest.raises(GraphError):
        symdl.compile([x, x], [x])
    with pytest.raises(GraphError):
        symdl.compile([p], [x])  # inputs must be placeholders
    with pytest.raises(GraphError):
        symdl.compile([x], [x], target="nonexistent")
    with pytest.raises(GraphError):
        symdl.compile([x], [x], mode="test")
    with pytest.raises(TypeError):
        symdl.compile([x], [np.zeros(3)])
    with pytest.raises(GraphError):
        symdl.compile([x], [x], updates={x: x})


def test_single_tensor_inputs_outputs_and_unused_input():
    x, unused = placeholder((2,), name="x"), placeholder((5,), name="unused")
    f = symdl.compile(x, x * 3.0)
    assert isinstance(f(np.ones(2, np.float32)), list)
    g = symdl.compile([x, unused], [x])
    np.testing.assert_array_equal(g(np.ones(2, np.float32), np.ones(5, np.float32))[0], [1, 1])
    assert symdl.compile([], [symdl.constant(np.arange(3))])()[0].tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------------------
# updates
# ------------------------------------------------------------------------------------------------


def test_updates_swap_two_parameters():
    a = parameter(np.array([1.0, 2.0], np.float32), name="a")
    b = parameter(np.array([3.0, 4.0], np.float32), name="b")
    f = symdl.compile([], [a + 0.0, b * 1.0], updates={a: b, b: a})
    oa, ob = f()
    np.testing.assert_array_equal(oa, [1, 2])  # outputs see the old values
    np.testing.assert_array_equal(ob, [3, 4])
    np.testing.assert_array_equal(a.value, [3, 4])
    np.testing.assert_array_equal(b.value, [1, 2])
    f()
    np.testing.assert_array_equal(a.value, [1, 2])


def test_counter_returns_old_value():
    p = parameter(np.array(0, np.int64), name="counter")
    f = symdl.compile([], [p], updates={p: p + 1})
    seen = [int(f()[0]) for _ in range(4)]
    assert seen == [0, 1, 2, 3] and int(p.value) == 4


def test_sgd_step_uses_old_values():
    w = parameter(np.array([1.0, -2.0], np.float64), name="w")
    x = placeholder((2,), "float64", name="x")
    loss = symdl.sum(symdl.square(w * x))
    g = symdl.grad(loss, w)
    f = symdl.compile([x], [loss, g], updates={w: w - 0.1 * g})
    l0, g0 = f(np.array([1.0, 1.0]))
    assert l0 == 5.0
    np.testing.assert_allclose(g0, [2.0, -4.0])
    np.testing.assert_allclose(w.value, [0.8, -1.6])


def test_update_with_array_value():
    w = parameter(np.zeros(2, np.float32), name="w")
    symdl.compile([], [], updates={w: np.array([5.0, 6.0])})()
    assert w.value.dtype == np.float32
    np.testing.assert_array_equal(w.value, [5, 6])


def test_update_type_mismatch_raises():
    w = parameter(np.zeros((2, 3), np.float32), name="weights")
    with pytest.raises(GraphError, match="weights"):
        symdl.compile([], [], updates={w: placeholder((2, 3), "float64")})
    with pytest.raises(GraphError, match="weights"):
        symdl.compile([], [], updates={w: w.T})
    with pytest.raises(GraphError, match="weights"):
        symdl.compile([], [], updates={w: w[0]})
    x = placeholder((None, 3), name="x")
    f = symdl.compile([x], [], updates={w: x})  # None dims are checked at run time
    f(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(w.value, np.ones((2, 3)))
    with pytest.raises(symdl.OpRuntimeError, match="weights"):
        f(np.ones((4, 3), np.float32))
    np.testing.assert_array_equal(w.value, np.ones((2, 3)))  # nothing applied on failure


def test_parameter_value_setter_checks():
    w = parameter(np.zeros(2, np.float32), name="w")
    with pytest.raises(ValueError):
        w.value = np.zeros(3, np.float32)
    with pytest.raises(ValueError):
        w.value = np.zeros(2, np.float64)
    assert parameter([1.0, 2.0]).dtype == np.float32
    assert parameter(np.array([1.0])).dtype == np.float64


def test_outputs_do_not_alias_parameters_or_inputs():
    p = parameter(np.arange(3, dtype=np.float32), name="p")
    x = placeholder((3,), name="x")
    xs = np.ones(3, np.float32)
    out_p, out_x, out_sg, out_p2 = symdl.compile([x], [p, x, O.stop_gradient(x), p])(xs)
    out_p[:] = 100
    out_x[:] = 100
    out_sg[:] = 50
    np.testing.assert_array_equal(p.value, [0, 1, 2])
    np.testing.assert_array_equal(xs, [1, 1, 1])
    np.testing.assert_array_equal(out_p2, [0, 1, 2])


def test_parameters_are_read_at_call_time():
    w = parameter(np.array([1.0], np.float32), name="w")
    f = symdl.compile([], [w * 2.0])
    assert f()[0][0] == 2.0
    w.value = np.array([5.0], np.float32)
    assert f()[0][0] == 10.0


# ------------------------------------------------------------------------------------------------
# check_numerics
# ------------------------------------------------------------------------------------------------


def test_check_numerics_forward_names_op_and_line():
    x = placeholder((3,), name="x")
    line = line_here() + 1
    y = symdl.log(x)
    z = y * 2.0
    bad = np.array([1.0, -1.0, 2.0], np.float32)
    (out,) = symdl.compile([x], [z])(bad)  # off by default
    assert np.isnan(out[1])
    f = symdl.compile([x], [z], check_numerics=True)
    with pytest.raises(NumericsError) as ei:
        f(bad)
    msg = str(ei.value)
    assert "log" in msg and f"{HERE}:{line}" in msg and "1 NaN" in msg
    np.testing.assert_allclose(f(np.array([1.0, 2.0, 3.0], np.float32))[0], 2 * np.log([1, 2, 3]), rtol=1e-6)


def test_check_numerics_gradient_names_forward_line():
    x = placeholder((3,), name="x")
    line = line_here() + 1
    y = symdl.sum(symdl.sqrt(x))
    g = symdl.grad(y, x)
    f = symdl.compile([x], [y, g], check_numerics=True)
    f(np.array([1.0, 4.0, 9.0], np.float32))
    with pytest.raises(NumericsError) as ei:
        f(np.array([1.0, 0.0, 9.0], np.float32))  # d sqrt(x)/dx = inf at 0
    msg = str(ei.value)
    assert "gradient" in msg and f"{HERE}:{line}" in msg and "Inf" in msg


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_check_numerics_reports_first_op():
    x = placeholder((2,), name="x")
    a = symdl.exp(x)
    line = line_here() + 1
    b = a * 1e30
    c = b - b  # inf - inf = nan, but the first non-finite op is the mul
    with pytest.raises(NumericsError) as ei:
        symdl.compile([x], [c], check_numerics=True)(np.array([1.0, 50.0], np.float32))
    assert "mul" in str(ei.value) and f"{HERE}:{line}" in str(ei.value)


# ------------------------------------------------------------------------------------------------
# graph-build shape errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["add", "matmul", "concat", "reshape"])
def test_build_time_shape_errors(op):
    a = placeholder((2, 3), name="a")
    b = placeholder((4, 5), "float64", name="b")
    builders = {
        "add": lambda: a + b,
        "matmul": lambda: symdl.matmul(a, b),
        "concat": lambda: symdl.concat([a, b], axis=1),
        "reshape": lambda: symdl.reshape(b, (3, 3)),
    }
    with pytest.raises(ShapeError) as ei:
        line = line_here() + 1
        builders[op]()
    msg = str(ei.value)
    assert op in msg
    assert "(4, 5) float64" in msg
    if op != "reshape":
        assert "(2, 3)" in msg
    assert f"{HERE}:" in msg and ("lambda" in msg or str(line) in msg)


def test_build_time_error_points_at_user_line_not_library():
    a = placeholder((2, 3), name="a")
    with pytest.raises(ShapeError) as ei:
        line = line_here() + 1
        symdl.add(a, placeholder((3, 2)))
    assert f"{HERE}:{line}" in str(ei.value)
    assert "symdl/ops" not in str(ei.value)


# ------------------------------------------------------------------------------------------------
# modes
# ------------------------------------------------------------------------------------------------


def test_mode_switch_train_eval_with_update():
    x = placeholder((None, 2), "float64", name="x")
    running = parameter(np.zeros(2), name="running", trainable=False)
    batch_mean = symdl.mean(x, axis=0)
    y = O.mode_switch(x - batch_mean, x - running, updates={running: running * 0.5 + batch_mean * 0.5})
    f_train = symdl.compile([x], [y], mode="train")
    f_eval = symdl.compile([x], [y], mode="eval")
    xs = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(f_eval(xs)[0], xs)  # running is still 0
    np.testing.assert_array_equal(running.value, [0, 0])  # eval does not update
    np.testing.assert_allclose(f_train(xs)[0], xs - [2.0, 4.0])
    np.testing.assert_allclose(running.value, [1.0, 2.0])  # applied after the outputs
    np.testing.assert_allclose(f_train(xs)[0], xs - [2.0, 4.0])
    np.testing.assert_allclose(running.value, [1.5, 3.0])
    np.testing.assert_allclose(f_eval(xs)[0], xs - [1.5, 3.0])
    assert f_train.program.implicit_updates == [running]
    assert f_eval.program.updates == []


def test_mode_switch_explicit_and_implicit_update_conflict():
    r = parameter(np.zeros(2), name="r", trainable=False)
    x = placeholder((2,), "float64", name="x")
    y = O.mode_switch(x, x * 2.0, updates={r: x})
    with pytest.raises(GraphError, match="r"):
        symdl.compile([x], [y], updates={r: x * 3.0}, mode="train")
    symdl.compile([x], [y], updates={r: x * 3.0}, mode="eval")


def test_unresolved_mode_switch_type_error():
    r = parameter(np.zeros(2), name="r", trainable=False)
    with pytest.raises(ShapeError):
        O.mode_switch(placeholder((2,), "float64"), placeholder((2,), "float32"))
    with pytest.raises(ShapeError):
        O.mode_switch(
            placeholder((2,), "float64"), placeholder((2,), "float64"), updates={r: placeholder((3,), "float64")}
        )


# ------------------------------------------------------------------------------------------------
# repeated calls: no graph growth, no memory growth
# ------------------------------------------------------------------------------------------------


def test_repeated_calls_do_not_grow_graph_or_memory():
    rng = np.random.default_rng(40)
    W = parameter(rng.normal(size=(4, 3)).astype(np.float32), name="W")
    x, t = placeholder((None, 4), name="x"), placeholder((None, 3), name="t")
    loss = symdl.mean(symdl.square(symdl.tanh(x @ W) - t))
    g = symdl.grad(loss, W)
    f = symdl.compile([x, t], [loss], updates={W: W - 0.01 * g})
    xs, ts = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    for _ in range(10):
        f(xs, ts)
    gc.collect()
    nodes = symdl.graph.node_count()
    tracemalloc.start()
    try:
        for _ in range(100):
            f(xs, ts)
        gc.collect()
        after_100 = tracemalloc.get_traced_memory()[0]
        for _ in range(900):
            f(xs, ts)
        gc.collect()
        after_1000 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert symdl.graph.node_count() == nodes
    assert after_1000 - after_100 < 64 * 1024, (after_100, after_1000)
    (l1,) = f(xs, ts)
    assert np.isfinite(l1)


def test_function_repr_and_properties():
    x = placeholder((2,), name="x")
    f = symdl.compile([x], [x * 2.0, x + 1.0])
    assert f.inputs == [x] and len(f.outputs) == 2
    assert "reference" in repr(f) and "train" in repr(f)
    assert run([x], [x * 2.0], np.ones(2, np.float32))[0].tolist() == [2.0, 2.0]
