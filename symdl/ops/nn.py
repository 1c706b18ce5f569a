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
    NotDifferentiable,
    as_tensor,
    float_operand,
    normalize_axes,
    normalize_axis,
    promote,
    reduced_shape,
    require_float,
)
from symdl.ops.elementwise import cast, exp, greater, mul, not_equal, sub, where
from symdl.ops.indexing import TakeAlongClass, _check_idx_shape, _check_range
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
        if not -len(x.shape) <= self.axis < len(x.shape):
            raise InferError(f"{self.name}: axis {self.axis} is out of range for a rank-{len(x.shape)} operand")
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
        if not -len(x.shape) <= self.axis < len(x.shape):
            raise InferError(f"{self.name}: axis {self.axis} is out of range for a rank-{len(x.shape)} operand")
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


# ----------------------------------------------------------------------------------------------------
# Softmax cross-entropy: log_softmax + NLL as one stable op (one kernel forward, one backward)
# ----------------------------------------------------------------------------------------------------


def _xent_rows(x: np.ndarray, idx: np.ndarray, axis: int, ignore_index: int | None) -> tuple[np.ndarray, Any]:
    """``log_softmax(x, axis)`` and the boolean mask of ignored labels (None when nothing can be ignored),
    after the shape and range checks of ``take_class``."""
    _check_idx_shape(x.shape, idx.shape, axis, "cross_entropy")
    ignored = _check_range(idx, x.shape[axis], "label", "classes", ignore_index)
    z, _ = _shifted(x, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
    return logp, ignored


@dataclass(frozen=True)
class SoftmaxCrossEntropy(Op):
    """Inputs ``(x, idx)``: ``-log_softmax(x, axis)[..., idx, ...]`` per position, 0 where ``idx == ignore_index``.

    ``x`` has shape ``(N, C, d1, ...)`` (class axis ``axis``), ``idx`` holds integer labels shaped like ``x``
    without that axis. The fused form of ``nll_loss(log_softmax(x))``: the backward needs only ``x`` and the
    labels (``softmax(x) - one_hot(idx)``), so no log-probability buffer is kept between the passes.
    """

    axis: int = 1
    ignore_index: int | None = None
    name: ClassVar[str] = "softmax_cross_entropy"

    def infer(self, x: TensorType, idx: TensorType) -> TensorType:  # type: ignore[override]
        require_float(x, self.name)
        return TakeAlongClass(self.axis, self.ignore_index).infer(x, idx)

    def perform(self, x, idx):  # type: ignore[no-untyped-def]
        logp, ignored = _xent_rows(x, idx, self.axis, self.ignore_index)
        if x.shape[self.axis] == 0:
            return np.zeros(idx.shape, dtype=x.dtype)
        safe = idx if ignored is None else np.where(ignored, 0, idx)
        picked = np.squeeze(
            np.take_along_axis(logp, np.expand_dims(safe.astype(np.intp), self.axis), self.axis), self.axis
        )
        out = -picked
        if ignored is not None:
            out = np.where(ignored, 0, out)
        return np.asarray(out, dtype=x.dtype)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x, idx = inputs
        return [
            apply(SoftmaxCrossEntropyGrad(self.axis, self.ignore_index), g, idx, x),
            NotDifferentiable("the gradient with respect to integer class labels does not exist"),
        ]


@dataclass(frozen=True)
class SoftmaxCrossEntropyGrad(Op):
    """Inputs ``(g, idx, x)``: ``(softmax(x, axis) - one_hot(idx)) * g`` (``g`` broadcast along the class axis),
    zero at positions whose label is ``ignore_index``: the adjoint of :class:`SoftmaxCrossEntropy`."""

    axis: int = 1
    ignore_index: int | None = None
    name: ClassVar[str] = "softmax_cross_entropy_grad"

    def infer(self, g: TensorType, idx: TensorType, x: TensorType) -> TensorType:  # type: ignore[override]
        if g.ndim != x.ndim - 1:
            raise InferError("the cotangent must have the rank of x without its class axis")
        TakeAlongClass(self.axis, self.ignore_index).infer(x, idx)
        return TensorType(x.shape, x.dtype)

    def perform(self, g, idx, x):  # type: ignore[no-untyped-def]
        logp, ignored = _xent_rows(x, idx, self.axis, self.ignore_index)
        out = np.exp(logp)
        if x.shape[self.axis] == 0 or idx.size == 0:
            return np.zeros(x.shape, dtype=x.dtype)
        safe = idx if ignored is None else np.where(ignored, 0, idx)
        pos = np.expand_dims(safe.astype(np.intp), self.axis)
        np.put_along_axis(out, pos, np.take_along_axis(out, pos, self.axis) - 1, self.axis)
        gk = np.expand_dims(np.broadcast_to(g, idx.shape), self.axis)
        if ignored is not None:
            gk = np.where(np.expand_dims(ignored, self.axis), 0, gk)
        return np.asarray(out * gk, dtype=x.dtype)

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        g, idx, x = inputs
        s = softmax(x, self.axis)
        keep = None
        if self.ignore_index is not None:
            keep = cast(not_equal(idx, int(self.ignore_index)), x.dtype)
        # d/dg: <gg, softmax - onehot> along the class axis
        dg = sub(reduce_sum(mul(gg, s), self.axis), apply(TakeAlongClass(self.axis, self.ignore_index), gg, idx))
        # d/dx: g * J_softmax^T gg = g * s * (gg - <gg, s>)
        gk = expand_dims(g if keep is None else mul(g, keep), self.axis)
        dx = mul(gk, mul(s, sub(gg, reduce_sum(mul(gg, s), self.axis, keepdims=True))))
        if keep is not None:
            dg = mul(dg, keep)
        return [dg, NotDifferentiable("the gradient with respect to integer class labels does not exist"), dx]


def softmax_cross_entropy(x: Any, labels: Any, axis: int = 1, ignore_index: int | None = None) -> Tensor:
    """Per-position ``-log_softmax(x, axis)`` at the integer ``labels`` (0 where ``labels == ignore_index``),
    computed as one stable op. ``cross_entropy`` uses it for class-index targets."""
    t = float_operand(x, "softmax_cross_entropy")
    lab = as_tensor(labels, "softmax_cross_entropy labels")
    return apply(SoftmaxCrossEntropy(int(axis), None if ignore_index is None else int(ignore_index)), t, lab)
