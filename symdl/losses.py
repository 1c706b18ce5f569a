"""Loss functions with PyTorch's semantics (``torch.nn.functional``): shapes, defaults and reductions.

Every loss is a composition of symdl ops, so its gradients (and gradients of gradients) come from the ops.
``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"`` (``kl_div`` also takes ``"batchmean"``). Bad
arguments and shape mismatches are reported when the graph is built, naming the loss, the shapes and the
user's file:line. Integer class targets are not differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from symdl.errors import Frame, OpRuntimeError, ShapeError, user_frame
from symdl.errors import where as at
from symdl.graph import Op, Tensor, TensorType, apply, describe, is_float
from symdl.ops.base import as_tensor, float_operand, promote
from symdl.ops.elementwise import (
    abs,
    cast,
    clip,
    equal,
    exp,
    log,
    mul,
    neg,
    not_equal,
    softplus,
    square,
    sub,
    where,
)
from symdl.ops.indexing import Embedding, TakeAlongClass
from symdl.ops.nn import SoftmaxCrossEntropy, log_softmax
from symdl.ops.reduce import dim_size, mean
from symdl.ops.reduce import sum as reduce_sum
from symdl.ops.shape import reshape, squeeze

__all__ = [
    "mse_loss",
    "l1_loss",
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
]

REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------


def _check_reduction(name: str, reduction: Any, frame: Frame | None, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(
            f"{name}: reduction must be one of {', '.join(repr(r) for r in allowed)}, got {reduction!r}{at(frame)}"
        )


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return reduce_sum(loss)
    return mean(loss)


def _compatible(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(p is None or q is None or p == q for p, q in zip(a, b))


def _same_shape(name: str, input: Tensor, target: Tensor, frame: Frame | None) -> None:  # noqa: A002
    if not _compatible(input.shape, target.shape):
        raise ShapeError(
            f"{name}: the target's shape must equal the input's; input {describe(input)}, target "
            f"{describe(target)}{at(frame)}"
        )


def _broadcastable_to(name: str, what: str, w: Tensor, shape: tuple, frame: Frame | None) -> None:
    ok = w.ndim <= len(shape) and all(
        d is None or d == 1 or s is None or d == s for d, s in zip(w.shape[::-1], shape[::-1])
    )
    if not ok:
        raise ShapeError(
            f"{name}: {what} of shape {w.shape} does not broadcast to the input's shape {shape}{at(frame)}"
        )


def _float_pair(name: str, input: Any, target: Any) -> tuple[Tensor, Tensor]:  # noqa: A002
    x = float_operand(input, name)
    if isinstance(target, Tensor):
        x, y = promote(x, float_operand(target, name), what=name)
    else:  # arrays and numbers adopt the input's dtype
        y = cast(as_tensor(target, f"{name} target"), x.dtype)
    return x, y


def _weight_like(name: str, weight: Any, x: Tensor) -> Tensor:
    """Weights adopt the input's dtype."""
    return cast(as_tensor(weight, f"{name} weight"), x.dtype)


def _class_axis(name: str, input: Tensor, frame: Frame | None) -> int:  # noqa: A002
    if input.ndim == 0:
        raise ShapeError(
            f"{name}: the input must have a class axis: (C,), (N, C) or (N, C, d1, ...), got "
            f"{describe(input)}{at(frame)}"
        )
    return 1 if input.ndim >= 2 else 0


def _class_weight(name: str, weight: Any, x: Tensor, cax: int, frame: Frame | None) -> Tensor:
    w = _weight_like(name, weight, x)
    c = x.shape[cax]
    if w.ndim != 1 or (w.shape[0] is not None and c is not None and w.shape[0] != c):
        raise ShapeError(
            f"{name}: weight must be a 1-d tensor of C = {c} class weights, got {describe(w)}; input "
            f"{describe(x)}{at(frame)}"
        )
    return w


def _check_labels(name: str, input: Tensor, target: Tensor, cax: int, frame: Frame | None) -> None:  # noqa: A002
    if target.dtype.kind not in "iu":
        raise ShapeError(f"{name}: class-index targets must be integers, got {describe(target)}{at(frame)}")
    expect = input.shape[:cax] + input.shape[cax + 1 :]
    if not _compatible(expect, target.shape):
        exp_s = "(" + ", ".join("None" if d is None else str(d) for d in expect) + ("," if len(expect) == 1 else "")
        raise ShapeError(
            f"{name}: expected a target of shape {exp_s}) (the input's shape without its class axis "
            f"{cax}), got {describe(target)}; input {describe(input)}{at(frame)}"
        )


def _label_weights(target: Tensor, weight: Tensor | None, ignore_index: int, dtype: np.dtype) -> Tensor:
    """The per-element weights ``w[t]`` (0 where ignored; 1 for every kept element without class weights)."""
    if weight is None:
        return cast(not_equal(target, ignore_index), dtype)
    c = weight.shape[0]
    w_rows = reshape(weight, (-1 if c is None else c, 1))
    return squeeze(apply(Embedding(None, ignore_index), target, w_rows), -1)


def _nll_terms(
    logp: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, cax: int
) -> tuple[Tensor, Tensor]:
    """Per-element ``-w[t] * logp[t]`` (0 where ignored) and the per-element weights ``w[t]``."""
    picked = apply(TakeAlongClass(cax, int(ignore_index)), logp, target)
    wt = _label_weights(target, weight, int(ignore_index), logp.dtype)
    return neg(picked if weight is None else mul(picked, wt)), wt


def _weighted_reduce(loss: Tensor, wt: Tensor, reduction: str) -> Tensor:
    """nll_loss's reduction: the ``"mean"`` divides by the summed weights of the non-ignored targets."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return reduce_sum(loss)
    return reduce_sum(loss) / reduce_sum(wt)


# ----------------------------------------------------------------------------------------------------
# Regression losses
# ----------------------------------------------------------------------------------------------------


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002 - torch's name
    """``torch.nn.functional.mse_loss``: ``(input - target)**2``, reduced. Shapes must match."""
    frame = user_frame()
    _check_reduction("mse_loss", reduction, frame)
    x, y = _float_pair("mse_loss", input, target)
    _same_shape("mse_loss", x, y, frame)
    return _reduce(square(sub(x, y)), reduction)


def l1_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002 - torch's name
    """``torch.nn.functional.l1_loss``: ``|input - target|``, reduced (gradient 0 where they are equal)."""
    frame = user_frame()
    _check_reduction("l1_loss", reduction, frame)
    x, y = _float_pair("l1_loss", input, target)
    _same_shape("l1_loss", x, y, frame)
    return _reduce(abs(sub(x, y)), reduction)


# ----------------------------------------------------------------------------------------------------
# Classification losses
# ----------------------------------------------------------------------------------------------------


def nll_loss(
    input: Any,  # noqa: A002 - torch's name
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """``torch.nn.functional.nll_loss``: ``-weight[t] * input[n, t, d...]`` for ``t = target[n, d...]``.

    ``input``: log-probabilities of shape ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``; ``target``: integer class
    indices of ``input``'s shape without the class axis. Targets equal to ``ignore_index`` contribute 0; the
    ``"mean"`` reduction divides by the sum of ``weight[t]`` over non-ignored targets (their count without
    ``weight``). Labels outside ``[0, C)`` raise :class:`~symdl.errors.OpRuntimeError` at run time.
    """
    frame = user_frame()
    _check_reduction("nll_loss", reduction, frame)
    x = float_operand(input, "nll_loss")
    t = as_tensor(target, "nll_loss target")
    cax = _class_axis("nll_loss", x, frame)
    _check_labels("nll_loss", x, t, cax, frame)
    w = None if weight is None else _class_weight("nll_loss", weight, x, cax, frame)
    loss, wt = _nll_terms(x, t, w, ignore_index, cax)
    return _weighted_reduce(loss, wt, reduction)


def cross_entropy(
    input: Any,  # noqa: A002 - torch's name
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """``torch.nn.functional.cross_entropy``: ``nll_loss(log_softmax(input, class axis), target)``.

    ``input``: unnormalised logits of shape ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``. ``target`` is either
    integer class indices (``input``'s shape without the class axis; ``ignore_index`` and ``weight`` as
    :func:`nll_loss`) or class probabilities of ``input``'s shape (float; then ``"mean"`` divides by the number of
    samples ``numel / C`` and ``ignore_index`` is not supported). ``label_smoothing`` in ``[0, 1]`` mixes the
    target with the uniform distribution, as PyTorch. Stable for logits of ±1e4 (log-softmax with a max-shift).
    """
    frame = user_frame()
    name = "cross_entropy"
    _check_reduction(name, reduction, frame)
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing}{at(frame)}")
    eps = float(label_smoothing)
    x = float_operand(input, name)
    t = as_tensor(target, f"{name} target")
    cax = _class_axis(name, x, frame)
    w = None if weight is None else _class_weight(name, weight, x, cax, frame)
    logp = log_softmax(x, axis=cax)
    n_classes = dim_size(x, (cax,), x.dtype)
    w_b = None if w is None else reshape(w, tuple(-1 if a == cax else 1 for a in range(x.ndim)))

    if is_float(t.dtype):  # class probabilities
        if int(ignore_index) >= 0:
            raise ValueError(
                f"{name}: ignore_index is not supported for floating-point (probability) targets{at(frame)}"
            )
        if not isinstance(target, Tensor):
            t = cast(t, x.dtype)
        _same_shape(name, x, t, frame)
        logp, t = promote(logp, t, what=name)
        if eps > 0:
            t = t * (1.0 - eps) + eps / n_classes
        prod = mul(logp, t) if w_b is None else mul(mul(logp, t), w_b)
        if reduction == "none":
            return neg(reduce_sum(prod, cax))
        total = neg(reduce_sum(prod))
        if reduction == "sum":
            return total
        n_samples = dim_size(x, tuple(a for a in range(x.ndim) if a != cax), x.dtype)
        return total / n_samples

    _check_labels(name, x, t, cax, frame)
    if eps == 0:  # the fused, stable op: no log-probability buffer, one kernel each way
        loss = apply(SoftmaxCrossEntropy(cax, int(ignore_index)), x, t)
        wt = _label_weights(t, w, int(ignore_index), x.dtype)
        return _weighted_reduce(loss if w is None else mul(loss, wt), wt, reduction)
    loss, wt = _nll_terms(logp, t, w, ignore_index, cax)
    nll = _weighted_reduce(loss, wt, reduction)
    smooth = neg(reduce_sum(logp if w_b is None else mul(logp, w_b), cax))
    smooth = where(equal(t, int(ignore_index)), 0.0, smooth)
    smooth = _weighted_reduce(smooth, wt, reduction)
    return nll * (1.0 - eps) + smooth * (eps / n_classes)


# ----------------------------------------------------------------------------------------------------
# Binary losses
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckProbabilities(Op):
    """Identity that raises :class:`OpRuntimeError` unless every entry lies in ``[0, 1]`` (BCE's input check)."""

    what: str = "binary_cross_entropy"
    name: ClassVar[str] = "check_probabilities"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        return x

    def perform(self, x: np.ndarray) -> np.ndarray:  # type: ignore[override]
        ok = (x >= 0) & (x <= 1)
        if not ok.all():
            pos = tuple(int(i) for i in np.argwhere(~ok)[0])
            raise OpRuntimeError(
                f"{self.what}: all elements of the input must be probabilities in [0, 1]; "
                f"found {x[pos].item()!r} at position {list(pos)} ({int((~ok).sum())} of {x.size} "
                "entries are outside)"
            )
        return x

    def grad(self, inputs: tuple[Tensor, ...], output: Tensor, g: Tensor) -> list[Any]:
        return [g]


_LOG_FLOOR = -100.0  # PyTorch clamps BCE's log terms at -100
# Clamping the argument first keeps log's gradient finite (zero) at exactly 0; log(_TINY) < -100 in float32 (a
# subnormal) and float64, so the outer clamp still yields exactly -100 there.
_TINY = 1e-44


def _clamped_log(p: Tensor) -> Tensor:
    return clip(log(clip(p, min=_TINY)), min=_LOG_FLOOR)


def _weighted(name: str, loss: Tensor, weight: Any, x: Tensor, frame: Any) -> Tensor:
    """``loss * weight`` with ``weight`` checked to broadcast against the input ``x`` (unchanged if None)."""
    if weight is None:
        return loss
    w = _weight_like(name, weight, x)
    _broadcastable_to(name, "weight", w, x.shape, frame)
    return mul(loss, w)


def binary_cross_entropy(
    input: Any,  # noqa: A002 - torch's name
    target: Any,
    weight: Any = None,
    reduction: str = "mean",
) -> Tensor:
    """``torch.nn.functional.binary_cross_entropy``: ``-w * (y log(x) + (1 - y) log(1 - x))`` with both logs
    clamped at ``>= -100`` (as PyTorch), so ``x`` of exactly 0 or 1 gives a finite loss.

    ``input`` holds probabilities (checked at run time to lie in ``[0, 1]``); ``target`` has ``input``'s shape;
    ``weight`` broadcasts to it.
    """
    frame = user_frame()
    name = "binary_cross_entropy"
    _check_reduction(name, reduction, frame)
    x, y = _float_pair(name, input, target)
    _same_shape(name, x, y, frame)
    x = apply(CheckProbabilities(name), x)
    loss = neg(mul(y, _clamped_log(x)) + mul(sub(1.0, y), _clamped_log(sub(1.0, x))))
    return _reduce(_weighted(name, loss, weight, x, frame), reduction)


def binary_cross_entropy_with_logits(
    input: Any,  # noqa: A002 - torch's name
    target: Any,
    weight: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> Tensor:
    """``torch.nn.functional.binary_cross_entropy_with_logits``: ``binary_cross_entropy(sigmoid(x), y)`` computed
    stably as ``max(x, 0) - x*y + log1p(exp(-|x|))``.

    With ``pos_weight`` ``p`` (broadcast against ``input``, typically one entry per class along the last axis),
    the positive term is weighted: ``(1 - y) x + (1 + (p - 1) y) (log1p(exp(-|x|)) + max(-x, 0))``. ``weight``
    rescales each element. Finite for logits of ±1e4; the gradient is ``sigmoid(x) - y`` (weighted).
    """
    frame = user_frame()
    name = "binary_cross_entropy_with_logits"
    _check_reduction(name, reduction, frame)
    x, y = _float_pair(name, input, target)
    _same_shape(name, x, y, frame)
    sp_neg = softplus(neg(x))  # log1p(exp(-|x|)) + max(-x, 0) == log(1 + exp(-x)), with a smooth gradient
    if pos_weight is None:
        loss = mul(sub(1.0, y), x) + sp_neg
    else:
        pw = _weight_like(name, pos_weight, x)
        _broadcastable_to(name, "pos_weight", pw, x.shape, frame)
        log_weight = mul(sub(pw, 1.0), y) + 1.0
        loss = mul(sub(1.0, y), x) + mul(log_weight, sp_neg)
    return _reduce(_weighted(name, loss, weight, x, frame), reduction)


# ----------------------------------------------------------------------------------------------------
# Divergences
# ----------------------------------------------------------------------------------------------------


def kl_div(
    input: Any,  # noqa: A002 - torch's name
    target: Any,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """``torch.nn.functional.kl_div``: pointwise ``target * (log(target) - input)`` where ``input`` holds
    log-probabilities (0 where ``target == 0``); with ``log_target=True`` the target is given as log-probabilities:
    ``exp(target) * (target - input)``.

    ``reduction``: ``"mean"`` averages over **all** elements (PyTorch's default, not the true KL divergence),
    ``"batchmean"`` divides the sum by the batch size ``input.shape[0]`` (the mathematically correct KL for a
    batch), ``"sum"``, ``"none"``.
    """
    frame = user_frame()
    name = "kl_div"
    _check_reduction(name, reduction, frame, (*REDUCTIONS, "batchmean"))
    x, y = _float_pair(name, input, target)
    _same_shape(name, x, y, frame)
    if log_target:
        loss = mul(exp(y), sub(y, x))
    else:
        zero = equal(y, 0.0)
        xlogy = mul(y, log(where(zero, 1.0, y)))  # xlogy(y, y): 0 at y == 0, with a finite gradient there
        loss = sub(xlogy, mul(y, x))
    if reduction == "batchmean":
        total = reduce_sum(loss)
        return total if x.ndim == 0 else total / dim_size(x, (0,), x.dtype)
    return _reduce(loss, reduction)
