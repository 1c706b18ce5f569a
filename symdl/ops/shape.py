"""Shape ops: reshape, transpose, broadcasting, concatenation, padding, slicing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from symdl.graph import InferError, Op, Tensor, TensorType, apply
from symdl.ops.base import (
    DISCONNECTED,
    as_tensor,
    broadcast_shapes,
    normalize_axes,
    normalize_axis,
    promote,
    same_dtype,
)

# ----------------------------------------------------------------------------------------------------
# Broadcasting and its adjoint (the autodiff driver's one shared reduction rule lives on Unbroadcast)
# ----------------------------------------------------------------------------------------------------


def _unbroadcast_axes(g_shape: tuple, x_shape: tuple) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lead = len(g_shape) - len(x_shape)
    axes = tuple(range(lead))
    keep = tuple(i + lead for i, d in enumerate(x_shape) if d == 1 and g_shape[i + lead] != 1)
    return axes, keep


@dataclass(frozen=True)
class Unbroadcast(Op):
    """Sum ``g`` down to the shape of ``ref`` (the adjoint of broadcasting ``ref`` to ``g``'s shape)."""

    name: ClassVar[str] = "unbroadcast"

    def infer(self, g: TensorType, ref: TensorType) -> TensorType:  # type: ignore[override]
        if len(ref.shape) > len(g.shape):
            raise InferError(f"cannot reduce rank {len(g.shape)} to rank {len(ref.shape)}")
        return TensorType(ref.shape, g.dtype)

    def perform(self, g, ref):  # type: ignore[no-untyped-def]
        lead, keep = _unbroadcast_axes(g.shape, ref.shape)
        out = g.sum(axis=lead + keep, keepdims=True) if lead or keep else g
        return out.reshape(ref.shape) if lead else out

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        g, _ = inputs
        return [broadcast_like(gg, g), DISCONNECTED]


@dataclass(frozen=True)
class BroadcastLike(Op):
    """Broadcast ``x`` to the run-time shape of ``ref``."""

    name: ClassVar[str] = "broadcast_like"

    def infer(self, x: TensorType, ref: TensorType) -> TensorType:  # type: ignore[override]
        shape = broadcast_shapes(x.shape, ref.shape)
        if len(x.shape) > len(ref.shape):
            raise InferError("cannot broadcast to a lower rank")
        return TensorType(tuple(r if r is not None else s for s, r in zip(shape, ref.shape)), x.dtype)

    def perform(self, x, ref):  # type: ignore[no-untyped-def]
        return np.broadcast_to(x, ref.shape)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [unbroadcast(g, inputs[0]), DISCONNECTED]


@dataclass(frozen=True)
class BroadcastTo(Op):
    shape: tuple = ()
    name: ClassVar[str] = "broadcast_to"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        if len(x.shape) > len(self.shape):
            raise InferError(f"cannot broadcast a {len(x.shape)}-d tensor to {self.shape}")
        lead = len(self.shape) - len(x.shape)
        for i, d in enumerate(x.shape):
            t = self.shape[lead + i]
            if d is not None and d != 1 and d != t:
                raise InferError(f"cannot broadcast shape {x.shape} to {self.shape}")
        return TensorType(tuple(self.shape), x.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        return np.broadcast_to(x, self.shape)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [unbroadcast(g, inputs[0])]


def unbroadcast(g: Tensor, like: Tensor) -> Tensor:
    """Reduce a cotangent ``g`` to the shape of ``like`` by summing broadcast axes (no-op if equal)."""
    if g.shape == like.shape:
        return g
    return apply(Unbroadcast(), g, like)


def broadcast_like(x: Tensor, like: Tensor) -> Tensor:
    """Broadcast ``x`` to the run-time shape of ``like``."""
    if x.shape == like.shape:
        return x
    return apply(BroadcastLike(), x, like)


def broadcast_to(x: Any, shape: Sequence[int]) -> Tensor:
    """Broadcast ``x`` to a fixed ``shape`` (NumPy rules)."""
    t = as_tensor(x)
    shape = tuple(int(d) for d in shape)
    if t.shape == shape:
        return t
    return apply(BroadcastTo(shape), t)


# ----------------------------------------------------------------------------------------------------
# Reshaping
# ----------------------------------------------------------------------------------------------------


def _resolve_reshape(in_shape: tuple, target: tuple) -> tuple:
    """Static output shape of reshape: ``-1`` is inferred when the input size is known, else ``None``."""
    known_in = None if any(d is None for d in in_shape) else math.prod(in_shape)
    rest = math.prod(d for d in target if d != -1)
    if -1 not in target:
        if known_in is not None and known_in != rest:
            raise InferError(f"cannot reshape {known_in} elements into {target}")
        return tuple(target)
    if known_in is None:
        return tuple(None if d == -1 else d for d in target)
    if rest == 0 or known_in % rest:
        raise InferError(f"cannot reshape {known_in} elements into {target}")
    return tuple(known_in // rest if d == -1 else d for d in target)


@dataclass(frozen=True)
class Reshape(Op):
    """Reshape to ``shape`` (ints, at most one ``-1``)."""

    shape: tuple = ()
    name: ClassVar[str] = "reshape"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        return TensorType(_resolve_reshape(x.shape, self.shape), x.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        try:
            return x.reshape(self.shape)
        except ValueError as e:
            from symdl.errors import OpRuntimeError

            raise OpRuntimeError(f"cannot reshape an array of shape {x.shape} into {self.shape}") from e

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [reshape_like(g, inputs[0])]


@dataclass(frozen=True)
class ReshapeLike(Op):
    """Reshape ``x`` to the run-time shape of ``ref`` (used by gradients)."""

    name: ClassVar[str] = "reshape_like"

    def infer(self, x: TensorType, ref: TensorType) -> TensorType:  # type: ignore[override]
        return TensorType(ref.shape, x.dtype)

    def perform(self, x, ref):  # type: ignore[no-untyped-def]
        return x.reshape(ref.shape)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [reshape_like(g, inputs[0]), DISCONNECTED]


@dataclass(frozen=True)
class ExpandDims(Op):
    """Insert size-1 axes at ``axes`` (positions in the output)."""

    axes: tuple = ()
    name: ClassVar[str] = "expand_dims"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        out = list(x.shape)
        for a in self.axes:
            out.insert(a, 1)
        return TensorType(tuple(out), x.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        return np.expand_dims(x, self.axes)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [squeeze(g, self.axes)]


@dataclass(frozen=True)
class Squeeze(Op):
    axes: tuple = ()
    name: ClassVar[str] = "squeeze"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        for a in self.axes:
            if x.shape[a] not in (1, None):
                raise InferError(f"cannot squeeze axis {a} of size {x.shape[a]}")
        return TensorType(tuple(d for i, d in enumerate(x.shape) if i not in self.axes), x.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        return np.squeeze(x, self.axes)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [expand_dims(g, self.axes)]


@dataclass(frozen=True)
class Flatten(Op):
    """Flatten dims ``start..end`` (inclusive, normalised) into one."""

    start: int = 0
    end: int = -1
    name: ClassVar[str] = "flatten"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        mid = x.shape[self.start : self.end + 1]
        size = None if any(d is None for d in mid) else math.prod(mid)
        return TensorType(x.shape[: self.start] + (size,) + x.shape[self.end + 1 :], x.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        return (
            x.reshape(x.shape[: self.start] + (-1,) + x.shape[self.end + 1 :])
            if x.size
            else x.reshape(
                x.shape[: self.start] + (math.prod(x.shape[self.start : self.end + 1]),) + x.shape[self.end + 1 :]
            )
        )

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [reshape_like(g, inputs[0])]


@dataclass(frozen=True)
class Transpose(Op):
    perm: tuple = ()
    name: ClassVar[str] = "transpose"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        if sorted(self.perm) != list(range(len(x.shape))):
            raise InferError(f"transpose: perm {tuple(self.perm)} is not a permutation of the {len(x.shape)} axes")
        return TensorType(tuple(x.shape[p] for p in self.perm), x.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        return np.transpose(x, self.perm)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        inverse = tuple(int(i) for i in np.argsort(self.perm))
        return [apply(Transpose(inverse), g)]


def reshape(x: Any, shape: Sequence[int]) -> Tensor:
    """Reshape to ``shape``: ints, with at most one ``-1`` (inferred). ``None`` is accepted as ``-1``."""
    t = as_tensor(x)
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    target = tuple(-1 if d is None else int(d) for d in shape)
    if sum(1 for d in target if d == -1) > 1 or any(d < -1 for d in target):
        from symdl.errors import ShapeError, user_frame, where

        raise ShapeError(
            f"reshape: target {tuple(shape)} may hold at most one -1/None and no other negative dim; "
            f"operand {t.shape}{where(user_frame())}"
        )
    if target == t.shape:
        return t
    return apply(Reshape(target), t)


def reshape_like(x: Tensor, like: Tensor) -> Tensor:
    """Reshape ``x`` to the run-time shape of ``like``."""
    if x.shape == like.shape and None not in like.shape:
        return x
    return apply(ReshapeLike(), x, like)


def expand_dims(x: Any, axis: int | Sequence[int]) -> Tensor:
    """Insert size-1 axes at ``axis`` (positions in the output, as ``np.expand_dims``)."""
    t = as_tensor(x)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out_ndim = t.ndim + len(axes)
    axes = _checked_axes(axes, out_ndim, "expand_dims", t)
    return apply(ExpandDims(axes), t) if axes else t


def _checked_axes(axes: Sequence[Any], ndim: int, what: str, t: Tensor) -> tuple[int, ...]:
    """Normalise ``axes`` for a ``ndim``-d tensor, raising ShapeError (not wrapping) when out of range/repeated."""
    try:
        return normalize_axes(tuple(axes), ndim, what)
    except InferError as e:
        from symdl.errors import ShapeError, user_frame, where

        raise ShapeError(f"{e}; operand {t.shape}{where(user_frame())}") from None


def squeeze(x: Any, axis: int | Sequence[int] | None = None) -> Tensor:
    """Remove size-1 axes: ``axis`` (int or ints), or every static size-1 axis when ``None``."""
    t = as_tensor(x)
    if axis is None:
        axes = tuple(i for i, d in enumerate(t.shape) if d == 1)
    else:
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        axes = _checked_axes(axes, t.ndim, "squeeze", t)
    return apply(Squeeze(axes), t) if axes else t


def flatten(x: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """``torch.flatten``: merge dims ``start_dim..end_dim`` (inclusive) into one."""
    t = as_tensor(x)
    if t.ndim == 0:
        return reshape(t, (1,))
    s = normalize_axis(start_dim, t.ndim, "flatten")
    e = normalize_axis(end_dim, t.ndim, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for a {t.ndim}-d tensor")
    if s == e:
        return t
    return apply(Flatten(s, e), t)


def transpose(x: Any, *axes: Any) -> Tensor:
    """Permute axes. ``transpose(x)`` reverses them; ``transpose(x, perm)`` (a tuple/list) or ``transpose(x, *perm)``
    with 3+ ints applies a permutation; ``transpose(x, dim0, dim1)`` (two ints) swaps two dims, as PyTorch's."""
    t = as_tensor(x)
    as_perm = len(axes) == 1 and isinstance(axes[0], (tuple, list))
    if as_perm:
        axes = tuple(axes[0])
    if any(not isinstance(a, (int, np.integer)) or not -max(t.ndim, 1) <= a < max(t.ndim, 1) for a in axes):
        from symdl.errors import ShapeError, user_frame, where

        raise ShapeError(
            f"transpose: axes {tuple(axes)} out of range for the {t.ndim} axes of {t.shape}{where(user_frame())}"
        )
    if not axes:
        perm = tuple(reversed(range(t.ndim)))
    elif len(axes) == 2 and not as_perm and t.ndim >= 2:
        # torch.transpose(x, dim0, dim1): swap two dims (for a 2-d tensor, x.transpose(0, 1) is x.T as in torch)
        d0, d1 = (int(a) % t.ndim for a in axes)
        p = list(range(t.ndim))
        p[d0], p[d1] = p[d1], p[d0]
        perm = tuple(p)
    else:
        perm = tuple(int(a) % max(t.ndim, 1) for a in axes)
        if sorted(perm) != list(range(t.ndim)):
            from symdl.errors import ShapeError, user_frame, where

            raise ShapeError(
                f"transpose: {tuple(axes)} is not a permutation of the {t.ndim} axes of {t.shape}{where(user_frame())}"
            )
    if perm == tuple(range(t.ndim)):
        return t
    return apply(Transpose(perm), t)


def swapaxes(x: Tensor, a: int, b: int) -> Tensor:
    """Swap axes ``a`` and ``b``."""
    p = list(range(x.ndim))
    p[a], p[b] = p[b], p[a]
    return transpose(x, tuple(p))


# ----------------------------------------------------------------------------------------------------
# Concatenation, padding and slicing
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concat(Op):
    axis: int = 0
    name: ClassVar[str] = "concat"

    def infer(self, *types: TensorType) -> TensorType:
        dt = same_dtype(types, "concat")
        ndim = types[0].ndim
        if any(t.ndim != ndim for t in types):
            raise InferError("all operands must have the same rank")
        out = []
        for ax in range(ndim):
            dims = [t.shape[ax] for t in types]
            if ax == self.axis:
                out.append(None if any(d is None for d in dims) else sum(dims))
            else:
                known = {d for d in dims if d is not None}
                if len(known) > 1:
                    raise InferError(f"operands differ in axis {ax}, which is not the concat axis {self.axis}")
                out.append(known.pop() if known else None)
        return TensorType(tuple(out), dt)

    def perform(self, *xs):  # type: ignore[no-untyped-def]
        return np.concatenate(xs, axis=self.axis)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        if all(i.shape[self.axis] is not None for i in inputs):
            grads, start = [], 0
            for i in inputs:
                stop = start + i.shape[self.axis]
                grads.append(apply(Slice(_axis_slice(i.ndim, self.axis, start, stop)), g))
                start = stop
            return grads
        return [apply(ConcatPart(self.axis, k), g, *inputs) for k in range(len(inputs))]


@dataclass(frozen=True)
class ConcatPart(Op):
    """Part ``k`` of ``g`` along ``axis``, where the parts have the run-time sizes of ``refs`` (concat's adjoint)."""

    axis: int = 0
    k: int = 0
    name: ClassVar[str] = "concat_part"

    def infer(self, g: TensorType, *refs: TensorType) -> TensorType:  # type: ignore[override]
        shape = list(g.shape)
        shape[self.axis] = refs[self.k].shape[self.axis]
        return TensorType(tuple(shape), g.dtype)

    def perform(self, g, *refs):  # type: ignore[no-untyped-def]
        start = sum(r.shape[self.axis] for r in refs[: self.k])
        stop = start + refs[self.k].shape[self.axis]
        idx = [slice(None)] * g.ndim
        idx[self.axis] = slice(start, stop)
        return g[tuple(idx)]

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        g, *refs = inputs
        parts = [gg if j == self.k else _zeros_like_ref(refs[j], gg.dtype) for j in range(len(refs))]
        return [apply(Concat(self.axis), *parts)] + [DISCONNECTED] * len(refs)


def _zeros_like_ref(ref: Tensor, dtype: np.dtype) -> Tensor:
    from symdl.ops.elementwise import zeros_like

    return zeros_like(ref, dtype)


def _axis_slice(ndim: int, axis: int, start: int, stop: int) -> tuple:
    return tuple((start, stop, 1) if a == axis else (None, None, None) for a in range(ndim))


def concat(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along an existing ``axis``."""
    ts = promote(*tensors, what="concat")
    if not ts:
        raise ValueError("concat: needs at least one tensor")
    if len(ts) == 1:
        return ts[0]
    try:
        ax = normalize_axis(axis, ts[0].ndim, "concat")
    except InferError as e:
        from symdl.errors import ShapeError, user_frame, where

        raise ShapeError(f"concat: {e}{where(user_frame())}") from None
    return apply(Concat(ax), *ts)


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along a new ``axis``."""
    ts = promote(*tensors, what="stack")
    if not ts:
        raise ValueError("stack: needs at least one tensor")
    ax = _checked_axes((axis,), ts[0].ndim + 1, "stack", ts[0])[0]
    return concat([expand_dims(t, ax) for t in ts], axis=ax)


@dataclass(frozen=True)
class Pad(Op):
    """Constant padding; ``pads`` is ``((before, after), ...)`` for every axis (non-negative)."""

    pads: tuple = ()
    value: float = 0.0
    name: ClassVar[str] = "pad"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        return TensorType(tuple(None if d is None else d + b + a for d, (b, a) in zip(x.shape, self.pads)), x.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        return np.pad(x, self.pads, mode="constant", constant_values=x.dtype.type(self.value))

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        idx = tuple((b, -a if a else None, 1) for b, a in self.pads)
        return [apply(Slice(idx), g)]


def pad(x: Any, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """``torch.nn.functional.pad``: ``pad`` lists (left, right) pairs starting from the **last** dim."""
    t = as_tensor(x)
    pad = tuple(int(p) for p in pad)
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported yet (only 'constant')")
    if len(pad) % 2 or len(pad) // 2 > t.ndim:
        raise ValueError(f"pad: {pad} must hold (left, right) pairs for at most {t.ndim} dims")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding {pad} is not supported")
    pads = [(0, 0)] * t.ndim
    for k in range(len(pad) // 2):
        pads[t.ndim - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    if all(p == (0, 0) for p in pads):
        return t
    return apply(Pad(tuple(pads), float(value)), t)


@dataclass(frozen=True)
class Slice(Op):
    """Basic indexing: one ``(start, stop, step)`` triple or an int per leading axis (ints drop the axis)."""

    index: tuple = ()
    name: ClassVar[str] = "slice"

    def _np_index(self) -> tuple:
        return tuple(i if isinstance(i, int) else slice(*i) for i in self.index)

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        out = []
        for ax, d in enumerate(x.shape):
            if ax >= len(self.index):
                out.append(d)
                continue
            i = self.index[ax]
            if isinstance(i, int):
                if d is not None and not -d <= i < d:
                    raise InferError(f"index {i} is out of range for axis {ax} of size {d}")
                continue
            out.append(None if d is None else len(range(*slice(*i).indices(d))))
        return TensorType(tuple(out), x.dtype)

    def perform(self, x):  # type: ignore[no-untyped-def]
        try:
            return x[self._np_index()]
        except IndexError as e:
            from symdl.errors import OpRuntimeError

            raise OpRuntimeError(f"index {self._np_index()} out of range for shape {x.shape}") from e

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [apply(SliceGrad(self.index), g, inputs[0])]


@dataclass(frozen=True)
class SliceGrad(Op):
    """Zeros of ``ref``'s shape with ``g`` written at ``index`` (the adjoint of :class:`Slice`)."""

    index: tuple = ()
    name: ClassVar[str] = "slice_grad"

    def infer(self, g: TensorType, ref: TensorType) -> TensorType:  # type: ignore[override]
        return TensorType(ref.shape, g.dtype)

    def perform(self, g, ref):  # type: ignore[no-untyped-def]
        out = np.zeros(ref.shape, dtype=g.dtype)
        out[Slice(self.index)._np_index()] = g
        return out

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        return [apply(Slice(self.index), gg), DISCONNECTED]


def getitem(x: Tensor, index: Any) -> Tensor:
    """``x[index]`` with ints, slices, ``...`` and ``None`` (new axis). Tensor (advanced) indices are not supported."""
    if not isinstance(index, tuple):
        index = (index,)
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    if sum(1 for i in index if i is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis")
    expanded: list[Any] = []
    for i in index:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (x.ndim - n_real))
        else:
            expanded.append(i)
    if sum(1 for i in expanded if i is not None) > x.ndim:
        from symdl.errors import ShapeError, user_frame, where

        raise ShapeError(f"getitem: too many indices {index} for a {x.ndim}-d tensor{where(user_frame())}")
    new_axes, spec, out_axis = [], [], 0
    for i in expanded:
        if i is None:
            new_axes.append(out_axis)
            out_axis += 1
        elif isinstance(i, (bool, np.bool_)):
            raise TypeError(
                f"getitem: boolean index {i!r} is not supported (NumPy/PyTorch read it as a mask, not as the int 0/1)"
            )
        elif isinstance(i, (int, np.integer)):
            spec.append(int(i))
        elif isinstance(i, slice):
            spec.append((i.start, i.stop, i.step))
            out_axis += 1
        else:
            raise TypeError(
                f"getitem: unsupported index {i!r} (ints, slices, ... and None are supported; "
                "use symdl.embedding/gather for tensor indices)"
            )
    t = x
    if any(s != (None, None, None) for s in spec):
        t = apply(Slice(tuple(spec)), x)
    if new_axes:
        t = expand_dims(t, tuple(new_axes))
    return t
