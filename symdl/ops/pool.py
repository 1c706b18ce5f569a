"""Pooling: ``max_pool1d/2d``, ``avg_pool1d/2d`` and ``global_avg_pool2d`` with ``torch.nn.functional`` semantics.

Max pooling pads with ``-inf``; its gradient goes to the first maximum of each window (row-major order, as
PyTorch), through :class:`MaxPoolGrad` (a scatter to the argmax positions, recomputed from ``x``) whose own
gradient in the cotangent is :class:`MaxPoolGather` (a gather at the same positions), and back: gradients of
any order exist. Average pooling is linear; its adjoint :class:`AvgPoolGrad` has average pooling as gradient.

Output sizes follow PyTorch: ``floor`` (or ``ceil`` with ``ceil_mode``) of
``(size + 2 padding - dilation (k - 1) - 1) / stride`` plus one, where with ``ceil_mode`` the last window must
start inside the input or the left padding; ``padding`` must be at most half the kernel size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from symdl.errors import ShapeError, user_frame, where
from symdl.graph import InferError, Op, Tensor, TensorType, apply, is_float
from symdl.ops.base import DISCONNECTED, NotDifferentiable, as_tensor
from symdl.ops.conv import int_tuple, pad_spatial, windows
from symdl.ops.reduce import mean
from symdl.ops.shape import expand_dims, squeeze

__all__ = ["max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "global_avg_pool2d"]


def pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's ``pooling_output_shape``."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


@dataclass(frozen=True)
class _Pool(Op):
    """Shared geometry of the pooling ops. ``kernel``, ``stride``, ``padding``, ``dilation``: one int per
    spatial dim; ``padding`` is symmetric."""

    kernel: tuple = (1,)
    stride: tuple = (1,)
    padding: tuple = (0,)
    dilation: tuple = (1,)
    ceil_mode: bool = False
    fname: ClassVar[str] = "pool"

    @property
    def nsp(self) -> int:
        return len(self.kernel)

    def _fn(self) -> str:
        return f"{self.fname}{self.nsp}d"

    def out_type(self, x: TensorType, dtype: np.dtype | None = None) -> TensorType:
        """The pooled type of ``x`` (validating it), with ``dtype`` (default ``x``'s)."""
        nsp, fn = self.nsp, self._fn()
        if x.ndim != nsp + 2:
            dims = "L" if nsp == 1 else "H, W"
            raise InferError(
                f"{fn} expects a {nsp + 2}-d input (N, C, {dims}) (or {nsp + 1}-d unbatched), got a {x.ndim}-d input"
            )
        if not is_float(x.dtype):
            raise InferError(f"{fn} needs a floating-point input, got {x.dtype}")
        for k, p in zip(self.kernel, self.padding):
            if p > k // 2:
                raise InferError(
                    f"{fn}: padding {self.padding} should be at most half of the kernel size {self.kernel}"
                )
        out = []
        for i, n in enumerate(x.shape[2:]):
            if n is None:
                out.append(None)
                continue
            o = pool_out_size(n, self.kernel[i], self.stride[i], self.padding[i], self.dilation[i], self.ceil_mode)
            if o < 1:
                raise InferError(
                    f"{fn}: the output size is too small: input {tuple(x.shape[2:])}, kernel "
                    f"{self.kernel}, dilation {self.dilation}, padding {self.padding} give "
                    f"output {o} on spatial dim {i}"
                )
            out.append(o)
        return TensorType((*x.shape[:2], *out), dtype or x.dtype)

    def geometry(self, spatial: Sequence[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """Output sizes and the ``(before, after)`` padding that makes every window fit in the buffer."""
        out, pads = [], []
        for n, k, s, p, d in zip(spatial, self.kernel, self.stride, self.padding, self.dilation):
            o = pool_out_size(n, k, s, p, d, self.ceil_mode)
            if o < 1:
                from symdl.errors import OpRuntimeError

                raise OpRuntimeError(f"{self._fn()}: input size {tuple(spatial)} is too small for kernel {self.kernel}")
            need = (o - 1) * s + d * (k - 1) + 1  # buffer length the windows span, from the left padding on
            out.append(o)
            pads.append((p, max(need - n - p, 0)))
        return out, pads

    def crop(self, buf: np.ndarray, pads: Sequence[tuple[int, int]], spatial: Sequence[int]) -> np.ndarray:
        sl = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial))
        return np.ascontiguousarray(buf[(slice(None),) * (buf.ndim - self.nsp) + sl])


# ----------------------------------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaxPool(_Pool):
    """Maximum over each (dilated) window of the ``-inf``-padded input."""

    name: ClassVar[str] = "max_pool"
    fname: ClassVar[str] = "max_pool"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        return self.out_type(x)

    def perform(self, x):  # type: ignore[no-untyped-def]
        out, pads = self.geometry(x.shape[2:])
        win = windows(pad_spatial(x, pads, -np.inf), self.kernel, self.stride, self.dilation, out)
        return np.ascontiguousarray(win.max(axis=tuple(range(-self.nsp, 0))))

    def argmax_coords(self, x: np.ndarray) -> tuple[list[np.ndarray], list[int], list[tuple[int, int]]]:
        """Per spatial dim, the padded-buffer coordinate of each window's first maximum (arrays shaped like
        the output), with the output sizes and the buffer padding."""
        out, pads = self.geometry(x.shape[2:])
        win = windows(pad_spatial(x, pads, -np.inf), self.kernel, self.stride, self.dilation, out)
        # first max in row-major window order (explicit size: the batch may be empty)
        flat = win.reshape(win.shape[: 2 + self.nsp] + (math.prod(self.kernel),)).argmax(axis=-1)
        taps = np.unravel_index(flat, self.kernel)
        coords = []
        for i, (o, s, d) in enumerate(zip(out, self.stride, self.dilation)):
            start = (np.arange(o) * s).reshape((o,) + (1,) * (self.nsp - 1 - i))
            coords.append(start + taps[i] * d)
        return coords, out, pads

    def flat_argmax(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], list[tuple[int, int]]]:
        """Indices of each window's first maximum into the flattened padded buffer (N, C, *padded)."""
        coords, _, pads = self.argmax_coords(x)
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[2:], pads))
        plane = math.prod(padded)
        idx = (np.arange(x.shape[0] * x.shape[1]) * plane).reshape(x.shape[:2] + (1,) * self.nsp)
        for c, stride in zip(coords, np.cumprod((1,) + padded[:0:-1])[::-1]):
            idx = idx + c * int(stride)
        return idx, padded, pads

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x = inputs[0]
        return [apply(MaxPoolGrad(*self._props()), g, x)]

    def _props(self) -> tuple:
        return (self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode)


@dataclass(frozen=True)
class MaxPoolGrad(_Pool):
    """``(g, x) → dx``: scatter-add ``g`` to the first maximum of each window of ``x`` (zeros elsewhere)."""

    name: ClassVar[str] = "max_pool_grad"
    fname: ClassVar[str] = "max_pool"

    def infer(self, g: TensorType, x: TensorType) -> TensorType:  # type: ignore[override]
        if g.dtype != x.dtype:
            raise InferError(f"operands must share one dtype (got {g.dtype}, {x.dtype})")
        return TensorType(x.shape, g.dtype)

    def perform(self, g, x):  # type: ignore[no-untyped-def]
        pool = MaxPool(*self._props())
        idx, padded, pads = pool.flat_argmax(x)
        size = x.shape[0] * x.shape[1] * math.prod(padded)
        buf = np.bincount(idx.ravel(), weights=np.broadcast_to(g, idx.shape).ravel(), minlength=size)
        return self.crop(buf.astype(g.dtype).reshape(x.shape[:2] + padded), pads, x.shape[2:])

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        _, x = inputs
        # piecewise constant in x (the argmax positions): zero gradient there
        return [apply(MaxPoolGather(*self._props()), gg, x), DISCONNECTED]

    def _props(self) -> tuple:
        return (self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode)


@dataclass(frozen=True)
class MaxPoolGather(_Pool):
    """``(h, x) → y``: for each window of ``x``, the value of ``h`` (shaped like ``x``) at its first maximum.

    The adjoint of :class:`MaxPoolGrad` in ``g``; ``max_pool(x) == MaxPoolGather(x, x)``.
    """

    name: ClassVar[str] = "max_pool_gather"
    fname: ClassVar[str] = "max_pool"

    def infer(self, h: TensorType, x: TensorType) -> TensorType:  # type: ignore[override]
        if h.dtype != x.dtype:
            raise InferError(f"operands must share one dtype (got {h.dtype}, {x.dtype})")
        return self.out_type(x, h.dtype)

    def perform(self, h, x):  # type: ignore[no-untyped-def]
        pool = MaxPool(*self._props())
        idx, _, pads = pool.flat_argmax(x)
        hp = pad_spatial(np.ascontiguousarray(np.broadcast_to(h, x.shape)), pads)
        return hp.ravel()[idx]

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        _, x = inputs
        return [apply(MaxPoolGrad(*self._props()), g, x), DISCONNECTED]

    def _props(self) -> tuple:
        return (self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode)


@dataclass(frozen=True)
class MaxPoolIndices(_Pool):
    """The ``return_indices`` output of max pooling: int64 flat index of each window's first maximum into the
    input's spatial plane (``h * W + w`` in 2-d), as PyTorch."""

    name: ClassVar[str] = "max_pool_indices"
    fname: ClassVar[str] = "max_pool"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        return self.out_type(x, np.dtype("int64"))

    def perform(self, x):  # type: ignore[no-untyped-def]
        coords, _, pads = MaxPool(self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode).argmax_coords(
            x
        )
        idx = np.zeros((), dtype=np.int64)
        for c, (lo, _), n in zip(coords, pads, x.shape[2:]):
            idx = idx * n + (c - lo)
        return np.ascontiguousarray(np.broadcast_to(idx, x.shape[:2] + idx.shape[2:]), dtype=np.int64)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [NotDifferentiable("max pooling indices are integers")]


# ----------------------------------------------------------------------------------------------------
# Average pooling
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AvgPoolProps(_Pool):
    count_include_pad: bool = True
    divisor_override: int | None = None
    fname: ClassVar[str] = "avg_pool"

    def divisor(self, spatial: Sequence[int], out: Sequence[int], dtype: np.dtype) -> np.ndarray | Any:
        """Per output pixel, what its window sum is divided by (PyTorch's rule; separable per dim)."""
        if self.divisor_override is not None:
            return dtype.type(self.divisor_override)
        div = np.ones((), dtype=np.int64)
        for i, (n, o, k, s, p) in enumerate(zip(spatial, out, self.kernel, self.stride, self.padding)):
            start = np.arange(o) * s - p
            end = np.minimum(start + k, n + p)  # windows are clipped to the padded input (ceil_mode)
            if self.count_include_pad:
                cnt = end - start
            else:
                cnt = np.maximum(np.minimum(end, n) - np.maximum(start, 0), 0)
            div = div[..., None] * cnt.reshape((1,) * i + (o,))
        # windows lying wholly in the padding sum to zero; torch outputs zero there
        return np.where(div == 0, 1, div).astype(dtype)

    def _props(self) -> tuple:
        return (
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


@dataclass(frozen=True)
class AvgPool(_AvgPoolProps):
    """Window sums of the zero-padded input divided by :meth:`divisor`."""

    name: ClassVar[str] = "avg_pool"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        return self.out_type(x)

    def perform(self, x):  # type: ignore[no-untyped-def]
        out, pads = self.geometry(x.shape[2:])
        win = windows(pad_spatial(x, pads), self.kernel, self.stride, self.dilation, out)
        total = win.sum(axis=tuple(range(-self.nsp, 0)), dtype=x.dtype)
        return np.ascontiguousarray(total / self.divisor(x.shape[2:], out, x.dtype), dtype=x.dtype)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [apply(AvgPoolGrad(*self._props()), g, inputs[0])]


@dataclass(frozen=True)
class AvgPoolGrad(_AvgPoolProps):
    """``(g, x_ref) → dx``: the adjoint of :class:`AvgPool` (each ``g / divisor`` spread over its window)."""

    name: ClassVar[str] = "avg_pool_grad"

    def infer(self, g: TensorType, x_ref: TensorType) -> TensorType:  # type: ignore[override]
        return TensorType(x_ref.shape, g.dtype)

    def perform(self, g, x_ref):  # type: ignore[no-untyped-def]
        spatial = x_ref.shape[2:]
        out, pads = self.geometry(spatial)
        share = g / self.divisor(spatial, out, g.dtype)
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pads))
        buf = np.zeros(x_ref.shape[:2] + padded, dtype=g.dtype)
        for tap in itertools.product(*(range(k) for k in self.kernel)):
            sl = tuple(
                slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, self.dilation, out, self.stride)
            )
            buf[(slice(None),) * 2 + sl] += share
        return self.crop(buf, pads, spatial)

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        return [apply(AvgPool(*self._props()), gg), DISCONNECTED]


# ----------------------------------------------------------------------------------------------------
# User-facing functions
# ----------------------------------------------------------------------------------------------------


def _pool_args(
    nsp: int, fn: str, kernel_size: Any, stride: Any, padding: Any, dilation: Any
) -> tuple[tuple[int, ...], ...]:
    k = int_tuple(kernel_size, nsp, fn, "kernel_size")
    s = (
        k
        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
        else int_tuple(stride, nsp, fn, "stride")
    )
    p = int_tuple(padding, nsp, fn, "padding", minimum=0)
    d = int_tuple(dilation, nsp, fn, "dilation")
    return k, s, p, d


def _batched(x: Any, nsp: int) -> tuple[Tensor, bool]:
    t = as_tensor(x)
    if t.ndim == nsp + 1:
        return expand_dims(t, 0), True
    return t, False


def _max_pool(
    nsp: int, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool, return_indices: bool
) -> Tensor | tuple[Tensor, Tensor]:
    fn = f"max_pool{nsp}d"
    props = (*_pool_args(nsp, fn, kernel_size, stride, padding, dilation), bool(ceil_mode))
    t, unbatched = _batched(x, nsp)
    y = apply(MaxPool(*props), t)
    y = squeeze(y, 0) if unbatched else y
    if not return_indices:
        return y
    idx = apply(MaxPoolIndices(*props), t)
    return y, squeeze(idx, 0) if unbatched else idx


def max_pool1d(
    x: Any,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``torch.nn.functional.max_pool1d`` over (N, C, L) (or (C, L)).

    ``stride`` defaults to ``kernel_size``; ``padding`` (``-inf``, at most ``kernel_size // 2``) on both sides;
    ``dilation`` spaces the window taps; ``ceil_mode`` rounds the output length up, but the last window must
    start inside the input or the left padding. The gradient goes to the first maximum of each window. With
    ``return_indices`` also returns the int64 index of each maximum along L.
    """
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(
    x: Any,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``torch.nn.functional.max_pool2d`` over (N, C, H, W) (or (C, H, W)).

    Arguments are ints or (h, w) pairs; ``stride`` defaults to ``kernel_size``; ``padding`` is ``-inf`` and at
    most half the kernel size; output dims are ``floor((size + 2 padding - dilation (k - 1) - 1) / stride) + 1``
    (``ceil`` with ``ceil_mode``, dropping a last window that would start in the right padding). The gradient
    goes to the first maximum (row-major) of each window. ``return_indices`` also returns the int64 flat index
    ``h * W + w`` of each maximum.
    """
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _avg_pool(
    nsp: int,
    x: Any,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> Tensor:
    fn = f"avg_pool{nsp}d"
    k, s, p, d = _pool_args(nsp, fn, kernel_size, stride, padding, 1)
    if divisor_override is not None and (
        not isinstance(divisor_override, (int, np.integer))
        or isinstance(divisor_override, bool)
        or divisor_override == 0
    ):
        raise ShapeError(
            f"{fn}: divisor_override must be a non-zero int or None, got {divisor_override!r}{where(user_frame())}"
        )
    t, unbatched = _batched(x, nsp)
    y = apply(
        AvgPool(
            k,
            s,
            p,
            d,
            bool(ceil_mode),
            bool(count_include_pad),
            None if divisor_override is None else int(divisor_override),
        ),
        t,
    )
    return squeeze(y, 0) if unbatched else y


def avg_pool1d(
    x: Any,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Tensor:
    """``torch.nn.functional.avg_pool1d`` over (N, C, L) (or (C, L)); see :func:`avg_pool2d`."""
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(
    x: Any,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """``torch.nn.functional.avg_pool2d`` over (N, C, H, W) (or (C, H, W)).

    Each output is its window's sum over the zero-padded input divided by: ``divisor_override`` if given;
    else with ``count_include_pad`` the window's size clipped to the padded input (smaller only for
    ``ceil_mode``'s last windows); else the number of real (non-padding) input pixels in the window.
    ``stride`` defaults to ``kernel_size``; ``padding`` is at most half the kernel size; output sizes as
    :func:`max_pool2d` (no dilation).
    """
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def global_avg_pool2d(x: Any, keepdims: bool = False) -> Tensor:
    """Mean over H and W of (N, C, H, W): (N, C), or (N, C, 1, 1) with ``keepdims``
    (``adaptive_avg_pool2d(x, 1)``). H and W may be ``None`` (known at run time)."""
    t = as_tensor(x)
    if t.ndim != 4:
        raise ShapeError(
            f"global_avg_pool2d expects a 4-d input (N, C, H, W), got shape {t.shape}{where(user_frame())}"
        )
    return mean(t, axis=(2, 3), keepdims=keepdims)
