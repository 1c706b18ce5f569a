"""The graph IR: typed, immutable, hash-consed tensor nodes.

A :class:`Tensor` is one value of the static graph: the op that computes it, the input tensors, its static
type (shape with ``None`` for dims known only at run time, and dtype), an optional name, the user frame
that created it and its role (``"forward"`` or ``"backward"``, for rendering).

Nodes are *hash-consed*: applying the same op to the same inputs returns the existing node, so
common-subexpression elimination is free and nodes can key caches. Leaves (placeholders, parameters,
constants) are always new nodes. Rewrites never mutate nodes; they build new ones
(see :mod:`compiler.rewrite`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from symdl.errors import Frame, ShapeError, SymdlError, user_frame, where

if TYPE_CHECKING:
    from symdl.ops.base import GradResult

Shape = tuple  # tuple[int | None, ...]

FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))
INT_DTYPES = (np.dtype("int8"), np.dtype("int16"), np.dtype("int32"), np.dtype("int64"), np.dtype("uint8"))
BOOL = np.dtype("bool")
SUPPORTED_DTYPES = (*FLOAT_DTYPES, *INT_DTYPES, BOOL, np.dtype("uint64"))


def as_dtype(dtype: Any, what: str = "dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{what}: {dtype!r} is not a dtype") from e
    if dt not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise TypeError(f"{what}: dtype {dt} is not supported (supported: {names})")
    return dt


def is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f"


@dataclass(frozen=True)
class TensorType:
    """Static type of a tensor: a shape whose dims are ints or ``None`` (unknown until run time), and a dtype."""

    shape: Shape
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


def describe(t: Tensor | TensorType) -> str:
    tt = t.type if isinstance(t, Tensor) else t
    dims = ", ".join("None" if d is None else str(d) for d in tt.shape)
    if len(tt.shape) == 1:
        dims += ","
    return f"({dims}) {tt.dtype}"


# ----------------------------------------------------------------------------------------------------
# Build context: who is creating nodes right now (forward user code or the autodiff pass)
# ----------------------------------------------------------------------------------------------------


@dataclass
class _BuildContext:
    role: str = "forward"
    frame: Frame | None = None  # forced frame (autodiff attributes backward nodes to the forward op's line)


_context = _BuildContext()


@contextlib.contextmanager
def build_context(role: str, frame: Frame | None) -> Iterator[None]:
    global _context
    saved = _context
    _context = _BuildContext(role, frame)
    try:
        yield
    finally:
        _context = saved


def current_role() -> str:
    return _context.role


# ----------------------------------------------------------------------------------------------------
# Tensor
# ----------------------------------------------------------------------------------------------------

_ids = itertools.count()
_cons: weakref.WeakValueDictionary[tuple, Tensor] = weakref.WeakValueDictionary()


class Tensor:
    """A symbolic tensor: one node of the static graph.

    Supports Python operators (``+ - * / ** @``, unary ``-``, comparisons giving bool tensors), indexing with
    ints and slices, ``.T``, ``.reshape``, ``.sum/.mean/.max/.min``. Tensors hash by identity; ``==`` builds
    an elementwise comparison node, like PyTorch.
    """

    __slots__ = ("op", "inputs", "type", "name", "frame", "role", "id", "__weakref__")
    __array_priority__ = 1000  # numpy scalars/arrays defer to our reflected operators

    op: Any
    inputs: tuple[Tensor, ...]
    type: TensorType
    name: str | None
    frame: Frame | None
    role: str
    id: int

    def __init__(
        self,
        op: Any,
        inputs: tuple[Tensor, ...],
        ttype: TensorType,
        name: str | None = None,
        frame: Frame | None = None,
        role: str = "forward",
    ) -> None:
        self.op = op
        self.inputs = inputs
        self.type = ttype
        self.name = name
        self.frame = frame
        self.role = role
        self.id = next(_ids)

    # --- static information ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int | None, ...]:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.type.shape)

    @property
    def is_leaf(self) -> bool:
        return not self.inputs and isinstance(self.op, LeafOp)

    def label(self) -> str:
        """A short human name: the tensor's name or ``op#id``."""
        return self.name if self.name is not None else f"{self.op.name}#{self.id}"

    def __repr__(self) -> str:
        nm = f" name={self.name!r}" if self.name else ""
        return f"<Tensor {self.op.name}#{self.id}{nm} {self.type}>"

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of a symbolic tensor ({self.label()}) is unknown until the graph runs; "
            "use symdl.where(...) for data-dependent choices"
        )

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        d = self.shape[0]
        if d is None:
            raise TypeError(f"len() of {self.label()}: its first dim is not known until run time")
        return d

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise TypeError("symbolic tensors are not iterable; index them with x[i]")

    # --- operators (implemented in symdl.ops; imported lazily to avoid cycles) -------------------
    def __add__(self, other: Any) -> Tensor:
        return _ops().add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops().add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops().sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops().sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops().mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops().mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops().div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops().div(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return _ops().pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return _ops().pow(other, self)

    def __matmul__(self, other: Any) -> Tensor:
        return _ops().matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops().matmul(other, self)

    def __neg__(self) -> Tensor:
        return _ops().neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _ops().abs(self)

    def __lt__(self, other: Any) -> Tensor:
        return _ops().less(self, other)

    def __le__(self, other: Any) -> Tensor:
        return _ops().less_equal(self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _ops().greater(self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _ops().greater_equal(self, other)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ops().equal(self, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ops().not_equal(self, other)

    def __getitem__(self, index: Any) -> Tensor:
        return _ops().getitem(self, index)

    @property
    def T(self) -> Tensor:  # noqa: N802 - NumPy's name
        return _ops().transpose(self)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops().reshape(self, shape)

    def transpose(self, *axes: Any) -> Tensor:
        return _ops().transpose(self, *axes)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _ops().flatten(self, start_dim, end_dim)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().max(self, axis=axis, keepdims=keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops().min(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return _ops().argmax(self, axis=axis, keepdims=keepdims)

    def var(self, axis: Any = None, keepdims: bool = False, correction: int = 1) -> Tensor:
        return _ops().var(self, axis=axis, keepdims=keepdims, correction=correction)

    def astype(self, dtype: Any) -> Tensor:
        return _ops().cast(self, dtype)


def _ops():  # type: ignore[no-untyped-def]
    import symdl.ops as ops

    return ops


# ----------------------------------------------------------------------------------------------------
# Ops: the base class (every op is a frozen dataclass whose fields are its hashable props)
# ----------------------------------------------------------------------------------------------------


class Op:
    """Base of every op. Subclasses are ``@dataclass(frozen=True)``; their fields are the op's props.

    The contract (one op = one small definition):

    - ``infer(*types) -> TensorType``: static shape/dtype of the output; raise :class:`InferError` with a
      plain message on bad operands (the op name, operand types and user line are added for you).
    - ``perform(*arrays) -> np.ndarray``: the NumPy reference implementation (also the constant folder).
    - ``grad(inputs, output, g) -> list``: one entry per input: a Tensor (the cotangent, in any
      broadcast-compatible shape: the autodiff driver reduces broadcast axes), :data:`DISCONNECTED` or
      :class:`NotDifferentiable`.
    """

    name: ClassVar[str] = "op"

    def infer(self, *types: TensorType) -> TensorType:
        raise NotImplementedError(f"{type(self).__name__}.infer")

    def perform(self, *values: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.perform")

    def grad(self, inputs: tuple[Tensor, ...], output: Tensor, g: Tensor) -> list[GradResult]:
        from symdl.ops.base import NotDifferentiable

        return [NotDifferentiable(f"{self.name} has no gradient")] * len(inputs)

    def props_str(self) -> str:
        # dataclasses.fields() skips ClassVar pseudo-fields (name, float_only ...), which
        # __dataclass_fields__ also lists
        fields = [f.name for f in dataclasses.fields(self)] if dataclasses.is_dataclass(self) else []
        parts = []
        for f in fields:
            v = getattr(self, f)
            if isinstance(v, Tensor):
                v = v.label()
            elif isinstance(v, tuple) and any(isinstance(e, Tensor) for e in v):
                v = tuple(e.label() if isinstance(e, Tensor) else e for e in v)
            parts.append(f"{f}={v}")
        return ", ".join(parts)


class InferError(ShapeError):
    """Raised by ``Op.infer`` with a plain message; :func:`apply` turns it into a full :class:`ShapeError`."""


class LeafOp(Op):
    """Placeholders, parameters and constants: nodes with no inputs whose value comes from outside."""

    def infer(self, *types: TensorType) -> TensorType:  # pragma: no cover - leaves are built directly
        raise SymdlError("leaf ops have no inference")


@dataclass(frozen=True, eq=False)
class PlaceholderOp(LeafOp):
    name: ClassVar[str] = "placeholder"


@dataclass(frozen=True, eq=False)
class ParameterOp(LeafOp):
    name: ClassVar[str] = "parameter"


@dataclass(frozen=True, eq=False)
class ConstantOp(LeafOp):
    name: ClassVar[str] = "constant"


def apply(op: Op, *inputs: Tensor, name: str | None = None) -> Tensor:
    """Create (or find, by hash-consing) the node ``op(*inputs)``.

    Static inference errors are raised here, naming the op, the operand shapes and dtypes and the user's
    file:line.
    """
    for i in inputs:
        if not isinstance(i, Tensor):
            raise TypeError(f"{op.name}: input {i!r} is not a symbolic Tensor")
    key = (op, tuple(id(i) for i in inputs))
    try:
        found = _cons.get(key)
    except TypeError as e:  # unhashable prop value
        raise TypeError(f"{op.name}: op props must be hashable ({op!r})") from e
    if found is not None:
        if name is not None and found.name is None:
            found.name = name
        return found
    frame = _context.frame or user_frame()
    try:
        ttype = op.infer(*(i.type for i in inputs))
    except InferError as e:
        operands = ", ".join(describe(i) for i in inputs)
        props = op.props_str()
        props = f" [{props}]" if props else ""
        raise ShapeError(f"{op.name}{props}: {e}; operands: {operands}{where(frame)}") from None
    node = Tensor(op, tuple(inputs), ttype, name=name, frame=frame, role=_context.role)
    _cons[key] = node
    return node


def rebuild(op: Op, inputs: Sequence[Tensor], like: Tensor) -> Tensor:
    """Apply ``op`` to ``inputs`` keeping the name, frame and role of ``like`` (used by rewrites)."""
    with build_context(like.role, like.frame):
        return apply(op, *inputs, name=like.name)


# ----------------------------------------------------------------------------------------------------
# Leaves
# ----------------------------------------------------------------------------------------------------


class Parameter(Tensor):
    """A named variable holding a NumPy array. Compiled functions read it and may update it.

    A device target may hold the newest value (after a cuda training step): ``_pull`` is then set and the host
    array is brought up to date on the next read of :attr:`value` (or by a CPU function that binds it)."""

    __slots__ = ("_value", "trainable", "_dropout_streams", "_pull")

    def __init__(self, value: Any, name: str | None = None, trainable: bool = True) -> None:
        arr = np.array(value, copy=True)
        if arr.dtype == np.float64 and not isinstance(value, np.ndarray):
            arr = arr.astype(np.float32)  # Python floats/lists default to float32, like torch
        dt = as_dtype(arr.dtype, f"parameter {name!r}")
        super().__init__(ParameterOp(), (), TensorType(tuple(arr.shape), dt), name=name, frame=user_frame())
        self._value = arr
        self.trainable = bool(trainable)
        self._dropout_streams = 0
        self._pull: Any = None  # callable(p) that copies a newer device value into _value and clears itself

    @property
    def value(self) -> np.ndarray:
        if self._pull is not None:
            self._pull(self)
        return self._value

    def host_value(self) -> np.ndarray:
        """The host array, brought up to date first if a device holds a newer value (same as :attr:`value`)."""
        return self.value

    @value.setter
    def value(self, new: Any) -> None:
        arr = np.asarray(new)
        if arr.shape != self.shape:
            raise ValueError(f"parameter {self.label()}: new value has shape {arr.shape}, expected {self.shape}")
        if arr.dtype != self.dtype:
            raise ValueError(
                f"parameter {self.label()}: new value has dtype {arr.dtype}, expected {self.dtype} (cast it explicitly)"
            )
        self._pull = None  # the new value wins over any newer device copy (uploaded on the device's next use)
        self._value = np.array(arr, copy=True)

    def __repr__(self) -> str:
        return f"<Parameter {self.label()} {self.type}{'' if self.trainable else ' (not trainable)'}>"


class Constant(Tensor):
    """A constant array baked into the graph."""

    __slots__ = ("value",)

    def __init__(self, value: np.ndarray, name: str | None = None) -> None:
        arr = np.array(value, copy=True)
        arr.setflags(write=False)
        dt = as_dtype(arr.dtype, "constant")
        super().__init__(
            ConstantOp(), (), TensorType(tuple(arr.shape), dt), name=name, frame=user_frame(), role=_context.role
        )
        self.value = arr

    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.value.size == 1:
            return f"{self.value.reshape(()).item():g}" if is_float(self.dtype) else str(self.value.reshape(()).item())
        return f"constant#{self.id}"


def placeholder(shape: Sequence[int | None], dtype: Any = "float32", name: str | None = None) -> Tensor:
    """A graph input. Any dim may be ``None`` (known only at run time, usually the batch)."""
    if isinstance(shape, int):
        shape = (shape,)
    dims = []
    for d in shape:
        if d is not None and (not isinstance(d, (int, np.integer)) or d < 0):
            raise ShapeError(
                f"placeholder {name!r}: dims must be non-negative ints or None, got {tuple(shape)}{where(user_frame())}"
            )
        dims.append(None if d is None else int(d))
    dt = as_dtype(dtype, f"placeholder {name!r}")
    return Tensor(PlaceholderOp(), (), TensorType(tuple(dims), dt), name=name, frame=user_frame())


def parameter(value: Any, name: str | None = None, trainable: bool = True) -> Parameter:
    """A named variable holding a NumPy array (copied). ``.value`` gives and sets the array."""
    return Parameter(value, name=name, trainable=trainable)


def constant(value: Any, dtype: Any = None, name: str | None = None) -> Tensor:
    """A constant tensor. Python floats become float32 unless ``dtype`` says otherwise."""
    if isinstance(value, Tensor):
        raise TypeError("constant() takes an array, not a symbolic tensor")
    arr = np.asarray(value)
    if dtype is not None:
        arr = arr.astype(as_dtype(dtype))
    elif arr.dtype == np.float64 and not isinstance(value, np.ndarray):
        arr = arr.astype(np.float32)
    return Constant(arr, name=name)


def is_placeholder(t: Tensor) -> bool:
    return isinstance(t.op, PlaceholderOp)


# ----------------------------------------------------------------------------------------------------
# Traversals (iterative: deep graphs must not hit Python's recursion limit)
# ----------------------------------------------------------------------------------------------------


def toposort(roots: Iterable[Tensor]) -> list[Tensor]:
    """All ancestors of ``roots`` (included), inputs before consumers, deterministic order."""
    order: list[Tensor] = []
    state: dict[int, int] = {}  # id -> 1 visiting, 2 done
    for root in roots:
        if state.get(root.id) == 2:
            continue
        stack: list[tuple[Tensor, int]] = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                if state.get(node.id) == 2:
                    continue
                state[node.id] = 1
            if i < len(node.inputs):
                stack.append((node, i + 1))
                child = node.inputs[i]
                if state.get(child.id) != 2:
                    stack.append((child, 0))
            else:
                if state.get(node.id) != 2:
                    state[node.id] = 2
                    order.append(node)
    return order


def consumers(order: Sequence[Tensor]) -> dict[int, list[Tensor]]:
    """For each node id in ``order``, the nodes of ``order`` that take it as an input."""
    out: dict[int, list[Tensor]] = {n.id: [] for n in order}
    for n in order:
        for i in n.inputs:
            if i.id in out and (not out[i.id] or out[i.id][-1] is not n):
                out[i.id].append(n)
    return out


def node_count() -> int:
    """Number of live hash-consed (non-leaf) nodes: useful to check that nothing grows the graph."""
    return len(_cons)
