"""The scalar expression of every elementwise op, shared by all emitters.

``SCALAR_EXPR[type(op)](op, args, dtype)`` returns one Python expression over the argument names ``args``
(local scalar variables of the generated kernel) that computes the op on one element. ``dtype`` is the
dtype of the operands (the last input's, as :meth:`symdl.ops.elementwise.Elementwise.perform` uses).

The expressions are valid in both Numba CPU and ``numba.cuda`` device code: they use arithmetic, comparisons,
conditional expressions, ``math.*`` functions and the dtype constructors ``F32``, ``F64``, ``I64`` ... that
the generated module defines (:func:`prelude`). Every constant and every ``math.*`` result is wrapped in the
operand dtype's constructor so that float32 loops stay float32 (a bare ``0.5`` would promote to float64) and
small integers wrap around as in NumPy. Semantics equal the NumPy ``perform`` of each op, NaN and inf
included, under ``error_model="numpy"`` (division by zero gives inf/nan instead of raising).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from symdl.ops import elementwise as ew
from symdl.ops.shape import BroadcastLike

ScalarFn = Callable[[object, list[str], np.dtype], str]

#: constructor name of every supported dtype, as the generated module defines it
DTYPE_NAMES: dict[np.dtype, str] = {
    np.dtype("float32"): "F32",
    np.dtype("float64"): "F64",
    np.dtype("int8"): "I8",
    np.dtype("int16"): "I16",
    np.dtype("int32"): "I32",
    np.dtype("int64"): "I64",
    np.dtype("uint8"): "U8",
    np.dtype("uint64"): "U64",
    np.dtype("bool"): "BOOL",
}

# dtypes whose arithmetic Numba widens (to intp) and that must be narrowed back explicitly to wrap like NumPy
_NARROW = {np.dtype(d) for d in ("int8", "int16", "int32", "uint8")}


def prelude() -> str:
    """Import and constructor lines every generated module starts with."""
    lines = ["import math", "", "import numba", "import numpy as np", ""]
    lines += [f"{name} = np.{'bool_' if dt == np.dtype('bool') else dt.name}" for dt, name in DTYPE_NAMES.items()]
    return "\n".join(lines) + "\n"


def ctor(dtype: np.dtype) -> str:
    """The constructor name of ``dtype`` (``F32`` ...)."""
    return DTYPE_NAMES[np.dtype(dtype)]


def lit(value: float, dtype: np.dtype) -> str:
    """A constant of ``dtype`` as an expression: ``F32(0.5)``, ``I64(3)``, ``True``, ``F64(math.inf)``."""
    dt = np.dtype(dtype)
    v = np.asarray(value).astype(dt).item()
    if dt == np.dtype("bool"):
        return "True" if v else "False"
    if dt.kind == "f":
        if math.isnan(v):
            text = "math.nan"
        elif math.isinf(v):
            text = "math.inf" if v > 0 else "-math.inf"
        else:
            text = repr(float(v))
    else:
        text = repr(int(v))
    return f"{ctor(dt)}({text})"


def _is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def _wrap(expr: str, dtype: np.dtype) -> str:
    """Narrow ``expr`` back to ``dtype`` where Numba would have widened it."""
    return f"{ctor(dtype)}({expr})" if np.dtype(dtype) in _NARROW else f"({expr})"


#: float32 functions emitted by name; every target's generated module must define them (the CPU target
#: imports vectorisable versions from ``compiler/codegen/cpu/fastmath.py``)
F32_FUNCTIONS = {"exp": "exp_f32", "tanh": "tanh_f32"}


def _math(fn: str, x: str, dtype: np.dtype) -> str:
    if np.dtype(dtype) == np.float32 and fn in F32_FUNCTIONS:
        return f"{F32_FUNCTIONS[fn]}({x})"
    return f"{ctor(dtype)}(math.{fn}({x}))"


def _is_nan(x: str, dtype: np.dtype) -> str:
    """A test that is true exactly when ``x`` is NaN (constant False for non-float dtypes)."""
    return f"{x} != {x}" if _is_float(dtype) else "False"


# ----------------------------------------------------------------------------------------------------
# Arithmetic
# ----------------------------------------------------------------------------------------------------


def _add(op: object, a: list[str], dt: np.dtype) -> str:
    if dt == np.dtype("bool"):
        return f"({a[0]} or {a[1]})"
    return _wrap(f"{a[0]} + {a[1]}", dt)


def _sub(op: object, a: list[str], dt: np.dtype) -> str:
    return _wrap(f"{a[0]} - {a[1]}", dt)


def _mul(op: object, a: list[str], dt: np.dtype) -> str:
    if dt == np.dtype("bool"):
        return f"({a[0]} and {a[1]})"
    return _wrap(f"{a[0]} * {a[1]}", dt)


def _div(op: object, a: list[str], dt: np.dtype) -> str:
    return f"({a[0]} / {a[1]})"


def _pow(op: object, a: list[str], dt: np.dtype) -> str:
    return f"{ctor(dt)}({a[0]} ** {a[1]})"


def _maximum(op: object, a: list[str], dt: np.dtype) -> str:
    x, y = a
    if _is_float(dt):  # NaN in either operand propagates, like np.maximum
        return f"({x} if ({x} >= {y} or {x} != {x}) else {y})"
    return f"({x} if {x} >= {y} else {y})"


def _minimum(op: object, a: list[str], dt: np.dtype) -> str:
    x, y = a
    if _is_float(dt):
        return f"({x} if ({x} <= {y} or {x} != {x}) else {y})"
    return f"({x} if {x} <= {y} else {y})"


def _neg(op: object, a: list[str], dt: np.dtype) -> str:
    return _wrap(f"-{a[0]}", dt)


def _square(op: object, a: list[str], dt: np.dtype) -> str:
    return _mul(op, [a[0], a[0]], dt)


def _abs(op: object, a: list[str], dt: np.dtype) -> str:
    x = a[0]
    if _is_float(dt):
        return _math("fabs", x, dt)
    if dt == np.dtype("bool") or dt.kind == "u":
        return x
    return _wrap(f"{x} if {x} >= 0 else -{x}", dt)


def _sign(op: object, a: list[str], dt: np.dtype) -> str:
    x = a[0]
    if dt == np.dtype("bool"):
        return x
    one, zero = lit(1, dt), lit(0, dt)
    if dt.kind == "u":
        return f"({one} if {x} > 0 else {zero})"
    # 0 stays 0, NaN stays NaN (neither comparison holds)
    return f"({one} if {x} > 0 else ({lit(-1, dt)} if {x} < 0 else {x}))"


# ----------------------------------------------------------------------------------------------------
# Comparisons and logic
# ----------------------------------------------------------------------------------------------------


def _cmp(symbol: str) -> ScalarFn:
    def expr(op: object, a: list[str], dt: np.dtype) -> str:
        return f"({a[0]} {symbol} {a[1]})"

    return expr


def _truth(x: str, dt: np.dtype) -> str:
    return x if dt == np.dtype("bool") else f"({x} != 0)"


def _logical_and(op: object, a: list[str], dt: np.dtype) -> str:
    return f"({_truth(a[0], dt)} and {_truth(a[1], dt)})"


def _logical_or(op: object, a: list[str], dt: np.dtype) -> str:
    return f"({_truth(a[0], dt)} or {_truth(a[1], dt)})"


def _logical_not(op: object, a: list[str], dt: np.dtype) -> str:
    return f"(not {_truth(a[0], dt)})"


# ----------------------------------------------------------------------------------------------------
# Unary math and activations
# ----------------------------------------------------------------------------------------------------


def _unary_math(fn: str) -> ScalarFn:
    def expr(op: object, a: list[str], dt: np.dtype) -> str:
        return _math(fn, a[0], dt)

    return expr


def _relu(op: object, a: list[str], dt: np.dtype) -> str:
    x = a[0]
    if _is_float(dt):  # np.maximum(x, 0): NaN propagates
        return f"({x} if ({x} > 0 or {x} != {x}) else {lit(0, dt)})"
    return f"({x} if {x} > 0 else {lit(0, dt)})"


def _leaky_relu(op: ew.LeakyRelu, a: list[str], dt: np.dtype) -> str:
    x = a[0]
    return f"({x} if {x} > 0 else {x} * {lit(op.negative_slope, dt)})"


def _elu(op: ew.Elu, a: list[str], dt: np.dtype) -> str:
    # the else branch sees x <= 0 or NaN, where np.minimum(x, 0) == x
    x = a[0]
    return f"({x} if {x} > 0 else {lit(op.alpha, dt)} * {_math('expm1', x, dt)})"


def _sigmoid(op: object, a: list[str], dt: np.dtype) -> str:
    # the stable form of Sigmoid.compute: e = exp(-|x|); x >= 0: 1 / (1 + e), else e / (1 + e)
    x = a[0]
    one = lit(1, dt)
    e = _math("exp", f"-abs({x})", dt)  # one exp for both branches (the compiler merges the repeats)
    return f"({one} / ({one} + {e}) if {x} >= 0 else {e} / ({one} + {e}))"


def _softplus(op: ew.Softplus, a: list[str], dt: np.dtype) -> str:
    x = a[0]
    beta = lit(op.beta, dt)
    bx = f"({x} * {beta})"
    relu_bx = f"({bx} if {bx} > 0 else {lit(0, dt)})"
    tail = _math("log1p", _math("exp", "-" + _math("fabs", bx, dt), dt), dt)
    soft = f"({relu_bx} + {tail}) / {beta}"
    return f"({x} if {bx} > {lit(op.threshold, dt)} else {soft})"


def _clip(op: ew.Clip, a: list[str], dt: np.dtype) -> str:
    # min(max(x, lo), hi) with constant bounds; NaN fails both tests and propagates
    e = a[0]
    if op.min is not None:
        lo = lit(op.min, dt)
        e = f"({lo} if {e} < {lo} else {e})"
    if op.max is not None:
        hi = lit(op.max, dt)
        e = f"({hi} if {e} > {hi} else {e})"
    return e


def _where(op: object, a: list[str], dt: np.dtype) -> str:
    return f"({a[1]} if {a[0]} else {a[2]})"


def _cast(op: ew.Cast, a: list[str], dt: np.dtype) -> str:
    to = np.dtype(op.dtype)
    if to == np.dtype("bool"):
        return _truth(a[0], dt)
    return f"{ctor(to)}({a[0]})"


def _fill_like(op: ew.FillLike, a: list[str], dt: np.dtype) -> str:
    return lit(op.value, op.dtype if op.dtype is not None else dt)


def _identity(op: object, a: list[str], dt: np.dtype) -> str:
    return a[0]


SCALAR_EXPR: dict[type, ScalarFn] = {
    ew.Add: _add,
    ew.Sub: _sub,
    ew.Mul: _mul,
    ew.Div: _div,
    ew.Pow: _pow,
    ew.Maximum: _maximum,
    ew.Minimum: _minimum,
    ew.Less: _cmp("<"),
    ew.LessEqual: _cmp("<="),
    ew.Greater: _cmp(">"),
    ew.GreaterEqual: _cmp(">="),
    ew.Equal: _cmp("=="),
    ew.NotEqual: _cmp("!="),
    ew.LogicalAnd: _logical_and,
    ew.LogicalOr: _logical_or,
    ew.LogicalNot: _logical_not,
    ew.Neg: _neg,
    ew.Exp: _unary_math("exp"),
    ew.Log: _unary_math("log"),
    ew.Log1p: _unary_math("log1p"),
    ew.Sqrt: _unary_math("sqrt"),
    ew.Tanh: _unary_math("tanh"),
    ew.Abs: _abs,
    ew.Sign: _sign,
    ew.Square: _square,
    ew.Relu: _relu,
    ew.LeakyRelu: _leaky_relu,
    ew.Elu: _elu,
    ew.Sigmoid: _sigmoid,
    ew.Softplus: _softplus,
    ew.Clip: _clip,
    ew.Where: _where,
    ew.Cast: _cast,
    ew.FillLike: _fill_like,
    ew.StopGradient: _identity,
    BroadcastLike: _identity,  # the loop broadcasts the operand over the loop shape; the reference is not read
}


def scalar_expr(op: object, args: list[str], dtype: np.dtype) -> str:
    """The scalar expression of ``op`` over ``args``; raises ``KeyError`` naming an op without one."""
    fn = SCALAR_EXPR.get(type(op))
    if fn is None:
        raise KeyError(f"no scalar expression for elementwise op {type(op).__name__}")
    return fn(op, args, np.dtype(dtype))
