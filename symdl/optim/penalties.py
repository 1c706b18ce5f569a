"""L1 and L2 penalties: scalar loss terms to add to a loss before :meth:`symdl.optim.Optimizer.minimize`.

- ``l1_penalty(params, weight)`` = ``weight * sum_p sum(|p|)``   (gradient ``weight * sign(p)``)
- ``l2_penalty(params, weight)`` = ``weight * sum_p sum(p ** 2)`` (gradient ``2 * weight * p``; no 1/2 factor,
  as Keras' ``L2``)

So ``loss + l2_penalty(params, wd / 2)`` gives the same gradients as ``SGD(..., weight_decay=wd)`` or Adam's
(coupled) ``weight_decay=wd``; AdamW's decoupled decay is not a loss term. Parameters with
``trainable=False`` are skipped (frozen layers add nothing); other tensors (activations ...) are included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from symdl.graph import Parameter, Tensor, constant, is_float
from symdl.ops.elementwise import abs as _abs
from symdl.ops.elementwise import cast
from symdl.ops.reduce import sum as _sum

__all__ = ["l1_penalty", "l2_penalty"]


def _penalty(params: Any, weight: Any, what: str, term: Any) -> Tensor:
    items = [params] if isinstance(params, Tensor) else list(params) if params is not None else []
    if not items:
        raise ValueError(f"{what}: got an empty list of parameters")
    for t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: expected Parameters or tensors, got {type(t).__name__} {t!r}")
        if not is_float(t.dtype):
            raise TypeError(f"{what}: {t.label()} is {t.dtype}, not floating-point")
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise TypeError(f"{what}: weight must be a number, got {weight!r}") from None
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"{what}: weight must be a finite number >= 0, got {weight}")
    active = [t for t in items if not (isinstance(t, Parameter) and not t.trainable)]
    dtype = np.dtype("float32")
    for t in items:
        if t.dtype.itemsize > dtype.itemsize:
            dtype = t.dtype
    if not active:
        return constant(np.zeros((), dtype))
    total: Tensor | None = None
    for t in active:
        part = _sum(term(cast(t, dtype)))
        total = part if total is None else total + part
    assert total is not None
    return total * w


def l1_penalty(params: Tensor | Sequence[Tensor], weight: float = 1.0) -> Tensor:
    """``weight * sum(|p|)`` over all elements of ``params`` (a 0-d tensor; frozen Parameters skipped)."""
    return _penalty(params, weight, "l1_penalty", _abs)


def l2_penalty(params: Tensor | Sequence[Tensor], weight: float = 1.0) -> Tensor:
    """``weight * sum(p ** 2)`` over all elements of ``params`` (a 0-d tensor; frozen Parameters skipped).
    ``weight = weight_decay / 2`` matches the optimisers' coupled ``weight_decay``."""
    return _penalty(params, weight, "l2_penalty", lambda t: t * t)
