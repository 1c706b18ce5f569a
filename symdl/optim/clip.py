"""Gradient clipping as symbolic functions on gradient tensors (PyTorch's semantics).

``clip_grad_norm(grads, max_norm)`` scales every gradient by ``min(1, max_norm / (total_norm + 1e-6))`` where
``total_norm`` is the norm of all gradients together (as ``torch.nn.utils.clip_grad_norm_``);
``clip_grad_value(grads, clip_value)`` clamps each element to ``[-clip_value, clip_value]``. Both return new
graph nodes; pass the results to :meth:`symdl.optim.Optimizer.apply_gradients`, or use
``opt.minimize(loss, clip_grad_norm=..., clip_grad_value=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from symdl.graph import Tensor, is_float
from symdl.ops.elementwise import abs as _abs
from symdl.ops.elementwise import cast, clip, maximum, sqrt
from symdl.ops.reduce import max as _max
from symdl.ops.reduce import sum as _sum

__all__ = ["clip_grad_norm", "clip_grad_value", "global_norm"]


def _as_list(tensors: Any, what: str) -> tuple[list[Tensor], bool]:
    single = isinstance(tensors, Tensor)
    items = [tensors] if single else list(tensors)
    if not items:
        raise ValueError(f"{what}: got an empty list of gradients")
    for t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: gradients must be symbolic Tensors, got {type(t).__name__} {t!r}")
        if not is_float(t.dtype):
            raise TypeError(f"{what}: gradients must be floating-point, got {t.dtype} ({t.label()})")
    return items, single


def _norm_type(norm_type: Any, what: str) -> float:
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        return math.inf
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        raise TypeError(f"{what}: norm_type must be a number or 'inf', got {norm_type!r}") from None
    if not p > 0:
        raise ValueError(f"{what}: norm_type must be > 0 or inf, got {norm_type}")
    return p


def global_norm(tensors: Tensor | Sequence[Tensor], norm_type: float | str = 2.0) -> Tensor:
    """The ``norm_type``-norm of all elements of ``tensors`` taken together (a 0-d tensor): ``2.0`` (default),
    any ``p > 0``, or ``inf`` / ``"inf"`` (largest absolute value). Mixed float dtypes promote (float64 wins)."""
    items, _ = _as_list(tensors, "global_norm")
    p = _norm_type(norm_type, "global_norm")
    dtype = items[0].dtype
    for t in items[1:]:
        if t.dtype.itemsize > dtype.itemsize:
            dtype = t.dtype
    parts: list[Tensor] = []
    for t in items:
        t = cast(t, dtype)
        if p == math.inf:
            parts.append(_max(_abs(t)))
        elif p == 2.0:
            parts.append(_sum(t * t))
        elif p == 1.0:
            parts.append(_sum(_abs(t)))
        else:
            parts.append(_sum(_abs(t) ** p))
    total = parts[0]
    for part in parts[1:]:
        total = maximum(total, part) if p == math.inf else total + part
    if p == math.inf or p == 1.0:
        return total
    if p == 2.0:
        return sqrt(total)
    return total ** (1.0 / p)


def clip_grad_norm(
    grads: Tensor | Sequence[Tensor], max_norm: float, norm_type: float | str = 2.0
) -> tuple[Any, Tensor]:
    """Scale ``grads`` so that their global norm is at most ``max_norm`` (``torch.nn.utils.clip_grad_norm_``).

    Returns ``(clipped, total_norm)``: the new gradient tensors (a list, or one tensor if one was given) and the
    0-d norm before clipping. ``clipped = g * min(1, max_norm / (total_norm + 1e-6))`` for every ``g``.
    """
    items, single = _as_list(grads, "clip_grad_norm")
    try:
        limit = float(max_norm)
    except (TypeError, ValueError):
        raise TypeError(f"clip_grad_norm: max_norm must be a number, got {max_norm!r}") from None
    if not limit >= 0 or math.isnan(limit):
        raise ValueError(f"clip_grad_norm: max_norm must be >= 0, got {max_norm}")
    total = global_norm(items, norm_type)
    coef = clip(limit / (total + 1e-6), max=1.0)
    clipped = [g * cast(coef, g.dtype) for g in items]
    return (clipped[0] if single else clipped), total


def clip_grad_value(grads: Tensor | Sequence[Tensor], clip_value: float) -> Any:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` (``torch.nn.utils.clip_grad_value_``).

    Returns the new gradient tensors (a list, or one tensor if one was given).
    """
    items, single = _as_list(grads, "clip_grad_value")
    try:
        v = float(clip_value)
    except (TypeError, ValueError):
        raise TypeError(f"clip_grad_value: clip_value must be a number, got {clip_value!r}") from None
    if not v >= 0:
        raise ValueError(f"clip_grad_value: clip_value must be >= 0, got {clip_value}")
    clipped = [clip(g, -v, v) for g in items]
    return clipped[0] if single else clipped
