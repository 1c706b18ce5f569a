"""Neural-network ops: softmax, log_softmax, logsumexp (primitive, numerically stable) and prelu (composed).

The primitives compute with a max-shift in NumPy, so logits of ±1e4 in float32 give finite results, and their
gradients are expressed with other symdl ops (in terms of the op's own output), so gradients of gradients work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from symdl.errors import ShapeError, user_frame
from symdl.errors import where as at
from symdl.graph import InferError, Op, Tensor, TensorType, apply
from symdl.ops.base import (
    as_tensor,
    float_operand,
    normalize_axes,
    normalize_axis,
    promote,
    reduced_shape,
    require_float,
)
from symdl.ops.elementwise import cast, exp, greater, mul, sub, where
from symdl.ops.reduce import sum as reduce_sum
from symdl.ops.shape import expand_dims, reshape

__all__ = ["softmax", "log_softmax", "logsumexp", "prelu"]  # op classes stay in this module (not re-exported)


def _shifted(x: np.ndarray, axis: Any) -> tuple[np.ndarray, np.ndarray]:
    """``x - max(x)`` along ``axis`` (keepdims) and that max; an infinite max is replaced by 0 (as PyTorch), so
    rows of all ``-inf`` give ``-inf``/NaN the way PyTorch does instead of ``inf - inf`` everywhere."""
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)  # initial: empty axes give -inf (then 0)
    m = np.where(np.isfinite(m), m, np.zeros_like(m))
    with np.errstate(invalid="ignore"):
        return x - m, m


@dataclass(frozen=True)
class Softmax(Op):
    """``exp(x) / sum(exp(x), axis)`` along one axis, computed with a max-shift."""

    axis: int = -1
    name: ClassVar[str] = "softmax"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        require_float(x, self.name)
        return x

    def perform(self, x):  # type: ignore[no-untyped-def]
        z, _ = _shifted(x, self.axis)
        e = np.exp(z)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (e / np.sum(e, axis=self.axis, keepdims=True)).astype(x.dtype, copy=False)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        s = output
        return [mul(s, sub(g, reduce_sum(mul(g, s), self.axis, keepdims=True)))]


@dataclass(frozen=True)
class LogSoftmax(Op):
    """``x - logsumexp(x, axis, keepdims=True)`` along one axis, computed with a max-shift."""

    axis: int = -1
    name: ClassVar[str] = "log_softmax"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        require_float(x, self.name)
        return x

    def perform(self, x):  # type: ignore[no-untyped-def]
        z, _ = _shifted(x, self.axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (z - np.log(np.sum(np.exp(z), axis=self.axis, keepdims=True))).astype(x.dtype, copy=False)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [sub(g, mul(exp(output), reduce_sum(g, self.axis, keepdims=True)))]


@dataclass(frozen=True)
class LogSumExp(Op):
    """``log(sum(exp(x), axes))`` computed with a max-shift (``axes`` normalised, non-empty)."""

    axes: tuple = ()
    keepdims: bool = False
    name: ClassVar[str] = "logsumexp"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        require_float(x, self.name)
        return TensorType(reduced_shape(x.shape, self.axes, self.keepdims), x.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        z, m = _shifted(x, self.axes)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(np.sum(np.exp(z), axis=self.axes, keepdims=True)) + m
        if not self.keepdims:
            out = np.squeeze(out, axis=self.axes)
        return np.asarray(out).astype(x.dtype, copy=False)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x = inputs[0]
        out, gk = (output, g) if self.keepdims else (expand_dims(output, self.axes), expand_dims(g, self.axes))
        return [mul(gk, exp(sub(x, out)))]


def _axis_or_error(x: Tensor, axis: Any, what: str) -> int:
    try:
        return normalize_axis(axis, max(x.ndim, 1), what)  # a 0-d tensor takes axis 0 or -1, as PyTorch
    except InferError as e:
        raise ShapeError(f"{e}; operand shape {x.shape}{at(user_frame())}") from None


def softmax(x: Any, axis: int = -1) -> Tensor:
    """``torch.softmax`` along ``axis``: ``exp(x) / sum(exp(x), axis)``, stable for large logits.

    Integer inputs are promoted to float32. A 0-d input gives 1.
    """
    t = float_operand(x, "softmax")
    if t.ndim == 0:
        _axis_or_error(t, axis, "softmax")
        return reshape(apply(Softmax(0), reshape(t, (1,))), ())
    return apply(Softmax(_axis_or_error(t, axis, "softmax")), t)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """``torch.log_softmax`` along ``axis``: ``x - logsumexp(x, axis, keepdims=True)``, stable for large logits."""
    t = float_operand(x, "log_softmax")
    if t.ndim == 0:
        _axis_or_error(t, axis, "log_softmax")
        return reshape(apply(LogSoftmax(0), reshape(t, (1,))), ())
    return apply(LogSoftmax(_axis_or_error(t, axis, "log_softmax")), t)


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x), axis))`` (``axis``: None = all axes, an int or a tuple), stable for large values.

    Rows of all ``-inf`` give ``-inf`` and a ``+inf`` entry gives ``+inf`` (as ``torch.logsumexp``).
    """
    t = float_operand(x, "logsumexp")
    try:
        axes = normalize_axes(axis, t.ndim, "logsumexp")
    except InferError as e:
        raise ShapeError(f"{e}; operand shape {t.shape}{at(user_frame())}") from None
    if t.ndim == 0 or not axes:
        return t
    return apply(LogSumExp(axes, bool(keepdims)), t)


def prelu(x: Any, weight: Any) -> Tensor:
    """``torch.nn.functional.prelu``: ``x`` where ``x > 0``, else ``weight * x``.

    ``weight`` holds 1 element (shared) or ``C = x.shape[1]`` elements, applied along axis 1 (inputs of rank < 2
    have no channel axis and take a single weight). Composed of ``where``/``greater``/``mul``, so gradients with
    respect to ``x`` and ``weight`` follow (at ``x == 0`` the slope is ``weight``, as PyTorch).
    """
    frame = user_frame()
    t = float_operand(x, "prelu")
    if isinstance(weight, Tensor):
        t, w = promote(t, float_operand(weight, "prelu"), what="prelu")
    else:  # arrays and numbers adopt x's dtype
        w = cast(as_tensor(weight, "prelu weight"), t.dtype)
    n = None if any(d is None for d in w.shape) else int(np.prod(w.shape, dtype=np.int64))
    if n is None:
        raise ShapeError(f"prelu: the weight's shape {w.shape} must be static{at(frame)}")
    channels = t.shape[1] if t.ndim >= 2 else 1
    if n == 1:
        w = reshape(w, ())
    elif t.ndim < 2 or (channels is not None and n != channels):
        raise ShapeError(
            f"prelu: weight has {n} elements, but it must have 1 or x.shape[1] = "
            f"{channels if t.ndim >= 2 else '(no channel axis: rank < 2)'} elements; "
            f"x shape {t.shape}, weight shape {w.shape}{at(frame)}"
        )
    else:
        w = reshape(w, (n,) + (1,) * (t.ndim - 2))
    return where(greater(t, 0.0), t, mul(w, t))
