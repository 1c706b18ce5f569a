"""Graph passes: structural tests (graph before/after) and semantics preserved (values equal the reference)."""

import numpy as np
import pytest

import symdl as sd
from compiler.passes import PASS_NAMES
from compiler.program import build_program


def ops_of(program):
    return [n.op.name for n in program.order if n.inputs]


def test_simplify_removes_neutral_ops_and_inverse_pairs():
    x = sd.placeholder((None, 3), name="x")
    y = sd.neg(sd.neg(sd.log(sd.exp(x * 1.0 + 0.0)))).T.T
    prog = build_program([x], [y], passes={})
    assert prog.outputs[0] is x
    reasons = str(prog.log)
    for r in ("x mul 1", "x add 0", "log(exp(x))", "neg(neg(x))", "transpose(transpose(x))"):
        assert r in reasons


def test_simplify_keeps_broadcasting_neutral_ops():
    x = sd.placeholder((3,), name="x")
    y = x + sd.constant(np.zeros((2, 3), "float32"))  # broadcasts x: must stay
    prog = build_program([x], [y], passes={})
    assert ops_of(prog) == ["add"]
    f = sd.compile([x], [y], passes={})
    assert f(np.ones(3, "float32"))[0].shape == (2, 3)


def test_constant_fold_and_switching_off():
    x = sd.placeholder((3,), name="x")
    c = sd.constant(np.arange(3, dtype="float32"))
    y = x * (sd.exp(c) + 1.0)
    assert ops_of(build_program([x], [y], passes={})) == ["mul"]
    assert ops_of(build_program([x], [y], passes={"constant_fold": False})) == ["exp", "add", "mul"]
    f = sd.compile([x], [y], passes={})
    np.testing.assert_allclose(f(np.ones(3, "float32"))[0], np.exp(np.arange(3)) + 1, rtol=1e-6)


def test_unknown_pass_name_is_an_error():
    x = sd.placeholder((3,))
    with pytest.raises(sd.GraphError, match="unknown pass"):
        build_program([x], [x * 2.0], passes={"fusion_magic": False})
    assert "fold_bn" in PASS_NAMES


def _conv_bn_net(groups=1, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    x = sd.placeholder((None, 4, 6, 6), name="x")
    w = sd.parameter(rng.normal(size=(8, 4 // groups, 3, 3)).astype("float32"), name="w")
    b = sd.parameter(rng.normal(size=8).astype("float32"), name="b") if bias else None
    rm = sd.parameter(rng.normal(size=8).astype("float32"), name="rm", trainable=False)
    rv = sd.parameter(rng.uniform(0.5, 2, size=8).astype("float32"), name="rv", trainable=False)
    gamma = sd.parameter(rng.normal(size=8).astype("float32"), name="gamma")
    beta = sd.parameter(rng.normal(size=8).astype("float32"), name="beta")
    y = sd.relu(sd.batch_norm(sd.conv2d(x, w, b, padding=1, groups=groups), rm, rv, gamma, beta, eps=1e-3))
    return x, y, rng.normal(size=(5, 4, 6, 6)).astype("float32")


@pytest.mark.parametrize("groups,bias", [(1, True), (1, False), (2, True), (4, False)])
@pytest.mark.parametrize("freeze", [False, True])
def test_fold_bn_conv_matches_unfolded(groups, bias, freeze):
    x, y, xv = _conv_bn_net(groups, bias)
    ref = sd.compile([x], [y], mode="eval")(xv)[0]
    f = sd.compile([x], [y], mode="eval", passes={}, freeze_parameters=freeze)
    names = ops_of(f.program)
    assert "batch_norm_eval" not in names and "conv" in names
    assert "fold_bn: folded into conv" in str(f.program.log)
    got = f(xv)[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    if freeze:  # folded weights were precomputed: only the conv, the bias add and relu remain
        assert names == ["conv", "add", "relu"]


def test_fold_bn_linear_and_guards():
    rng = np.random.default_rng(1)
    x = sd.placeholder((None, 5), name="x")
    w = sd.parameter(rng.normal(size=(5, 3)).astype("float32"), name="w")
    b = sd.parameter(rng.normal(size=3).astype("float32"), name="b")
    rm = sd.parameter(rng.normal(size=3).astype("float32"), trainable=False)
    rv = sd.parameter(rng.uniform(0.5, 2, size=3).astype("float32"), trainable=False)
    h = x @ w + b
    y = sd.batch_norm(h, rm, rv)
    xv = rng.normal(size=(4, 5)).astype("float32")
    ref = sd.compile([x], [y], mode="eval")(xv)[0]
    f = sd.compile([x], [y], mode="eval", passes={})
    assert "batch_norm_eval" not in ops_of(f.program)
    np.testing.assert_allclose(f(xv)[0], ref, rtol=1e-5, atol=1e-6)
    # the layer output is also an output: folding would change it, so the pass refuses and says why
    g = sd.compile([x], [y, h], mode="eval", passes={})
    assert "batch_norm_eval" in ops_of(g.program)
    assert "consumers" in str(g.program.log)
    # folding switched off by name
    assert "batch_norm_eval" in ops_of(sd.compile([x], [y], mode="eval", passes={"fold_bn": False}).program)


def test_fold_bn_tracks_live_parameters_after_training_steps():
    x, y, xv = _conv_bn_net()
    f = sd.compile([x], [y], mode="eval", passes={})
    before = f(xv)[0]
    w = next(n for n in f.program.order if isinstance(n, sd.Parameter) and n.name == "w")
    w.value = w.value * 2
    ref = sd.compile([x], [y], mode="eval")(xv)[0]
    after = f(xv)[0]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, ref, rtol=1e-5, atol=1e-5)


def test_freeze_parameters_needs_eval_mode():
    x, y, _ = _conv_bn_net()
    with pytest.raises(sd.GraphError, match="freeze_parameters"):
        sd.compile([x], [y], mode="train", freeze_parameters=True)
