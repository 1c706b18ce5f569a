"""Explicit SIMD values inside Numba kernels: a 512-bit vector type and the few operations register-blocked
micro-kernels need.

Why: LLVM's loop vectoriser only vectorises an innermost loop, and keeps its accumulators in memory. A
micro-kernel that holds a tile of outputs in registers across a reduction loop (the heart of a fast convolution
or GEMM) cannot be written that way. Here a kernel names its vector values directly::

    acc = vzero(x)                        # all lanes 0, x's dtype
    for k in range(n):
        acc = vfma(vbcast(w, k), vload(x, k * stride), acc)
    vstore(out, 0, acc)

Each value is one LLVM ``<lanes x T>`` SSA value: it lives in a register (LLVM splits it into two halves on a
machine without 512-bit registers, so the code is correct everywhere). The width is :data:`VECTOR_BITS`: 512
with AVX-512, else 256. Lanes: ``VECTOR_BITS // bits`` (16 float32 and 8 float64 with AVX-512);
``vlanes(x)`` gives the count as a compile-time constant, :func:`lanes_for` outside compiled code.

Memory operations take a **C-contiguous array and a flat element index** and do no bounds checks: the caller
guarantees ``idx .. idx + lanes - 1`` lies inside ``arr`` (kernels pad their workspaces for that). Loads and
stores need only element alignment. Everything here is an ``@intrinsic``, so kernels using it compile once
and are cached on disk like any other ``cache=True`` function.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, models, register_model

__all__ = [
    "VECTOR_BITS",
    "Vec",
    "lanes_for",
    "prefetch",
    "vadd",
    "vbcast",
    "vfma",
    "vlanes",
    "vload",
    "vload_merge",
    "vload_strided2",
    "vload_strided4",
    "vmax",
    "vmul",
    "vsplat",
    "vstore",
    "vstore_lanes",
    "vstore_pairs",
    "vstore_quads",
    "vsub",
    "vsum",
    "vzero",
]


def _vector_bits() -> int:
    """512 where the code Numba generates may use AVX-512 (its target features, the host's unless
    ``NUMBA_CPU_FEATURES`` says otherwise), else 256: a tile of 16 vector accumulators fits the 32 registers of
    AVX-512, and split into 256-bit halves it would not fit the 16 of AVX2."""
    from numba.core import config

    features = config.CPU_FEATURES
    if features is None:
        import llvmlite.binding as ll

        features = ll.get_host_cpu_features().flatten()
    return 512 if "+avx512f" in features.split(",") else 256


#: the vector width (bits) of every kernel in this process; Numba's disk cache is keyed by the target CPU's
#: features, so cached kernels always match it
VECTOR_BITS = _vector_bits()


def lanes_for(dtype: object) -> int:
    """The lane count of vectors of ``dtype`` (a NumPy dtype) in this process."""
    import numpy as np

    return VECTOR_BITS // (8 * np.dtype(dtype).itemsize)


class Vec(types.Type):
    """A vector of ``lanes`` values of the scalar Numba type ``dtype``."""

    def __init__(self, dtype: types.Type, lanes: int) -> None:
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vec[{dtype} x {lanes}]")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: Vec) -> None:
        scalar = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(scalar, fe_type.lanes))


def _vec_of(arr: types.Type) -> Vec:
    if not isinstance(arr, types.Array) or not isinstance(arr.dtype, types.Float):
        raise TypingError(f"simd: expected a float array, got {arr}")
    return Vec(arr.dtype, VECTOR_BITS // arr.dtype.bitwidth)


def _element_ptr(context: Any, builder: Any, aryty: types.Array, ary: Any, idxty: types.Type, idx: Any) -> Any:
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(data, [context.cast(builder, idx, idxty, types.intp)])


def _vec_ptr(context: Any, builder: Any, sig: Any, args: Any, vt: Vec) -> Any:
    ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
    return builder.bitcast(ptr, context.get_value_type(vt).as_pointer())


@intrinsic
def vlanes(typingctx: Any, arr: types.Type) -> Any:
    """The lane count of ``arr``'s vectors (a constant)."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return context.get_constant(types.intp, vt.lanes)

    return types.intp(arr), codegen


@intrinsic
def vzero(typingctx: Any, arr: types.Type) -> Any:
    """A vector of zeros of ``arr``'s dtype."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


@intrinsic
def vload(typingctx: Any, arr: types.Type, idx: types.Type) -> Any:
    """``arr.flat[idx : idx + lanes]`` as a vector (unchecked; element-aligned)."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.load(_vec_ptr(context, builder, sig, args, vt), align=vt.dtype.bitwidth // 8)

    return vt(arr, idx), codegen


@intrinsic
def vstore(typingctx: Any, arr: types.Type, idx: types.Type, v: types.Type) -> Any:
    """``arr.flat[idx : idx + lanes] = v`` (unchecked; element-aligned)."""
    vt = _vec_of(arr)
    if v != vt:
        raise TypingError(f"vstore: a {v} into a {arr}")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        builder.store(args[2], _vec_ptr(context, builder, sig, args, vt), align=vt.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


def _splat(builder: Any, llty: ir.VectorType, scalar: Any) -> Any:
    one = builder.insert_element(ir.Constant(llty, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), llty.count), [0] * llty.count)
    return builder.shuffle_vector(one, ir.Constant(llty, ir.Undefined), mask)


@intrinsic
def vbcast(typingctx: Any, arr: types.Type, idx: types.Type) -> Any:
    """``arr.flat[idx]`` in every lane (one broadcast load; unchecked)."""
    vt = _vec_of(arr)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        scalar = builder.load(_element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1]))
        return _splat(builder, context.get_value_type(vt), scalar)

    return vt(arr, idx), codegen


@intrinsic
def vsplat(typingctx: Any, like: types.Type, value: types.Type) -> Any:
    """The scalar ``value`` (cast to ``like``'s dtype) in every lane of a vector of ``like``'s kind."""
    vt = like if isinstance(like, Vec) else _vec_of(like)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        scalar = context.cast(builder, args[1], sig.args[1], vt.dtype)
        return _splat(builder, context.get_value_type(vt), scalar)

    return vt(like, value), codegen


def _binary(name: str, emit: Any) -> Any:
    def typer(typingctx: Any, a: types.Type, b: types.Type) -> Any:
        if not isinstance(a, Vec) or a != b:
            raise TypingError(f"{name}: expected two vectors of one kind, got {a} and {b}")

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return emit(builder, *args)

        return a(a, b), codegen

    typer.__name__ = name
    return intrinsic(typer)


vadd = _binary("vadd", lambda b, x, y: b.fadd(x, y))
vsub = _binary("vsub", lambda b, x, y: b.fsub(x, y))
vmul = _binary("vmul", lambda b, x, y: b.fmul(x, y))
# NaN-propagating like np.maximum: x > y or x is NaN -> x
vmax = _binary(
    "vmax", lambda b, x, y: b.select(b.fcmp_unordered("!=", x, x), x, b.select(b.fcmp_ordered(">", x, y), x, y))
)


@intrinsic
def vstore_greater(typingctx: Any, arr: types.Type, idx: types.Type, a: types.Type, b: types.Type) -> Any:
    """``arr.flat[idx : idx + lanes] = a > b`` per lane into a boolean array (False where either is NaN, as
    ``np.greater``; unchecked)."""
    if not isinstance(arr, types.Array) or arr.dtype != types.boolean:
        raise TypingError(f"vstore_greater: expected a boolean array, got {arr}")
    if not isinstance(a, Vec) or a != b:
        raise TypingError(f"vstore_greater: expected two vectors of one kind, got {a} and {b}")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        bits = builder.fcmp_ordered(">", args[2], args[3])
        byte_vec = ir.VectorType(ir.IntType(8), a.lanes)
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        builder.store(builder.zext(bits, byte_vec), builder.bitcast(ptr, byte_vec.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(arr, idx, a, b), codegen


@intrinsic
def vfma(typingctx: Any, a: types.Type, b: types.Type, c: types.Type) -> Any:
    """``a * b + c`` per lane, fused (one rounding)."""
    if not isinstance(a, Vec) or not (a == b == c):
        raise TypingError(f"vfma: expected three vectors of one kind, got {a}, {b}, {c}")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        llty = context.get_value_type(a)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(llty, [llty] * 3), f"llvm.fma.v{a.lanes}f{a.dtype.bitwidth}"
        )
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def vsum(typingctx: Any, v: types.Type) -> Any:
    """The sum of ``v``'s lanes (a pairwise tree, in a fixed order)."""
    if not isinstance(v, Vec):
        raise TypingError(f"vsum: expected a vector, got {v}")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        x, n = args[0], v.lanes
        i32 = ir.IntType(32)
        while n > 1:
            n //= 2
            lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(i32, n), list(range(n))))
            hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(i32, n), list(range(n, 2 * n))))
            x = builder.fadd(lo, hi)
        return builder.extract_element(x, ir.Constant(i32, 0))

    return v.dtype(v), codegen


def _lane_mask(context: Any, builder: Any, lanes: int, first: int, e0: Any, e1: Any) -> Any:
    """``<lanes x i1>``: lane ``l`` set where ``e0 <= first + l < e1`` (``e0``, ``e1`` intp values)."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    vty = ir.VectorType(i64, lanes)
    iota = ir.Constant(vty, [i64(first + k) for k in range(lanes)])

    def splat(x: Any) -> Any:
        one = builder.insert_element(ir.Constant(vty, None), x, i32(0))
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, lanes), [i32(0)] * lanes))

    return builder.and_(builder.icmp_signed(">=", iota, splat(e0)), builder.icmp_signed("<", iota, splat(e1)))


def _masked_store(context: Any, builder: Any, value: Any, ptr: Any, mask: Any, align: int) -> None:
    """``llvm.masked.store``: only the set lanes are written (one AVX-512 ``vmovups {k}``); the addresses of the
    others are never touched, so they need not be valid."""
    vty = value.type
    ptr = builder.bitcast(ptr, vty.as_pointer())
    ename = "i8" if isinstance(vty.element, ir.IntType) else f"f{64 if isinstance(vty.element, ir.DoubleType) else 32}"
    fnty = ir.FunctionType(ir.VoidType(), [vty, ptr.type, ir.IntType(32), mask.type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{vty.count}{ename}.p0")
    builder.call(fn, [value, ptr, ir.IntType(32)(align), mask])


def _check_range(name: str, e0: types.Type, e1: types.Type) -> None:
    if not isinstance(e0, types.Integer) or not isinstance(e1, types.Integer):
        raise TypingError(f"{name}: the lane range must be integers, got {e0} and {e1}")


@intrinsic
def vstore_lanes(
    typingctx: Any, arr: types.Type, idx: types.Type, v: types.Type, e0: types.Type, e1: types.Type
) -> Any:
    """``arr.flat[idx + l] = v[l]`` for the lanes ``e0 <= l < e1`` only (a masked store: the other lanes'
    addresses are not touched, so ``idx`` itself may lie before the array's start; unchecked)."""
    vt = _vec_of(arr)
    if v != vt:
        raise TypingError(f"vstore_lanes: a {v} into a {arr}")
    _check_range("vstore_lanes", e0, e1)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        e0v = context.cast(builder, args[3], sig.args[3], types.int64)
        e1v = context.cast(builder, args[4], sig.args[4], types.int64)
        mask = _lane_mask(context, builder, vt.lanes, 0, e0v, e1v)
        ptr = _vec_ptr(context, builder, sig, args, vt)
        _masked_store(context, builder, args[2], ptr, mask, vt.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, idx, v, e0, e1), codegen


@intrinsic
def vstore_pairs(
    typingctx: Any, arr: types.Type, idx: types.Type, a: types.Type, b: types.Type, e0: types.Type, e1: types.Type
) -> Any:
    """The interleaved stream ``s = (a[0], b[0], a[1], b[1], ...)`` (2 x lanes values): ``arr.flat[idx + e] =
    s[e]`` for ``e0 <= e < e1`` only (two shuffles and two masked stores; unchecked). Into a boolean ``arr`` it
    stores ``s[e] > 0`` (False for NaN, as ``np.greater``): the ReLU mask of the same values."""
    if not isinstance(a, Vec) or a != b:
        raise TypingError(f"vstore_pairs: expected two vectors of one kind, got {a} and {b}")
    to_bool = isinstance(arr, types.Array) and arr.dtype == types.boolean
    if not to_bool and _vec_of(arr) != a:
        raise TypingError(f"vstore_pairs: {a} values into a {arr}")
    _check_range("vstore_pairs", e0, e1)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        n = a.lanes
        x, y = args[2], args[3]
        if to_bool:
            zero = ir.Constant(x.type, None)
            byte_vec = ir.VectorType(ir.IntType(8), n)
            x = builder.zext(builder.fcmp_ordered(">", x, zero), byte_vec)
            y = builder.zext(builder.fcmp_ordered(">", y, zero), byte_vec)
        i32 = ir.IntType(32)
        e0v = context.cast(builder, args[4], sig.args[4], types.int64)
        e1v = context.cast(builder, args[5], sig.args[5], types.int64)
        base = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        align = 1 if to_bool else a.dtype.bitwidth // 8
        for half in range(2):
            order = [i32(k // 2 + (n if k % 2 else 0) + half * n // 2) for k in range(n)]
            part = builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(i32, n), order))
            ptr = builder.gep(base, [ir.IntType(64)(half * n)]) if half else base
            mask = _lane_mask(context, builder, n, half * n, e0v, e1v)
            _masked_store(context, builder, part, ptr, mask, align)
        return context.get_dummy_value()

    return types.none(arr, idx, a, b, e0, e1), codegen


@intrinsic
def prefetch(typingctx: Any, arr: types.Type, idx: types.Type, write: types.Type) -> Any:
    """A hint to fetch the cache line holding ``arr.flat[idx]`` into all cache levels, for writing when the
    literal ``write`` is true (x86 ``prefetchw``), else for reading (``prefetcht0``); never faults, so ``idx``
    need not be in range."""
    if not isinstance(arr, types.Array) or not isinstance(write, (types.BooleanLiteral, types.IntegerLiteral)):
        raise TypingError(f"prefetch: expected an array, an index and a literal write flag, got {arr}, {write}")
    rw = int(bool(write.literal_value))

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(rw), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(arr, idx, write), codegen


@intrinsic
def vload_merge(typingctx: Any, arr: types.Type, idx: types.Type, v: types.Type, e0: types.Type, e1: types.Type) -> Any:
    """``v`` with lanes ``e0 <= l < e1`` replaced by ``arr.flat[idx + l]`` (one masked load merging into ``v``; the
    other lanes' addresses are never read, so ``idx`` may lie before the array's start; unchecked). A few of them
    assemble a vector from runs that lie at different offsets."""
    vt = _vec_of(arr)
    if v != vt:
        raise TypingError(f"vload_merge: {arr} values into a {v}")
    _check_range("vload_merge", e0, e1)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        n = vt.lanes
        lt = context.get_value_type(vt)
        i32 = ir.IntType(32)
        e0v = context.cast(builder, args[3], sig.args[3], types.int64)
        e1v = context.cast(builder, args[4], sig.args[4], types.int64)
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        ptr = builder.bitcast(ptr, lt.as_pointer())
        fnty = ir.FunctionType(lt, [lt.as_pointer(), i32, ir.VectorType(ir.IntType(1), n), lt])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{n}f{vt.dtype.bitwidth}.p0")
        mask = _lane_mask(context, builder, n, 0, e0v, e1v)
        return builder.call(fn, [ptr, i32(vt.dtype.bitwidth // 8), mask, args[2]])

    return vt(arr, idx, v, e0, e1), codegen


@intrinsic
def vload_strided2(
    typingctx: Any, arr: types.Type, idx: types.Type, e0: types.Type, e1: types.Type, odd: types.Type
) -> Any:
    """Every other element: lane ``l`` is ``arr.flat[idx + 2*l + odd]`` where ``e0 <= 2*l + odd < e1`` and 0
    elsewhere (two masked loads and a shuffle; the addresses outside ``[e0, e1)`` are never read, so ``idx`` may
    lie before the array's start; ``odd`` a literal 0 or 1)."""
    vt = _vec_of(arr)
    _check_range("vload_strided2", e0, e1)
    if not isinstance(odd, types.IntegerLiteral) or odd.literal_value not in (0, 1):
        raise TypingError(f"vload_strided2: odd must be a literal 0 or 1, got {odd}")
    first = odd.literal_value

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        n = vt.lanes
        lt = context.get_value_type(vt)
        e0v = context.cast(builder, args[2], sig.args[2], types.int64)
        e1v = context.cast(builder, args[3], sig.args[3], types.int64)
        base = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        align = ir.IntType(32)(vt.dtype.bitwidth // 8)
        fnty = ir.FunctionType(lt, [lt.as_pointer(), ir.IntType(32), ir.VectorType(ir.IntType(1), n), lt])
        ename = f"f{vt.dtype.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{n}{ename}.p0")
        halves = []
        for half in range(2):
            ptr = builder.gep(base, [ir.IntType(64)(half * n)]) if half else base
            mask = _lane_mask(context, builder, n, half * n, e0v, e1v)
            halves.append(builder.call(fn, [builder.bitcast(ptr, lt.as_pointer()), align, mask, ir.Constant(lt, None)]))
        i32 = ir.IntType(32)
        order = ir.Constant(ir.VectorType(i32, n), [i32(2 * k + first) for k in range(n)])
        return builder.shuffle_vector(halves[0], halves[1], order)

    return vt(arr, idx, e0, e1, odd), codegen


@intrinsic
def vload_strided4(
    typingctx: Any, arr: types.Type, idx: types.Type, e0: types.Type, e1: types.Type, phase: types.Type
) -> Any:
    """Every fourth element: lane ``l`` is ``arr.flat[idx + 4*l + phase]`` where ``e0 <= 4*l + phase < e1`` and 0
    elsewhere (four masked loads and three shuffles; nothing outside ``[e0, e1)`` is read; ``phase`` a literal
    0 to 3)."""
    vt = _vec_of(arr)
    _check_range("vload_strided4", e0, e1)
    if not isinstance(phase, types.IntegerLiteral) or phase.literal_value not in (0, 1, 2, 3):
        raise TypingError(f"vload_strided4: phase must be a literal 0 to 3, got {phase}")
    ph = phase.literal_value

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        n = vt.lanes
        lt = context.get_value_type(vt)
        i32 = ir.IntType(32)
        e0v = context.cast(builder, args[2], sig.args[2], types.int64)
        e1v = context.cast(builder, args[3], sig.args[3], types.int64)
        base = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        align = i32(vt.dtype.bitwidth // 8)
        fnty = ir.FunctionType(lt, [lt.as_pointer(), i32, ir.VectorType(ir.IntType(1), n), lt])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{n}f{vt.dtype.bitwidth}.p0")
        parts = []
        for q in range(4):
            ptr = builder.gep(base, [ir.IntType(64)(q * n)]) if q else base
            mask = _lane_mask(context, builder, n, q * n, e0v, e1v)
            parts.append(builder.call(fn, [builder.bitcast(ptr, lt.as_pointer()), align, mask, ir.Constant(lt, None)]))
        half = n // 2  # each pair of loaded vectors holds n/2 of the wanted elements
        pick = ir.Constant(ir.VectorType(i32, half), [i32(ph + 4 * k) for k in range(half)])
        lo = builder.shuffle_vector(parts[0], parts[1], pick)
        hi = builder.shuffle_vector(parts[2], parts[3], pick)
        return builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(i32, n), [i32(k) for k in range(n)]))

    return vt(arr, idx, e0, e1, phase), codegen


@intrinsic
def vstore_quads(
    typingctx: Any,
    arr: types.Type,
    idx: types.Type,
    a: types.Type,
    b: types.Type,
    c: types.Type,
    d: types.Type,
    e0: types.Type,
    e1: types.Type,
) -> Any:
    """The 4-way interleaved stream ``s = (a[0], b[0], c[0], d[0], a[1], ...)`` (4 x lanes values): ``arr.flat[idx
    + e] = s[e]`` for ``e0 <= e < e1`` only (shuffles and one masked store; unchecked). Into a boolean ``arr`` it
    stores ``s[e] > 0``, as :func:`vstore_pairs`."""
    if not isinstance(a, Vec) or not (a == b == c == d):
        raise TypingError(f"vstore_quads: expected four vectors of one kind, got {a}, {b}, {c}, {d}")
    to_bool = isinstance(arr, types.Array) and arr.dtype == types.boolean
    if not to_bool and _vec_of(arr) != a:
        raise TypingError(f"vstore_quads: {a} values into a {arr}")
    _check_range("vstore_quads", e0, e1)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        n = a.lanes
        i32 = ir.IntType(32)
        vs = list(args[2:6])
        if to_bool:
            zero = ir.Constant(vs[0].type, None)
            byte_vec = ir.VectorType(ir.IntType(8), n)
            vs = [builder.zext(builder.fcmp_ordered(">", v, zero), byte_vec) for v in vs]
        pair = ir.Constant(ir.VectorType(i32, 2 * n), [i32(k // 2 + (n if k % 2 else 0)) for k in range(2 * n)])
        ab = builder.shuffle_vector(vs[0], vs[1], pair)  # a0 b0 a1 b1 ...
        cd = builder.shuffle_vector(vs[2], vs[3], pair)
        # element e of the stream: lane e // 4 of vector e % 4, i.e. ab[2*(e//4) + e%4] or cd[2*(e//4) + e%4 - 2]
        order = [2 * (e // 4) + e % 4 + (2 * n - 2 if e % 4 >= 2 else 0) for e in range(4 * n)]
        s = builder.shuffle_vector(ab, cd, ir.Constant(ir.VectorType(i32, 4 * n), [i32(k) for k in order]))
        e0v = context.cast(builder, args[6], sig.args[6], types.int64)
        e1v = context.cast(builder, args[7], sig.args[7], types.int64)
        base = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        mask = _lane_mask(context, builder, 4 * n, 0, e0v, e1v)
        _masked_store(context, builder, s, base, mask, 1 if to_bool else a.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, idx, a, b, c, d, e0, e1), codegen
