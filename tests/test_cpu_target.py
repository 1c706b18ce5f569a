"""End-to-end tests of ``compile(..., target="cpu")``: training matches the reference, no recompiles across
batch sizes or processes, inference plans are folded and free of training-only kernels, introspection works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import symdl as sd
from compiler.lower import dispatcher_stats
from symdl.graph import toposort

pytest.importorskip("numba")


def _mlp(seed=0, hidden=16, dropout=0.0):
    rng = np.random.default_rng(seed)
    x = sd.placeholder((None, 8), name="x")
    y = sd.placeholder((None,), "int64", name="y")
    w1 = sd.parameter(rng.normal(0, 0.3, (8, hidden)).astype(np.float32), name="w1")
    b1 = sd.parameter(np.zeros(hidden, np.float32), name="b1")
    w2 = sd.parameter(rng.normal(0, 0.3, (hidden, 4)).astype(np.float32), name="w2")
    b2 = sd.parameter(np.zeros(4, np.float32), name="b2")
    h = sd.relu(x @ w1 + b1)
    if dropout:
        h = sd.dropout(h, dropout)
    logits = h @ w2 + b2
    loss = sd.cross_entropy(logits, y)
    params = [w1, b1, w2, b2]
    grads = sd.grad(loss, params)
    updates = {p: p - 0.1 * g for p, g in zip(params, grads)}
    return x, y, params, logits, loss, updates


def _data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype(np.float32), rng.integers(0, 4, n)


def test_training_loss_curve_matches_reference():
    xs, ys = _data()
    curves = {}
    for target in ("reference", "cpu"):
        sd.manual_seed(0)  # same dropout streams and generator state for both runs
        x, y, params, _, loss, updates = _mlp(dropout=0.2)
        f = sd.compile([x, y], [loss], updates=updates, target=target)
        curves[target] = [f(xs[i : i + 8], ys[i : i + 8])[0] for _ in range(3) for i in range(0, 40, 8)]
        curves[target + "_w"] = params[0].value.copy()
    np.testing.assert_allclose(curves["cpu"], curves["reference"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(curves["cpu_w"], curves["reference_w"], rtol=1e-4, atol=1e-6)


def test_new_batch_sizes_compile_nothing():
    x, y, _, _, loss, updates = _mlp()
    f = sd.compile([x, y], [loss], updates=updates, target="cpu")
    xs, ys = _data(64)
    f(xs[:32], ys[:32])
    before = dispatcher_stats(f.lowered.compiled)
    for n in (7, 1, 13, 32):  # a ragged last batch, batch 1, ...
        f(xs[:n], ys[:n])
    assert dispatcher_stats(f.lowered.compiled)[1] == before[1]
    assert f._executor.instantiations == 5


def test_second_process_compiles_zero_kernels(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np, symdl as sd
        x = sd.placeholder((None, 1, 8, 8), name="x")
        w = sd.parameter(np.ones((4, 1, 3, 3), np.float32) * 0.1, name="w")
        b = sd.parameter(np.zeros(4, np.float32), name="b")
        h = sd.max_pool2d(sd.relu(sd.conv2d(x, w, b, padding=1)), 2)
        loss = sd.mean(sd.tanh(h) * 2.0 - 0.5)
        gw, gb = sd.grad(loss, [w, b])
        f = sd.compile([x], [loss], updates={w: w - 0.1 * gw, b: b - 0.1 * gb}, target="cpu")
        f(np.ones((3, 1, 8, 8), np.float32))
        r = f.compile_report
        print("COMPILED", r.numba_compiled, "HITS", r.numba_cache_hits)
        """
    )
    env = dict(os.environ, SYMDL_CACHE_DIR=str(tmp_path / "symdl"), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    outs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("COMPILED")][0].split()
        outs.append((int(line[1]), int(line[3])))
    assert outs[0][0] > 0  # the first process compiled its kernels ...
    assert outs[1][0] == 0 and outs[1][1] > 0  # ... the second loaded every one from the disk cache


def _bn_dropout_net():
    rng = np.random.default_rng(3)
    x = sd.placeholder((None, 2, 6, 6), name="x")
    w = sd.parameter(rng.normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32), name="w")
    rm = sd.parameter(rng.normal(0, 0.1, 4).astype(np.float32), name="rm", trainable=False)
    rv = sd.parameter(rng.uniform(0.5, 1.5, 4).astype(np.float32), name="rv", trainable=False)
    g = sd.parameter(rng.uniform(0.5, 1.5, 4).astype(np.float32), name="g")
    b = sd.parameter(rng.normal(0, 0.1, 4).astype(np.float32), name="b")
    h = sd.relu(sd.batch_norm(sd.conv2d(x, w, padding=1), rm, rv, g, b))
    out = sd.dropout(sd.flatten(h, 1), 0.5) @ sd.parameter(rng.normal(0, 0.1, (144, 3)).astype(np.float32))
    return x, out, rng.normal(size=(5, 2, 6, 6)).astype(np.float32)


@pytest.mark.parametrize("freeze", [False, True])
def test_eval_plan_is_folded_and_has_no_training_kernels(freeze):
    x, out, xv = _bn_dropout_net()
    unfolded = sd.compile([x], [out], mode="eval", target="cpu", passes={"fold_bn": False})
    f = sd.compile([x], [out], mode="eval", target="cpu", freeze_parameters=freeze)
    ops = {n.op.name for k in f.lowered.kernels for n in k.nodes}
    assert not ops & {"dropout_mask", "batch_count", "batch_norm_eval", "mode_switch"}
    assert not f.program.updates
    assert any(k.name.startswith(f"k{k.index}_conv+add+relu") for k in f.lowered.kernels)
    np.testing.assert_allclose(f(xv)[0], unfolded(xv)[0], rtol=1e-5, atol=1e-6)
    ref = sd.compile([x], [out], mode="eval")(xv)[0]
    np.testing.assert_allclose(f(xv)[0], ref, rtol=1e-5, atol=1e-6)


def test_fusion_rejections_are_explained():
    x = sd.placeholder((None, 4), name="x")
    w = sd.parameter(np.ones((4, 3), np.float32), name="w")
    h = x @ w
    f = sd.compile([x], [sd.relu(h + 1.0), h], target="cpu")
    assert "matmul is a program output" in f.explain()
    assert len(f.lowered.kernels) == 2


def test_plan_profile_and_memory_report():
    x, y, _, _, loss, updates = _mlp(hidden=32)
    f = sd.compile([x, y], [loss], updates=updates, target="cpu")
    xs, ys = _data(16)
    text = str(f.plan)
    assert "epilogue" in text and "matmul+add+relu" in text and "test_cpu_target.py" in text
    prof = f.profile(xs, ys, repeat=3)
    table = str(prof)
    assert "backward" in table and "forward" in table
    mem = f.memory_report()
    assert 0 < mem.planned_peak_bytes < mem.unplanned_bytes
    rep = f.compile_report
    assert rep.kernels == len(f.lowered.compiled) and {"passes", "fusion", "codegen", "numba_jit"} <= set(rep.timings)
    assert "numba" in str(rep).lower()


def test_render_compiled_plan_draws_kernel_clusters(tmp_path):
    x, y, _, _, loss, updates = _mlp()
    f = sd.compile([x, y], [loss], updates=updates, target="cpu")
    from symdl.render import graph_to_dot

    src = graph_to_dot(f)
    assert "cluster" in src and "epilogue" in src


def test_missing_kernel_is_a_compile_error_naming_the_op():
    x = sd.placeholder((None,), "int64", name="labels")
    with pytest.raises(sd.GraphError, match=r"(?s)one_hot.*test_cpu_target.py"):
        sd.compile([x], [sd.one_hot(x)], target="cpu")


def test_parameters_are_updated_in_place_and_rebound():
    x, y, params, _, loss, updates = _mlp()
    f = sd.compile([x, y], [loss], updates=updates, target="cpu")
    xs, ys = _data(8)
    f(xs, ys)
    w = params[0]
    held = w.value
    f(xs, ys)
    assert w.value is held  # updated in place: no new array per step
    w.value = np.zeros_like(held)  # user replaces the value: the plan rebinds
    ref = sd.compile([x, y], [loss], updates=updates)
    saved = [p.value.copy() for p in params]
    want = ref(xs, ys)[0]
    for p, v in zip(params, saved):
        p.value = v
    np.testing.assert_allclose(f(xs, ys)[0], want, rtol=1e-5)


@pytest.mark.parametrize("off", [None, "simplify", "fold_bn", "constant_fold"])
def test_each_pass_switched_off_still_matches_reference(off):
    passes = {} if off is None else {off: False}
    x, out, xv = _bn_dropout_net()
    f = sd.compile([x], [out], mode="eval", target="cpu", passes=passes, freeze_parameters=True)
    np.testing.assert_allclose(f(xv)[0], sd.compile([x], [out], mode="eval")(xv)[0], rtol=1e-5, atol=1e-6)
    sd.manual_seed(0)
    xm, ym, params, _, loss, updates = _mlp(dropout=0.3)
    xs, ys = _data(16)
    saved = [p.value.copy() for p in params]
    got = sd.compile([xm, ym], [loss], updates=updates, target="cpu", passes=passes)(xs, ys)[0]
    got_w = params[0].value.copy()
    for p, v in zip(params, saved):
        p.value = v
    sd.manual_seed(0)  # the reference run draws the same dropout mask
    want = sd.compile([xm, ym], [loss], updates=updates)(xs, ys)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got_w, params[0].value, rtol=1e-5, atol=1e-7)


def test_same_node_returned_twice_gives_two_equal_arrays():
    a = sd.placeholder((None, 3), name="a")
    h = sd.tanh(a) * 2.0
    f = sd.compile([a], [h, h, sd.sum(h)], target="cpu")
    x = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
    h1, h2, s = f(x)
    np.testing.assert_allclose(h1, np.tanh(x) * 2, rtol=1e-5)
    np.testing.assert_array_equal(h1, h2)
    assert h1 is not h2 and not np.shares_memory(h1, h2)
    np.testing.assert_allclose(s, h1.sum(), rtol=1e-5)


def test_batch_one_and_odd_image_sizes_after_compile_compile_nothing():
    """The warm-up inside compile() also compiles the paths that only some shapes take: the small-batch
    convolution (a batch smaller than the thread count splits output channels) and, with ceil_mode, the general
    pooling kernel beside the 2x2 one."""
    x = sd.placeholder((None, 32, None, None), name="x")
    w = sd.parameter(np.full((64, 32, 3, 3), 0.01, np.float32), name="w")
    y = sd.max_pool2d(sd.relu(sd.conv2d(x, w, padding=1)), 2, ceil_mode=True)
    f = sd.compile([x], [y], mode="eval", target="cpu")
    before = dispatcher_stats(f.lowered.compiled)
    for shape in ((1, 32, 64, 64), (3, 32, 9, 7), (1, 32, 10, 10)):  # batch 1 of a big conv; odd sizes
        xs = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        ref = sd.compile([x], [y], mode="eval")(xs)[0]
        np.testing.assert_allclose(f(xs)[0], ref, rtol=1e-4, atol=1e-5)
    assert dispatcher_stats(f.lowered.compiled)[1] == before[1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_bias_relu_epilogue_runs_inside_the_simd_kernel(dtype):
    """conv -> + per-channel bias -> relu (the eval net after BatchNorm folding) is one SIMD convolution whose
    bias and ReLU are applied to each tile before it is stored: no generated loop, same values as the reference
    (NaN included); a 1-d conv, groups and a bias without ReLU take the same path."""
    rng = np.random.default_rng(3)
    cases = []
    x = sd.placeholder((None, 5, None, None), dtype, name="x")
    w = sd.parameter((0.2 * rng.standard_normal((16, 5, 3, 3))).astype(dtype), name="w")
    b = sd.parameter(rng.standard_normal(16).astype(dtype), name="b")
    cases.append((x, sd.relu(sd.conv2d(x, w, b, padding=1)), (3, 5, 9, 37)))
    cases.append((x, sd.conv2d(x, w, b, padding=(2, 0)), (2, 5, 6, 6)))  # bias, no relu
    wg = sd.parameter((0.2 * rng.standard_normal((16, 3, 3, 3))).astype(dtype), name="wg")
    xg = sd.placeholder((None, 6, None, None), dtype, name="xg")
    cases.append((xg, sd.relu(sd.conv2d(xg, wg, b, groups=2)), (2, 6, 7, 8)))
    x1 = sd.placeholder((None, 8, None), dtype, name="x1")
    w1 = sd.parameter((0.2 * rng.standard_normal((16, 4, 5))).astype(dtype), name="w1")
    cases.append((x1, sd.relu(sd.conv1d(x1, w1, b, padding=2, groups=2)), (3, 8, 21)))
    for inp, out, shape in cases:
        f = sd.compile([inp], [out], mode="eval", target="cpu")
        conv_kernels = [ck for ck in f.lowered.compiled if ck.kernel.kind == "epilogue"]
        assert conv_kernels and all(ck.source is None for ck in conv_kernels)  # no generated epilogue loop
        xs = rng.standard_normal(shape).astype(dtype)
        xs.flat[5] = np.nan
        ref = sd.compile([inp], [out], mode="eval")(xs)[0]
        got = f(xs)[0]
        rtol = 1e-4 if dtype == "float32" else 1e-10
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol)
        assert np.array_equal(np.isnan(got), np.isnan(ref)) and np.isnan(got).any()


def _conv_pool_net(ceil_mode=False, also_output=False, padding=1):
    rng = np.random.default_rng(4)
    x = sd.placeholder((None, 3, None, None), name="x")
    w = sd.parameter((0.3 * rng.standard_normal((16, 3, 3, 3))).astype(np.float32), name="w")
    b = sd.parameter(rng.standard_normal(16).astype(np.float32), name="b")
    h = sd.relu(sd.conv2d(x, w, b, padding=padding))
    y = sd.max_pool2d(h, 2, ceil_mode=ceil_mode)
    return x, ([y, h] if also_output else [y])


@pytest.mark.parametrize("shape", [(3, 3, 12, 10), (2, 3, 9, 7), (1, 3, 33, 34)])
def test_max_pool_runs_in_the_convolution_kernel(shape):
    """conv -> bias -> relu -> max_pool(2) at inference is one kernel (the full-size activation is never stored),
    floor mode on odd sizes included, NaN propagating; passes={"fuse_pooling": False} keeps two kernels with
    the same values."""
    x, outs = _conv_pool_net()
    f = sd.compile([x], outs, mode="eval", target="cpu")
    names = [ck.kernel.name for ck in f.lowered.compiled]
    assert any(n.endswith("conv+add+relu+max_pool") for n in names)
    assert not any(n.endswith("_max_pool") for n in names)  # no pooling kernel of its own
    assert any("fuse_pooling:" in line for line in f.lowered.fusion_log)
    xs = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    xs[0, 1, 2, 3] = np.nan
    ref = sd.compile([x], outs, mode="eval")(xs)[0]
    got = f(xs)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert np.array_equal(np.isnan(got), np.isnan(ref)) and np.isnan(got).any()
    unfused = sd.compile([x], outs, mode="eval", target="cpu", passes={"fuse_pooling": False})
    assert any(ck.kernel.name.endswith("_max_pool") for ck in unfused.lowered.compiled)
    np.testing.assert_allclose(unfused(xs)[0], got, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["ceil_mode", "activation_is_an_output", "training"])
def test_max_pool_stays_separate_where_it_must(case):
    x, outs = _conv_pool_net(ceil_mode=case == "ceil_mode", also_output=case == "activation_is_an_output")
    if case == "training":
        loss = sd.mean(outs[0])
        params = [t for t in toposort([loss]) if isinstance(t, sd.Parameter)]
        grads = sd.grad(loss, params)
        f = sd.compile([x], [loss], updates={p: p - 0.1 * g for p, g in zip(params, grads)}, target="cpu")
    else:
        f = sd.compile([x], outs, mode="eval", target="cpu")
    assert not any(line.startswith("fuse_pooling:") for line in f.lowered.fusion_log)
    assert any(ck.kernel.name.endswith("_max_pool") for ck in f.lowered.compiled)


def test_training_conv_epilogue_with_relu_mask_runs_inside_the_simd_kernel():
    """In a training step the conv -> bias -> relu kernel also outputs the ReLU mask (pre-activation > 0) for
    the backward pass; the SIMD convolution writes both in its store. Three SGD steps match the reference."""
    rng = np.random.default_rng(6)
    x = sd.placeholder((None, 2, None, None), name="x")
    w = sd.parameter((0.4 * rng.standard_normal((8, 2, 3, 3))).astype(np.float32), name="w")
    b = sd.parameter((0.1 * rng.standard_normal(8)).astype(np.float32), name="b")
    h = sd.max_pool2d(sd.relu(sd.conv2d(x, w, b, padding=1)), 2)
    loss = sd.mean(h * h)
    gw, gb = sd.grad(loss, [w, b])
    updates = {w: w - 0.5 * gw, b: b - 0.5 * gb}
    xs = rng.standard_normal((4, 2, 10, 9)).astype(np.float32)
    start = (w.value.copy(), b.value.copy())
    results = []
    for target in ("cpu", "reference"):
        w.value, b.value = start[0].copy(), start[1].copy()
        f = sd.compile([x], [loss], updates=updates, target=target)
        if target == "cpu":
            fused = [ck for ck in f.lowered.compiled if ck.kernel.name.endswith("conv+add+relu+greater")]
            assert fused and fused[0].source is None  # no generated epilogue loop: the mask comes from the store
        results.append([float(f(xs)[0]) for _ in range(3)] + [w.value.copy(), b.value.copy()])
    np.testing.assert_allclose(results[0][:3], results[1][:3], rtol=1e-4)
    for got, ref in zip(results[0][3:], results[1][3:]):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
