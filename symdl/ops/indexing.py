"""Integer-index ops: one_hot, embedding (gather rows) and take_class (pick one entry along the class axis).

Every op that reads integer indices checks their range at run time and raises
:class:`symdl.errors.OpRuntimeError` naming the bad value and the valid range (the executor adds the op name and
the user's line): a bad label never becomes a NaN or a silent wrong gather. Entries equal to an op's
``ignore_index`` (when set) are exempt from the check and produce zeros (used by ``nll_loss``).

Integer indices have no gradient: the ops report :class:`NotDifferentiable` for them. The gathers' adjoints are
scatter ops whose own adjoints are the gathers again, so second-order gradients work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from symdl.errors import OpRuntimeError, ShapeError, user_frame
from symdl.errors import where as at
from symdl.graph import BOOL, InferError, Op, Tensor, TensorType, apply, describe, is_float
from symdl.ops.base import DISCONNECTED, NotDifferentiable, as_tensor, normalize_axis
from symdl.ops.elementwise import not_equal, where
from symdl.ops.shape import expand_dims

__all__ = ["one_hot", "embedding", "take_class"]  # op classes stay in this module (not re-exported)

_INDEX_NOT_DIFFERENTIABLE = "integer indices/labels have no gradient"


def _is_int(dtype: np.dtype) -> bool:
    return dtype.kind in "iu"


def _require_int(t: TensorType, what: str) -> None:
    if not _is_int(t.dtype):
        raise InferError(f"{what} must be an integer tensor, got {t.dtype}")


def _check_range(idx: np.ndarray, n: int, noun: str, unit: str, ignore_index: int | None) -> np.ndarray | None:
    """Raise :class:`OpRuntimeError` for the first entry of ``idx`` outside ``[0, n)`` (entries equal to
    ``ignore_index`` excepted). Returns the boolean mask of ignored entries (or None)."""
    ignored = None if ignore_index is None else (idx == ignore_index)
    bad = (idx < 0) | (idx >= n)
    if ignored is not None:
        bad &= ~ignored
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        value = int(idx[pos])
        valid = f"0..{n - 1}" if n > 0 else "none: there are no entries"
        extra = f", or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise OpRuntimeError(
            f"{noun} {value} is out of range for {n} {unit} (valid: {valid}{extra}); "
            f"first at position {list(pos)}, {int(bad.sum())} of {idx.size} entries out of range"
        )
    return ignored


def _merge_dims(a: tuple, b: tuple, what: str) -> tuple:
    out = []
    for i, (p, q) in enumerate(zip(a, b)):
        if p is not None and q is not None and p != q:
            raise InferError(f"{what}: dim {i} differs ({p} vs {q})")
        out.append(p if p is not None else q)
    return tuple(out)


# ----------------------------------------------------------------------------------------------------
# one_hot
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneHot(Op):
    """``labels[..., None] == arange(num_classes)`` as int64; ``num_classes=-1``: ``max(labels) + 1`` at run time."""

    num_classes: int = -1
    name: ClassVar[str] = "one_hot"

    def infer(self, labels: TensorType) -> TensorType:  # type: ignore[override]
        _require_int(labels, "one_hot labels")
        c = None if self.num_classes < 0 else self.num_classes
        return TensorType(labels.shape + (c,), np.dtype("int64"))

    def perform(self, labels):  # type: ignore[no-untyped-def]
        n = self.num_classes
        if n < 0:
            if labels.size == 0:
                raise OpRuntimeError("cannot infer the number of classes (num_classes=-1) from an empty tensor")
            n = int(labels.max()) + 1
            if n <= 0:
                n = 1  # labels are all negative: the range check below names the first one
        _check_range(labels, n, "label", "classes", None)
        return (labels[..., None] == np.arange(n)).astype(np.int64)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [NotDifferentiable(_INDEX_NOT_DIFFERENTIABLE)]


def one_hot(labels: Any, num_classes: int = -1) -> Tensor:
    """``torch.nn.functional.one_hot``: int64 tensor of shape ``labels.shape + (num_classes,)``.

    With ``num_classes=-1`` the number of classes is ``max(labels) + 1``, known only at run time (static dim
    ``None``). Labels outside ``[0, num_classes)`` raise :class:`~symdl.errors.OpRuntimeError` at run time.
    Not differentiable.
    """
    t = as_tensor(labels, "one_hot labels")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < -1:
        raise ValueError(
            f"one_hot: num_classes must be a non-negative int or -1, got {num_classes!r}{at(user_frame())}"
        )
    return apply(OneHot(int(num_classes)), t)


# ----------------------------------------------------------------------------------------------------
# embedding: gather rows
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Embedding(Op):
    """``weight[indices]``: inputs ``(indices, weight)``, ``weight`` of shape ``(V, D)``; output
    ``indices.shape + (D,)``. ``padding_idx`` (normalised, non-negative) gets no gradient; entries equal to
    ``ignore_index`` give zero rows."""

    padding_idx: int | None = None
    ignore_index: int | None = None
    name: ClassVar[str] = "embedding"

    def infer(self, idx: TensorType, weight: TensorType) -> TensorType:  # type: ignore[override]
        _require_int(idx, "embedding indices")
        if weight.ndim != 2:
            raise InferError(f"the weight must be 2-d (num_embeddings, embedding_dim), got rank {weight.ndim}")
        return TensorType(idx.shape + (weight.shape[1],), weight.dtype)

    def perform(self, idx, weight):  # type: ignore[no-untyped-def]
        ignored = _check_range(idx, weight.shape[0], "index", "embedding rows", self.ignore_index)
        if ignored is None:
            return weight[idx]
        if weight.shape[0] == 0:  # every entry is ignored (else the range check failed)
            return np.zeros(idx.shape + weight.shape[1:], weight.dtype)
        out = weight[np.where(ignored, 0, idx)]
        out[ignored] = 0
        return out

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        idx, weight = inputs
        if not is_float(weight.dtype):
            return [NotDifferentiable(_INDEX_NOT_DIFFERENTIABLE), DISCONNECTED]
        dw = apply(EmbeddingGrad(self.padding_idx, self.ignore_index), g, idx, weight)
        return [NotDifferentiable(_INDEX_NOT_DIFFERENTIABLE), dw]


@dataclass(frozen=True)
class EmbeddingGrad(Op):
    """Scatter-add ``g`` (shape ``indices.shape + (D,)``) into zeros shaped like ``weight_ref`` at rows ``indices``;
    the ``padding_idx`` row stays zero; entries equal to ``ignore_index`` are skipped (embedding's adjoint)."""

    padding_idx: int | None = None
    ignore_index: int | None = None
    name: ClassVar[str] = "embedding_grad"

    def infer(self, g: TensorType, idx: TensorType, ref: TensorType) -> TensorType:  # type: ignore[override]
        _require_int(idx, "embedding indices")
        if g.ndim != idx.ndim + 1:
            raise InferError(f"the cotangent must have rank indices.ndim + 1 = {idx.ndim + 1}, got {g.ndim}")
        return TensorType(ref.shape, g.dtype)

    def perform(self, g, idx, ref):  # type: ignore[no-untyped-def]
        ignored = _check_range(idx, ref.shape[0], "index", "embedding rows", self.ignore_index)
        out = np.zeros(ref.shape, dtype=g.dtype)
        flat = idx.reshape(-1)
        rows = g.reshape(flat.size, *ref.shape[1:])
        if ignored is not None:
            keep = ~ignored.reshape(-1)
            flat, rows = flat[keep], rows[keep]
        np.add.at(out, flat, rows)
        if self.padding_idx is not None and self.padding_idx < out.shape[0]:
            out[self.padding_idx] = 0
        return out

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        g, idx, ref = inputs
        gathered = apply(Embedding(None, self.ignore_index), idx, gg)
        if self.padding_idx is not None:
            gathered = where(expand_dims(not_equal(idx, self.padding_idx), -1), gathered, 0.0)
        return [gathered, NotDifferentiable(_INDEX_NOT_DIFFERENTIABLE), DISCONNECTED]


def embedding(input: Any, weight: Any, padding_idx: int | None = None) -> Tensor:  # noqa: A002 - torch's name
    """``torch.nn.functional.embedding``: rows of ``weight`` (shape ``(V, D)``) picked by the integer tensor
    ``input`` (any shape) → shape ``input.shape + (D,)``.

    ``padding_idx`` (negative values count from the end, as PyTorch) marks a row that receives no gradient (its
    value is returned as stored). The gradient with respect to ``weight`` is a scatter-add of the output's
    cotangent. Indices outside ``[0, V)`` raise :class:`~symdl.errors.OpRuntimeError` at run time.
    """
    frame = user_frame()
    idx = as_tensor(input, "embedding input")
    w = as_tensor(weight, "embedding weight")
    if not _is_int(idx.dtype):
        raise ShapeError(f"embedding: the input must hold integer indices, got {describe(idx)}{at(frame)}")
    if w.ndim != 2:
        raise ShapeError(
            f"embedding: the weight must be 2-d (num_embeddings, embedding_dim), got {describe(w)}{at(frame)}"
        )
    if padding_idx is not None:
        v = w.shape[0]
        p = int(padding_idx)
        if p < 0:
            if v is None:
                raise ShapeError(
                    f"embedding: a negative padding_idx ({p}) needs a weight with a static number of "
                    f"rows, got {describe(w)}{at(frame)}"
                )
            if p < -v:
                raise ValueError(f"embedding: padding_idx {p} must be within num_embeddings ({v}){at(frame)}")
            p += v
        elif v is not None and p >= v:
            raise ValueError(f"embedding: padding_idx {p} must be within num_embeddings ({v}){at(frame)}")
        padding_idx = p
    return apply(Embedding(padding_idx, None), idx, w)


# ----------------------------------------------------------------------------------------------------
# take_class: out[n, d...] = x[n, idx[n, d...], d...]
# ----------------------------------------------------------------------------------------------------


def _class_axis_shape(x: tuple, axis: int) -> tuple:
    return x[:axis] + x[axis + 1 :]


def _check_idx_shape(x_shape: tuple, idx_shape: tuple, axis: int, what: str) -> None:
    expect = _class_axis_shape(tuple(x_shape), axis)
    if tuple(idx_shape) != expect:
        raise OpRuntimeError(
            f"{what}: the labels have shape {tuple(idx_shape)}, expected {expect} (the input's "
            f"shape {tuple(x_shape)} without its class axis {axis})"
        )


@dataclass(frozen=True)
class TakeAlongClass(Op):
    """Inputs ``(x, idx)``: ``x`` of shape ``(N, C, d1, ...)``, ``idx`` of ``x``'s shape without the class axis
    ``axis``; ``out[n, d...] = x[n, idx[n, d...], d...]``. Entries equal to ``ignore_index`` give 0."""

    axis: int = 1
    ignore_index: int | None = None
    name: ClassVar[str] = "take_class"

    def infer(self, x: TensorType, idx: TensorType) -> TensorType:  # type: ignore[override]
        _require_int(idx, "the labels")
        if not 0 <= self.axis < x.ndim:
            raise InferError(f"class axis {self.axis} is out of range for a {x.ndim}-d input")
        if idx.ndim != x.ndim - 1:
            raise InferError(
                f"the labels must have rank {x.ndim - 1} (the input's rank without the class axis), got {idx.ndim}"
            )
        shape = _merge_dims(_class_axis_shape(x.shape, self.axis), idx.shape, "labels vs input without class axis")
        return TensorType(shape, x.dtype)

    def perform(self, x, idx):  # type: ignore[no-untyped-def]
        _check_idx_shape(x.shape, idx.shape, self.axis, "take_class")
        n = x.shape[self.axis]
        ignored = _check_range(idx, n, "label", "classes", self.ignore_index)
        if n == 0:
            return np.zeros(idx.shape, dtype=x.dtype)
        safe = idx if ignored is None else np.where(ignored, 0, idx)
        out = np.take_along_axis(x, np.expand_dims(safe.astype(np.intp), self.axis), self.axis)
        out = np.squeeze(out, self.axis)
        if ignored is not None:
            out = np.where(ignored, x.dtype.type(0), out)
        return np.asarray(out, dtype=x.dtype)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x, idx = inputs
        dx = apply(TakeAlongClassGrad(self.axis, self.ignore_index), g, idx, x) if is_float(x.dtype) else DISCONNECTED
        return [dx, NotDifferentiable(_INDEX_NOT_DIFFERENTIABLE)]


@dataclass(frozen=True)
class TakeAlongClassGrad(Op):
    """Inputs ``(g, idx, ref)``: zeros shaped like ``ref`` with ``g[n, d...]`` written at class ``idx[n, d...]``
    (``take_class``'s adjoint; entries equal to ``ignore_index`` are skipped)."""

    axis: int = 1
    ignore_index: int | None = None
    name: ClassVar[str] = "take_class_grad"

    def infer(self, g: TensorType, idx: TensorType, ref: TensorType) -> TensorType:  # type: ignore[override]
        _require_int(idx, "the labels")
        if g.ndim != idx.ndim or idx.ndim != ref.ndim - 1:
            raise InferError("the cotangent and labels must have the rank of ref without its class axis")
        return TensorType(ref.shape, g.dtype)

    def perform(self, g, idx, ref):  # type: ignore[no-untyped-def]
        _check_idx_shape(ref.shape, idx.shape, self.axis, "take_class_grad")
        n = ref.shape[self.axis]
        ignored = _check_range(idx, n, "label", "classes", self.ignore_index)
        out = np.zeros(ref.shape, dtype=g.dtype)
        if n == 0 or idx.size == 0:
            return out
        g = np.broadcast_to(g, idx.shape)
        if ignored is not None:
            g = np.where(ignored, g.dtype.type(0), g)
            idx = np.where(ignored, 0, idx)
        np.put_along_axis(out, np.expand_dims(idx.astype(np.intp), self.axis), np.expand_dims(g, self.axis), self.axis)
        return out

    def grad(self, inputs, output, gg):  # type: ignore[no-untyped-def]
        g, idx, ref = inputs
        return [
            apply(TakeAlongClass(self.axis, self.ignore_index), gg, idx),
            NotDifferentiable(_INDEX_NOT_DIFFERENTIABLE),
            DISCONNECTED,
        ]


def take_class(x: Any, idx: Any, axis: int = 1, ignore_index: int | None = None) -> Tensor:
    """Pick one entry along the class axis: for ``x`` of shape ``(N, C, d1, ...)`` and integer ``idx`` of shape
    ``(N, d1, ...)``, ``out[n, d...] = x[n, idx[n, d...], d...]`` (``axis`` is the class axis; 1 by default, 0 for
    an unbatched ``(C,)`` input with a 0-d ``idx``).

    Entries of ``idx`` equal to ``ignore_index`` give 0 and are exempt from the run-time range check; any other
    label outside ``[0, C)`` raises :class:`~symdl.errors.OpRuntimeError`. Differentiable with respect to ``x``
    (the adjoint scatters the cotangent back), not with respect to ``idx``.
    """
    frame = user_frame()
    t = as_tensor(x, "take_class input")
    i = as_tensor(idx, "take_class labels")
    if t.ndim == 0:
        raise ShapeError(f"take_class: the input must have a class axis, got a 0-d tensor{at(frame)}")
    try:
        ax = normalize_axis(axis, t.ndim, "take_class")
    except InferError as e:
        raise ShapeError(f"take_class: {e}{at(frame)}") from None
    if i.dtype == BOOL or not _is_int(i.dtype):
        raise ShapeError(f"take_class: the labels must be integers, got {describe(i)}{at(frame)}")
    return apply(TakeAlongClass(ax, None if ignore_index is None else int(ignore_index)), t, i)
