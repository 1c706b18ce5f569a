"""Elementwise ops: NumPy broadcasting, one common dtype for all operands (casts are explicit nodes).

Each op is a tiny definition: NumPy ``compute`` and a symbolic ``grad``. Shapes and dtypes are inferred by
the :class:`Elementwise` base. Cotangents may keep the broadcast output shape: the autodiff driver reduces
them to each input's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from symdl.graph import BOOL, InferError, Op, Tensor, TensorType, apply, as_dtype, constant, is_float
from symdl.ops.base import (
    DISCONNECTED,
    GradResult,
    NotDifferentiable,
    as_tensor,
    broadcast_shapes,
    float_operand,
    promote,
    same_dtype,
)


@dataclass(frozen=True)
class Elementwise(Op):
    """Base of elementwise ops. Subclasses define ``compute`` (NumPy) and ``grad``."""

    float_only: ClassVar[bool] = False
    bool_output: ClassVar[bool] = False

    def infer(self, *types: TensorType) -> TensorType:
        shape = broadcast_shapes(*(t.shape for t in types))
        dt = same_dtype(types, self.name)
        if self.float_only and not is_float(dt):
            raise InferError(f"{self.name} needs floating-point operands, got {dt}")
        return TensorType(shape, BOOL if self.bool_output else dt)

    def compute(self, *values: np.ndarray) -> Any:
        raise NotImplementedError

    def perform(self, *values: np.ndarray) -> np.ndarray:
        out = self.compute(*values)
        dtype = BOOL if self.bool_output else values[-1].dtype
        return np.asarray(out).astype(dtype, copy=False)


# ----------------------------------------------------------------------------------------------------
# Binary arithmetic
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Add(Elementwise):
    name: ClassVar[str] = "add"

    def compute(self, a, b):  # type: ignore[no-untyped-def]
        return a + b

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [g, g]


@dataclass(frozen=True)
class Sub(Elementwise):
    name: ClassVar[str] = "sub"

    def compute(self, a, b):  # type: ignore[no-untyped-def]
        return a - b

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [g, neg(g)]


@dataclass(frozen=True)
class Mul(Elementwise):
    name: ClassVar[str] = "mul"

    def compute(self, a, b):  # type: ignore[no-untyped-def]
        return a * b

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        a, b = inputs
        return [mul(g, b), mul(g, a)]


@dataclass(frozen=True)
class Div(Elementwise):
    name: ClassVar[str] = "div"
    float_only: ClassVar[bool] = True

    def compute(self, a, b):  # type: ignore[no-untyped-def]
        with np.errstate(divide="ignore", invalid="ignore"):
            return a / b

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        a, b = inputs
        return [div(g, b), neg(div(mul(g, output), b))]


@dataclass(frozen=True)
class Pow(Elementwise):
    name: ClassVar[str] = "pow"

    def compute(self, a, b):  # type: ignore[no-untyped-def]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.power(a, b)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        a, b = inputs
        if not is_float(a.dtype):
            return [NotDifferentiable("integer power"), NotDifferentiable("integer power")]
        # d/da a**b = b * a**(b-1); written without a**(b-1) when b is a constant so that x**2 stays exact
        if b.is_leaf and b.op.name == "constant" and b.value.size == 1:
            bv = float(b.value.reshape(()))
            da = mul(g, mul(b, pow(a, bv - 1.0))) if bv != 2.0 else mul(g, mul(a, 2.0))
        else:
            da = mul(g, mul(b, pow(a, sub(b, 1.0))))
        db = mul(g, mul(output, log(a)))
        return [da, db]


@dataclass(frozen=True)
class Maximum(Elementwise):
    """Elementwise maximum; at ties the gradient is split evenly between both operands (as PyTorch)."""

    name: ClassVar[str] = "maximum"

    def compute(self, a, b):  # type: ignore[no-untyped-def]
        return np.maximum(a, b)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        a, b = inputs
        return _tie_split(g, greater(a, b), equal(a, b))


@dataclass(frozen=True)
class Minimum(Elementwise):
    name: ClassVar[str] = "minimum"

    def compute(self, a, b):  # type: ignore[no-untyped-def]
        return np.minimum(a, b)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        a, b = inputs
        return _tie_split(g, less(a, b), equal(a, b))


def _tie_split(g: Tensor, a_wins: Tensor, tie: Tensor) -> list[GradResult]:
    half = mul(cast(tie, g.dtype), 0.5)
    wa = add(cast(a_wins, g.dtype), half)
    ga = mul(g, wa)
    return [ga, sub(g, ga)]


# ----------------------------------------------------------------------------------------------------
# Comparisons and logic (bool outputs; piecewise constant, so their gradients are zero: disconnected)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare(Elementwise):
    bool_output: ClassVar[bool] = True
    fn: ClassVar[Any] = None

    def compute(self, a, b):  # type: ignore[no-untyped-def]
        return type(self).fn(a, b)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [DISCONNECTED, DISCONNECTED]


@dataclass(frozen=True)
class Less(Compare):
    name: ClassVar[str] = "less"
    fn: ClassVar[Any] = np.less


@dataclass(frozen=True)
class LessEqual(Compare):
    name: ClassVar[str] = "less_equal"
    fn: ClassVar[Any] = np.less_equal


@dataclass(frozen=True)
class Greater(Compare):
    name: ClassVar[str] = "greater"
    fn: ClassVar[Any] = np.greater


@dataclass(frozen=True)
class GreaterEqual(Compare):
    name: ClassVar[str] = "greater_equal"
    fn: ClassVar[Any] = np.greater_equal


@dataclass(frozen=True)
class Equal(Compare):
    name: ClassVar[str] = "equal"
    fn: ClassVar[Any] = np.equal


@dataclass(frozen=True)
class NotEqual(Compare):
    name: ClassVar[str] = "not_equal"
    fn: ClassVar[Any] = np.not_equal


@dataclass(frozen=True)
class LogicalAnd(Compare):
    name: ClassVar[str] = "logical_and"
    fn: ClassVar[Any] = np.logical_and


@dataclass(frozen=True)
class LogicalOr(Compare):
    name: ClassVar[str] = "logical_or"
    fn: ClassVar[Any] = np.logical_or


@dataclass(frozen=True)
class LogicalNot(Elementwise):
    name: ClassVar[str] = "logical_not"
    bool_output: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        return np.logical_not(a)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [DISCONNECTED]


# ----------------------------------------------------------------------------------------------------
# Unary math
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Neg(Elementwise):
    name: ClassVar[str] = "neg"

    def compute(self, a):  # type: ignore[no-untyped-def]
        return -a

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [neg(g)]


@dataclass(frozen=True)
class Exp(Elementwise):
    name: ClassVar[str] = "exp"
    float_only: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        with np.errstate(over="ignore"):
            return np.exp(a)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [mul(g, output)]


@dataclass(frozen=True)
class Log(Elementwise):
    name: ClassVar[str] = "log"
    float_only: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(a)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [div(g, inputs[0])]


@dataclass(frozen=True)
class Log1p(Elementwise):
    name: ClassVar[str] = "log1p"
    float_only: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log1p(a)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [div(g, add(inputs[0], 1.0))]


@dataclass(frozen=True)
class Sqrt(Elementwise):
    name: ClassVar[str] = "sqrt"
    float_only: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        with np.errstate(invalid="ignore"):
            return np.sqrt(a)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [div(g, mul(output, 2.0))]


@dataclass(frozen=True)
class Abs(Elementwise):
    name: ClassVar[str] = "abs"

    def compute(self, a):  # type: ignore[no-untyped-def]
        return np.abs(a)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [mul(g, sign(inputs[0]))]


@dataclass(frozen=True)
class Sign(Elementwise):
    name: ClassVar[str] = "sign"

    def compute(self, a):  # type: ignore[no-untyped-def]
        return np.sign(a)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [DISCONNECTED]


@dataclass(frozen=True)
class Square(Elementwise):
    name: ClassVar[str] = "square"

    def compute(self, a):  # type: ignore[no-untyped-def]
        return a * a

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [mul(g, mul(inputs[0], 2.0))]


@dataclass(frozen=True)
class Relu(Elementwise):
    name: ClassVar[str] = "relu"

    def compute(self, a):  # type: ignore[no-untyped-def]
        return np.maximum(a, 0)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [where(greater(inputs[0], 0.0), g, 0.0)]


@dataclass(frozen=True)
class LeakyRelu(Elementwise):
    negative_slope: float = 0.01
    name: ClassVar[str] = "leaky_relu"
    float_only: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        return np.where(a > 0, a, a * a.dtype.type(self.negative_slope))

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [where(greater(inputs[0], 0.0), g, mul(g, self.negative_slope))]


@dataclass(frozen=True)
class Elu(Elementwise):
    alpha: float = 1.0
    name: ClassVar[str] = "elu"
    float_only: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        alpha = a.dtype.type(self.alpha)
        return np.where(a > 0, a, alpha * np.expm1(np.minimum(a, 0)))

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [where(greater(inputs[0], 0.0), g, mul(g, add(output, self.alpha)))]


@dataclass(frozen=True)
class Sigmoid(Elementwise):
    name: ClassVar[str] = "sigmoid"
    float_only: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        e = np.exp(-np.abs(a))  # stable for both signs
        return np.where(a >= 0, 1 / (1 + e), e / (1 + e))

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [mul(g, mul(output, sub(1.0, output)))]


@dataclass(frozen=True)
class Tanh(Elementwise):
    name: ClassVar[str] = "tanh"
    float_only: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        return np.tanh(a)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [mul(g, sub(1.0, square(output)))]


@dataclass(frozen=True)
class Softplus(Elementwise):
    """PyTorch's softplus: ``log(1 + exp(beta x)) / beta``, and ``x`` where ``beta x > threshold``."""

    beta: float = 1.0
    threshold: float = 20.0
    name: ClassVar[str] = "softplus"
    float_only: ClassVar[bool] = True

    def compute(self, a):  # type: ignore[no-untyped-def]
        bx = a * a.dtype.type(self.beta)
        soft = (np.maximum(bx, 0) + np.log1p(np.exp(-np.abs(bx)))) / a.dtype.type(self.beta)
        return np.where(bx > self.threshold, a, soft)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x = inputs[0]
        bx = mul(x, self.beta)
        return [where(greater(bx, self.threshold), g, mul(g, sigmoid(bx)))]


@dataclass(frozen=True)
class Clip(Elementwise):
    """``clamp(x, min, max)``; the gradient passes where ``min <= x <= max`` (inclusive, as PyTorch)."""

    min: float | None = None
    max: float | None = None
    name: ClassVar[str] = "clip"

    def compute(self, a):  # type: ignore[no-untyped-def]
        out = a
        if self.min is not None:
            out = np.maximum(out, a.dtype.type(self.min))
        if self.max is not None:
            out = np.minimum(out, a.dtype.type(self.max))
        return out

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x = inputs[0]
        inside = None
        if self.min is not None:
            inside = greater_equal(x, self.min)
        if self.max is not None:
            le = less_equal(x, self.max)
            inside = le if inside is None else logical_and(inside, le)
        return [g if inside is None else where(inside, g, 0.0)]


@dataclass(frozen=True)
class Where(Elementwise):
    name: ClassVar[str] = "where"

    def infer(self, *types: TensorType) -> TensorType:
        cond, a, b = types
        if cond.dtype != BOOL:
            raise InferError(f"condition must be bool, got {cond.dtype}")
        if a.dtype != b.dtype:
            raise InferError(f"both branches must share one dtype (got {a.dtype}, {b.dtype})")
        return TensorType(broadcast_shapes(cond.shape, a.shape, b.shape), a.dtype)

    def compute(self, c, a, b):  # type: ignore[no-untyped-def]
        return np.where(c, a, b)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        c = inputs[0]
        return [DISCONNECTED, where(c, g, 0.0), where(c, 0.0, g)]


@dataclass(frozen=True)
class Cast(Elementwise):
    dtype: np.dtype = np.dtype("float32")
    name: ClassVar[str] = "cast"

    def infer(self, *types: TensorType) -> TensorType:
        return TensorType(types[0].shape, self.dtype)

    def perform(self, a):  # type: ignore[no-untyped-def]
        return a.astype(self.dtype)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        x = inputs[0]
        if not is_float(x.dtype) or not is_float(self.dtype):
            return [DISCONNECTED]
        return [cast(g, x.dtype)]


@dataclass(frozen=True)
class FillLike(Op):
    """A tensor of ``ref``'s shape filled with ``value`` (dims known only at run time are taken from ``ref``)."""

    value: float = 0.0
    dtype: np.dtype | None = None
    name: ClassVar[str] = "fill_like"

    def infer(self, ref: TensorType) -> TensorType:  # type: ignore[override]
        return TensorType(ref.shape, self.dtype or ref.dtype)

    def perform(self, ref):  # type: ignore[no-untyped-def]
        return np.full(ref.shape, self.value, dtype=self.dtype or ref.dtype)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [DISCONNECTED]


@dataclass(frozen=True)
class StopGradient(Elementwise):
    """Identity whose gradient is zero (used for the max-shift of stable log-sum-exp)."""

    name: ClassVar[str] = "stop_gradient"

    def compute(self, a):  # type: ignore[no-untyped-def]
        return a

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [DISCONNECTED]


# ----------------------------------------------------------------------------------------------------
# User-facing functions
# ----------------------------------------------------------------------------------------------------


def _binary(op: Op, a: Any, b: Any) -> Tensor:
    x, y = promote(a, b, what=op.name)
    return apply(op, x, y)


def _binary_float(op: Op, a: Any, b: Any) -> Tensor:
    x, y = promote(a, b, what=op.name)
    if not is_float(x.dtype):
        x, y = cast(x, "float32"), cast(y, "float32")
    return apply(op, x, y)


def add(a: Any, b: Any) -> Tensor:
    """``a + b`` with NumPy broadcasting."""
    return _binary(Add(), a, b)


def sub(a: Any, b: Any) -> Tensor:
    """``a - b``."""
    return _binary(Sub(), a, b)


def mul(a: Any, b: Any) -> Tensor:
    """``a * b``."""
    return _binary(Mul(), a, b)


def div(a: Any, b: Any) -> Tensor:
    """True division ``a / b`` (integers are promoted to float32, like PyTorch)."""
    return _binary_float(Div(), a, b)


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001 - the op's name
    """``a ** b``."""
    return _binary(Pow(), a, b)


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum (gradient split evenly at ties)."""
    return _binary(Maximum(), a, b)


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise minimum (gradient split evenly at ties)."""
    return _binary(Minimum(), a, b)


def less(a: Any, b: Any) -> Tensor:
    """``a < b`` elementwise (bool)."""
    return _binary(Less(), a, b)


def less_equal(a: Any, b: Any) -> Tensor:
    """``a <= b`` elementwise (bool)."""
    return _binary(LessEqual(), a, b)


def greater(a: Any, b: Any) -> Tensor:
    """``a > b`` elementwise (bool)."""
    return _binary(Greater(), a, b)


def greater_equal(a: Any, b: Any) -> Tensor:
    """``a >= b`` elementwise (bool)."""
    return _binary(GreaterEqual(), a, b)


def equal(a: Any, b: Any) -> Tensor:
    """``a == b`` elementwise (bool)."""
    return _binary(Equal(), a, b)


def not_equal(a: Any, b: Any) -> Tensor:
    """``a != b`` elementwise (bool)."""
    return _binary(NotEqual(), a, b)


def logical_and(a: Any, b: Any) -> Tensor:
    """Elementwise logical and (operands are cast to bool)."""
    return apply(LogicalAnd(), cast(as_tensor(a), BOOL), cast(as_tensor(b), BOOL))


def logical_or(a: Any, b: Any) -> Tensor:
    """Elementwise logical or (operands are cast to bool)."""
    return apply(LogicalOr(), cast(as_tensor(a), BOOL), cast(as_tensor(b), BOOL))


def logical_not(a: Any) -> Tensor:
    """Elementwise logical not (the operand is cast to bool)."""
    return apply(LogicalNot(), cast(as_tensor(a), BOOL))


def neg(x: Any) -> Tensor:
    """``-x``."""
    return apply(Neg(), as_tensor(x))


def exp(x: Any) -> Tensor:
    """``e ** x`` (integers are promoted to float32)."""
    return apply(Exp(), float_operand(x, "exp"))


def log(x: Any) -> Tensor:
    """Natural logarithm (NaN below 0, -inf at 0)."""
    return apply(Log(), float_operand(x, "log"))


def log1p(x: Any) -> Tensor:
    """``log(1 + x)``, accurate near 0."""
    return apply(Log1p(), float_operand(x, "log1p"))


def sqrt(x: Any) -> Tensor:
    """Square root (its gradient is inf at 0)."""
    return apply(Sqrt(), float_operand(x, "sqrt"))


def abs(x: Any) -> Tensor:  # noqa: A001 - the op's name
    """``|x|``; its gradient at 0 is 0, as PyTorch's."""
    return apply(Abs(), as_tensor(x))


def sign(x: Any) -> Tensor:
    """``|x|``; its gradient at 0 is 0, as PyTorch's."""
    return apply(Sign(), as_tensor(x))


def square(x: Any) -> Tensor:
    """``x * x``."""
    return apply(Square(), as_tensor(x))


def relu(x: Any) -> Tensor:
    """``max(x, 0)``; its gradient at 0 is 0, as PyTorch's."""
    return apply(Relu(), as_tensor(x))


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    """``x`` where ``x > 0``, else ``negative_slope * x``."""
    return apply(LeakyRelu(float(negative_slope)), float_operand(x, "leaky_relu"))


def elu(x: Any, alpha: float = 1.0) -> Tensor:
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    return apply(Elu(float(alpha)), float_operand(x, "elu"))


def sigmoid(x: Any) -> Tensor:
    """Logistic function ``1 / (1 + exp(-x))`` (stable for large ``|x|``)."""
    return apply(Sigmoid(), float_operand(x, "sigmoid"))


def tanh(x: Any) -> Tensor:
    """Hyperbolic tangent."""
    return apply(Tanh(), float_operand(x, "tanh"))


def softplus(x: Any, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """PyTorch's softplus: ``log(1 + exp(beta x)) / beta``; ``x`` where ``beta x > threshold``."""
    return apply(Softplus(float(beta), float(threshold)), float_operand(x, "softplus"))


def clip(x: Any, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002 - torch's names
    """``clamp(x, min, max)``; ``min``/``max`` may be numbers or tensors (then built from maximum/minimum)."""
    t = as_tensor(x)
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        # as torch.clamp with tensor bounds: x keeps the whole gradient where min <= x <= max (inclusive, no
        # tie split), a bound gets it where it is active; NaN in x propagates
        if min is not None:
            t = where(less(t, min), min, t)
        if max is not None:
            t = where(greater(t, max), max, t)
        return t
    if min is None and max is None:
        raise ValueError("clip: at least one of min and max must be given")
    return apply(Clip(None if min is None else float(min), None if max is None else float(max)), t)


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """``x`` where ``condition`` is true, else ``y`` (broadcasting all three)."""
    c = as_tensor(condition, "where condition")
    if c.dtype != BOOL:
        c = cast(c, BOOL)
    a, b = promote(x, y, what="where")
    return apply(Where(), c, a, b)


def cast(x: Any, dtype: Any) -> Tensor:
    """Convert to ``dtype`` (the only way dtypes change: nothing is cast silently)."""
    t = as_tensor(x)
    dt = as_dtype(dtype, "cast")
    if t.dtype == dt:
        return t
    return apply(Cast(dt), t)


def zeros_like(x: Tensor, dtype: Any = None) -> Tensor:
    """Zeros with ``x``'s (run-time) shape; ``dtype`` defaults to ``x``'s."""
    return apply(FillLike(0.0, None if dtype is None else as_dtype(dtype)), x)


def ones_like(x: Tensor, dtype: Any = None) -> Tensor:
    """Ones with ``x``'s (run-time) shape; ``dtype`` defaults to ``x``'s."""
    return apply(FillLike(1.0, None if dtype is None else as_dtype(dtype)), x)


def full_like(x: Tensor, value: float, dtype: Any = None) -> Tensor:
    """``value`` everywhere, with ``x``'s (run-time) shape; ``dtype`` defaults to ``x``'s."""
    return apply(FillLike(float(value), None if dtype is None else as_dtype(dtype)), x)


def stop_gradient(x: Any) -> Tensor:
    """Identity in the forward pass; blocks gradients."""
    return apply(StopGradient(), as_tensor(x))


def scalar(value: float, like: Tensor) -> Tensor:
    """A 0-d constant of ``like``'s dtype."""
    return constant(np.asarray(value, dtype=like.dtype))
