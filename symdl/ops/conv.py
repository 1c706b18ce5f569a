"""Convolutions: ``conv1d`` and ``conv2d`` with ``torch.nn.functional`` semantics.

One N-d primitive, :class:`Conv` (cross-correlation over the trailing spatial dims, as PyTorch), and its two
adjoints :class:`ConvGradInput` and :class:`ConvGradWeight`. The three are bilinear and each one's gradient
is expressed with the other two, so gradients of any order exist. The NumPy performs use im2col
(``sliding_window_view``) and one batched matrix product per call: no Python loops over the batch or pixels
(col2im loops over the kernel offsets only).

The bias is added in the user function with a broadcast ``add`` (so a compiler can fuse it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from symdl.errors import OpRuntimeError, ShapeError, user_frame, where
from symdl.graph import InferError, Op, Tensor, TensorType, apply, is_float
from symdl.ops.base import DISCONNECTED, as_tensor
from symdl.ops.elementwise import add
from symdl.ops.shape import expand_dims, reshape, squeeze

__all__ = ["conv1d", "conv2d"]


# ----------------------------------------------------------------------------------------------------
# NumPy helpers shared by the three ops (and by pooling)
# ----------------------------------------------------------------------------------------------------


def conv_out_size(size: int, k: int, s: int, lo: int, hi: int, d: int) -> int:
    """Output length of one spatial dim (PyTorch's floor rule): ``(size + lo + hi - d (k - 1) - 1) // s + 1``."""
    return (size + lo + hi - d * (k - 1) - 1) // s + 1


def pad_spatial(x: np.ndarray, pads: Sequence[tuple[int, int]], value: float = 0.0) -> np.ndarray:
    """Pad the trailing ``len(pads)`` dims of ``x`` with ``value``; returns ``x`` itself when nothing is padded."""
    if all(lo == 0 and hi == 0 for lo, hi in pads):
        return x
    lead = [(0, 0)] * (x.ndim - len(pads))
    return np.pad(x, lead + [tuple(p) for p in pads], mode="constant", constant_values=x.dtype.type(value))


def windows(
    xp: np.ndarray, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], out: Sequence[int]
) -> np.ndarray:
    """A strided view ``(..., *out, *kernel)`` of the windows of the (already padded) ``xp``.

    Window ``o`` along a dim starts at ``o * stride`` and takes ``kernel`` taps ``dilation`` apart.
    """
    nsp = len(kernel)
    full = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    axes = tuple(range(xp.ndim - nsp, xp.ndim))
    v = sliding_window_view(xp, full, axis=axes)
    lead = (slice(None),) * (xp.ndim - nsp)
    pos = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, stride))
    taps = tuple(slice(None, None, d) for d in dilation)
    return v[lead + pos + taps]


def _padded_sizes(spatial: Sequence[int], padding: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    return tuple(n + lo + hi for n, (lo, hi) in zip(spatial, padding))


def _out_sizes(op: Conv | ConvGradInput | ConvGradWeight, spatial: Sequence[int], kernel: Sequence[int]) -> list[int]:
    out = [
        conv_out_size(n, k, s, lo, hi, d)
        for n, k, s, (lo, hi), d in zip(spatial, kernel, op.stride, op.padding, op.dilation)
    ]
    if any(o <= 0 for o in out):
        raise OpRuntimeError(
            f"conv{len(kernel)}d: kernel {tuple(kernel)} (dilation {op.dilation}) is larger than "
            f"the padded input {_padded_sizes(spatial, op.padding)}"
        )
    return out


def _im2col(op: Conv | ConvGradWeight, x: np.ndarray, kernel: Sequence[int], out: Sequence[int]) -> np.ndarray:
    """``x`` (N, C, *S) → columns (G, N*P, C/G * K) for P output pixels and K kernel taps."""
    n, c = x.shape[:2]
    g = op.groups
    xp = pad_spatial(x, op.padding)
    win = windows(xp, kernel, op.stride, op.dilation, out)  # (N, C, *out, *k)
    nsp = len(kernel)
    win = win.reshape((n, g, c // g) + win.shape[2:])  # (N, G, Cg, *out, *k)
    perm = (1, 0) + tuple(range(3, 3 + nsp)) + (2,) + tuple(range(3 + nsp, 3 + 2 * nsp))
    return win.transpose(perm).reshape(g, n * math.prod(out), (c // g) * math.prod(kernel))


def _g_cols(g_arr: np.ndarray, groups: int) -> np.ndarray:
    """Output cotangent (N, C_out, *out) → (G, N*P, C_out/G)."""
    n, cout = g_arr.shape[:2]
    out = g_arr.shape[2:]
    nsp = len(out)
    gg = g_arr.reshape((n, groups, cout // groups) + tuple(out))
    perm = (1, 0) + tuple(range(3, 3 + nsp)) + (2,)
    return gg.transpose(perm).reshape(groups, n * math.prod(out), cout // groups)


def _w_mat(w: np.ndarray, groups: int) -> np.ndarray:
    """Weight (C_out, Cg, *k) → (G, C_out/G, Cg*K)."""
    cout = w.shape[0]
    return w.reshape(groups, cout // groups, -1)


# ----------------------------------------------------------------------------------------------------
# Ops
# ----------------------------------------------------------------------------------------------------


def _check_pair(a: TensorType, b: TensorType, what: str) -> None:
    if a.dtype != b.dtype:
        raise InferError(f"{what} operands must share one dtype (got {a.dtype} and {b.dtype})")
    if not is_float(a.dtype):
        raise InferError(f"{what} needs floating-point operands, got {a.dtype}")


@dataclass(frozen=True)
class Conv(Op):
    """N-d cross-correlation ``y[n, o, p] = sum_{c, k} x_pad[n, g(o) Cg + c, p s + k d] w[o, c, k]``.

    ``x``: (N, C_in, *S); ``weight``: (C_out, C_in / groups, *K); output (N, C_out, *floor-sized S').
    ``padding`` holds one ``(before, after)`` pair per spatial dim (asymmetric for ``padding="same"``).
    """

    stride: tuple = (1,)
    padding: tuple = ((0, 0),)
    dilation: tuple = (1,)
    groups: int = 1
    name: ClassVar[str] = "conv"

    @property
    def fname(self) -> str:
        return f"conv{len(self.stride)}d"

    def infer(self, x: TensorType, w: TensorType) -> TensorType:  # type: ignore[override]
        nsp = len(self.stride)
        fn = self.fname
        dims = ", ".join(("L",) if nsp == 1 else ("H", "W") if nsp == 2 else tuple(f"S{i}" for i in range(nsp)))
        if x.ndim != nsp + 2:
            raise InferError(
                f"{fn} expects a {nsp + 2}-d input (N, C_in, {dims}) (or {nsp + 1}-d unbatched), got a {x.ndim}-d input"
            )
        if w.ndim != nsp + 2:
            raise InferError(
                f"{fn} expects a {nsp + 2}-d weight (C_out, C_in/groups, {dims.lower()} kernel), "
                f"got a {w.ndim}-d weight"
            )
        _check_pair(x, w, fn)
        g = self.groups
        cin, cout, cg = x.shape[1], w.shape[0], w.shape[1]
        if cin is not None and cin % g:
            raise InferError(f"{fn}: groups={g} must divide the {cin} input channels")
        if cout is not None and cout % g:
            raise InferError(f"{fn}: groups={g} must divide the {cout} output channels (weight.shape[0])")
        if cin is not None and cg is not None and cin != cg * g:
            raise InferError(
                f"{fn}: the input has {cin} channels but the weight expects {cg * g} "
                f"(weight.shape[1]={cg} x groups={g})"
            )
        out = []
        for i in range(nsp):
            n, k = x.shape[2 + i], w.shape[2 + i]
            if n is None or k is None:
                out.append(None)
                continue
            (lo, hi), d, s = self.padding[i], self.dilation[i], self.stride[i]
            eff = d * (k - 1) + 1
            if eff > n + lo + hi:
                raise InferError(
                    f"{fn}: kernel size {tuple(w.shape[2:])} (dilation {self.dilation}, effective "
                    f"{eff} on spatial dim {i}) can't be greater than the padded input size "
                    f"{n + lo + hi} (input {n}, padding {lo}+{hi})"
                )
            out.append(conv_out_size(n, k, s, lo, hi, d))
        return TensorType((x.shape[0], cout, *out), x.dtype)

    def perform(self, x, w):  # type: ignore[no-untyped-def]
        kernel = w.shape[2:]
        out = _out_sizes(self, x.shape[2:], kernel)
        cols = _im2col(self, x, kernel, out)  # (G, N*P, CgK)
        y = np.matmul(cols, _w_mat(w, self.groups).transpose(0, 2, 1))  # (G, N*P, Cout_g)
        n, g, cog = x.shape[0], self.groups, w.shape[0] // self.groups
        nsp = len(kernel)
        y = y.reshape((g, n, *out, cog))
        y = y.transpose((1, 0, nsp + 2) + tuple(range(2, 2 + nsp)))  # (N, G, Cout_g, *out)
        return np.ascontiguousarray(y.reshape((n, g * cog, *out)), dtype=x.dtype)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x, w = inputs
        return [apply(ConvGradInput(*self._props()), g, w, x), apply(ConvGradWeight(*self._props()), x, g, w)]

    def _props(self) -> tuple:
        return (self.stride, self.padding, self.dilation, self.groups)


@dataclass(frozen=True)
class ConvGradInput(Op):
    """The adjoint of :class:`Conv` in ``x`` (a transposed convolution): ``(g, weight, x_ref) → dx``.

    ``x_ref`` gives only the output's shape: input pixels that no window reaches (the stride does not divide
    the padded size) get zeros. Linear in ``g`` and in ``weight``.
    """

    stride: tuple = (1,)
    padding: tuple = ((0, 0),)
    dilation: tuple = (1,)
    groups: int = 1
    name: ClassVar[str] = "conv_grad_input"

    def infer(self, g: TensorType, w: TensorType, x_ref: TensorType) -> TensorType:  # type: ignore[override]
        _check_pair(g, w, self.name)
        return TensorType(x_ref.shape, g.dtype)

    def perform(self, g, w, x_ref):  # type: ignore[no-untyped-def]
        groups = self.groups
        kernel = w.shape[2:]
        nsp = len(kernel)
        n, c = x_ref.shape[:2]
        out = g.shape[2:]
        cols = np.matmul(_g_cols(g, groups), _w_mat(w, groups))  # (G, N*P, Cg*K)
        cols = cols.reshape((groups, n, *out, c // groups, *kernel))
        # -> (*K, N, G, Cg, *out): one (N, G, Cg, *out) slab per kernel tap
        perm = tuple(range(3 + nsp, 3 + 2 * nsp)) + (1, 0, 2 + nsp) + tuple(range(2, 2 + nsp))
        cols = cols.transpose(perm)
        padded = _padded_sizes(x_ref.shape[2:], self.padding)
        buf = np.zeros((n, groups, c // groups, *padded), dtype=g.dtype)
        for tap in itertools.product(*(range(k) for k in kernel)):
            sl = tuple(
                slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, self.dilation, out, self.stride)
            )
            buf[(slice(None),) * 3 + sl] += cols[tap]
        buf = buf.reshape((n, c, *padded))
        crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(self.padding, x_ref.shape[2:]))
        return np.ascontiguousarray(buf[(slice(None),) * 2 + crop])

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        g, w, _ = inputs
        props = (self.stride, self.padding, self.dilation, self.groups)
        return [apply(Conv(*props), gg, w), apply(ConvGradWeight(*props), gg, g, w), DISCONNECTED]


@dataclass(frozen=True)
class ConvGradWeight(Op):
    """The adjoint of :class:`Conv` in the weight: ``(x, g, weight_ref) → dweight``. Linear in ``x`` and ``g``."""

    stride: tuple = (1,)
    padding: tuple = ((0, 0),)
    dilation: tuple = (1,)
    groups: int = 1
    name: ClassVar[str] = "conv_grad_weight"

    def infer(self, x: TensorType, g: TensorType, w_ref: TensorType) -> TensorType:  # type: ignore[override]
        _check_pair(x, g, self.name)
        return TensorType(w_ref.shape, x.dtype)

    def perform(self, x, g, w_ref):  # type: ignore[no-untyped-def]
        kernel = w_ref.shape[2:]
        out = g.shape[2:]
        cols = _im2col(self, x, kernel, out)  # (G, N*P, CgK)
        dw = np.matmul(_g_cols(g, self.groups).transpose(0, 2, 1), cols)  # (G, Cout_g, CgK)
        return np.ascontiguousarray(dw.reshape(w_ref.shape), dtype=x.dtype)

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        x, g, _ = inputs
        props = (self.stride, self.padding, self.dilation, self.groups)
        return [apply(ConvGradInput(*props), g, gg, x), apply(Conv(*props), x, gg), DISCONNECTED]


# ----------------------------------------------------------------------------------------------------
# User-facing functions
# ----------------------------------------------------------------------------------------------------


def _arg_error(fn: str, msg: str) -> ShapeError:
    return ShapeError(f"{fn}: {msg}{where(user_frame())}")


def int_tuple(v: Any, n: int, fn: str, what: str, minimum: int = 1) -> tuple[int, ...]:
    """An int or a length-``n`` sequence of ints, each ``>= minimum``, as an ``n``-tuple (torch's ``_ntuple``)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        vals: tuple = (int(v),) * n
    elif (
        isinstance(v, (tuple, list))
        and len(v) == n
        and all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v)
    ):
        vals = tuple(int(e) for e in v)
    elif isinstance(v, (tuple, list)) and len(v) == 1 and isinstance(v[0], (int, np.integer)):
        vals = (int(v[0]),) * n
    else:
        raise _arg_error(fn, f"{what} must be an int or a sequence of {n} ints, got {v!r}")
    if any(e < minimum for e in vals):
        raise _arg_error(fn, f"{what} must be >= {minimum}, got {v!r}")
    return vals


def _conv(nsp: int, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: int) -> Tensor:
    fn = f"conv{nsp}d"
    t = as_tensor(x, f"{fn} input")
    w = as_tensor(weight, f"{fn} weight")
    s = int_tuple(stride, nsp, fn, "stride")
    d = int_tuple(dilation, nsp, fn, "dilation")
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise _arg_error(fn, f"groups must be a positive int, got {groups!r}")
    if isinstance(padding, str):
        if padding == "valid":
            pads: tuple = ((0, 0),) * nsp
        elif padding == "same":
            if any(e != 1 for e in s):
                raise _arg_error(fn, f"padding='same' is not supported for strided convolutions (stride {s})")
            ks = w.shape[2:] if w.ndim == nsp + 2 else ()
            if len(ks) != nsp or None in ks:
                raise _arg_error(
                    fn,
                    f"padding='same' needs a {nsp + 2}-d weight with a static kernel size, got weight shape {w.shape}",
                )
            total = [di * (k - 1) for di, k in zip(d, ks)]
            pads = tuple((tp // 2, tp - tp // 2) for tp in total)  # the odd pixel goes after, as torch
        else:
            raise _arg_error(fn, f"invalid padding string {padding!r}; expected 'valid' or 'same'")
    else:
        pads = tuple((p, p) for p in int_tuple(padding, nsp, fn, "padding", minimum=0))
    unbatched = t.ndim == nsp + 1
    if unbatched:
        t = expand_dims(t, 0)
    y = apply(Conv(s, pads, d, int(groups)), t, w)
    if bias is not None:
        b = as_tensor(bias, f"{fn} bias")
        if b.ndim != 1 or (b.shape[0] is not None and y.shape[1] is not None and b.shape[0] != y.shape[1]):
            raise _arg_error(fn, f"bias must have shape ({y.shape[1]},) (one value per output channel), got {b.shape}")
        if b.dtype != y.dtype:
            raise _arg_error(fn, f"bias dtype {b.dtype} differs from the input's {y.dtype}")
        y = add(y, reshape(b, (-1,) + (1,) * nsp))
    return squeeze(y, 0) if unbatched else y


def conv1d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """``torch.nn.functional.conv1d``: 1-d cross-correlation.

    ``x``: (N, C_in, L) (or (C_in, L) unbatched); ``weight``: (C_out, C_in/groups, k); ``bias``: (C_out,) or
    None. Output (N, C_out, L_out) with ``L_out = floor((L + 2 padding - dilation (k - 1) - 1) / stride) + 1``.
    ``padding`` is an int, a 1-tuple, ``"valid"`` (no padding) or ``"same"`` (output length = input length;
    stride must be 1; an odd total padding puts the extra zero at the end, as torch). ``groups`` splits the
    channels into independent groups (``groups == C_in``: depthwise).
    """
    return _conv(1, x, weight, bias, stride, padding, dilation, groups)


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """``torch.nn.functional.conv2d``: 2-d cross-correlation over NCHW tensors.

    ``x``: (N, C_in, H, W) (or (C_in, H, W) unbatched); ``weight``: (C_out, C_in/groups, kH, kW); ``bias``:
    (C_out,) or None. ``stride``, ``padding`` (zeros), ``dilation``: an int or an (h, w) pair; ``padding`` may
    also be ``"valid"`` or ``"same"`` (stride 1 only). Each output dim is
    ``floor((size + 2 padding - dilation (k - 1) - 1) / stride) + 1``; trailing input pixels that no window
    reaches get zero gradient. ``groups`` must divide both channel counts (``groups == C_in``: depthwise).
    """
    return _conv(2, x, weight, bias, stride, padding, dilation, groups)
