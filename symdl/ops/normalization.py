"""Batch normalisation (``torch.nn.functional.batch_norm`` semantics) for (N, C), (N, C, L) and (N, C, H, W).

One call builds both behaviours and lets ``compile(mode=...)`` choose:

- **train branch** — normalise with the batch statistics over every axis except 1 (the *biased* variance, as
  torch), and update the running statistics as implicit parameter updates:
  ``running_mean <- (1 - momentum) * running_mean + momentum * mean`` and
  ``running_var <- (1 - momentum) * running_var + momentum * unbiased_var`` (Bessel-corrected, as torch);
- **eval branch** — normalise with the running statistics: the dedicated primitive :class:`BatchNormEval`,
  which the compiled targets fold into a preceding convolution / linear layer.

Design choice for the train branch: it is a *composition* of symdl ops (sum, division by the run-time
element count, sqrt ...), not a primitive. Its gradient (the well-known three-term BatchNorm backward, including
the paths through the batch mean and variance) and every higher derivative then come from autodiff for free
and are verified by the same machinery as every other op; the fusing targets recover the efficiency by fusing
the elementwise chain between the two reductions. The only new primitive on that path is :class:`BatchCount`
(a :class:`~symdl.ops.reduce.DimSize` that refuses a single value per channel at run time, as torch does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from symdl.errors import OpRuntimeError, ShapeError, user_frame, where
from symdl.graph import InferError, Op, Parameter, Tensor, TensorType, apply, constant, describe, is_float
from symdl.ops.elementwise import add, div, mul, neg, sqrt, sub
from symdl.ops.modes import mode_switch
from symdl.ops.reduce import DimSize
from symdl.ops.reduce import sum as reduce_sum
from symdl.ops.shape import reshape

__all__ = ["batch_norm"]


def _stat_axes(ndim: int) -> tuple[int, ...]:
    """Axes the statistics are taken over: every axis except the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def _channel_shape(channels: int, ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel (C,) vector against an (N, C, ...) tensor."""
    return (channels,) + (1,) * (ndim - 2)


# ----------------------------------------------------------------------------------------------------
# Primitives
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchCount(DimSize):
    """Number of values per channel (the product of ``x``'s dims over ``axes``) as a 0-d ``dtype`` tensor.

    Like torch, training-mode batch normalisation needs more than one value per channel: the count is checked
    at run time (the shape may only be known then) and a count of 1 or less raises :class:`OpRuntimeError`.
    """

    name: ClassVar[str] = "batch_count"

    def perform(self, x):  # type: ignore[no-untyped-def]
        n = math.prod(x.shape[a] for a in self.axes)
        if n <= 1:
            raise OpRuntimeError(
                f"batch_norm: expected more than 1 value per channel when training, got input of shape {x.shape}"
            )
        return np.asarray(n, dtype=self.dtype)


@dataclass(frozen=True)
class BatchNormEval(Op):
    """Inference-mode batch normalisation with fixed statistics.

    Inputs ``(x, running_mean, running_var, weight, bias)``, the last four of shape (C,); ``x`` is (N, C, ...).
    ``y = x * alpha + beta`` per channel, with ``alpha = weight / sqrt(running_var + eps)`` and
    ``beta = bias - running_mean * alpha`` (torch's CPU formula). A dedicated primitive so that compiled targets
    can fold it into the preceding conv / linear layer. Its gradient is built from symdl ops (so it is itself
    differentiable) and covers all five inputs.
    """

    eps: float = 1e-5
    name: ClassVar[str] = "batch_norm_eval"

    def infer(self, x, mean, var, weight, bias):  # type: ignore[no-untyped-def, override]
        if x.ndim < 2:
            raise InferError(f"input must have rank >= 2 (N, C, ...), got rank {x.ndim}")
        if not is_float(x.dtype):
            raise InferError(f"input must be floating-point, got {x.dtype}")
        channels = x.shape[1]
        for what, t in (("running_mean", mean), ("running_var", var), ("weight", weight), ("bias", bias)):
            if t.ndim != 1:
                raise InferError(f"{what} must be 1-d (C,), got shape {t.shape}")
            if t.dtype != x.dtype:
                raise InferError(f"{what} has dtype {t.dtype}, input has {x.dtype}")
            if channels is not None and t.shape[0] is not None and t.shape[0] != channels:
                raise InferError(f"{what} has {t.shape[0]} channels, input has {channels}")
            if channels is None:
                channels = t.shape[0]
        return TensorType(x.shape[:1] + (channels,) + x.shape[2:], x.dtype)

    def perform(self, x, mean, var, weight, bias):  # type: ignore[no-untyped-def]
        dt = x.dtype
        shape = _channel_shape(x.shape[1], x.ndim)
        invstd = dt.type(1) / np.sqrt(var + dt.type(self.eps))
        alpha = invstd * weight
        beta = bias - mean * alpha
        return (x * alpha.reshape(shape) + beta.reshape(shape)).astype(dt, copy=False)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x, mean, var, weight, _ = inputs
        channels = mean.shape[0] if mean.shape[0] is not None else x.shape[1]
        shape = _channel_shape(channels, x.ndim)
        axes = _stat_axes(x.ndim)
        invstd = div(1.0, sqrt(add(var, self.eps)))
        alpha = mul(invstd, weight)
        dx = mul(g, reshape(alpha, shape))
        g_sum = reduce_sum(g, axes)
        g_xc = reduce_sum(mul(g, sub(x, reshape(mean, shape))), axes)  # sum of g * (x - mean) per channel
        d_mean = neg(mul(alpha, g_sum))
        d_var = mul(mul(g_xc, weight), mul(mul(invstd, mul(invstd, invstd)), -0.5))
        d_weight = mul(g_xc, invstd)
        return [dx, d_mean, d_var, d_weight, g_sum]


# ----------------------------------------------------------------------------------------------------
# User-facing function
# ----------------------------------------------------------------------------------------------------


def _fail(message: str) -> ShapeError:
    return ShapeError(f"batch_norm: {message}{where(user_frame())}")


def _check_vector(what: str, t: Tensor | None, x: Tensor, channels: int | None) -> int | None:
    """Validate a per-channel (C,) operand; returns the channel count learned so far."""
    if t is None:
        return channels
    if not isinstance(t, Tensor):
        raise TypeError(
            f"batch_norm: {what} must be a symbolic tensor (e.g. symdl.parameter), got "
            f"{type(t).__name__}{where(user_frame())}"
        )
    if t.ndim != 1:
        raise _fail(f"{what} must be 1-d with one entry per channel, got {describe(t)}; input {describe(x)}")
    if t.dtype != x.dtype:
        raise _fail(
            f"{what} has dtype {t.dtype} but the input is {x.dtype} (cast one of them explicitly); "
            f"{what} {describe(t)}, input {describe(x)}"
        )
    c = t.shape[0]
    if channels is not None and c is not None and c != channels:
        raise _fail(f"{what} has shape {t.shape} but the input {describe(x)} has {channels} channels (axis 1)")
    return channels if channels is not None else c


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
    training: bool | None = None,
) -> Tensor:
    """Batch normalisation over the channel axis 1 of an (N, C), (N, C, L) or (N, C, H, W) input.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel, as ``torch.nn.functional.batch_norm``:

    - train mode: ``mean``/``var`` are the batch statistics over every axis but 1, ``var`` *biased*; the running
      statistics (non-trainable ``symdl.parameter``\\ s of shape (C,)) are updated after the call as
      ``r <- (1 - momentum) * r + momentum * stat``, with the *unbiased* batch variance for ``running_var``.
      Needs more than one value per channel (checked at run time).
    - eval mode: ``mean``/``var`` are the running statistics, which are left unchanged.

    ``training=None`` lets ``symdl.compile(mode=...)`` decide; ``True`` always uses batch statistics (the running
    statistics are still updated by a train-mode compile; an eval-mode compile applies no updates); ``False``
    always uses the running statistics. ``running_mean``/``running_var`` may both be ``None`` (torch's
    ``track_running_stats=False``): batch statistics are then used in both modes. ``weight``/``bias`` of shape
    (C,) are optional (``None``: no affine transform). All operands share the input's floating dtype.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"batch_norm: x must be a symbolic tensor, got {type(x).__name__}{where(user_frame())}")
    if x.ndim < 2:
        raise _fail(f"expected an input of rank >= 2 (N, C, ...), got {describe(x)}")
    if not is_float(x.dtype):
        raise _fail(f"expected a floating-point input, got {describe(x)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(
            f"batch_norm: running_mean and running_var must both be given or both be None{where(user_frame())}"
        )
    channels = x.shape[1]
    for what, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        channels = _check_vector(what, t, x, channels)
    if channels is None:
        raise _fail(f"the number of channels (axis 1 of the input {describe(x)}) must be known statically")
    momentum = float(momentum)
    eps = float(eps)
    if training not in (None, True, False):
        raise TypeError(f"batch_norm: training must be None, True or False, got {training!r}")

    def vec(t: Tensor) -> Tensor:
        return reshape(t, _channel_shape(channels, x.ndim))

    # ---- train branch: batch statistics, a composition of symdl ops -----------------------------------------
    def train_branch() -> tuple[Tensor, Tensor, Tensor]:
        axes = _stat_axes(x.ndim)
        n = apply(BatchCount(axes, x.dtype), x)
        mean = div(reduce_sum(x, axes, keepdims=True), n)
        centered = sub(x, mean)
        sq_sum = reduce_sum(mul(centered, centered), axes, keepdims=True)
        var = div(sq_sum, n)  # biased: used for normalisation
        y = mul(centered, div(1.0, sqrt(add(var, eps))))
        if weight is not None:
            y = mul(y, vec(weight))
        if bias is not None:
            y = add(y, vec(bias))
        batch_mean = reshape(mean, (channels,))
        unbiased_var = div(reshape(sq_sum, (channels,)), sub(n, 1.0))
        return y, batch_mean, unbiased_var

    if running_mean is None or running_var is None:
        if training is False:
            raise ValueError(f"batch_norm: training=False needs running_mean and running_var{where(user_frame())}")
        return train_branch()[0]

    if training is False:
        return _eval_branch(x, running_mean, running_var, weight, bias, eps, channels)

    for what, t in (("running_mean", running_mean), ("running_var", running_var)):
        if not isinstance(t, Parameter):
            raise TypeError(
                f"batch_norm: {what} must be a symdl.parameter (non-trainable) so that train mode can "
                f"update it, got {t.label()} ({t.op.name}){where(user_frame())}"
            )

    y_train, batch_mean, unbiased_var = train_branch()
    updates = {
        running_mean: add(mul(running_mean, 1.0 - momentum), mul(batch_mean, momentum)),
        running_var: add(mul(running_var, 1.0 - momentum), mul(unbiased_var, momentum)),
    }
    if training is True:
        return mode_switch(y_train, y_train, updates=updates, kind="batch_norm")
    y_eval = _eval_branch(x, running_mean, running_var, weight, bias, eps, channels)
    return mode_switch(y_train, y_eval, updates=updates, kind="batch_norm")


def _eval_branch(
    x: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, channels: int
) -> Tensor:
    """:class:`BatchNormEval` with missing affine parameters replaced by constant ones / zeros."""
    if weight is None:
        weight = constant(np.ones(channels, dtype=x.dtype))
    if bias is None:
        bias = constant(np.zeros(channels, dtype=x.dtype))
    return apply(BatchNormEval(eps), x, mean, var, weight, bias)
