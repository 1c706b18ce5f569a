"""symdl.optim.lr_scheduler: schedules vs closed forms and torch's schedulers, state dicts, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import symdl
import symdl.optim as optim
from symdl.optim import lr_scheduler as S

BASES = (0.1, 0.02)  # two parameter groups with their own lr


def make_opt(cls=optim.SGD, bases=BASES, **kw):
    ps = [symdl.parameter(np.zeros(2, np.float32), name=f"w{i}") for i in range(len(bases))]
    return cls([{"params": [p], "lr": lr} for p, lr in zip(ps, bases)], **kw)


def sequence(sched, steps):
    """The lrs of every group for epochs 0 .. steps-1 (epoch 0 is set by the constructor)."""
    out = [[g["lr"] for g in sched.optimizer.param_groups]]
    for _ in range(steps - 1):
        sched.step()
        out.append([g["lr"] for g in sched.optimizer.param_groups])
    return np.array(out)


def closed(fn, steps, bases=BASES):
    return np.array([[fn(b, t) for b in bases] for t in range(steps)])


CLOSED_FORMS = [
    ("StepLR", dict(step_size=3, gamma=0.5), lambda b, t: b * 0.5 ** (t // 3)),
    ("MultiStepLR", dict(milestones=[7, 2, 7], gamma=0.1), lambda b, t: b * 0.1 ** ((t >= 2) + 2 * (t >= 7))),
    ("ConstantLR", dict(factor=0.25, total_iters=4), lambda b, t: b * (0.25 if t < 4 else 1.0)),
    ("LinearLR", dict(start_factor=0.2, end_factor=0.8, total_iters=5), lambda b, t: b * (0.2 + 0.6 * min(t, 5) / 5)),
    ("ExponentialLR", dict(gamma=0.9), lambda b, t: b * 0.9**t),
    ("PolynomialLR", dict(total_iters=6, power=2.0), lambda b, t: b * (1 - min(t, 6) / 6) ** 2),
    (
        "CosineAnnealingLR",
        dict(T_max=5, eta_min=0.001),
        lambda b, t: 0.001 + (b - 0.001) * (1 + math.cos(math.pi * t / 5)) / 2,
    ),
    ("InverseTimeLR", dict(decay_rate=0.5), lambda b, t: b / (1 + 0.5 * t)),
    ("InverseTimeLR", dict(decay_rate=0.5, decay_steps=3, staircase=True), lambda b, t: b / (1 + 0.5 * (t // 3))),
    ("LambdaLR", dict(lr_lambda=lambda e: 1 / (e + 1)), lambda b, t: b / (t + 1)),
]


@pytest.mark.parametrize("name,kw,fn", CLOSED_FORMS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CLOSED_FORMS)])
def test_closed_forms(name, kw, fn):
    opt = make_opt()
    sched = getattr(S, name)(opt, **kw)
    got = sequence(sched, 15)
    np.testing.assert_allclose(got, closed(fn, 15), rtol=1e-12, atol=1e-15)
    assert sched.last_epoch == 14
    assert sched.get_last_lr() == list(got[-1])
    # the optimiser's lr parameters hold the value (in the parameters' dtype)
    for g, lr in zip(opt.param_groups, got[-1]):
        assert g.lr_parameter.value == np.float32(lr)
    assert sched.lr_at(3) == list(closed(fn, 4)[3])


def test_inverse_time_is_a_over_b_plus_t():
    """lr = a / (b + t) with a = base * decay_steps / decay_rate, b = decay_steps / decay_rate."""
    opt = make_opt(bases=(0.3,))
    sched = S.InverseTimeLR(opt, decay_rate=0.25, decay_steps=2)
    a, b = 0.3 * 2 / 0.25, 2 / 0.25
    np.testing.assert_allclose(sequence(sched, 10)[:, 0], [a / (b + t) for t in range(10)], rtol=1e-12)


def test_lambda_per_group():
    opt = make_opt()
    sched = S.LambdaLR(opt, [lambda e: 0.5**e, lambda e: e + 1])
    np.testing.assert_allclose(sequence(sched, 4), [[0.1 * 0.5**t, 0.02 * (t + 1)] for t in range(4)], rtol=1e-12)


def test_sequential_and_linear_warmup_closed_forms():
    opt = make_opt()
    warm = S.LinearWarmup(S.CosineAnnealingLR(opt, T_max=6), warmup_steps=4)
    want = closed(lambda b, t: b * t / 4 if t < 4 else b * (1 + math.cos(math.pi * (t - 4) / 6)) / 2, 14)
    np.testing.assert_allclose(sequence(warm, 14), want, rtol=1e-12, atol=1e-15)

    opt = make_opt()
    seq = S.SequentialLR(opt, [S.ConstantLR(opt, 0.5, 10), S.ExponentialLR(opt, 0.8), S.StepLR(opt, 2)], [3, 6])
    fn = lambda b, t: b * 0.5 if t < 3 else b * 0.8 ** (t - 3) if t < 6 else b * 0.1 ** ((t - 6) // 2)  # noqa: E731
    np.testing.assert_allclose(sequence(seq, 12), closed(fn, 12), rtol=1e-12)

    opt = make_opt()
    none = S.LinearWarmup(S.StepLR(opt, 2), warmup_steps=0)  # no warm-up: the scheduler itself
    np.testing.assert_allclose(sequence(none, 6), closed(lambda b, t: b * 0.1 ** (t // 2), 6), rtol=1e-12)

    opt = make_opt()
    half = S.LinearWarmup(S.ExponentialLR(opt, 0.5), warmup_steps=2, start_factor=0.5)
    np.testing.assert_allclose(sequence(half, 5), closed(lambda b, t: [0.5 * b, 0.75 * b, b, b / 2, b / 4][t], 5))


# ----------------------------------------------------------------------------------------------------
# against torch
# ----------------------------------------------------------------------------------------------------

TORCH_CASES = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3)),
    ("ConstantLR", dict(factor=0.4, total_iters=6)),
    ("ConstantLR", {}),
    ("LinearLR", {}),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.1, total_iters=8)),
    ("ExponentialLR", dict(gamma=0.93)),
    ("PolynomialLR", dict(total_iters=7, power=0.5)),
    ("PolynomialLR", {}),
    ("CosineAnnealingLR", dict(T_max=7)),
    ("CosineAnnealingLR", dict(T_max=4, eta_min=0.005)),
    ("LambdaLR", dict(lr_lambda=lambda e: 0.95**e + 0.01 * e)),
]


def torch_opt(torch, bases=BASES):
    ps = [torch.zeros(2, requires_grad=True) for _ in bases]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, bases)])


def torch_sequence(topt, sched, steps):
    out = [[g["lr"] for g in topt.param_groups]]
    for _ in range(steps - 1):
        topt.step()
        sched.step()
        out.append([g["lr"] for g in topt.param_groups])
    return np.array(out)


@pytest.mark.parametrize("name,kw", TORCH_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(TORCH_CASES)])
def test_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    topt = torch_opt(torch)
    want = torch_sequence(topt, getattr(torch.optim.lr_scheduler, name)(topt, **kw), 25)
    got = sequence(getattr(S, name)(make_opt(), **kw), 25)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)


def test_sequential_and_warmup_match_torch():
    torch = pytest.importorskip("torch")
    T = torch.optim.lr_scheduler
    topt = torch_opt(torch)
    tseq = T.SequentialLR(topt, [T.LinearLR(topt, 0.1, 1.0, 5), T.CosineAnnealingLR(topt, T_max=10)], [5])
    opt = make_opt()
    warm = S.LinearWarmup(S.CosineAnnealingLR(opt, T_max=10), warmup_steps=5, start_factor=0.1)
    np.testing.assert_allclose(sequence(warm, 30), torch_sequence(topt, tseq, 30), rtol=1e-9, atol=1e-15)

    topt = torch_opt(torch)
    tseq = T.SequentialLR(topt, [T.ConstantLR(topt, 0.1, 20), T.ExponentialLR(topt, 0.9), T.StepLR(topt, 3)], [4, 9])
    opt = make_opt()
    seq = S.SequentialLR(opt, [S.ConstantLR(opt, 0.1, 20), S.ExponentialLR(opt, 0.9), S.StepLR(opt, 3)], [4, 9])
    np.testing.assert_allclose(sequence(seq, 20), torch_sequence(topt, tseq, 20), rtol=1e-9, atol=1e-15)


PLATEAU_CASES = [
    {},
    dict(mode="max", factor=0.5, patience=1),
    dict(patience=2, threshold=0.1, threshold_mode="abs", cooldown=2),
    dict(patience=0, factor=0.3, min_lr=[0.005, 0.004], cooldown=1),
    dict(mode="max", patience=1, threshold=0.05, threshold_mode="rel", min_lr=0.01, eps=1e-3),
]


@pytest.mark.parametrize("kw", PLATEAU_CASES)
def test_reduce_on_plateau_matches_torch(kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    metrics = np.concatenate([np.linspace(1.0, 0.5, 5), 0.5 + rng.uniform(-0.05, 0.05, 40)])
    if kw.get("mode") == "max":
        metrics = -metrics
    topt = torch_opt(torch)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    sched = S.ReduceLROnPlateau(make_opt(), **kw)
    for m in metrics:
        topt.step()
        tsched.step(float(m))
        sched.step(m)
        np.testing.assert_allclose(sched.get_last_lr(), [g["lr"] for g in topt.param_groups], rtol=1e-12)
        assert (sched.best, sched.num_bad_epochs, sched.cooldown_counter) == (
            tsched.best,
            tsched.num_bad_epochs,
            tsched.cooldown_counter,
        )
    assert sched.get_last_lr() != list(BASES)  # it did reduce


def test_reduce_on_plateau_by_hand():
    opt = make_opt(bases=(1.0,))
    sched = S.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    lrs = []
    for m in [5, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]:
        sched.step(np.array(m, np.float32))  # 0-d arrays (compiled outputs) are accepted
        lrs.append(opt.lr)
    # improvement at 5 and 4; three bad epochs -> halve; cooldown 1 epoch; three more bad -> halve; floor 0.2
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    for _ in range(8):
        sched.step(4)
    assert opt.lr == 0.2
    with pytest.raises(TypeError, match="metrics must be a single number"):
        sched.step([1.0, 2.0])


# ----------------------------------------------------------------------------------------------------
# with a compiled train step: the lr the step uses follows the schedule, no recompile
# ----------------------------------------------------------------------------------------------------


def test_schedule_drives_a_compiled_step():
    p = symdl.parameter(np.zeros(3, np.float64), name="p")
    g = symdl.placeholder((3,), "float64", name="g")
    loss = (p * g).sum()
    opt = optim.SGD([p], lr=1.0)
    sched = S.LinearWarmup(S.StepLR(opt, step_size=2, gamma=0.5), warmup_steps=2, start_factor=0.5)
    f = symdl.compile([g], [loss], updates=opt.minimize(loss))
    ones = np.ones(3)
    used = []
    for _ in range(6):
        before = p.value.copy()
        f(ones)
        used.append(float((before - p.value)[0]))
        sched.step()
    assert used == [0.5, 0.75, 1.0, 1.0, 0.5, 0.5]


# ----------------------------------------------------------------------------------------------------
# state dicts
# ----------------------------------------------------------------------------------------------------


def _builders():
    return [
        lambda o: S.StepLR(o, step_size=2, gamma=0.5),
        lambda o: S.CosineAnnealingLR(o, T_max=8, eta_min=0.001),
        lambda o: S.LinearWarmup(S.CosineAnnealingLR(o, T_max=8), warmup_steps=3),
        lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.5, 1.0, 2), S.ExponentialLR(o, 0.7)], [2]),
        lambda o: S.InverseTimeLR(o, decay_rate=0.3),
    ]


@pytest.mark.parametrize("k", range(5))
def test_scheduler_state_round_trip(k):
    build = _builders()[k]
    opt = make_opt()
    sched = build(opt)
    full = sequence(sched, 12)

    opt = make_opt()
    sched = build(opt)
    for _ in range(5):
        sched.step()
    saved = sched.state_dict()
    assert all(isinstance(v, (int, float)) for v in saved.values())
    assert saved["last_epoch"] == 5
    saved_npz = {key: np.asarray(v) for key, v in saved.items()}  # as read back from an npz file

    opt2 = make_opt(bases=(0.7, 0.7))  # a fresh optimiser built with other lrs: the state restores them
    sched2 = build(opt2)
    sched2.load_state_dict(saved_npz)
    assert sched2.last_epoch == 5
    np.testing.assert_allclose([g["lr"] for g in opt2.param_groups], full[5], rtol=1e-12)
    rest = sequence(sched2, 7)
    np.testing.assert_allclose(rest, full[5:], rtol=1e-12)
    assert sched2.state_dict().keys() == saved.keys()


def test_scheduler_load_rejects_bad_states():
    opt = make_opt()
    sched = S.LinearWarmup(S.StepLR(opt, 2), warmup_steps=3)
    sched.step()
    good = sched.state_dict()
    assert set(good) == {
        "last_epoch",
        "base_lrs.0",
        "base_lrs.1",
        "scheduler.last_epoch",
        "scheduler.base_lrs.0",
        "scheduler.base_lrs.1",
    }
    before = (sched.state_dict(), [g["lr"] for g in opt.param_groups])
    cases = [
        ({k: v for k, v in good.items() if k != "base_lrs.1"}, KeyError, r"missing keys \['base_lrs.1'\]"),
        ({**good, "gamma": 0.5}, KeyError, r"unexpected keys \['gamma'\]"),
        ({**good, "last_epoch": 2.5}, ValueError, "'last_epoch' must be an integer"),
        ({**good, "last_epoch": -3}, ValueError, "'last_epoch' must be >= 0"),
        ({**good, "base_lrs.0": -0.1}, ValueError, "'base_lrs.0' must be a learning rate >= 0"),
        ({**good, "scheduler.base_lrs.0": "x"}, ValueError, "'base_lrs.0' must be a number"),
    ]
    for bad, exc, match in cases:
        with pytest.raises(exc, match=match):
            sched.load_state_dict(bad)
        assert (sched.state_dict(), [g["lr"] for g in opt.param_groups]) == before


def test_reduce_on_plateau_state_round_trip():
    opt = make_opt()
    sched = S.ReduceLROnPlateau(opt, patience=1, cooldown=2)
    for m in [3.0, 2.0, 2.5, 2.5, 2.5]:
        sched.step(m)
    saved = sched.state_dict()
    assert saved == {"last_epoch": 5, "best": 2.0, "num_bad_epochs": 0, "cooldown_counter": 1}
    s2 = S.ReduceLROnPlateau(make_opt(), patience=1, cooldown=2)
    s2.load_state_dict({k: np.asarray(v) for k, v in saved.items()})
    assert s2.state_dict() == saved
    fresh = S.ReduceLROnPlateau(make_opt())
    assert fresh.state_dict()["best"] == math.inf  # inf round-trips as a float
    with pytest.raises(ValueError, match="'num_bad_epochs' must be >= 0"):
        s2.load_state_dict({**saved, "num_bad_epochs": -1})
    with pytest.raises(KeyError, match=r"missing keys \['best'\]"):
        s2.load_state_dict({k: v for k, v in saved.items() if k != "best"})
    assert s2.state_dict() == saved


# ----------------------------------------------------------------------------------------------------
# bad input and bookkeeping
# ----------------------------------------------------------------------------------------------------


def test_errors():
    opt = make_opt()
    with pytest.raises(TypeError, match="StepLR: list is not an Optimizer"):
        S.StepLR([], step_size=2)
    with pytest.raises(ValueError, match="step_size must be >= 1, got 0"):
        S.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        S.ReduceLROnPlateau(opt, factor=1.5)
    with pytest.raises(ValueError, match="mode 'up' is unknown"):
        S.ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(ValueError, match="threshold mode 'x' is unknown"):
        S.ReduceLROnPlateau(opt, threshold_mode="x")
    with pytest.raises(ValueError, match="expected 2 min_lrs, got 1"):
        S.ReduceLROnPlateau(opt, min_lr=[0.1])
    with pytest.raises(ValueError, match="Starting multiplicative factor expected to be greater than 0"):
        S.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="expected 2 lr_lambdas, but got 1"):
        S.LambdaLR(opt, [lambda e: 1.0])
    with pytest.raises(ValueError, match="one more than the number of milestones"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.StepLR(opt, 3)], [])
    with pytest.raises(ValueError, match="does not support ReduceLROnPlateau"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.ReduceLROnPlateau(opt)], [3])
    other = make_opt()
    with pytest.raises(ValueError, match="same optimizer"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.StepLR(other, 2)], [3])
    with pytest.raises(TypeError, match="LinearWarmup: scheduler must be an LRScheduler"):
        S.LinearWarmup(S.ReduceLROnPlateau(opt), 3)
    with pytest.raises(ValueError, match="warmup_steps must be >= 0, got -1"):
        S.LinearWarmup(S.StepLR(opt, 2), -1)
    with pytest.raises(KeyError, match="'initial_lr' is not specified in param_groups\\[0\\]"):
        S.StepLR(make_opt(), step_size=2, last_epoch=3)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        S.LambdaLR(make_opt(), lambda e: -1.0)


def test_initial_lr_and_resume_with_last_epoch():
    opt = make_opt()
    first = S.ExponentialLR(opt, gamma=0.5)
    first.step()
    assert [g["initial_lr"] for g in opt.param_groups] == list(BASES)
    second = S.StepLR(opt, step_size=1, gamma=0.1)  # built later: reads initial_lr, not the current lr
    assert second.base_lrs == list(BASES)
    resumed = S.ExponentialLR(opt, gamma=0.5, last_epoch=3)  # as torch: the next epoch is 4
    assert resumed.last_epoch == 4
    np.testing.assert_allclose([g["lr"] for g in opt.param_groups], [b * 0.5**4 for b in BASES], rtol=1e-12)
