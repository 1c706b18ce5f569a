"""The CPU runtime (runtime/cpu.py), its Plan (runtime/plan.py) and the memory planner (compiler/memory.py).

Independent of fusion and codegen: plans are built from hand-made CompiledKernels, either plain NumPy ufunc
kernels or a generic "one kernel per node" (or "per chunk of nodes") lowering that wraps ``op.perform``, and
every result is checked against the reference executor.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np
import pytest

import symdl as sd
from compiler.kernels import CompiledKernel, Kernel
from compiler.memory import StepUse, check_plan, plan_memory
from compiler.program import build_program
from runtime.cpu import CpuFunction
from runtime.plan import build_plan
from runtime.reference import ReferenceFunction
from symdl.errors import NumericsError, OpRuntimeError
from symdl.ops.elementwise import Elementwise
from symdl.ops.shape import ExpandDims, Flatten, Reshape, ReshapeLike, Squeeze

VIEW_OPS = (Reshape, ReshapeLike, ExpandDims, Squeeze, Flatten)

# ----------------------------------------------------------------------------------------------------
# Generic lowering: kernels that wrap op.perform (destination passing)
# ----------------------------------------------------------------------------------------------------


def _group_run(members, inputs, outputs):
    """run(*inputs, *outputs): evaluate the members with perform, then store the outputs."""
    pos_in = {t.id: k for k, t in enumerate(inputs)}
    out_ids = [t.id for t in outputs]
    n_in = len(inputs)

    def run(*args):
        vals = {tid: args[k] for tid, k in pos_in.items()}
        for n in members:
            vals[n.id] = np.array(n.op.perform(*(vals[i.id] for i in n.inputs)), copy=True)
        for tid, out in zip(out_ids, args[n_in:]):
            np.copyto(out, vals[tid])

    return run


def lower(program, chunk=1, rng=None):
    """Compiled kernels for ``program``: view ops alone as views, other nodes in chunks of consecutive nodes
    (``chunk`` nodes, or a random 1..3 when ``rng`` is given). Consecutive topological chunks are convex."""
    needed_outside = {t.id for t in program.outputs} | {v.id for _, v in program.updates}
    nodes = [n for n in program.order if n.inputs]
    groups, cur = [], []
    for n in nodes:
        if isinstance(n.op, VIEW_OPS):
            if cur:
                groups.append(cur)
                cur = []
            groups.append([n])
            continue
        cur.append(n)
        size = chunk if rng is None else int(rng.integers(1, 4))
        if len(cur) >= size:
            groups.append(cur)
            cur = []
    if cur:
        groups.append(cur)
    consumers = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i.id, set()).add(n.id)
    kernels = []
    for idx, members in enumerate(groups):
        ids = {m.id for m in members}
        inputs = list(dict.fromkeys(i for m in members for i in m.inputs if i.id not in ids))
        outputs = [m for m in members if m.id in needed_outside or consumers.get(m.id, set()) - ids]
        if len(members) == 1 and isinstance(members[0].op, VIEW_OPS):
            n = members[0]
            k = Kernel("view", [n], list(n.inputs), [n], index=idx)
            kernels.append(CompiledKernel(k, (lambda op: lambda *a: op.perform(*a))(n.op), mode="view"))
            continue
        kind = "elementwise" if all(isinstance(m.op, Elementwise) for m in members) else "op"
        k = Kernel(kind, members, inputs, outputs, index=idx)
        kernels.append(CompiledKernel(k, _group_run(members, inputs, outputs)))
    return kernels


def compile_both(inputs, outputs, updates=None, mode="train", chunk=1, rng=None, **kw):
    program = build_program(inputs, outputs, updates, mode)
    return CpuFunction(build_plan(program, lower(program, chunk, rng)), **kw), ReferenceFunction(program)


def ufunc_kernel(ufunc, node, index, kind="elementwise"):
    """A hand-written destination-passing kernel: ``ufunc(*inputs, out=out)`` for one node."""
    k = Kernel(kind, [node], list(node.inputs), [node], index=index)
    return CompiledKernel(k, lambda *a: ufunc(*a[:-1], out=a[-1]))


def snapshot(params):
    return [p.value.copy() for p in params]


def restore(params, values):
    for p, v in zip(params, values):
        p.value = v


def assert_lists_close(a, b, rtol=1e-6, atol=1e-7):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def mlp(rng):
    x = sd.placeholder((None, 2, 4), name="x")
    y = sd.placeholder((None,), dtype="int64", name="y")
    W1 = sd.parameter(rng.standard_normal((8, 16)).astype("float32") * 0.3, name="W1")
    b1 = sd.parameter(np.zeros(16, "float32"), name="b1")
    W2 = sd.parameter(rng.standard_normal((16, 3)).astype("float32") * 0.3, name="W2")
    b2 = sd.parameter(np.zeros(3, "float32"), name="b2")
    h = sd.relu(sd.flatten(x, 1) @ W1 + b1)
    logits = h @ W2 + b2
    loss = sd.cross_entropy(logits, y)
    params = [W1, b1, W2, b2]
    grads = sd.grad(loss, params)
    updates = {p: p - 0.5 * g for p, g in zip(params, grads)}
    return x, y, params, loss, logits, updates


def batch(rng, n):
    return rng.standard_normal((n, 2, 4)).astype("float32"), rng.integers(0, 3, size=n)


# ----------------------------------------------------------------------------------------------------
# Semantics: equal to the reference executor
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 3])
def test_mlp_training_matches_reference(rng, chunk):
    x, y, params, loss, logits, updates = mlp(rng)
    cpu, ref = compile_both([x, y], [loss, logits], updates, chunk=chunk)
    start = snapshot(params)
    batches = [batch(rng, n) for n in (16, 16, 5, 16)]  # a ragged batch in the middle
    ref_outs = [ref(*b) for b in batches]
    ref_params = snapshot(params)
    restore(params, start)
    cpu_outs = [cpu(*b) for b in batches]
    for r, c in zip(ref_outs, cpu_outs):
        assert_lists_close(c, r)
    assert_lists_close(snapshot(params), ref_params)
    assert cpu.instantiations == 2  # batch 16 and batch 5


def test_randomised_graphs_match_reference_with_poisoned_free_buffers():
    """Random DAGs, random kernel grouping, debug mode (freed buffers are NaN-poisoned, plans checked)."""
    for seed in range(12):
        rng = np.random.default_rng(seed)
        x = sd.placeholder((None, 4), dtype="float64", name="x")
        W = sd.parameter(rng.standard_normal((4, 4)), name="W")
        vals = [x]  # every value is (None, 4)
        for _ in range(int(rng.integers(6, 16))):
            a = vals[int(rng.integers(len(vals)))]
            b = vals[int(rng.integers(len(vals)))]
            op = int(rng.integers(7))
            if op == 0:
                v = a + b
            elif op == 1:
                v = a * b
            elif op == 2:
                v = sd.tanh(a)
            elif op == 3:
                v = a @ W
            elif op == 4:
                v = a - a.sum(axis=1, keepdims=True)
            elif op == 5:
                v = sd.reshape(sd.reshape(a, (-1,)) * 0.5, (-1, 4))  # views around an elementwise op
            else:
                v = -a
            vals.append(v)
        computed = vals[1:]
        picks = rng.choice(len(computed), size=min(3, len(computed)), replace=False)
        outs = [computed[int(k)] for k in picks]
        upd = {W: W - 0.01 * computed[-1].sum(axis=0, keepdims=True).T * sd.constant(np.ones(4))}
        cpu, ref = compile_both([x], outs, upd, rng=rng, debug=True)
        xs = [rng.standard_normal((n, 4)) for n in (3, 3, 1)]
        w0 = W.value.copy()
        r = [ref(a) for a in xs]
        w_ref = W.value.copy()
        W.value = w0
        c = [cpu(a) for a in xs]
        for rr, cc in zip(r, c):
            assert_lists_close(cc, rr, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(W.value, w_ref, rtol=1e-12)


def test_updates_read_old_values_swap_leaves_views_and_computed():
    A = sd.parameter(np.arange(6, dtype="float32").reshape(2, 3), name="A")
    B = sd.parameter(np.arange(6, 12, dtype="float32").reshape(3, 2), name="B")
    C = sd.parameter(np.ones(3, "float32"), name="C")
    D = sd.parameter(np.full(3, 2.0, "float32"), name="D")
    x = sd.placeholder((3,), name="x")
    a0, b0 = A.value.copy(), B.value.copy()
    updates = {A: sd.reshape(B, (2, 3)), B: sd.reshape(A, (3, 2)), C: D, D: C * 10.0 + x}
    cpu, _ = compile_both([x], [A.sum(), C + D], updates)
    s, cd = cpu(np.ones(3, "float32"))
    assert s == a0.sum()  # outputs see the old values
    np.testing.assert_array_equal(cd, [3, 3, 3])
    np.testing.assert_array_equal(A.value, b0.reshape(2, 3))
    np.testing.assert_array_equal(B.value, a0.reshape(3, 2))
    np.testing.assert_array_equal(C.value, [2, 2, 2])
    np.testing.assert_array_equal(D.value, [11, 11, 11])


def test_parameters_update_in_place_and_rebind_after_assignment():
    W = sd.parameter(np.ones((2, 2), "float32"), name="W")
    x = sd.placeholder((None, 2), name="x")
    cpu, _ = compile_both([x], [x @ W], {W: W * 2.0})
    arr = W.value
    cpu(np.ones((1, 2), "float32"))
    assert W.value is arr and np.all(arr == 2)  # in place, no new array
    W.value = np.full((2, 2), 5.0, "float32")  # a new object: the runtime re-binds
    (out,) = cpu(np.ones((1, 2), "float32"))
    np.testing.assert_array_equal(out, [[10, 10]])
    np.testing.assert_array_equal(W.value, np.full((2, 2), 10.0))
    W.value = np.asfortranarray(np.arange(4, dtype="float32").reshape(2, 2))  # kernels get C order
    (out,) = cpu(np.eye(2, dtype="float32"))
    np.testing.assert_array_equal(out, np.arange(4).reshape(2, 2))
    assert W.value.flags.c_contiguous and cpu.instantiations == 2  # batch 1, then batch 2


def test_outputs_are_fresh_copies_and_leaves_can_be_outputs():
    x = sd.placeholder((None, 3), name="x")
    W = sd.parameter(np.ones(3, "float32"), name="W")
    cpu, _ = compile_both([x], [x * 2.0, x, W], {W: W + 1.0})
    a = np.ones((2, 3), "float32")
    first = cpu(a)
    second = cpu(a * 3)
    np.testing.assert_array_equal(first[0], 2 * a)
    np.testing.assert_array_equal(second[0], 6 * a)
    assert not np.shares_memory(first[1], a)
    np.testing.assert_array_equal(first[2], np.ones(3))  # the old value, not the updated storage
    np.testing.assert_array_equal(second[2], np.full(3, 2.0))
    first[2][:] = -1
    np.testing.assert_array_equal(W.value, np.full(3, 3.0))


def test_input_validation_and_none_dim_errors_match_reference():
    x = sd.placeholder((None,), name="x")
    y = sd.placeholder((None,), name="y")
    cpu, ref = compile_both([x, y], [x + y])
    with pytest.raises(ValueError, match="expected dtype float32"):
        cpu(np.ones(3), np.ones(3, "float32"))
    with pytest.raises(ValueError, match="takes 2 arrays"):
        cpu(np.ones(3, "float32"))
    args = np.ones(3, "float32"), np.ones(4, "float32")
    with pytest.raises(OpRuntimeError) as e_ref:
        ref(*args)
    with pytest.raises(OpRuntimeError) as e_cpu:
        cpu(*args)
    assert str(e_cpu.value) == str(e_ref.value)


def test_run_time_shape_inconsistency_names_the_op_and_line():
    x = sd.placeholder((None, 3), name="x")
    line = sys._getframe().f_lineno + 1
    r = sd.reshape(x, (-1, 2))
    cpu, _ = compile_both([x], [r * 1.0])
    assert cpu(np.ones((2, 3), "float32"))[0].shape == (3, 2)
    with pytest.raises(OpRuntimeError, match=rf"reshape.*cannot reshape 9 elements(.|\n)*:{line} in"):
        cpu(np.ones((3, 3), "float32"))


def test_kernel_errors_name_the_kernel():
    x = sd.placeholder((2,), name="x")
    line = sys._getframe().f_lineno + 1
    y = sd.exp(x)
    program = build_program([x], [y])

    def boom(a, out):
        raise OpRuntimeError("label 7 out of range")

    cpu = CpuFunction(build_plan(program, [CompiledKernel(Kernel("elementwise", [y], [x], [y]), boom)]))
    with pytest.raises(OpRuntimeError, match=rf"^exp: label 7 out of range\n  created at .*:{line} in"):
        cpu(np.ones(2, "float32"))


# ----------------------------------------------------------------------------------------------------
# Instantiation cache and steady state
# ----------------------------------------------------------------------------------------------------


def test_steady_state_reuses_one_instantiation_and_does_not_allocate():
    x = sd.placeholder((None, 256), dtype="float64", name="x")
    nodes, t = [], x
    for k in range(6):
        t = sd.exp(t) if k % 2 else -t
        nodes.append(t)
    out = t.sum()
    program = build_program([x], [out])
    kernels = [ufunc_kernel(np.negative if k % 2 == 0 else np.exp, n, k) for k, n in enumerate(nodes)]
    kernels.append(CompiledKernel(Kernel("op", [out], [t], [out], 6), lambda a, o: np.sum(a, out=o)))
    cpu = CpuFunction(build_plan(program, kernels))
    xb = np.random.default_rng(0).standard_normal((256, 256)) * 0.1
    cpu(xb)
    inst = cpu._last
    backings = [id(b) for b in inst.backings]
    tracemalloc.start()
    for _ in range(20):
        cpu(xb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024  # intermediates are 512 KiB each: none is allocated per call
    assert cpu.instantiations == 1 and cpu._last is inst and [id(b) for b in inst.backings] == backings
    cpu(xb[:7])
    cpu(xb[:7])
    cpu(xb)
    assert cpu.instantiations == 2 and len(cpu.cached_signatures) == 2


def test_instantiation_cache_is_lru_bounded():
    x = sd.placeholder((None,), name="x")
    program = build_program([x], [x * 2.0])
    cpu = CpuFunction(build_plan(program, lower(program)), max_instances=2)
    for n in (1, 2, 3, 2, 1):
        (out,) = cpu(np.ones(n, "float32"))
        np.testing.assert_array_equal(out, np.full(n, 2.0))
    assert cpu.cached_signatures == [((2,),), ((1,),)]
    assert cpu.instantiations == 4  # 1, 2, 3, then 1 again after its eviction


# ----------------------------------------------------------------------------------------------------
# Memory planning
# ----------------------------------------------------------------------------------------------------


def _chain(n_ops):
    x = sd.placeholder((None, 64), dtype="float64", name="x")
    t, nodes = x, []
    for k in range(n_ops):
        t = sd.tanh(t) if k % 2 else t * 1.5
        nodes.append(t)
    return x, nodes


def test_chain_of_ten_reuses_buffers():
    x, nodes = _chain(10)
    cpu, ref = compile_both([x], [nodes[-1]])
    plain, _ = compile_both([x], [nodes[-1]], inplace_kinds=())
    xb = np.random.default_rng(1).standard_normal((32, 64))
    assert_lists_close(cpu(xb), ref(xb))
    assert_lists_close(plain(xb), ref(xb))
    one = 32 * 64 * 8
    m, p = cpu.memory_report(), plain.memory_report()
    assert m.unplanned_bytes == p.unplanned_bytes == 10 * one
    assert (m.buffers, m.planned_peak_bytes, m.inplace) == (1, one, 9)  # every op in place
    assert (p.buffers, p.planned_peak_bytes, p.inplace) == (2, 2 * one, 0)  # ping-pong
    assert "planned peak 16.0 KiB vs unplanned 160.0 KiB" in str(m)


def test_inplace_only_when_the_input_dies_with_the_same_shape():
    x = sd.placeholder((8, 4), dtype="float64", name="x")
    a = sd.exp(x)
    b = -a  # a is still needed by c: b must not take a's buffer
    c = a + b  # a and b both die here: c takes one of them
    d = c + sd.constant(np.ones(4))  # broadcast constant; c dies: same shape, taken
    e = d.sum(axis=0)  # "op" kind: never in place
    program = build_program([x], [e])
    plan = build_plan(program, lower(program))
    mp = plan_memory(plan.step_uses, plan.concrete_shapes([(8, 4)]), plan.dtypes, keep_alive=plan.keep_alive)
    check_plan(mp)
    took = {(out, donor) for _, out, donor in mp.inplace}
    assert took == {(c.id, a.id), (d.id, c.id)}
    assert mp.assignment[b.id] != mp.assignment[a.id]


def test_views_keep_their_base_alive():
    x = sd.placeholder((None, 4), dtype="float64", name="x")
    a = sd.exp(x)
    v = sd.reshape(a, (-1,))  # a view of a: a's buffer must live until v's last use
    t = x
    for _ in range(4):  # same-sized intermediates that would love a's buffer
        t = sd.tanh(t) * 2.0
    out = sd.reshape(t, (-1,)) + v
    cpu, ref = compile_both([x], [out], debug=True)
    xb = np.random.default_rng(2).standard_normal((5, 4))
    assert_lists_close(cpu(xb), ref(xb))
    mp = cpu._last.memory
    assert mp.roots[v.id] == a.id and mp.last_use[a.id] == len(cpu.plan.steps) - 1
    assert cpu._last.arrays[v.id].base is not None and np.shares_memory(cpu._last.arrays[v.id], cpu._last.arrays[a.id])


def test_planner_is_deterministic_and_grows_free_buffers():
    steps = [StepUse("op", (0,), (1,)), StepUse("op", (1,), (2,)), StepUse("op", (2,), (3,)), StepUse("op", (3,), (4,))]
    shapes = {0: (4,), 1: (4,), 2: (8,), 3: (16,), 4: (2,)}
    dtypes = dict.fromkeys(shapes, np.dtype("float32"))
    a = plan_memory(steps, shapes, dtypes, keep_alive=[4])
    b = plan_memory(steps, shapes, dtypes, keep_alive=[4])
    assert a.assignment == b.assignment and [x.capacity for x in a.buffers] == [x.capacity for x in b.buffers]
    check_plan(a)
    assert a.assignment[3] == a.assignment[1]  # value 1's buffer, freed after step 1, grown to 16
    assert a.planned_peak_bytes == (16 + 8) * 4 < a.unplanned_bytes == (4 + 8 + 16 + 2) * 4
    assert a.live_peak_bytes == (8 + 16) * 4


# ----------------------------------------------------------------------------------------------------
# Debugging and introspection
# ----------------------------------------------------------------------------------------------------


def test_check_numerics_names_the_kernel_and_line():
    x = sd.placeholder((None,), name="x")
    line = sys._getframe().f_lineno + 1
    y = sd.log(x)
    cpu, _ = compile_both([x], [y * 2.0], check_numerics=True)
    cpu(np.ones(3, "float32"))
    with pytest.raises(NumericsError, match=rf"kernel k0_log \(ops: log\) produced 1 NaN(.|\n)*:{line} in"):
        cpu(np.array([1.0, -1.0, 2.0], "float32"))


def test_plan_dump_and_roles(rng):
    x, y, params, loss, logits, updates = mlp(rng)
    cpu, _ = compile_both([x, y], [loss], updates)
    text = str(cpu.plan)
    assert "not instantiated yet" in text
    cpu(*batch(rng, 4))
    text = cpu.dump()
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("k")]
    assert len(lines) == len(cpu.plan.steps)
    roles = {s.role for s in cpu.plan.steps}
    assert roles == {"forward", "backward", "update"}
    assert "float32[?, 16]" in text and "test_runtime_cpu.py:" in text
    assert "memory for x=(4, 2, 4), y=(4,)" in text and "buffers, planned peak" in text
    update_ids = {v.id for v in updates.values()}
    assert [s.role for s in cpu.plan.steps if s.outputs[0].id in update_ids] == ["update"] * 4


def test_profile_accounts_for_the_call_time():
    x = sd.placeholder((None,), name="x")
    y = sd.exp(x)
    z = -y
    program = build_program([x], [z])

    def slow(a, out):
        time.sleep(0.002)
        np.exp(a, out=out)

    kernels = [
        CompiledKernel(Kernel("elementwise", [y], [x], [y], 0), slow),
        ufunc_kernel(np.negative, z, 1),
    ]
    cpu = CpuFunction(build_plan(program, kernels))
    prof = cpu.profile(np.ones(5, "float32"), repeat=5)
    assert [k.calls for k in prof.kernels] == [5, 5]
    assert prof.kernels[0].total_s >= 0.009 and prof.kernels[0].total_s / prof.call_s > 0.8
    assert prof.kernel_s <= prof.call_s
    assert prof.kernel_s + prof.overhead_per_launch_s * 10 == pytest.approx(prof.call_s)
    assert sum(prof.roles.values()) == pytest.approx(prof.kernel_s)
    table = str(prof)
    assert "k0_exp" in table and "k1_neg" in table and "per kernel launch" in table


def test_runtime_overhead_per_launch_is_small():
    x = sd.placeholder((4,), dtype="float64", name="x")
    t, nodes = x, []
    for _ in range(50):
        t = -t
        nodes.append(t)
    program = build_program([x], [t])
    cpu = CpuFunction(build_plan(program, [ufunc_kernel(np.negative, n, k) for k, n in enumerate(nodes)]))
    xb = np.ones(4)
    cpu(xb)
    prof = cpu.profile(xb, repeat=20)
    assert prof.overhead_per_launch_s < 20e-6


def test_programs_without_kernels_and_leaf_updates():
    x = sd.placeholder((None, 2), name="x")
    unused = sd.placeholder((3,), name="unused")
    W = sd.parameter(np.zeros(2, "float32"), name="W")
    V = sd.parameter(np.ones(2, "float32"), name="V")
    cpu, _ = compile_both([x, unused], [x, W], {W: V, V: sd.constant(np.full(2, 7.0, "float32"))})
    assert cpu.plan.steps == []
    xo, wo = cpu(np.ones((1, 2), "float32"), np.zeros(3, "float32"))
    np.testing.assert_array_equal(xo, [[1, 1]])
    np.testing.assert_array_equal(wo, [0, 0])
    np.testing.assert_array_equal(W.value, [1, 1])
    np.testing.assert_array_equal(V.value, [7, 7])


def test_update_shape_mismatch_at_run_time_matches_reference():
    x = sd.placeholder((None,), name="x")
    W = sd.parameter(np.zeros(2, "float32"), name="W")
    cpu, ref = compile_both([x], [x * 1.0], {W: x * 2.0})
    with pytest.raises(OpRuntimeError) as e_ref:
        ref(np.ones(3, "float32"))
    with pytest.raises(OpRuntimeError) as e_cpu:
        cpu(np.ones(3, "float32"))
    assert str(e_cpu.value) == str(e_ref.value)
    cpu(np.ones(2, "float32"))
    np.testing.assert_array_equal(W.value, [2, 2])


def test_in_place_kernels_run_their_aliased_variant_and_match_the_reference():
    """An update written over its parameter (and the anchor buffer an epilogue loop reads and rewrites) runs the
    code variant that stores through the input's name: LLVM vectorises a loop only when it sees one pointer."""
    xs = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    results = {}
    for target in ("reference", "cpu"):
        x = sd.placeholder((None, 8), name="x")
        w = sd.parameter(np.linspace(-1, 1, 8 * 16, dtype=np.float32).reshape(8, 16), name="w")
        m = sd.parameter(np.zeros((8, 16), np.float32), name="m", trainable=False)
        h = sd.relu(x @ w + 0.5)  # a matmul epilogue: its loop reads and writes the anchor's buffer
        loss = sd.sum(h * h)
        (gw,) = sd.grad(loss, [w])
        m_new = m * 0.9 + sd.tanh(m) + 0.1  # an elementwise update of m, written over m
        f = sd.compile([x], [loss], updates={m: m_new, w: w - 0.01 * gw}, target=target)
        results[target] = [f(xs)[0] for _ in range(3)] + [w.value.copy(), m.value.copy()]
        if target == "cpu":
            inst = f._executor._last
            steps = f.plan.steps
            bound = dict(zip(inst.bound_steps, (run for run, _ in inst.bound)))
            kinds = {"elementwise": 0, "epilogue": 0}
            for k, run in bound.items():
                s = steps[k]
                if s.kind == "elementwise" and s.role == "update":
                    assert s.compiled.aliased is not None and run is not s.compiled.run  # the in-place variant
                    kinds["elementwise"] += 1
                if s.kind == "epilogue":  # its loop kernel is built aliased: the source says so
                    assert "share memory" in (s.compiled.source or "")
                    kinds["epilogue"] += 1
            assert kinds["elementwise"] >= 1 and kinds["epilogue"] >= 1
    for a, b in zip(results["reference"], results["cpu"]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_a_fresh_program_output_is_never_stored_through_an_aliased_input():
    """An in-place output that is also returned as a fresh array each call must not be paired with the input
    whose buffer it took at bind time (the fresh array replaces it at every call)."""
    x = sd.placeholder((None, 6), name="x")
    y = sd.softmax(x, axis=1) * 2.0 + 1.0  # the elementwise kernel may take softmax's dying buffer in place
    f = sd.compile([x], [y], target="cpu")
    rng = np.random.default_rng(1)
    for _ in range(3):
        xs = rng.standard_normal((5, 6)).astype(np.float32)
        e = np.exp(xs - xs.max(1, keepdims=True))
        np.testing.assert_allclose(f(xs)[0], 2 * e / e.sum(1, keepdims=True) + 1, rtol=1e-5)


@pytest.mark.parametrize("target", ["reference", "cpu"])
def test_a_none_dim_takes_the_size_the_graph_fixes_and_does_not_broadcast(target):
    """``x (None, 3) + y (4, 3)``: the graph fixes x's first dim to 4. At run time 4 rows work; 1 row (which NumPy
    would broadcast) is refused on every target, naming the operand and the sizes, instead of a compiled kernel
    reading past x's single row."""
    x = sd.placeholder((None, 3), name="x")
    y = sd.constant(np.arange(12, dtype=np.float32).reshape(4, 3))
    f = sd.compile([x], [x + y], target=target)
    np.testing.assert_array_equal(f(np.ones((4, 3), np.float32))[0], np.arange(12).reshape(4, 3) + 1)
    for rows in (1, 5):
        with pytest.raises(
            sd.OpRuntimeError, match=r"operand 0 \(x\) has axis 0 declared None.*fix to 4.*is " + str(rows)
        ):
            f(np.ones((rows, 3), np.float32))
