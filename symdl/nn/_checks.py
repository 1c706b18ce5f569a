"""Input and argument checks shared by the layers (private)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from symdl.graph import Tensor, describe
from symdl.ops.base import as_tensor

if TYPE_CHECKING:
    from symdl.nn.module import Module


def float_dtype(dtype: Any, layer: str) -> np.dtype:
    """The layer's parameter dtype: float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{layer}: dtype {dtype!r} is not a dtype") from e
    if dt not in (np.dtype("float32"), np.dtype("float64")):
        raise TypeError(f"{layer}: dtype must be float32 or float64, got {dt}")
    return dt


def positive_int(value: Any, layer: str, what: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{layer}: {what} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{layer}: {what} must be >= {minimum}, got {value}")
    return int(value)


def int_tuple(value: Any, n: int, layer: str, what: str, minimum: int = 1) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints (each ``>= minimum``) as an ``n``-tuple, as torch's ``_ntuple``."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{layer}: {what} must be an int or {n} ints, got {value!r}")
        return tuple(positive_int(v, layer, what, minimum) for v in value)
    return (positive_int(value, layer, what, minimum),) * n


def as_input(module: Module, x: Any) -> Tensor:
    """``x`` as a symbolic tensor (arrays become constants)."""
    if isinstance(x, Tensor):
        return x
    try:
        return as_tensor(x, "input")
    except TypeError as e:
        raise TypeError(f"{module.layer_path()} ({module.short_repr()}): {e}") from None


def check_rank(module: Module, x: Tensor, ranks: tuple[int, ...], layout: str) -> None:
    """Raise a layer ShapeError unless ``x.ndim`` is one of ``ranks``."""
    if x.ndim not in ranks:
        want = " or ".join(f"{r}-d" for r in ranks)
        raise module.shape_error(f"expected a {want} input {layout}, got {describe(x)}")


def check_dim(module: Module, x: Tensor, axis: int, expected: int, dim: str, name: str, layout: str) -> None:
    """Raise a layer ShapeError if the static size of ``x`` along ``axis`` is known and differs from ``expected``
    (``dim`` says which dim it is, ``name`` the layer argument it must equal)."""
    d = x.shape[axis]
    if d is not None and d != expected:
        raise module.shape_error(
            f"the input's {dim} is {d} but {name}={expected}: got an input {describe(x)}, expected {layout}"
        )


def check_dtype(module: Module, x: Tensor, dtype: np.dtype) -> None:
    """Raise a layer ShapeError unless ``x`` has the layer's parameter dtype."""
    if x.dtype != dtype:
        hint = f" or build the layer with dtype='{x.dtype}'" if x.dtype.kind == "f" else ""
        raise module.shape_error(
            f"input dtype {x.dtype} differs from the layer's {dtype} parameters (input {describe(x)}); cast the "
            f"input with .astype('{dtype}'){hint}"
        )
