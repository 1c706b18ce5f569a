"""Shared helpers for op definitions: gradient markers, operand conversion, dtype promotion, broadcasting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from symdl.graph import (
    BOOL,
    InferError,
    Tensor,
    TensorType,
    as_dtype,
    constant,
    is_float,
)


class _Disconnected:
    """The output does not depend on this input at all (e.g. a shape-only input, a boolean condition)."""

    _instance = None

    def __new__(cls) -> _Disconnected:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DISCONNECTED"


DISCONNECTED = _Disconnected()


@dataclass(frozen=True)
class NotDifferentiable:
    """The output depends on this input, but not differentiably (argmax, integer indices ...)."""

    reason: str


GradResult = Union[Tensor, _Disconnected, NotDifferentiable]


# ----------------------------------------------------------------------------------------------------
# Operand conversion and promotion
# ----------------------------------------------------------------------------------------------------


def is_python_scalar(x: Any) -> bool:
    return isinstance(x, (bool, int, float, np.bool_, np.integer, np.floating)) and not isinstance(x, Tensor)


def result_dtype(a: np.dtype, b: np.dtype) -> np.dtype:
    """PyTorch-style promotion between two tensors: float wins over int, wider wins within a kind."""
    if a == b:
        return a
    if a == BOOL:
        return b
    if b == BOOL:
        return a
    if is_float(a) and not is_float(b):
        return a
    if is_float(b) and not is_float(a):
        return b
    return np.promote_types(a, b)


def scalar_dtype_against(x: Any, other: np.dtype) -> np.dtype:
    """Python scalars are 'weak': they adopt the tensor's dtype unless their kind is wider (int tensor * 0.5)."""
    if isinstance(x, (bool, np.bool_)):
        return other
    if isinstance(x, (int, np.integer)):
        return other if other != BOOL else np.dtype("int64")
    return other if is_float(other) else np.dtype("float32")


def as_tensor(x: Any, what: str = "operand") -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (np.ndarray, list, tuple)) or is_python_scalar(x):
        return constant(x)
    raise TypeError(f"{what}: cannot use {type(x).__name__} {x!r} as a tensor")


def cast_to(x: Tensor, dtype: np.dtype) -> Tensor:
    if x.dtype == dtype:
        return x
    from symdl.ops.elementwise import cast

    return cast(x, dtype)


def promote(*operands: Any, what: str = "op") -> list[Tensor]:
    """Turn operands into tensors of one common dtype (scalars weakly typed, explicit casts inserted)."""
    tensors = [o for o in operands if isinstance(o, Tensor)]
    if not tensors:
        tensors = [as_tensor(o, what) for o in operands]
        operands = tuple(tensors)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = result_dtype(dtype, t.dtype)
    for o in operands:
        if not isinstance(o, Tensor):
            if isinstance(o, np.ndarray):
                dtype = result_dtype(dtype, as_dtype(o.dtype))
            elif is_python_scalar(o):
                dtype = result_dtype(dtype, scalar_dtype_against(o, dtype))
    out = []
    for o in operands:
        t = o if isinstance(o, Tensor) else constant(np.asarray(o).astype(dtype))
        out.append(cast_to(t, dtype))
    return out


def float_operand(x: Any, what: str) -> Tensor:
    """Ops defined on floats (exp, log, softmax ...) promote int/bool tensors to float32, like PyTorch."""
    t = as_tensor(x, what)
    return t if is_float(t.dtype) else cast_to(t, np.dtype("float32"))


# ----------------------------------------------------------------------------------------------------
# Shape rules
# ----------------------------------------------------------------------------------------------------


def broadcast_shapes(*shapes: tuple) -> tuple:
    """NumPy broadcasting over static shapes with ``None`` dims.

    ``None`` against ``None`` stays ``None`` and the two are required to be equal at run time (the
    reference executor checks); ``None`` against ``n > 1`` gives ``n``; ``None`` against ``1`` gives ``None``.
    """
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        dims = [s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise InferError(f"shapes {', '.join(str(tuple(s)) for s in shapes)} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def normalize_axis(axis: int, ndim: int, what: str) -> int:
    if not isinstance(axis, (int, np.integer)):
        raise InferError(f"{what}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < max(ndim, 1):
        raise InferError(f"{what}: axis {axis} is out of range for a {ndim}-d tensor")
    return int(axis) % max(ndim, 1)


def normalize_axes(axis: Any, ndim: int, what: str) -> tuple[int, ...]:
    """``None`` → all axes; an int or a sequence → sorted, unique, non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    axes = tuple(sorted({normalize_axis(a, ndim, what) for a in axis}))
    if len(axes) != len(tuple(axis)):
        raise InferError(f"{what}: repeated axis in {tuple(axis)}")
    return axes


def reduced_shape(shape: tuple, axes: Sequence[int], keepdims: bool) -> tuple:
    """The shape after reducing the normalised ``axes`` (each in ``[0, rank)``, no repeats; checked)."""
    if any(not 0 <= a < len(shape) for a in axes) or len(set(axes)) != len(axes):
        raise InferError(f"reduction axes {tuple(axes)} are not distinct axes of a rank-{len(shape)} operand")
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def same_dtype(types: Sequence[TensorType], what: str) -> np.dtype:
    dt = types[0].dtype
    for t in types[1:]:
        if t.dtype != dt:
            raise InferError(f"{what}: operands must share one dtype (got {', '.join(str(t.dtype) for t in types)})")
    return dt


def require_float(t: TensorType, what: str) -> None:
    if not is_float(t.dtype):
        raise InferError(f"{what} needs a floating-point operand, got {t.dtype}")


def shape_matches(static: tuple, actual: tuple) -> bool:
    return len(static) == len(actual) and all(s is None or s == a for s, a in zip(static, actual))
