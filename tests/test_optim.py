"""symdl.optim: optimisers vs NumPy formulas and torch.optim, clipping, penalties, freezing, state dicts, errors."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest

import symdl
import symdl.optim as optim

# ----------------------------------------------------------------------------------------------------
# NumPy implementations of torch's documented update rules (float64; one step, state dict updated in place)
# ----------------------------------------------------------------------------------------------------

DEFAULTS = {
    "SGD": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    "Adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False),
    "RMSprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False),
    "Adam": dict(
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad=False,
        maximize=False,
        decoupled_weight_decay=False,
    ),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False),
    "NAdam": dict(
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        maximize=False,
    ),
}


def np_step(name, o, p, g, st, t):
    """One update of parameter ``p`` with gradient ``g`` at step ``t`` (1-based); returns the new ``p``."""
    o = {**DEFAULTS[name], **o}
    lr = o["lr"]
    if o["maximize"]:
        g = -g
    if name == "SGD":
        if o["weight_decay"]:
            g = g + o["weight_decay"] * p
        if o["momentum"]:
            if t == 1:
                st["momentum_buffer"] = g.copy()
            else:
                st["momentum_buffer"] = o["momentum"] * st["momentum_buffer"] + (1 - o["dampening"]) * g
            g = g + o["momentum"] * st["momentum_buffer"] if o["nesterov"] else st["momentum_buffer"]
        return p - lr * g
    if name == "Adagrad":
        if o["weight_decay"]:
            g = g + o["weight_decay"] * p
        clr = lr / (1 + (t - 1) * o["lr_decay"])
        st["sum"] = st.get("sum", np.full_like(p, o["initial_accumulator_value"])) + g * g
        return p - clr * g / (np.sqrt(st["sum"]) + o["eps"])
    if name == "RMSprop":
        if o["weight_decay"]:
            g = g + o["weight_decay"] * p
        a = o["alpha"]
        st["square_avg"] = a * st.get("square_avg", np.zeros_like(p)) + (1 - a) * g * g
        if o["centered"]:
            st["grad_avg"] = a * st.get("grad_avg", np.zeros_like(p)) + (1 - a) * g
            avg = np.sqrt(st["square_avg"] - st["grad_avg"] ** 2) + o["eps"]
        else:
            avg = np.sqrt(st["square_avg"]) + o["eps"]
        if o["momentum"] > 0:
            st["momentum_buffer"] = o["momentum"] * st.get("momentum_buffer", np.zeros_like(p)) + g / avg
            return p - lr * st["momentum_buffer"]
        return p - lr * g / avg
    b1, b2 = o["betas"]
    wd = o["weight_decay"]
    decoupled = name == "AdamW" or o.get("decoupled_weight_decay", False)
    if wd and decoupled:
        p = p * (1 - lr * wd)
    elif wd:
        g = g + wd * p
    st["exp_avg"] = b1 * st.get("exp_avg", np.zeros_like(p)) + (1 - b1) * g
    st["exp_avg_sq"] = b2 * st.get("exp_avg_sq", np.zeros_like(p)) + (1 - b2) * g * g
    if name == "NAdam":
        md = o["momentum_decay"]
        mu = b1 * (1 - 0.5 * 0.96 ** (t * md))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * md))
        st["mu_product"] = st.get("mu_product", 1.0) * mu
        mp = st["mu_product"]
        denom = np.sqrt(st["exp_avg_sq"] / (1 - b2**t)) + o["eps"]
        p = p - lr * (1 - mu) / (1 - mp) * g / denom
        return p - lr * mu_next / (1 - mp * mu_next) * st["exp_avg"] / denom
    v = st["exp_avg_sq"]
    if o["amsgrad"]:
        st["max_exp_avg_sq"] = np.maximum(st.get("max_exp_avg_sq", np.zeros_like(p)), v)
        v = st["max_exp_avg_sq"]
    denom = np.sqrt(v) / math.sqrt(1 - b2**t) + o["eps"]
    return p - lr / (1 - b1**t) * st["exp_avg"] / denom


def make_problem(dtype, shapes=((3, 4), (4,)), seed=0):
    """Parameters and a loss ``sum_i sum(p_i * x_i)`` whose gradients are the fed arrays ``x_i``."""
    rng = np.random.default_rng(seed)
    params = [symdl.parameter(rng.normal(size=s).astype(dtype), name=f"p{i}") for i, s in enumerate(shapes)]
    xs = [symdl.placeholder(s, dtype, name=f"g{i}") for i, s in enumerate(shapes)]
    loss = params[0].sum() * 0.0
    for p, x in zip(params, xs):
        loss = loss + (p * x).sum()
    return params, xs, loss


def grads_for(rng, shapes, steps, dtype):
    return [[rng.normal(size=s).astype(dtype) for s in shapes] for _ in range(steps)]


CASES = [
    ("SGD", {}),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True)),
    ("Adagrad", {}),
    ("Adagrad", dict(lr=0.1, lr_decay=0.2, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-6)),
    ("RMSprop", {}),
    ("RMSprop", dict(alpha=0.3, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(momentum=0.9, maximize=True)),
    ("Adam", {}),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.5), weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("AdamW", {}),
    ("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.5)),
    ("NAdam", {}),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, betas=(0.5, 0.9))),
]


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_numpy_formula(name, opts):
    """float64 parameters: symdl's updates equal the formula (params and state) over several steps."""
    dtype = np.float64
    params, xs, loss = make_problem(dtype)
    opt = getattr(optim, name)(params, **opts)
    f = symdl.compile(xs, [loss], updates=opt.minimize(loss))
    ref_p = [p.value.copy() for p in params]
    ref_state = [{} for _ in params]
    rng = np.random.default_rng(1)
    for t, gs in enumerate(grads_for(rng, [p.shape for p in params], 5, dtype), start=1):
        f(*gs)
        for i, g in enumerate(gs):
            ref_p[i] = np_step(name, opts, ref_p[i], g, ref_state[i], t)
        for p, want in zip(params, ref_p):
            np.testing.assert_allclose(p.value, want, rtol=1e-10, atol=1e-12)
    for p, st in zip(params, ref_state):
        for buf, want in st.items():
            if buf == "mu_product":
                np.testing.assert_allclose(opt.state_dict()["mu_product"], want, rtol=1e-12)
            else:
                np.testing.assert_allclose(opt.state[p][buf].value, want, rtol=1e-10, atol=1e-12)
    assert opt.state_dict()["step"] == 5


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_float32_close_to_numpy_formula(name, opts):
    """float32 parameters (the usual case) stay within 1e-6 of the float64 formula."""
    params, xs, loss = make_problem(np.float32)
    opt = getattr(optim, name)(params, **opts)
    f = symdl.compile(xs, [loss], updates=opt.minimize(loss))
    ref_p = [p.value.astype(np.float64) for p in params]
    ref_state = [{} for _ in params]
    rng = np.random.default_rng(2)
    for t, gs in enumerate(grads_for(rng, [p.shape for p in params], 4, np.float32), start=1):
        f(*gs)
        for i, g in enumerate(gs):
            ref_p[i] = np_step(name, opts, ref_p[i], g.astype(np.float64), ref_state[i], t)
    for p, want in zip(params, ref_p):
        assert p.value.dtype == np.float32
        np.testing.assert_allclose(p.value, want, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# against torch.optim (all option combinations)
# ----------------------------------------------------------------------------------------------------


def _grid(**axes):
    keys = list(axes)
    return [dict(zip(keys, vals)) for vals in itertools.product(*axes.values())]


TORCH_CASES = (
    [
        ("SGD", dict(lr=0.1, **o))
        for o in _grid(momentum=[0.0, 0.9], dampening=[0.0, 0.3], weight_decay=[0.0, 0.1], maximize=[False, True])
    ]
    + [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, **o)) for o in _grid(weight_decay=[0.0, 0.1])]
    + [
        ("Adagrad", dict(lr=0.1, **o))
        for o in _grid(lr_decay=[0.0, 0.1], weight_decay=[0.0, 0.1], initial_accumulator_value=[0.0, 0.5])
    ]
    + [("Adagrad", dict(maximize=True))]
    + [
        ("RMSprop", dict(lr=0.01, **o))
        for o in _grid(centered=[False, True], momentum=[0.0, 0.5], weight_decay=[0.0, 0.1], alpha=[0.99, 0.3])
    ]
    + [("RMSprop", dict(maximize=True, centered=True))]
    + [
        ("Adam", dict(lr=0.01, **o))
        for o in _grid(
            amsgrad=[False, True],
            weight_decay=[0.0, 0.1],
            decoupled_weight_decay=[False, True],
            betas=[(0.9, 0.999), (0.3, 0.5)],
        )
    ]
    + [("Adam", dict(maximize=True, amsgrad=True))]
    + [("AdamW", dict(lr=0.01, **o)) for o in _grid(amsgrad=[False, True], weight_decay=[0.0, 0.01, 0.3])]
    + [
        ("NAdam", dict(lr=0.01, **o))
        for o in _grid(weight_decay=[0.0, 0.1], decoupled_weight_decay=[False, True], momentum_decay=[4e-3, 0.05])
    ]
    + [("NAdam", dict(maximize=True, betas=(0.5, 0.9)))]
)


@pytest.mark.parametrize("name,opts", TORCH_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TORCH_CASES)])
def test_matches_torch(name, opts):
    torch = pytest.importorskip("torch")
    params, xs, loss = make_problem(np.float32)
    tparams = [torch.tensor(p.value.copy(), requires_grad=True) for p in params]
    opt = getattr(optim, name)(params, **opts)
    topt = getattr(torch.optim, name)(tparams, foreach=False, **opts)
    f = symdl.compile(xs, [loss], updates=opt.minimize(loss))
    rng = np.random.default_rng(3)
    for gs in grads_for(rng, [p.shape for p in params], 6, np.float32):
        f(*gs)
        for tp, g in zip(tparams, gs):
            tp.grad = torch.tensor(g)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.value, tp.detach().numpy(), rtol=1e-5, atol=1e-6)
        for buf, sp in opt.state[p].items():
            np.testing.assert_allclose(sp.value, topt.state[tp][buf].numpy(), rtol=1e-5, atol=1e-7, err_msg=buf)


def test_param_groups_match_torch():
    """Per-group lr and options, and an lr change between steps (as a scheduler does)."""
    torch = pytest.importorskip("torch")
    params, xs, loss = make_problem(np.float32, shapes=((3, 4), (4,), (2, 2)))
    tparams = [torch.tensor(p.value.copy(), requires_grad=True) for p in params]
    groups = lambda ps: [{"params": [ps[0]], "lr": 0.1, "weight_decay": 0.2}, {"params": ps[1:]}]  # noqa: E731
    opt = optim.Adam(groups(params), lr=0.01, amsgrad=True)
    topt = torch.optim.Adam(groups(tparams), lr=0.01, amsgrad=True, foreach=False)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 0.01
    assert opt.param_groups[0]["weight_decay"] == 0.2 and opt.param_groups[1]["weight_decay"] == 0.0
    f = symdl.compile(xs, [loss], updates=opt.minimize(loss))
    rng = np.random.default_rng(4)
    for k, gs in enumerate(grads_for(rng, [p.shape for p in params], 5, np.float32)):
        if k == 3:
            opt.param_groups[1]["lr"] = 0.05
            topt.param_groups[1]["lr"] = 0.05
        f(*gs)
        for tp, g in zip(tparams, gs):
            tp.grad = torch.tensor(g)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.value, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_quadratic_descent_matches_torch():
    """Gradients that depend on the parameters: minimize 0.5 * |A p - y|^2 with SGD-Nesterov and NAdam."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    a = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=6).astype(np.float32)
    p0 = rng.normal(size=3).astype(np.float32)
    for name, opts in [("SGD", dict(lr=0.02, momentum=0.9, nesterov=True)), ("NAdam", dict(lr=0.05))]:
        p = symdl.parameter(p0, name="p")
        loss = 0.5 * symdl.square(symdl.constant(a) @ p - symdl.constant(y)).sum()
        opt = getattr(optim, name)([p], **opts)
        f = symdl.compile([], [loss], updates=opt.minimize(loss))
        tp = torch.tensor(p0.copy(), requires_grad=True)
        topt = getattr(torch.optim, name)([tp], foreach=False, **opts)
        losses = []
        for _ in range(20):
            (lv,) = f()
            losses.append(float(lv))
            topt.zero_grad()
            tl = 0.5 * ((torch.tensor(a) @ tp - torch.tensor(y)) ** 2).sum()
            tl.backward()
            topt.step()
            np.testing.assert_allclose(lv, tl.item(), rtol=1e-5)
        np.testing.assert_allclose(p.value, tp.detach().numpy(), rtol=1e-5, atol=1e-6)
        assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------------------------
# the compiled CPU target: fused updates, no recompiles when the lr changes
# ----------------------------------------------------------------------------------------------------


def test_cpu_adam_matches_reference_and_lr_changes_do_not_recompile():
    from compiler.lower import dispatcher_stats

    rng = np.random.default_rng(6)
    x = symdl.placeholder((None, 3), name="x")
    y = symdl.placeholder((None, 2), name="y")
    w0 = rng.normal(size=(3, 2)).astype(np.float32)
    data = [(rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)) for _ in range(4)]

    def build(target):
        w = symdl.parameter(w0, name="W")
        b = symdl.parameter(np.zeros(2, np.float32), name="b")
        loss = symdl.mse_loss(symdl.tanh(x @ w + b), y)
        opt = optim.Adam([w, b], lr=0.01, weight_decay=0.01)
        sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        updates = opt.minimize(loss, clip_grad_norm=1.0)
        return symdl.compile([x, y], [loss], updates=updates, target=target), (w, b), opt, sched

    f_cpu, params_cpu, opt_cpu, sched_cpu = build("cpu")
    f_ref, params_ref, opt_ref, sched_ref = build("reference")

    # each parameter's update (its new value, exp_avg and exp_avg_sq) is one fused elementwise kernel
    updates = dict((p.id, v.id) for p, v in f_cpu.program.updates)
    for p in params_cpu:
        st = opt_cpu.state[p]
        wanted = {updates[p.id], updates[st["exp_avg"].id], updates[st["exp_avg_sq"].id]}
        owners = [k for k in f_cpu.lowered.kernels if wanted & {o.id for o in k.outputs}]
        assert len(owners) == 1 and owners[0].kind == "elementwise", [k.name for k in owners]
        assert wanted <= {o.id for o in owners[0].outputs}

    compiled = dispatcher_stats(f_cpu.lowered.compiled)
    lrs = []
    for xb, yb in data:
        (l_cpu,) = f_cpu(xb, yb)
        (l_ref,) = f_ref(xb, yb)
        np.testing.assert_allclose(l_cpu, l_ref, rtol=1e-5)
        sched_cpu.step()
        sched_ref.step()
        lrs.append(opt_cpu.lr)
    assert lrs == [0.005, 0.0025, 0.00125, 0.000625]
    assert opt_cpu.param_groups[0].lr_parameter.value == np.float32(0.000625)
    assert dispatcher_stats(f_cpu.lowered.compiled) == compiled  # nothing was compiled again
    for pc, pr in zip(params_cpu, params_ref):
        np.testing.assert_allclose(pc.value, pr.value, rtol=1e-5, atol=1e-6)
    for key, value in opt_ref.state_dict().items():
        np.testing.assert_allclose(opt_cpu.state_dict()[key], value, rtol=1e-5, atol=1e-7, err_msg=key)


# ----------------------------------------------------------------------------------------------------
# lr as a parameter
# ----------------------------------------------------------------------------------------------------


def test_lr_is_a_parameter_changing_it_affects_the_next_call():
    params, xs, loss = make_problem(np.float32, shapes=((3,),))
    (p,) = params
    opt = optim.SGD(params, lr=0.5)
    lr_param = opt.param_groups[0].lr_parameter
    assert isinstance(lr_param, symdl.Parameter) and not lr_param.trainable
    assert lr_param.shape == () and lr_param.dtype == np.float32
    f = symdl.compile(xs, [loss], updates=opt.minimize(loss))
    g = np.array([1.0, -2.0, 4.0], np.float32)
    before = p.value.copy()
    f(g)
    np.testing.assert_allclose(p.value, before - np.float32(0.5) * g, rtol=1e-7)
    opt.lr = 0.25
    assert opt.lr == 0.25 and lr_param.value == np.float32(0.25)
    before = p.value.copy()
    f(g)
    np.testing.assert_allclose(p.value, before - np.float32(0.25) * g, rtol=1e-7)
    lr_param.value = np.asarray(0.125, np.float32)  # writing the parameter directly is seen too
    assert opt.lr == 0.125


def test_lr_parameter_dtype_follows_the_parameters():
    p64 = symdl.parameter(np.zeros(2, np.float64), name="a")
    assert optim.SGD([p64], lr=0.1).param_groups[0].lr_parameter.dtype == np.float64


def test_lr_property_with_different_group_lrs():
    a, b = symdl.parameter(np.zeros(2, np.float32), name="a"), symdl.parameter(np.zeros(2, np.float32), name="b")
    opt = optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b]}], lr=0.2)
    with pytest.raises(ValueError, match="different learning rates"):
        _ = opt.lr
    opt.lr = 0.3
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        opt.lr = -1
    with pytest.raises(KeyError, match="hyper-parameters other than 'lr'"):
        opt.param_groups[0]["momentum"] = 0.9
    opt.param_groups[0]["initial_lr"] = 0.1  # free extra keys (schedulers use this one)
    assert opt.param_groups[0]["initial_lr"] == 0.1
    assert set(opt.param_groups[0]) >= {"params", "lr", "momentum", "initial_lr"}


# ----------------------------------------------------------------------------------------------------
# freezing, partial parameter lists, apply_gradients
# ----------------------------------------------------------------------------------------------------


def test_frozen_parameters_are_skipped():
    params, xs, loss = make_problem(np.float32)
    base, top = params
    base.trainable = False
    opt = optim.Adam(params, lr=0.1)
    updates = opt.minimize(loss)
    assert base not in updates and top in updates
    assert opt.state[base]["exp_avg"] not in updates
    f = symdl.compile(xs, [loss], updates=updates)
    frozen = base.value.copy()
    top0 = top.value.copy()
    f(*[np.ones(p.shape, np.float32) for p in params])
    np.testing.assert_array_equal(base.value, frozen)
    assert not np.allclose(top.value, top0)
    base.trainable = True  # unfreeze: a new minimize updates it too
    assert base in opt.minimize(loss)


def test_only_some_parameters_and_unconnected_ones():
    params, xs, loss = make_problem(np.float32)
    unused = symdl.parameter(np.ones(5, np.float32), name="unused")
    opt = optim.SGD([params[1], unused], lr=0.1)
    updates = opt.minimize(loss)
    assert set(map(id, updates)) == {id(params[1]), id(opt.step_parameter)}
    f = symdl.compile(xs, [loss], updates=updates)
    p0 = [p.value.copy() for p in params]
    gs = [np.full(p.shape, 2.0, np.float32) for p in params]
    f(*gs)
    np.testing.assert_array_equal(params[0].value, p0[0])
    np.testing.assert_allclose(params[1].value, p0[1] - np.float32(0.1) * 2.0, rtol=1e-7)
    np.testing.assert_array_equal(unused.value, np.ones(5, np.float32))
    lonely = optim.SGD([unused])
    with pytest.raises(ValueError, match="depends on none of the optimizer's 1 trainable parameters"):
        lonely.minimize(loss)


def test_apply_gradients_with_own_gradients():
    params, xs, loss = make_problem(np.float32)
    opt = optim.SGD(params, lr=0.5, momentum=0.5)
    gs = symdl.grad(loss, params)
    updates = opt.apply_gradients([(2.0 * g, p) for g, p in zip(gs, params)])
    f = symdl.compile(xs, [loss], updates=updates)
    p0 = [p.value.copy() for p in params]
    feed = [np.ones(p.shape, np.float32) for p in params]
    f(*feed)
    for p, v in zip(params, p0):
        np.testing.assert_allclose(p.value, v - 0.5 * 2.0, rtol=1e-6)
    other = symdl.parameter(np.zeros(2, np.float32), name="other")
    with pytest.raises(ValueError, match="parameter other is not in this optimizer"):
        opt.apply_gradients([(symdl.zeros_like(other), other)])
    with pytest.raises(ValueError, match=r"gradient of p0 has shape \(4,\) float32, expected \(3, 4\)"):
        opt.apply_gradients([(gs[1], params[0])])
    with pytest.raises(ValueError, match="p0 is given twice"):
        opt.apply_gradients([(gs[0], params[0]), (gs[0], params[0])])
    with pytest.raises(TypeError, match="expected \\(grad, param\\) pairs"):
        opt.apply_gradients([gs[0]])


def test_one_optimizer_several_minimize_calls_share_state():
    params, xs, loss = make_problem(np.float32)
    opt = optim.Adam(params)
    u1, u2 = opt.minimize(loss), opt.minimize(loss * 2.0)
    assert set(map(id, u1)) == set(map(id, u2))  # the same state parameters are updated
    assert len(u1) == 2 * 3 + 1  # each param with exp_avg, exp_avg_sq, and the step counter


# ----------------------------------------------------------------------------------------------------
# clipping
# ----------------------------------------------------------------------------------------------------


def _np_total_norm(gs, p):
    if p == math.inf:
        return max(np.abs(g).max() for g in gs)
    return sum((np.abs(g.astype(np.float64)) ** p).sum() for g in gs) ** (1 / p)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_vs_numpy(norm_type, max_norm):
    rng = np.random.default_rng(7)
    arrays = [rng.normal(size=s).astype(np.float32) for s in [(3, 4), (5,), ()]]
    phs = [symdl.placeholder(a.shape, name=f"g{i}") for i, a in enumerate(arrays)]
    clipped, total = optim.clip_grad_norm(phs, max_norm, norm_type=norm_type)
    outs = symdl.compile(phs, [*clipped, total])(*arrays)
    p = math.inf if norm_type == "inf" else norm_type
    want_total = _np_total_norm(arrays, p)
    np.testing.assert_allclose(outs[-1], want_total, rtol=1e-6)
    coef = min(1.0, max_norm / (want_total + 1e-6))
    for got, a in zip(outs[:-1], arrays):
        np.testing.assert_allclose(got, a * coef, rtol=1e-6, atol=1e-7)
    if max_norm < want_total:
        np.testing.assert_allclose(_np_total_norm(outs[:-1], p), max_norm, rtol=1e-5)


def test_clip_grad_norm_vs_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    arrays = [rng.normal(size=s).astype(np.float32) for s in [(4, 4), (7,)]]
    for norm_type in (2.0, 1.0, math.inf, 2.5):
        phs = [symdl.placeholder(a.shape, name=f"g{i}") for i, a in enumerate(arrays)]
        clipped, total = optim.clip_grad_norm(phs, 1.5, norm_type)
        outs = symdl.compile(phs, [*clipped, total])(*arrays)
        ts = [torch.zeros(a.shape, requires_grad=True) for a in arrays]
        for t, a in zip(ts, arrays):
            t.grad = torch.tensor(a)
        tn = torch.nn.utils.clip_grad_norm_(ts, 1.5, norm_type=norm_type)
        np.testing.assert_allclose(outs[-1], tn.item(), rtol=1e-5)
        for got, t in zip(outs[:-1], ts):
            np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_clip_grad_value_vs_numpy_and_single_tensor():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(4, 5)).astype(np.float32) * 3
    ph = symdl.placeholder(a.shape, name="g")
    out = optim.clip_grad_value(ph, 1.25)
    assert isinstance(out, symdl.Tensor)
    (got,) = symdl.compile([ph], [out])(a)
    np.testing.assert_array_equal(got, np.clip(a, -1.25, 1.25))
    single, total = optim.clip_grad_norm(ph, 1.0)
    assert isinstance(single, symdl.Tensor) and total.shape == ()


def test_minimize_with_clipping():
    """SGD(lr=1): the step taken is exactly the clipped gradient (norm first, then value)."""
    params, xs, loss = make_problem(np.float32)
    opt = optim.SGD(params, lr=1.0)
    f = symdl.compile(xs, [loss], updates=opt.minimize(loss, clip_grad_norm=2.0, clip_grad_value=0.3))
    rng = np.random.default_rng(10)
    gs = [rng.normal(size=p.shape).astype(np.float32) for p in params]
    p0 = [p.value.copy() for p in params]
    f(*gs)
    total = _np_total_norm(gs, 2.0)
    for p, v, g in zip(params, p0, gs):
        want = np.clip(g * min(1.0, 2.0 / (total + 1e-6)), -0.3, 0.3)
        np.testing.assert_allclose(v - p.value, want, rtol=1e-5, atol=1e-6)


def test_clip_errors():
    g = symdl.placeholder((3,), name="g")
    with pytest.raises(ValueError, match="empty list of gradients"):
        optim.clip_grad_norm([], 1.0)
    with pytest.raises(ValueError, match="max_norm must be >= 0, got -1"):
        optim.clip_grad_norm([g], -1)
    with pytest.raises(ValueError, match="norm_type must be > 0 or inf, got 0"):
        optim.clip_grad_norm([g], 1.0, norm_type=0)
    with pytest.raises(ValueError, match="clip_value must be >= 0, got -0.5"):
        optim.clip_grad_value([g], -0.5)
    with pytest.raises(TypeError, match="gradients must be floating-point"):
        optim.clip_grad_value([symdl.placeholder((3,), "int64", name="i")], 1.0)
    with pytest.raises(TypeError, match="gradients must be symbolic Tensors"):
        optim.clip_grad_value([np.ones(3)], 1.0)


# ----------------------------------------------------------------------------------------------------
# penalties
# ----------------------------------------------------------------------------------------------------


def test_penalties_values_and_frozen_parameters():
    rng = np.random.default_rng(11)
    a = symdl.parameter(rng.normal(size=(3, 2)).astype(np.float32), name="a")
    b = symdl.parameter(rng.normal(size=4).astype(np.float32), name="b")
    frozen = symdl.parameter(np.full(3, 10.0, np.float32), name="frozen", trainable=False)
    l1 = optim.l1_penalty([a, b, frozen], weight=0.1)
    l2 = optim.l2_penalty([a, b, frozen], weight=0.01)
    g1, g2 = symdl.grad(l1, [a]), symdl.grad(l2, [a])
    v1, v2, d1, d2 = symdl.compile([], [l1, l2, *g1, *g2])()
    np.testing.assert_allclose(v1, 0.1 * (np.abs(a.value).sum() + np.abs(b.value).sum()), rtol=1e-6)
    np.testing.assert_allclose(v2, 0.01 * ((a.value**2).sum() + (b.value**2).sum()), rtol=1e-6)
    np.testing.assert_allclose(d1, 0.1 * np.sign(a.value), rtol=1e-6)
    np.testing.assert_allclose(d2, 0.02 * a.value, rtol=1e-6)
    (z,) = symdl.compile([], [optim.l2_penalty([frozen])])()
    assert z == 0.0
    with pytest.raises(ValueError, match="empty list of parameters"):
        optim.l1_penalty([])
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        optim.l2_penalty([a], weight=-1.0)


def test_l2_penalty_equals_coupled_weight_decay():
    params, xs, loss = make_problem(np.float64)
    start = [p.value.copy() for p in params]
    opt = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.2)
    f = symdl.compile(xs, [loss], updates=opt.minimize(loss))
    rng = np.random.default_rng(12)
    feeds = grads_for(rng, [p.shape for p in params], 3, np.float64)
    for gs in feeds:
        f(*gs)
    with_decay = [p.value.copy() for p in params]
    for p, v in zip(params, start):
        p.value = v
    opt2 = optim.SGD(params, lr=0.1, momentum=0.9)
    penalised = loss + optim.l2_penalty(params, 0.2 / 2)
    f2 = symdl.compile(xs, [penalised], updates=opt2.minimize(penalised))
    for gs in feeds:
        f2(*gs)
    for p, want in zip(params, with_decay):
        np.testing.assert_allclose(p.value, want, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------
# state dicts
# ----------------------------------------------------------------------------------------------------


def _train(opt_cls, opts, params, xs, loss, feeds):
    opt = opt_cls(params, **opts)
    f = symdl.compile(xs, [loss], updates=opt.minimize(loss))
    for gs in feeds:
        f(*gs)
    return opt


@pytest.mark.parametrize("name,opts", [("Adam", dict(amsgrad=True)), ("NAdam", {}), ("SGD", dict(momentum=0.9))])
def test_state_dict_round_trip_through_npz(name, opts):
    """Train 3 steps, save (npz), rebuild model + optimizer, load, train 3 more == 6 uninterrupted steps."""
    cls = getattr(optim, name)
    rng = np.random.default_rng(13)
    feeds = grads_for(rng, [(3, 4), (4,)], 6, np.float32)

    params, xs, loss = make_problem(np.float32)
    _train(cls, opts, params, xs, loss, feeds)
    want = [p.value.copy() for p in params]

    params, xs, loss = make_problem(np.float32)
    opt = _train(cls, opts, params, xs, loss, feeds[:3])
    opt.lr = opt.lr  # lrs are saved in float64
    buf = io.BytesIO()
    np.savez(buf, **opt.state_dict())
    saved_params = [p.value.copy() for p in params]
    buf.seek(0)

    params, xs, loss = make_problem(np.float32)  # a fresh model in "another process": same names
    for p, v in zip(params, saved_params):
        p.value = v
    opt2 = cls(params, **opts)
    with np.load(buf) as npz:
        opt2.load_state_dict(npz)
    assert opt2.state_dict().keys() == opt.state_dict().keys()
    assert opt2.state_dict()["step"] == 3
    f = symdl.compile(xs, [loss], updates=opt2.minimize(loss))
    for gs in feeds[3:]:
        f(*gs)
    for p, w in zip(params, want):
        np.testing.assert_array_equal(p.value, w)


def test_state_dict_keys():
    a = symdl.parameter(np.zeros(2, np.float32), name="fc.w")
    b = symdl.parameter(np.zeros(2, np.float32))  # unnamed: keyed by position
    c1 = symdl.parameter(np.zeros(1, np.float32), name="dup")
    c2 = symdl.parameter(np.zeros(1, np.float32), name="dup")  # duplicate names: keyed by position
    opt = optim.Adam([{"params": [a, b]}, {"params": [c1, c2], "lr": 0.1}], amsgrad=True)
    sd = opt.state_dict()
    assert set(sd) == {
        "param_groups.0.lr",
        "param_groups.1.lr",
        "step",
        *(f"state.{k}.{buf}" for k in ("fc.w", "1", "2", "3") for buf in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    }
    assert sd["param_groups.1.lr"].dtype == np.float64 and sd["param_groups.1.lr"] == 0.1
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert set(optim.NAdam([a]).state_dict()) == {
        "param_groups.0.lr",
        "step",
        "mu_product",
        "state.fc.w.exp_avg",
        "state.fc.w.exp_avg_sq",
    }


def test_load_state_dict_rejects_bad_states_without_changing_anything():
    params, xs, loss = make_problem(np.float32)
    opt = optim.Adam(params, lr=0.01)
    f = symdl.compile(xs, [loss], updates=opt.minimize(loss))
    f(*[np.ones(p.shape, np.float32) for p in params])
    good = opt.state_dict()
    snapshot = {k: v.copy() for k, v in good.items()}

    def bad(change, match, exc=ValueError):
        d = {k: v.copy() for k, v in good.items()}
        change(d)
        with pytest.raises(exc, match=match):
            opt.load_state_dict(d)
        for k, v in opt.state_dict().items():
            np.testing.assert_array_equal(v, snapshot[k], err_msg=k)

    bad(lambda d: d.pop("state.p0.exp_avg"), r"missing keys \['state.p0.exp_avg'\]", KeyError)
    bad(lambda d: d.update(extra=np.zeros(1)), r"unexpected keys \['extra'\]", KeyError)
    bad(lambda d: d.update({"state.p1.exp_avg_sq": np.zeros(5)}), r"'state.p1.exp_avg_sq' has shape \(5,\)")
    bad(lambda d: d.update({"param_groups.0.lr": np.array(-1.0)}), "Invalid learning rate")
    bad(lambda d: d.update(step=np.array(1.5)), "'step' must be a non-negative integer")
    bad(lambda d: d.update({"state.p0.exp_avg": np.full((3, 4), "x")}), "expected a real number array")
    with pytest.raises(TypeError, match="expected a mapping"):
        opt.load_state_dict([1, 2])
    # a good one is applied, state and lr alike
    d = {k: v.copy() for k, v in good.items()}
    d["param_groups.0.lr"] = np.array(0.5)
    d["state.p0.exp_avg"] = np.full((3, 4), 7.0)
    opt.load_state_dict(d)
    assert opt.lr == 0.5
    np.testing.assert_array_equal(opt.state[params[0]]["exp_avg"].value, np.full((3, 4), 7.0, np.float32))
    assert opt.state[params[0]]["exp_avg"].value.dtype == np.float32


# ----------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------


def test_constructor_errors():
    p = symdl.parameter(np.zeros(3, np.float32), name="w")
    with pytest.raises(ValueError, match="Adam: Invalid learning rate: -0.1"):
        optim.Adam([p], lr=-0.1)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: 1.0"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Invalid beta parameter at index 0: -0.1"):
        optim.NAdam([p], betas=(-0.1, 0.9))
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        optim.SGD([p], nesterov=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        optim.SGD([p], momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid momentum value: -1"):
        optim.SGD([p], momentum=-1)
    with pytest.raises(ValueError, match="Invalid weight_decay value: -0.1"):
        optim.RMSprop([p], weight_decay=-0.1)
    with pytest.raises(ValueError, match="Invalid alpha value: -0.5"):
        optim.RMSprop([p], alpha=-0.5)
    with pytest.raises(ValueError, match="Invalid epsilon value: -1"):
        optim.Adagrad([p], eps=-1)
    with pytest.raises(ValueError, match="Invalid initial_accumulator_value value: -1"):
        optim.Adagrad([p], initial_accumulator_value=-1)
    with pytest.raises(ValueError, match="Invalid momentum_decay value: -0.1"):
        optim.NAdam([p], momentum_decay=-0.1)
    with pytest.raises(TypeError, match="amsgrad must be True or False"):
        optim.Adam([p], amsgrad="yes")
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        optim.SGD([])
    with pytest.raises(ValueError, match="parameter w appears twice"):
        optim.SGD([p, p])
    q = symdl.parameter(np.zeros(3, np.float32), name="q")
    with pytest.raises(ValueError, match=r"more than one parameter group \(w\)"):
        optim.SGD([{"params": [p]}, {"params": [q, p]}])
    x = symdl.placeholder((3,), name="x")
    with pytest.raises(TypeError, match="can only optimize Parameters.*tensor x \\(a placeholder\\)"):
        optim.SGD([p, x])
    with pytest.raises(TypeError, match="one of the params is ndarray"):
        optim.SGD([np.zeros(3)])
    with pytest.raises(TypeError, match="single tensor w; wrap it in a list"):
        optim.SGD(p)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD([{"params": {p}}])
    with pytest.raises(ValueError, match="unknown option\\(s\\) 'momentun'"):
        optim.SGD([{"params": [p], "momentun": 0.9}])
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optim.SGD([{"params": [p], "lr": -1}])
    with pytest.raises(TypeError, match="cannot optimize n: it is int64"):
        optim.SGD([symdl.parameter(np.zeros(2, np.int64), name="n")])
    optim.SGD([p, symdl.parameter(np.zeros(2, np.int64), name="n", trainable=False)])  # frozen ints are fine
    with pytest.raises(ValueError, match="must share betas\\[0\\] and momentum_decay"):
        optim.NAdam([{"params": [p]}, {"params": [q], "betas": (0.5, 0.999)}])


def test_minimize_errors():
    params, xs, loss = make_problem(np.float32)
    opt = optim.SGD(params)
    with pytest.raises(ValueError, match=r"loss must be a scalar \(0-d\) tensor, got shape \(3, 4\)"):
        opt.minimize(params[0] * xs[0])
    with pytest.raises(TypeError, match="loss must be a symbolic Tensor, got float"):
        opt.minimize(1.0)
    with pytest.raises(TypeError, match="loss must be floating-point, got int64"):
        opt.minimize(symdl.placeholder((), "int64", name="n"))
    for p in params:
        p.trainable = False
    with pytest.raises(ValueError, match="none of the optimizer's 0 trainable parameters \\(2 are frozen\\)"):
        opt.minimize(loss)


def test_repr_and_parameters():
    params, _, _ = make_problem(np.float32)
    opt = optim.RMSprop(params, centered=True, momentum=0.1)
    text = repr(opt)
    assert "RMSprop" in text and "centered: True" in text
    assert opt.parameters == params
    owned = opt.state_parameters()
    assert all(isinstance(s, symdl.Parameter) and not s.trainable for s in owned)
    assert len(owned) == 1 + 1 + 2 * 3  # lr, step, 3 buffers per parameter
