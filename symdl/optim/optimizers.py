"""The optimisers: SGD, Adagrad, RMSprop, Adam, AdamW, NAdam.

Argument names, defaults and update formulas are PyTorch's (``torch.optim``, single-tensor CPU path), written as
elementwise expressions of the parameter, its gradient and its state so that each parameter's update compiles
to one fused loop. Every optimiser also takes ``maximize`` (ascend instead of descend), as torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from symdl.graph import Parameter, Tensor, constant
from symdl.ops.elementwise import maximum, sqrt, where
from symdl.optim.optimizer import F64, Optimizer, ParamGroup, _check_lr, _Scalars, lerp

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam"]


def _number(opt: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{opt}: {key} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{opt}: Invalid {key} value: {value}")
    return v


def _non_negative(opt: str, key: str, value: Any, label: str | None = None) -> None:
    if _number(opt, key, value) < 0.0:
        raise ValueError(f"{opt}: Invalid {label or key} value: {value} ({key} must be >= 0)")


def _flag(opt: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{opt}: {key} must be True or False, got {value!r}")


def _check_common(opt: str, o: Mapping[str, Any]) -> None:
    try:
        _check_lr(o["lr"])
    except ValueError:
        raise ValueError(f"{opt}: Invalid learning rate: {o['lr']} (lr must be >= 0)") from None
    except TypeError:
        raise TypeError(f"{opt}: lr must be a number, got {o['lr']!r}") from None
    _non_negative(opt, "weight_decay", o["weight_decay"])
    _flag(opt, "maximize", o["maximize"])


def _check_betas(opt: str, betas: Any) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{opt}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        if not 0.0 <= _number(opt, f"betas[{i}]", b) < 1.0:
            raise ValueError(f"{opt}: Invalid beta parameter at index {i}: {b} (betas must be in [0, 1))")


def _signed_decayed(p: Parameter, g: Tensor, group: ParamGroup) -> Tensor:
    """``-g`` with ``maximize``, then ``+ weight_decay * p`` (L2, coupled): torch's ``grad.add(param, alpha=wd)``."""
    if group["maximize"]:
        g = -g
    wd = group["weight_decay"]
    if wd != 0:
        g = g + wd * p
    return g


def _adam_moments(
    p: Parameter, g: Tensor, state: dict[str, Parameter], group: ParamGroup, s: _Scalars
) -> tuple[Tensor, Tensor, Parameter, Parameter, Tensor, Tensor]:
    """Adam and NAdam's shared first half: maximise, (decoupled) weight decay, and the new first and second
    moments. Returns ``(g, p_decayed, m, v, new_m, new_v)``."""
    b1, b2 = (float(b) for b in group["betas"])
    if group["maximize"]:
        g = -g
    p_decayed: Tensor = p
    if group["weight_decay"] != 0:
        if group["decoupled_weight_decay"]:
            p_decayed = p * s("decay", p.dtype)
        else:
            g = g + group["weight_decay"] * p
    m, v = state["exp_avg"], state["exp_avg_sq"]
    new_m = lerp(m, g, 1.0 - b1)
    new_v = v * b2 + ((1.0 - b2) * g) * g
    return g, p_decayed, m, v, new_m, new_v


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay (as
    ``torch.optim.SGD``)::

        g = grad + weight_decay * p
        buf = g (first step), else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf          (when momentum != 0)
        p = p - lr * g

    State: ``momentum_buffer`` (when ``momentum != 0``).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check(self, o: Mapping[str, Any]) -> None:
        _check_common("SGD", o)
        _non_negative("SGD", "momentum", o["momentum"])
        _number("SGD", "dampening", o["dampening"])
        _flag("SGD", "nesterov", o["nesterov"])
        if o["nesterov"] and (o["momentum"] <= 0 or o["dampening"] != 0):
            raise ValueError(
                f"SGD: Nesterov momentum requires a momentum and zero dampening (got momentum={o['momentum']}, "
                f"dampening={o['dampening']})"
            )

    def _buffers(self, group: ParamGroup) -> list[tuple[str, float]]:
        return [("momentum_buffer", 0.0)] if group["momentum"] != 0 else []

    def _group_scalars(self, group: ParamGroup, lr: Tensor, t_old: Tensor, t_new: Tensor) -> dict[str, Tensor]:
        if group["momentum"] != 0 and group["dampening"] != 0:
            # the first step copies the gradient into the buffer (factor 1), later ones damp it
            return {"damp": where(t_old == 0.0, constant(1.0, F64), 1.0 - group["dampening"])}
        return {}

    def _update(
        self, p: Parameter, g: Tensor, state: dict[str, Parameter], group: ParamGroup, s: _Scalars
    ) -> dict[Parameter, Tensor]:
        g = _signed_decayed(p, g, group)
        out: dict[Parameter, Tensor] = {}
        momentum = group["momentum"]
        if momentum != 0:
            buf = state["momentum_buffer"]
            damped = s("damp", p.dtype) * g if group["dampening"] != 0 else g
            new_buf = buf * momentum + damped
            out[buf] = new_buf
            g = g + momentum * new_buf if group["nesterov"] else new_buf
        out[p] = p - self._lr(group, p.dtype) * g
        return out


class Adagrad(Optimizer):
    """Adagrad (as ``torch.optim.Adagrad``)::

        g = grad + weight_decay * p
        clr = lr / (1 + (step - 1) * lr_decay)
        sum = sum + g * g
        p = p - clr * g / (sqrt(sum) + eps)

    State: ``sum`` (initialised to ``initial_accumulator_value``).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check(self, o: Mapping[str, Any]) -> None:
        _check_common("Adagrad", o)
        _non_negative("Adagrad", "lr_decay", o["lr_decay"])
        _non_negative("Adagrad", "initial_accumulator_value", o["initial_accumulator_value"])
        _non_negative("Adagrad", "eps", o["eps"], "epsilon")

    def _buffers(self, group: ParamGroup) -> list[tuple[str, float]]:
        return [("sum", float(group["initial_accumulator_value"]))]

    def _group_scalars(self, group: ParamGroup, lr: Tensor, t_old: Tensor, t_new: Tensor) -> dict[str, Tensor]:
        return {"neg_clr": -lr / (1.0 + (t_new - 1.0) * group["lr_decay"])}

    def _update(
        self, p: Parameter, g: Tensor, state: dict[str, Parameter], group: ParamGroup, s: _Scalars
    ) -> dict[Parameter, Tensor]:
        g = _signed_decayed(p, g, group)
        acc = state["sum"]
        new_sum = acc + g * g
        std = sqrt(new_sum) + group["eps"]
        return {acc: new_sum, p: p + (s("neg_clr", p.dtype) * g) / std}


class RMSprop(Optimizer):
    """RMSprop (as ``torch.optim.RMSprop``)::

        g = grad + weight_decay * p
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        avg = sqrt(square_avg - grad_avg ** 2) + eps   (centered; grad_avg = lerp(grad_avg, g, 1 - alpha))
        avg = sqrt(square_avg) + eps                   (otherwise)
        buf = momentum * buf + g / avg; p = p - lr * buf     (momentum > 0)
        p = p - lr * g / avg                                 (otherwise)

    State: ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check(self, o: Mapping[str, Any]) -> None:
        _check_common("RMSprop", o)
        _non_negative("RMSprop", "eps", o["eps"], "epsilon")
        _non_negative("RMSprop", "momentum", o["momentum"])
        _non_negative("RMSprop", "alpha", o["alpha"])
        _flag("RMSprop", "centered", o["centered"])

    def _buffers(self, group: ParamGroup) -> list[tuple[str, float]]:
        bufs = [("square_avg", 0.0)]
        if group["momentum"] > 0:
            bufs.append(("momentum_buffer", 0.0))
        if group["centered"]:
            bufs.append(("grad_avg", 0.0))
        return bufs

    def _update(
        self, p: Parameter, g: Tensor, state: dict[str, Parameter], group: ParamGroup, s: _Scalars
    ) -> dict[Parameter, Tensor]:
        g = _signed_decayed(p, g, group)
        alpha = group["alpha"]
        sq = state["square_avg"]
        new_sq = sq * alpha + ((1.0 - alpha) * g) * g
        out: dict[Parameter, Tensor] = {sq: new_sq}
        if group["centered"]:
            ga = state["grad_avg"]
            new_ga = lerp(ga, g, 1.0 - alpha)
            out[ga] = new_ga
            avg = sqrt(new_sq - new_ga * new_ga)
        else:
            avg = sqrt(new_sq)
        avg = avg + group["eps"]
        lr = self._lr(group, p.dtype)
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            new_buf = buf * group["momentum"] + g / avg
            out[buf] = new_buf
            out[p] = p - lr * new_buf
        else:
            out[p] = p + (-lr * g) / avg
        return out


class Adam(Optimizer):
    """Adam (as ``torch.optim.Adam``; ``amsgrad``, ``weight_decay`` as L2 or, with
    ``decoupled_weight_decay=True``, decoupled as AdamW)::

        g = grad + weight_decay * p        (or p = p * (1 - lr * weight_decay) when decoupled)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)              (amsgrad; used instead of v below)
        p = p - lr / (1 - beta1 ** t) * m / (sqrt(v) / sqrt(1 - beta2 ** t) + eps)

    State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad); the step ``t`` is the optimiser's
    shared step counter.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas) if isinstance(betas, list) else betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def _check(self, o: Mapping[str, Any]) -> None:
        name = type(self).__name__
        _check_common(name, o)
        _non_negative(name, "eps", o["eps"], "epsilon")
        _check_betas(name, o["betas"])
        _flag(name, "amsgrad", o["amsgrad"])
        _flag(name, "decoupled_weight_decay", o["decoupled_weight_decay"])

    def _buffers(self, group: ParamGroup) -> list[tuple[str, float]]:
        bufs = [("exp_avg", 0.0), ("exp_avg_sq", 0.0)]
        if group["amsgrad"]:
            bufs.append(("max_exp_avg_sq", 0.0))
        return bufs

    def _group_scalars(self, group: ParamGroup, lr: Tensor, t_old: Tensor, t_new: Tensor) -> dict[str, Tensor]:
        b1, b2 = (float(b) for b in group["betas"])
        out = {
            "neg_step_size": -(lr / (1.0 - b1**t_new)),
            "bc2_sqrt": sqrt(1.0 - b2**t_new),
        }
        if group["weight_decay"] != 0 and group["decoupled_weight_decay"]:
            out["decay"] = 1.0 - lr * float(group["weight_decay"])
        return out

    def _update(
        self, p: Parameter, g: Tensor, state: dict[str, Parameter], group: ParamGroup, s: _Scalars
    ) -> dict[Parameter, Tensor]:
        g, p_decayed, m, v, new_m, new_v = _adam_moments(p, g, state, group, s)
        out: dict[Parameter, Tensor] = {m: new_m, v: new_v}
        second = new_v
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            second = maximum(vmax, new_v)
            out[vmax] = second
        denom = sqrt(second) / s("bc2_sqrt", p.dtype) + group["eps"]
        out[p] = p_decayed + (s("neg_step_size", p.dtype) * new_m) / denom
        return out


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay ``p = p * (1 - lr * weight_decay)`` (as ``torch.optim.AdamW``;
    ``weight_decay`` defaults to ``1e-2``)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True)


class NAdam(Optimizer):
    """NAdam (as ``torch.optim.NAdam``: Nesterov-accelerated Adam with the momentum schedule
    ``mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))``)::

        g = grad + weight_decay * p        (or p = p * (1 - lr * weight_decay) when decoupled_weight_decay)
        mu_product = mu_product * mu_t
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v / (1 - beta2 ** t)) + eps
        p = p - lr (1 - mu_t) / (1 - mu_product) * g / denom
              - lr mu_{t+1} / (1 - mu_product * mu_{t+1}) * m / denom

    State: ``exp_avg``, ``exp_avg_sq``; the step counter and ``mu_product`` are shared 0-d float64 parameters.
    """

    _shared_state = (("mu_product", 1.0),)

    def __init__(
        self,
        params: Any,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas) if isinstance(betas, list) else betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a parameter group (see :meth:`Optimizer.add_param_group`). ``mu_product`` is shared by all
        parameters, so every group must have the same ``betas[0]`` and ``momentum_decay``."""
        if self.param_groups and isinstance(param_group, Mapping):
            g0 = self.param_groups[0]
            betas = param_group.get("betas", self.defaults["betas"])
            decay = param_group.get("momentum_decay", self.defaults["momentum_decay"])
            if (
                isinstance(betas, (tuple, list))
                and len(betas) == 2
                and (betas[0] != g0["betas"][0] or decay != g0["momentum_decay"])
            ):
                raise ValueError(
                    "NAdam: all parameter groups must share betas[0] and momentum_decay (the momentum schedule "
                    "mu_product is one 0-d state for all parameters)"
                )
        super().add_param_group(param_group)

    def _check(self, o: Mapping[str, Any]) -> None:
        _check_common("NAdam", o)
        _non_negative("NAdam", "eps", o["eps"], "epsilon")
        _check_betas("NAdam", o["betas"])
        _non_negative("NAdam", "momentum_decay", o["momentum_decay"])
        _flag("NAdam", "decoupled_weight_decay", o["decoupled_weight_decay"])

    def _buffers(self, group: ParamGroup) -> list[tuple[str, float]]:
        return [("exp_avg", 0.0), ("exp_avg_sq", 0.0)]

    def _mu(self, t: Tensor) -> tuple[Tensor, Tensor]:
        g0 = self.param_groups[0]
        b1 = float(g0["betas"][0])
        md = float(g0["momentum_decay"])
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * md))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1.0) * md))
        return mu, mu_next

    def _shared_updates(self, t_new: Tensor) -> dict[str, Tensor]:
        mu, _ = self._mu(t_new)
        return {"mu_product": self._shared["mu_product"] * mu}

    def _group_scalars(self, group: ParamGroup, lr: Tensor, t_old: Tensor, t_new: Tensor) -> dict[str, Tensor]:
        b2 = float(group["betas"][1])
        mu, mu_next = self._mu(t_new)
        mu_product = self._shared["mu_product"] * mu
        out = {
            "bc2": 1.0 - b2**t_new,
            "c_grad": (-lr * (1.0 - mu)) / (1.0 - mu_product),
            "c_avg": (-lr * mu_next) / (1.0 - mu_product * mu_next),
        }
        if group["weight_decay"] != 0 and group["decoupled_weight_decay"]:
            out["decay"] = 1.0 - lr * float(group["weight_decay"])
        return out

    def _update(
        self, p: Parameter, g: Tensor, state: dict[str, Parameter], group: ParamGroup, s: _Scalars
    ) -> dict[Parameter, Tensor]:
        g, p_decayed, m, v, new_m, new_v = _adam_moments(p, g, state, group, s)
        denom = sqrt(new_v / s("bc2", p.dtype)) + group["eps"]
        new_p = (p_decayed + (s("c_grad", p.dtype) * g) / denom) + (s("c_avg", p.dtype) * new_m) / denom
        return {m: new_m, v: new_v, p: new_p}
