"""Reductions (sum, max, min, argmax, and mean/var built from them) and matmul."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from symdl.graph import InferError, Op, Tensor, TensorType, apply, constant, is_float
from symdl.ops.base import (
    DISCONNECTED,
    NotDifferentiable,
    as_tensor,
    normalize_axes,
    normalize_axis,
    promote,
    reduced_shape,
)
from symdl.ops.elementwise import cast, div, equal, mul, sub
from symdl.ops.shape import broadcast_like, expand_dims, swapaxes


def _axes_or_error(x: Tensor, axis: Any, what: str) -> tuple[int, ...]:
    try:
        return normalize_axes(axis, x.ndim, what)
    except InferError as e:
        from symdl.errors import ShapeError, user_frame
        from symdl.errors import where as at

        raise ShapeError(f"{what}: {e}; operand {x.shape}{at(user_frame())}") from None


@dataclass(frozen=True)
class Reduce(Op):
    axes: tuple = ()
    keepdims: bool = False

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        return TensorType(reduced_shape(x.shape, self.axes, self.keepdims), x.dtype)

    def _expand(self, g: Tensor) -> Tensor:
        """Put the reduced axes back (size 1) so that ``g`` broadcasts against the input."""
        return g if self.keepdims else expand_dims(g, self.axes)


@dataclass(frozen=True)
class Sum(Reduce):
    name: ClassVar[str] = "sum"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        # as torch.sum: bool and integer tensors sum to int64 (a bool sum must count, not OR)
        dt = x.dtype if is_float(x.dtype) else np.dtype("int64")
        return TensorType(reduced_shape(x.shape, self.axes, self.keepdims), dt)

    def perform(self, x):  # type: ignore[no-untyped-def]
        dt = x.dtype if x.dtype.kind == "f" else np.dtype("int64")
        return np.sum(x, axis=self.axes, keepdims=self.keepdims, dtype=dt)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [broadcast_like(self._expand(g), inputs[0])]


@dataclass(frozen=True)
class Max(Reduce):
    """Maximum over ``axes``; the gradient is shared evenly among tied maxima (PyTorch's ``amax``)."""

    name: ClassVar[str] = "max"
    fn: ClassVar[Any] = np.max

    def perform(self, x):  # type: ignore[no-untyped-def]
        if x.size == 0:
            from symdl.errors import OpRuntimeError

            raise OpRuntimeError(f"{self.name} of an empty array (shape {x.shape})")
        return type(self).fn(x, axis=self.axes, keepdims=self.keepdims)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x = inputs[0]
        if not is_float(x.dtype):
            return [NotDifferentiable(f"{self.name} of integers")]
        hit = cast(equal(x, self._expand(output)), x.dtype)
        count = apply(Sum(self.axes, True), hit)
        return [mul(hit, div(self._expand(g), count))]


@dataclass(frozen=True)
class Min(Max):
    name: ClassVar[str] = "min"
    fn: ClassVar[Any] = np.min


@dataclass(frozen=True)
class Argmax(Op):
    axis: int | None = None
    keepdims: bool = False
    name: ClassVar[str] = "argmax"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        axes = tuple(range(x.ndim)) if self.axis is None else (self.axis,)
        shape = reduced_shape(x.shape, axes, self.keepdims)
        return TensorType(shape, np.dtype("int64"))

    def perform(self, x):  # type: ignore[no-untyped-def]
        if x.size == 0:
            from symdl.errors import OpRuntimeError

            raise OpRuntimeError(f"argmax of an empty array (shape {x.shape})")
        return np.argmax(x, axis=self.axis, keepdims=self.keepdims).astype(np.int64)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [NotDifferentiable("argmax is not differentiable (its output is an integer index)")]


@dataclass(frozen=True)
class DimSize(Op):
    """Number of elements spanned by ``axes`` of ``x`` at run time, as a 0-d tensor of ``dtype``."""

    axes: tuple = ()
    dtype: np.dtype = np.dtype("float32")
    name: ClassVar[str] = "dim_size"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        return TensorType((), self.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        return np.asarray(math.prod(x.shape[a] for a in self.axes), dtype=self.dtype)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [DISCONNECTED]


def dim_size(x: Tensor, axes: tuple[int, ...], dtype: np.dtype) -> Tensor:
    dims = [x.shape[a] for a in axes]
    if all(d is not None for d in dims):
        return constant(np.asarray(math.prod(dims), dtype=dtype))
    return apply(DimSize(tuple(axes), dtype), x)


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001 - the op's name
    """Sum over ``axis`` (None: all axes; int or tuple)."""
    t = as_tensor(x)
    axes = _axes_or_error(t, axis, "sum")
    if not axes:
        return t
    return apply(Sum(axes, bool(keepdims)), t)


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Arithmetic mean over ``axis`` (integers are promoted to float32)."""
    t = as_tensor(x)
    if not is_float(t.dtype):
        t = cast(t, "float32")
    axes = _axes_or_error(t, axis, "mean")
    if not axes:
        return t
    return div(sum(t, axes, keepdims), dim_size(t, axes, t.dtype))


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001 - the op's name
    """Maximum over ``axis`` (gradient shared evenly among ties)."""
    t = as_tensor(x)
    axes = _axes_or_error(t, axis, "max")
    return apply(Max(axes, bool(keepdims)), t) if axes else t


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001 - the op's name
    """Minimum over ``axis`` (gradient shared evenly among ties)."""
    t = as_tensor(x)
    axes = _axes_or_error(t, axis, "min")
    return apply(Min(axes, bool(keepdims)), t) if axes else t


def argmax(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the first maximum along ``axis`` (None: of the flattened tensor), as int64."""
    t = as_tensor(x)
    ax = None
    if axis is not None:
        try:
            ax = normalize_axis(axis, t.ndim, "argmax")
        except InferError as e:
            from symdl.errors import ShapeError, user_frame
            from symdl.errors import where as at

            raise ShapeError(f"argmax: {e}{at(user_frame())}") from None
    return apply(Argmax(ax, bool(keepdims)), t)


def var(x: Any, axis: Any = None, keepdims: bool = False, correction: int = 1, unbiased: bool | None = None) -> Tensor:
    """Variance over ``axis``. As ``torch.var``: ``correction=1`` (Bessel's, unbiased) by default;
    ``correction=0`` (or ``unbiased=False``) gives the biased/population variance."""
    if unbiased is not None:
        correction = 1 if unbiased else 0
    t = as_tensor(x)
    if not is_float(t.dtype):
        t = cast(t, "float32")
    axes = _axes_or_error(t, axis, "var")
    centered = sub(t, mean(t, axes, keepdims=True))
    ss = sum(mul(centered, centered), axes, keepdims)
    n = dim_size(t, axes, t.dtype)
    return div(ss, sub(n, float(correction))) if correction else div(ss, n)


# ----------------------------------------------------------------------------------------------------
# Matrix product
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatMul(Op):
    """``a @ b`` for operands of rank >= 2, batch dims broadcast (NumPy's matmul)."""

    name: ClassVar[str] = "matmul"

    def infer(self, a: TensorType, b: TensorType) -> TensorType:  # type: ignore[override]
        from symdl.ops.base import broadcast_shapes

        if a.dtype != b.dtype:
            raise InferError(f"operands must share one dtype (got {a.dtype}, {b.dtype})")
        if a.ndim < 2 or b.ndim < 2:
            raise InferError("operands must have rank >= 2")
        k1, k2 = a.shape[-1], b.shape[-2]
        if k1 is not None and k2 is not None and k1 != k2:
            raise InferError(f"inner dimensions differ: {k1} != {k2}")
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        return TensorType(batch + (a.shape[-2], b.shape[-1]), a.dtype)

    def perform(self, a, b):  # type: ignore[no-untyped-def]
        return np.matmul(a, b)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        a, b = inputs
        return [apply(MatMul(), g, swapaxes(b, -1, -2)), apply(MatMul(), swapaxes(a, -1, -2), g)]


def matmul(a: Any, b: Any) -> Tensor:
    """NumPy/PyTorch ``matmul``: 1-d operands are promoted to matrices and the added axis removed."""
    x, y = promote(a, b, what="matmul")
    if x.ndim == 0 or y.ndim == 0:
        from symdl.errors import ShapeError, user_frame
        from symdl.errors import where as at

        raise ShapeError(f"matmul: operands must not be 0-d; operands: {x.shape}, {y.shape}{at(user_frame())}")
    squeeze_axes = []
    if x.ndim == 1:
        x = expand_dims(x, 0)
        squeeze_axes.append(-2)
    if y.ndim == 1:
        y = expand_dims(y, 1)
        squeeze_axes.append(-1)
    out = apply(MatMul(), x, y)
    if squeeze_axes:
        from symdl.ops.shape import squeeze

        out = squeeze(out, tuple(a % out.ndim for a in squeeze_axes))
    return out
