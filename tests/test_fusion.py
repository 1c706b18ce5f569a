"""Structural tests of kernel fusion (compiler/fusion.py): kernel counts, kinds, order, log lines."""

from __future__ import annotations

import numpy as np
import pytest

import symdl as sd
from compiler.fusion import fuse
from compiler.program import build_program


def ids(tensors):
    return [t.id for t in tensors]  # tensors compare by identity: == builds graph nodes


def fused(inputs, outputs, updates=None, fuse_reductions=True):
    log: list[str] = []
    kernels = fuse(build_program(inputs, outputs, updates), log, fuse_reductions)
    check_valid(build_program(inputs, outputs, updates), kernels)
    return kernels, log


def check_valid(program, kernels):
    """Every non-leaf node in exactly one kernel; kernels after their producers; elementwise groups uniform and
    convex; outputs are exactly the members needed outside."""
    owner = {}
    for k, kern in enumerate(kernels):
        assert kern.index == k
        for n in kern.nodes:
            assert n.id not in owner, f"{n} in two kernels"
            owner[n.id] = k
    needed = [n for n in program.order if n.inputs and not n.is_leaf]
    assert set(owner) == {n.id for n in needed}
    roots = {t.id for t in program.outputs} | {v.id for _, v in program.updates}
    consumers = {n.id: set() for n in needed}
    for n in needed:
        for i in n.inputs:
            if i.id in consumers:
                consumers[i.id].add(n.id)
    for k, kern in enumerate(kernels):
        members = {n.id for n in kern.nodes}
        for n in kern.nodes:
            for i in n.inputs:
                if i.id in owner and i.id not in members:
                    assert owner[i.id] < k, f"{kern.name} runs before the producer of {i}"
                    assert any(t is i for t in kern.inputs)
        expect_out = [n for n in kern.nodes if n.id in roots or consumers[n.id] - members]
        assert {n.id for n in kern.outputs} == {n.id for n in expect_out}
        if kern.kind in ("elementwise", "epilogue", "reduction"):
            body = kern.nodes[1:] if kern.kind == "epilogue" else kern.nodes
            if kern.kind != "elementwise" and body[-1].op.name in ("sum", "unbroadcast"):
                assert kern.outputs[-1] is body[-1]  # a fused reduction: last node, last output
                if len(body) > 1:
                    assert body[-1].inputs[0].id in {n.id for n in body[:-1]}
                body = body[:-1] or body
            assert len({n.shape for n in body}) == 1
            if kern.kind == "epilogue":
                assert body[0].shape == kern.anchor.shape
                assert kern.outputs[0].dtype == kern.anchor.dtype


def test_chain_of_eight_ops_is_one_kernel():
    x = sd.placeholder((None, 5), name="x")
    y = x
    for f in (sd.exp, sd.tanh, sd.relu, sd.sigmoid, sd.neg, sd.square, sd.sqrt, sd.log1p):
        y = f(y)
    kernels, log = fused([x], [y])
    assert [k.kind for k in kernels] == ["elementwise"]
    assert len(kernels[0].nodes) == 8
    assert ids(kernels[0].inputs) == ids([x]) and ids(kernels[0].outputs) == ids([y])
    assert "k0: fused exp+tanh+relu+sigmoid+neg+square+sqrt+log1p (8 ops)" in log


def test_diamond_is_one_kernel_with_inner_values_not_stored():
    x = sd.placeholder((4, 3), name="x")
    a = x * 2.0
    d = sd.exp(a) + sd.tanh(a)
    kernels, _ = fused([x], [d])
    assert len(kernels) == 1 and len(kernels[0].nodes) == 4
    assert ids(kernels[0].outputs) == ids([d])


def test_member_used_outside_becomes_an_output():
    x = sd.placeholder((4, 3), name="x")
    a = sd.exp(x)
    b = a * 3.0
    s = a.sum()
    kernels, _ = fused([x], [b, s], fuse_reductions=False)
    ew = [k for k in kernels if k.kind == "elementwise"]
    assert len(ew) == 1 and {t.id for t in ew[0].outputs} == {a.id, b.id}


def test_non_convex_group_is_rejected_with_reason():
    x = sd.placeholder((4, 3), name="x")
    a = x * 2.0
    s = a.sum(axis=1, keepdims=True)  # (4, 1): not elementwise
    d = a - s  # joining a's group would make a path a -> s -> d leave and re-enter it
    kernels, log = fused([x], [d], fuse_reductions=False)
    assert [k.kind for k in kernels] == ["elementwise", "op", "elementwise"]
    assert any("not fused with" in line and "non-convex" in line for line in log)


def test_different_loop_shapes_split():
    x = sd.placeholder((4, 3), name="x")
    v = sd.placeholder((3,), name="v")
    y = x + sd.exp(v)
    kernels, log = fused([x, v], [y])
    assert [len(k.nodes) for k in kernels] == [1, 1]
    assert any("loop shapes differ (3,) vs (4, 3)" in line for line in log)


def test_none_dims_count_as_equal():
    x = sd.placeholder((None, 3), name="x")
    y = sd.relu(sd.exp(x) * x)
    kernels, _ = fused([x], [y])
    assert len(kernels) == 1


def test_matmul_bias_relu_is_one_epilogue_kernel():
    x = sd.placeholder((None, 4), name="x")
    w = sd.parameter(np.ones((4, 3), "float32"), name="W")
    b = sd.parameter(np.zeros(3, "float32"), name="b")
    y = sd.relu(x @ w + b)
    kernels, log = fused([x], [y])
    assert [k.kind for k in kernels] == ["epilogue"]
    k = kernels[0]
    assert k.anchor.op.name == "matmul" and [n.op.name for n in k.nodes] == ["matmul", "add", "relu"]
    assert ids(k.inputs) == ids([x, w, b]) and ids(k.outputs) == ids([y])
    assert k.name == "k0_matmul+add+relu"
    assert "k0: epilogue matmul+add+relu (3 ops)" in log


def test_matmul_with_two_consumers_gets_no_epilogue():
    x = sd.placeholder((None, 4), name="x")
    w = sd.parameter(np.ones((4, 3), "float32"), name="W")
    h = x @ w
    y = sd.relu(h + 1.0)
    z = h.sum()
    kernels, log = fused([x], [y, z])
    assert "epilogue" not in [k.kind for k in kernels]
    assert any(f"{h.label()} not fused with" in line and "matmul has 2 consumers" in line for line in log)


def test_matmul_that_is_an_output_gets_no_epilogue():
    x = sd.placeholder((2, 4), name="x")
    w = sd.parameter(np.ones((4, 3), "float32"), name="W")
    h = x @ w
    kernels, log = fused([x], [h, sd.relu(h)])
    assert [k.kind for k in kernels] == ["op", "elementwise"]
    assert any("is a program output" in line for line in log)


def test_epilogue_needs_the_anchor_shape_and_dtype():
    x = sd.placeholder((2, 4), name="x")
    w = sd.parameter(np.ones((4, 1), "float32"), name="W")
    v = sd.placeholder((2, 3), name="v")
    wide = (x @ w) + v  # the loop shape (2, 3) is not the matmul's (2, 1)
    kernels, log = fused([x, v], [wide])
    assert [k.kind for k in kernels] == ["op", "elementwise"]
    assert any("loop shapes differ (2, 1) vs (2, 3)" in line for line in log)
    h = x @ sd.parameter(np.ones((4, 3), "float32"))
    kernels, log = fused([x], [h > 0.0])  # a bool output cannot hold the float32 matmul
    assert [k.kind for k in kernels] == ["op", "elementwise"]
    assert any("dtype float32" in line for line in log)


def test_views_and_ops_are_their_own_kernels():
    x = sd.placeholder((None, 2, 3), name="x")
    y = sd.exp(x).reshape(-1, 6)
    z = sd.softmax(y, axis=1)
    kernels, _ = fused([x], [z])
    assert [k.kind for k in kernels] == ["elementwise", "view", "op"]
    assert ids(kernels[1].inputs) == ids(kernels[0].outputs)


def test_groups_join_only_when_the_kernel_graph_stays_acyclic():
    # u and p would form a convex group, j and m another, yet together they would form a cycle:
    # {u, p} -> sum(u) -> {j, m}... -> matmul(j) -> {u, p}
    x = sd.placeholder((3, 3), name="x")
    u = sd.exp(x)
    j = sd.tanh(x)
    uu = u.sum(axis=0)  # op consuming u
    m = j * uu  # joins j's group: a new producer (sum) for it
    v = j @ j  # op consuming j
    p = u + v  # may not join u's group
    kernels, log = fused([x], [m, p], fuse_reductions=False)
    assert len(kernels) >= 4


def test_updates_count_as_outputs():
    w = sd.parameter(np.ones(3, "float32"), name="w")
    x = sd.placeholder((3,), name="x")
    g = sd.tanh(x) * w
    kernels, _ = fused([x], [g.sum()], updates={w: w - 0.1 * g}, fuse_reductions=False)
    ew = [k for k in kernels if k.kind == "elementwise"]
    assert len(ew) == 1 and g.id in ids(ew[0].outputs)


def test_fusion_is_deterministic():
    def build():
        x = sd.placeholder((None, 4), name="x")
        w = sd.parameter(np.ones((4, 4), "float32"), name="W")
        h = sd.tanh(x @ w + 1.0)
        loss = (h * h).mean()
        (gw,) = sd.grad(loss, [w])
        return build_program([x], [loss], {w: w - 0.1 * gw})

    logs = []
    names = []
    for _ in range(2):
        log: list[str] = []
        names.append([k.name for k in fuse(build(), log)])
        logs.append([line.split(":", 1)[1] if line.startswith("k") else "" for line in log])
    assert names[0] == names[1]
    assert logs[0] == logs[1]


@pytest.mark.parametrize("seed", range(8))
def test_random_graphs_give_valid_acyclic_partitions(seed):
    rng = np.random.default_rng(seed)
    x = sd.placeholder((4, 4), name="x")
    y = sd.placeholder((4, 1), name="y")
    pool = [x, y]
    for _ in range(60):
        a = pool[rng.integers(len(pool))]
        b = pool[rng.integers(len(pool))]
        r = rng.random()
        if r < 0.3:
            t = a * b
        elif r < 0.5:
            t = sd.tanh(a)
        elif r < 0.65:
            t = a.sum(axis=1, keepdims=True)
        elif r < 0.8:
            t = sd.maximum(a, b)
        elif r < 0.9:
            t = sd.softmax(a, axis=0)
        else:
            t = sd.broadcast_to(a, (4, 4)) @ sd.broadcast_to(b, (4, 4))
        pool.append(t)
    outs = [pool[-1], pool[-7], pool[-20]]
    kernels, _ = fused([x, y], outs)
    assert sum(len(k.nodes) for k in kernels) < len(build_program([x, y], outs).order)


# ----------------------------------------------------------------------------------------------------
# reductions fused with their producers
# ----------------------------------------------------------------------------------------------------


def test_sum_joins_its_elementwise_producer():
    x = sd.placeholder((None, 8), name="x")
    a = sd.exp(x) * 2.0
    s = a.sum(axis=1)
    kernels, log = fused([x], [s])
    assert [k.kind for k in kernels] == ["reduction"]
    assert [n.op.name for n in kernels[0].nodes] == ["exp", "mul", "sum"]
    assert ids(kernels[0].outputs) == ids([s])  # the summed value is never stored
    assert any("fused reduction exp+mul+sum" in line for line in log)
    kernels, _ = fused([x], [s], fuse_reductions=False)
    assert [k.kind for k in kernels] == ["elementwise", "op"]


def test_summed_member_read_elsewhere_is_still_stored():
    x = sd.placeholder((4, 3), name="x")
    a = sd.exp(x)
    b = a * 3.0
    s = a.sum()
    kernels, _ = fused([x], [b, s])
    assert [k.kind for k in kernels] == ["reduction"]
    assert ids(kernels[0].outputs) == ids([b, s])


def test_batch_norm_statistics_fuse_the_centred_square():
    x = sd.placeholder((None, 3, 4, 4), name="x")
    rm = sd.parameter(np.zeros(3, np.float32), trainable=False)
    rv = sd.parameter(np.ones(3, np.float32), trainable=False)
    y = sd.batch_norm(x, rm, rv)
    program = build_program([x], [y], mode="train")
    kernels = fuse(program, [])
    fused_ops = [[n.op.name for n in k.nodes] for k in kernels if k.kind == "reduction"]
    assert ["sub", "mul", "sum"] in fused_ops  # sum((x - mean)^2) while x - mean is computed


def test_bias_gradient_sums_inside_the_matmul_epilogue():
    x = sd.placeholder((None, 4), name="x")
    w = sd.parameter(np.ones((4, 3), np.float32), name="w")
    v = sd.parameter(np.ones((3, 2), np.float32), name="v")
    b = sd.parameter(np.zeros(3, np.float32), name="b")
    h = sd.relu(x @ w + b)
    loss = (h @ v).sum()
    gw, gb = sd.grad(loss, [w, b])
    kernels, log = fused([x], [gw, gb])
    ep = [k for k in kernels if k.kind == "epilogue" and k.nodes[-1].op.name == "unbroadcast"]
    assert len(ep) == 1 and ep[0].nodes[0].op.name == "matmul"
    assert any("epilogue with reduction" in line for line in log)


def test_unbroadcast_with_unknown_reference_dims_is_not_fused():
    x = sd.placeholder((None, 3), name="x")
    r = sd.placeholder((None, 1), name="r")
    from symdl.ops.shape import unbroadcast

    u = unbroadcast(sd.exp(x), r)
    kernels, log = fused([x, r], [u])
    assert [k.kind for k in kernels] == ["elementwise", "op"]
    assert any("not known statically" in line for line in log)


def test_fuse_reductions_is_a_compile_switch():
    x = sd.placeholder((None, 8), name="x")
    s = (sd.exp(x) * 2.0).sum(axis=1)
    on = sd.compile([x], [s], target="cpu")
    off = sd.compile([x], [s], target="cpu", passes={"fuse_reductions": False})
    assert [k.kind for k in on.lowered.kernels] == ["reduction"]
    assert [k.kind for k in off.lowered.kernels] == ["elementwise", "op"]
    xs = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(on(xs)[0], off(xs)[0], rtol=1e-6)
    with pytest.raises(sd.GraphError, match="fuse_reductions"):
        sd.compile([x], [s], target="cpu", passes={"fuse_reduction": False})


def test_epilogue_anchor_stays_first_when_a_reduction_joins():
    """Members of an epilogue that do not depend on the anchor may precede it in program order; the anchor
    must remain the kernel's first node (the emitter runs it first)."""
    x = sd.placeholder((None, 5), "float64", name="x")
    t = sd.placeholder((None, 3), "float64", name="t")
    w1 = sd.placeholder((5, 4), "float64", name="w1")
    b1 = sd.placeholder((4,), "float64", name="b1")
    w2 = sd.placeholder((4, 3), "float64", name="w2")
    loss = sd.mse_loss(sd.tanh(x @ w1 + b1) @ w2, t)
    g = sd.grad(loss, w1)
    v = sd.placeholder((5, 4), "float64", name="v")
    hb = sd.grad(sd.sum(g * v), b1)
    kernels, _ = fused([x, t, w1, b1, w2, v], [hb])
    for k in kernels:
        if k.kind == "epilogue":
            assert k.nodes[0].op.name in ("matmul", "conv")
