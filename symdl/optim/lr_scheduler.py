"""Learning-rate schedules for :mod:`symdl.optim` optimisers (``torch.optim.lr_scheduler``'s API).

A scheduler writes ``optimizer.param_groups[i]["lr"]``, i.e. the value of each group's 0-d lr parameter, which
compiled train steps read at every call: stepping a scheduler never recompiles anything. Use them as in torch::

    opt = symdl.optim.SGD(params, lr=0.1, momentum=0.9)
    sched = symdl.optim.lr_scheduler.LinearWarmup(CosineAnnealingLR(opt, T_max=90), warmup_steps=10)
    for epoch in range(100):
        train_one_epoch(step)   # step = symdl.compile(..., updates=opt.minimize(loss))
        sched.step()

Every scheduler except :class:`ReduceLROnPlateau` is defined by a *closed form* ``lr_at(epoch)`` of its base
learning rates (the groups' ``initial_lr``) and is deterministic in ``last_epoch``; its state is just
``last_epoch`` and ``base_lrs``. Values equal torch's schedulers (which compute the same sequences
recursively) up to float rounding. Differences from torch, by design:

- one scheduler drives an optimiser at a time: compose with :class:`SequentialLR` or :class:`LinearWarmup`
  (stepping two closed-form schedulers on one optimiser makes the last one win, where torch multiplies);
- ``load_state_dict`` also writes the restored schedule's learning rates into the optimiser, so the order in
  which optimiser and scheduler states are restored does not matter.

``state_dict()`` returns flat ``{str: int | float}`` (npz-friendly), ``load_state_dict`` checks every key
and value before changing anything.

Schedules (``t`` = ``last_epoch``, the number of ``step()`` calls; ``base`` = the group's initial lr):

==========================  ===========================================================================
``LambdaLR``                ``base * lr_lambda(t)``
``StepLR``                  ``base * gamma ** (t // step_size)``
``MultiStepLR``             ``base * gamma ** (number of milestones <= t)``
``ConstantLR``              ``base * factor`` for ``t < total_iters``, then ``base``
``LinearLR``                ``base * (start + (end - start) * min(t, total_iters) / total_iters)``
``ExponentialLR``           ``base * gamma ** t``
``PolynomialLR``            ``base * (1 - min(t, total_iters) / total_iters) ** power``
``CosineAnnealingLR``       ``eta_min + (base - eta_min) * (1 + cos(pi t / T_max)) / 2``
``InverseTimeLR``           ``base / (1 + decay_rate * t / decay_steps)`` (``floor(t / decay_steps)`` with
                            ``staircase``); this is the inverse-time decay ``a / (b + t)`` with
                            ``a = base * decay_steps / decay_rate``, ``b = decay_steps / decay_rate``
``SequentialLR``            scheduler ``i`` from milestone ``i - 1`` on, restarted at 0 (as torch)
``LinearWarmup``            linear warm-up from ``start_factor * base`` to ``base`` over ``warmup_steps``,
                            then the wrapped scheduler, started at 0 (= ``SequentialLR([LinearLR(opt,
                            start_factor, 1, warmup_steps), scheduler], [warmup_steps])``)
``ReduceLROnPlateau``       ``step(metric)``: multiply by ``factor`` after ``patience`` bad epochs
==========================  ===========================================================================
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from symdl.optim.optimizer import Optimizer

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "InverseTimeLR",
    "SequentialLR",
    "LinearWarmup",
    "ReduceLROnPlateau",
]


def _need_optimizer(optimizer: Any, who: str) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{who}: {type(optimizer).__name__} is not an Optimizer (symdl.optim)")
    return optimizer


def _int_arg(who: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{who}: {key} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{who}: {key} must be >= {minimum}, got {value}")
    return int(value)


def _float_arg(who: str, key: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: {key} must be a number, got {value!r}") from None
    if math.isnan(v) or (low is not None and v < low) or (high is not None and v > high):
        bounds = (
            f"in [{low}, {high}]"
            if low is not None and high is not None
            else f">= {low}"
            if low is not None
            else f"<= {high}"
            if high is not None
            else "a number"
        )
        raise ValueError(f"{who}: {key} must be {bounds}, got {value}")
    return v


def _state_number(who: str, state: Mapping[str, Any], key: str, integer: bool) -> float:
    raw = np.asarray(state[key])
    if raw.shape != () or raw.dtype.kind not in "biuf":
        raise ValueError(f"{who}.load_state_dict: {key!r} must be a number, got {state[key]!r}")
    v = raw.item()
    if integer and (not math.isfinite(v) or v != math.floor(v)):
        raise ValueError(f"{who}.load_state_dict: {key!r} must be an integer, got {state[key]!r}")
    return int(v) if integer else float(v)


def _check_keys(who: str, state: Any, expected: Sequence[str]) -> None:
    if not isinstance(state, Mapping):
        raise TypeError(f"{who}.load_state_dict: expected a mapping, got {type(state).__name__}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing keys {missing}"] if missing else []) + (
            [f"unexpected keys {unexpected}"] if unexpected else []
        )
        raise KeyError(f"{who}.load_state_dict: {'; '.join(parts)}")


class LRScheduler:
    """Base class of the closed-form schedulers. Subclasses define :meth:`lr_at`.

    Construction records each group's ``initial_lr`` (once: the first scheduler built on an optimiser fixes
    it) as :attr:`base_lrs` and sets the learning rates of epoch 0 (``last_epoch`` becomes 0). To resume,
    pass ``last_epoch`` (the groups must have ``initial_lr``) or use :meth:`load_state_dict`.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        who = type(self).__name__
        self.optimizer = _need_optimizer(optimizer, who)
        last_epoch = _int_arg(who, "last_epoch", last_epoch, -1)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"{who}: param 'initial_lr' is not specified in param_groups[{i}] when resuming a scheduler "
                        "with last_epoch >= 0"
                    )
        self.base_lrs: list[float] = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr: list[float] = [g["lr"] for g in optimizer.param_groups]
        self.step()

    def lr_at(self, epoch: int) -> list[float]:
        """The learning rate of every group at ``epoch`` (no side effects)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch (or iteration) and write the new learning rates into the optimiser."""
        self.last_epoch += 1
        self._write(self.lr_at(self.last_epoch))

    def _write(self, lrs: list[float]) -> None:
        if len(lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{type(self).__name__}: got {len(lrs)} learning rates for {len(self.optimizer.param_groups)} "
                "parameter groups (was a group added after the scheduler was built?)"
            )
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [float(v) for v in lrs]

    def get_last_lr(self) -> list[float]:
        """The learning rates last written by this scheduler (one per group)."""
        return list(self._last_lr)

    # --- state --------------------------------------------------------------------------------------
    def _own_keys(self) -> list[str]:
        return ["last_epoch"] + [f"base_lrs.{i}" for i in range(len(self.base_lrs))]

    def _state_keys(self) -> list[str]:
        return self._own_keys()

    def state_dict(self) -> dict[str, Any]:
        """``{"last_epoch": int, "base_lrs.<i>": float ...}`` (plain numbers, npz-friendly)."""
        out: dict[str, Any] = {"last_epoch": int(self.last_epoch)}
        out.update({f"base_lrs.{i}": float(b) for i, b in enumerate(self.base_lrs)})
        return out

    def _parse_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        _check_keys(type(self).__name__, state, self._state_keys())
        return self._parse_own(state)

    def _parse_own(self, state: Mapping[str, Any]) -> dict[str, Any]:
        who = type(self).__name__
        last = _state_number(who, state, "last_epoch", integer=True)
        if last < 0:
            raise ValueError(f"{who}.load_state_dict: 'last_epoch' must be >= 0, got {last}")
        bases = [_state_number(who, state, f"base_lrs.{i}", integer=False) for i in range(len(self.base_lrs))]
        for i, b in enumerate(bases):
            if not math.isfinite(b) or b < 0:
                raise ValueError(f"{who}.load_state_dict: 'base_lrs.{i}' must be a learning rate >= 0, got {b}")
        return {"last_epoch": last, "base_lrs": bases}

    def _set_state(self, parsed: dict[str, Any]) -> None:
        self.last_epoch = parsed["last_epoch"]
        self.base_lrs = list(parsed["base_lrs"])

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (checked first) and write the schedule's learning rates at the restored
        epoch into the optimiser (and its groups' ``initial_lr``)."""
        parsed = self._parse_state(state_dict)
        lrs_before = [g["lr"] for g in self.optimizer.param_groups]
        self._set_state(parsed)
        try:
            lrs = self.lr_at(self.last_epoch)
        except Exception:
            for g, lr in zip(self.optimizer.param_groups, lrs_before):
                g["lr"] = lr
            raise
        for g, b in zip(self.optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = b
        self._write(lrs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} last_epoch={self.last_epoch} lr={self._last_lr}>"


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``; ``lr_lambda`` is a function or one function per group."""

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        opt = _need_optimizer(optimizer, "LambdaLR")
        n = len(opt.param_groups)
        if callable(lr_lambda):
            self.lr_lambdas = [lr_lambda] * n
        else:
            lambdas = list(lr_lambda)
            if len(lambdas) != n:
                raise ValueError(f"LambdaLR: expected {n} lr_lambdas, but got {len(lambdas)}")
            for f in lambdas:
                if not callable(f):
                    raise TypeError(f"LambdaLR: lr_lambda entries must be callables, got {f!r}")
            self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        """``base_lr * lr_lambda(epoch)`` per group."""
        return [b * float(f(epoch)) for b, f in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    """Step decay: ``lr = base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = _int_arg("StepLR", "step_size", step_size, 1)
        self.gamma = _float_arg("StepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        """``base_lr * gamma ** (epoch // step_size)`` per group."""
        return [b * self.gamma ** (epoch // self.step_size) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    """``lr = base_lr * gamma ** k`` where ``k`` is the number of milestones ``<= epoch`` (repeats count)."""

    def __init__(
        self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.milestones = sorted(_int_arg("MultiStepLR", "milestones[]", m, 0) for m in milestones)
        self.gamma = _float_arg("MultiStepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        """``base_lr * gamma ** bisect_right(milestones, epoch)`` per group."""
        return [b * self.gamma ** bisect_right(self.milestones, epoch) for b in self.base_lrs]


class ConstantLR(LRScheduler):
    """``lr = base_lr * factor`` until ``total_iters`` epochs have passed, then ``base_lr``."""

    def __init__(
        self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1
    ) -> None:
        self.factor = _float_arg("ConstantLR", "factor", factor, 0.0, 1.0)
        self.total_iters = _int_arg("ConstantLR", "total_iters", total_iters, 0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        """``base_lr * (factor + (epoch >= total_iters) * (1 - factor))`` per group."""
        return [b * (self.factor + (epoch >= self.total_iters) * (1 - self.factor)) for b in self.base_lrs]


class LinearLR(LRScheduler):
    """Linear decay (or warm-up) of the factor from ``start_factor`` to ``end_factor`` over ``total_iters``:
    ``lr = base_lr * (start + (end - start) * min(epoch, total_iters) / total_iters)`` (as torch)."""

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        sf = _float_arg("LinearLR", "start_factor", start_factor, 0.0, 1.0)
        if sf <= 0:
            raise ValueError(
                "LinearLR: Starting multiplicative factor expected to be greater than 0 and less or equal to 1 "
                f"(start_factor={start_factor})"
            )
        self.start_factor = sf
        self.end_factor = _float_arg("LinearLR", "end_factor", end_factor, 0.0, 1.0)
        self.total_iters = _int_arg("LinearLR", "total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        """The linear interpolation of the factor, clamped after ``total_iters``."""
        f = self.start_factor + (self.end_factor - self.start_factor) * min(self.total_iters, epoch) / self.total_iters
        return [b * f for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    """``lr = base_lr * gamma ** epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = _float_arg("ExponentialLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        """``base_lr * gamma ** epoch`` per group."""
        return [b * self.gamma**epoch for b in self.base_lrs]


class PolynomialLR(LRScheduler):
    """``lr = base_lr * (1 - min(epoch, total_iters) / total_iters) ** power``."""

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        self.total_iters = _int_arg("PolynomialLR", "total_iters", total_iters, 1)
        self.power = _float_arg("PolynomialLR", "power", power, 0.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        """The polynomial decay, 0 from ``total_iters`` on."""
        f = (1.0 - min(self.total_iters, epoch) / self.total_iters) ** self.power
        return [b * f for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing: ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (it rises
    again after ``T_max``, as torch's)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:  # noqa: N803
        self.T_max = _int_arg("CosineAnnealingLR", "T_max", T_max, 1)
        self.eta_min = _float_arg("CosineAnnealingLR", "eta_min", eta_min, 0.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        """The cosine schedule per group."""
        c = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return [self.eta_min + (b - self.eta_min) * c for b in self.base_lrs]


class InverseTimeLR(LRScheduler):
    """Inverse-time decay: ``lr = base_lr / (1 + decay_rate * epoch / decay_steps)`` (with ``staircase``,
    ``floor(epoch / decay_steps)``), Keras' ``InverseTimeDecay``. This is ``a / (b + epoch)`` with
    ``a = base_lr * decay_steps / decay_rate`` and ``b = decay_steps / decay_rate``."""

    def __init__(
        self,
        optimizer: Optimizer,
        decay_rate: float,
        decay_steps: int = 1,
        staircase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        self.decay_rate = _float_arg("InverseTimeLR", "decay_rate", decay_rate, 0.0)
        self.decay_steps = _int_arg("InverseTimeLR", "decay_steps", decay_steps, 1)
        if not isinstance(staircase, bool):
            raise TypeError(f"InverseTimeLR: staircase must be True or False, got {staircase!r}")
        self.staircase = staircase
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        """``base_lr / (1 + decay_rate * t)`` with ``t = epoch / decay_steps`` (floored with ``staircase``)."""
        t = epoch // self.decay_steps if self.staircase else epoch / self.decay_steps
        return [b / (1.0 + self.decay_rate * t) for b in self.base_lrs]


def _closed_form(who: str, scheduler: Any, index: int, optimizer: Optimizer) -> LRScheduler:
    if isinstance(scheduler, ReduceLROnPlateau):
        raise ValueError(
            f"{who} does not support ReduceLROnPlateau (its step needs a metric, it has no closed form); got one "
            f"at index {index}"
        )
    if not isinstance(scheduler, LRScheduler):
        raise TypeError(f"{who}: the scheduler at index {index} is a {type(scheduler).__name__}, not an LRScheduler")
    if scheduler.optimizer is not optimizer:
        raise ValueError(
            f"{who} expects all schedulers to belong to the same optimizer, but the scheduler "
            f"{type(scheduler).__name__} at index {index} has another one"
        )
    return scheduler


class SequentialLR(LRScheduler):
    """Scheduler ``i`` runs from ``milestones[i - 1]`` on, started at epoch 0 (``milestones`` has one entry
    fewer than ``schedulers``), as ``torch.optim.lr_scheduler.SequentialLR``."""

    def __init__(
        self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int], last_epoch: int = -1
    ) -> None:
        opt = _need_optimizer(optimizer, "SequentialLR")
        scheds = list(schedulers)
        if not scheds:
            raise ValueError("SequentialLR expects at least one scheduler, but got no scheduler")
        self._schedulers = [_closed_form("SequentialLR", s, i, opt) for i, s in enumerate(scheds)]
        ms = [_int_arg("SequentialLR", "milestones[]", m, 1) for m in milestones]
        if len(ms) != len(scheds) - 1:
            raise ValueError(
                "SequentialLR expects the number of schedulers to be one more than the number of milestones, but "
                f"got {len(scheds)} schedulers and {len(ms)} milestones"
            )
        if ms != sorted(ms):
            raise ValueError(f"SequentialLR: milestones must be increasing, got {ms}")
        self._milestones = ms
        super().__init__(optimizer, last_epoch)

    def _locate(self, epoch: int) -> tuple[LRScheduler, int]:
        idx = bisect_right(self._milestones, epoch)
        start = self._milestones[idx - 1] if idx > 0 else 0
        return self._schedulers[idx], epoch - start

    def lr_at(self, epoch: int) -> list[float]:
        """The active scheduler's value at ``epoch - (its start milestone)``."""
        sched, local = self._locate(epoch)
        return sched.lr_at(local)

    def step(self) -> None:
        """Advance one epoch; the active scheduler's ``last_epoch`` follows."""
        super().step()
        sched, local = self._locate(self.last_epoch)
        sched.last_epoch = local
        sched._last_lr = list(self._last_lr)

    def _state_keys(self) -> list[str]:
        keys = self._own_keys()
        for i, s in enumerate(self._schedulers):
            keys += [f"schedulers.{i}.{k}" for k in s._state_keys()]
        return keys

    def state_dict(self) -> dict[str, Any]:
        """Own ``last_epoch``/``base_lrs`` and each scheduler's state under ``schedulers.<i>.``."""
        out = super().state_dict()
        for i, s in enumerate(self._schedulers):
            out.update({f"schedulers.{i}.{k}": v for k, v in s.state_dict().items()})
        return out

    def _parse_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        _check_keys("SequentialLR", state, self._state_keys())
        parsed = self._parse_own(state)
        subs = []
        for i, s in enumerate(self._schedulers):
            prefix = f"schedulers.{i}."
            subs.append(s._parse_state({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}))
        parsed["schedulers"] = subs
        return parsed

    def _set_state(self, parsed: dict[str, Any]) -> None:
        super()._set_state(parsed)
        for s, p in zip(self._schedulers, parsed["schedulers"]):
            s._set_state(p)


class LinearWarmup(SequentialLR):
    """Linear warm-up in front of any closed-form scheduler: the factor goes linearly from ``start_factor``
    (default 0) to 1 over ``warmup_steps`` epochs, then ``scheduler`` runs, started at epoch 0::

        lr(t) = base_lr * (start_factor + (1 - start_factor) * t / warmup_steps)   for t < warmup_steps
        lr(t) = scheduler.lr_at(t - warmup_steps)                                 afterwards

    (the same as ``SequentialLR(opt, [LinearLR(opt, start_factor, 1.0, warmup_steps), scheduler],
    [warmup_steps])`` for ``start_factor > 0``).
    """

    def __init__(
        self, scheduler: LRScheduler, warmup_steps: int, start_factor: float = 0.0, last_epoch: int = -1
    ) -> None:
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"LinearWarmup: scheduler must be an LRScheduler, got {type(scheduler).__name__}")
        opt = scheduler.optimizer
        _closed_form("LinearWarmup", scheduler, 0, opt)
        self.warmup_steps = _int_arg("LinearWarmup", "warmup_steps", warmup_steps, 0)
        self.start_factor = _float_arg("LinearWarmup", "start_factor", start_factor, 0.0, 1.0)
        self._schedulers = [_Warmup(self, scheduler), scheduler]
        self._milestones = [self.warmup_steps] if self.warmup_steps > 0 else []
        if not self._milestones:
            self._schedulers = [scheduler]
        LRScheduler.__init__(self, opt, last_epoch)

    def _state_keys(self) -> list[str]:
        return self._own_keys() + [f"scheduler.{k}" for k in self._schedulers[-1]._state_keys()]

    def state_dict(self) -> dict[str, Any]:
        """Own ``last_epoch``/``base_lrs`` and the wrapped scheduler's state under ``scheduler.``."""
        out = LRScheduler.state_dict(self)
        out.update({f"scheduler.{k}": v for k, v in self._schedulers[-1].state_dict().items()})
        return out

    def _parse_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        _check_keys("LinearWarmup", state, self._state_keys())
        parsed = self._parse_own(state)
        inner = {k[len("scheduler.") :]: v for k, v in state.items() if k.startswith("scheduler.")}
        parsed["schedulers"] = [self._schedulers[-1]._parse_state(inner)]
        return parsed

    def _set_state(self, parsed: dict[str, Any]) -> None:
        LRScheduler._set_state(self, parsed)
        self._schedulers[-1]._set_state(parsed["schedulers"][0])


class _Warmup(LRScheduler):
    """The warm-up phase of :class:`LinearWarmup` (not stepped on its own)."""

    def __init__(self, owner: LinearWarmup, inner: LRScheduler) -> None:  # no LRScheduler.__init__: no side effects
        self.optimizer = inner.optimizer
        self._owner = owner
        self._inner = inner
        self.base_lrs = inner.base_lrs
        self.last_epoch = 0
        self._last_lr = list(inner._last_lr)

    def lr_at(self, epoch: int) -> list[float]:
        """The linear warm-up factor times the wrapped scheduler's base lrs."""
        w, sf = self._owner.warmup_steps, self._owner.start_factor
        f = sf + (1.0 - sf) * min(epoch, w) / w
        return [b * f for b in self._inner.base_lrs]


class ReduceLROnPlateau:
    """Reduce the learning rates by ``factor`` when a metric has stopped improving (as torch's).

    Call ``step(metric)`` once per epoch. The metric improves when it is below ``best * (1 - threshold)``
    (``mode="min"``, ``threshold_mode="rel"``), below ``best - threshold`` (``"abs"``), above
    ``best * (1 + threshold)`` / ``best + threshold`` (``mode="max"``). After more than ``patience`` epochs
    without improvement every group's lr becomes ``max(lr * factor, min_lr)`` (changes smaller than ``eps``
    are skipped), then ``cooldown`` epochs are ignored.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        who = "ReduceLROnPlateau"
        self.optimizer = _need_optimizer(optimizer, who)
        if _float_arg(who, "factor", factor) >= 1.0:
            raise ValueError(f"{who}: Factor should be < 1.0 (factor={factor})")
        self.factor = _float_arg(who, "factor", factor, 0.0)
        if mode not in ("min", "max"):
            raise ValueError(f"{who}: mode {mode!r} is unknown! (expected 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{who}: threshold mode {threshold_mode!r} is unknown! (expected 'rel' or 'abs')")
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.threshold = _float_arg(who, "threshold", threshold, 0.0)
        self.patience = _int_arg(who, "patience", patience, 0)
        self.cooldown = _int_arg(who, "cooldown", cooldown, 0)
        self.eps = _float_arg(who, "eps", eps, 0.0)
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"{who}: expected {n} min_lrs, got {len(min_lr)}")
            self.min_lrs = [_float_arg(who, "min_lr", m, 0.0) for m in min_lr]
        else:
            self.min_lrs = [_float_arg(who, "min_lr", min_lr, 0.0)] * n
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.best = self.mode_worse
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    @property
    def in_cooldown(self) -> bool:
        """Whether bad epochs are currently ignored."""
        return self.cooldown_counter > 0

    def is_better(self, a: float, best: float) -> bool:
        """Whether metric ``a`` improves on ``best`` (mode and threshold as configured)."""
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics: Any) -> None:
        """Record one epoch's metric (a number or a 1-element array) and reduce the lrs if it plateaued."""
        arr = np.asarray(metrics)
        if arr.size != 1 or arr.dtype.kind not in "biuf":
            raise TypeError(f"ReduceLROnPlateau.step: metrics must be a single number, got {metrics!r}")
        current = float(arr.reshape(()))
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(group["lr"])
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The groups' learning rates after the last step."""
        return list(self._last_lr)

    _KEYS = ("last_epoch", "best", "num_bad_epochs", "cooldown_counter")

    def state_dict(self) -> dict[str, Any]:
        """``{"last_epoch", "best", "num_bad_epochs", "cooldown_counter"}`` as plain numbers (the learning rates
        themselves are in the optimiser's state dict)."""
        return {
            "last_epoch": int(self.last_epoch),
            "best": float(self.best),
            "num_bad_epochs": int(self.num_bad_epochs),
            "cooldown_counter": int(self.cooldown_counter),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (every key and value checked first)."""
        who = "ReduceLROnPlateau"
        _check_keys(who, state_dict, self._KEYS)
        values = {
            "last_epoch": _state_number(who, state_dict, "last_epoch", integer=True),
            "best": _state_number(who, state_dict, "best", integer=False),
            "num_bad_epochs": _state_number(who, state_dict, "num_bad_epochs", integer=True),
            "cooldown_counter": _state_number(who, state_dict, "cooldown_counter", integer=True),
        }
        for k in ("last_epoch", "num_bad_epochs", "cooldown_counter"):
            if values[k] < 0:
                raise ValueError(f"{who}.load_state_dict: {k!r} must be >= 0, got {values[k]}")
        if math.isnan(values["best"]):
            raise ValueError(f"{who}.load_state_dict: 'best' is NaN")
        for k, v in values.items():
            setattr(self, k, v)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def __repr__(self) -> str:
        return f"<ReduceLROnPlateau mode={self.mode} best={self.best} bad_epochs={self.num_bad_epochs}>"
