"""CPU (Numba) emitter: :func:`build_kernel` turns a :class:`~compiler.kernels.Kernel` into a
:class:`~compiler.kernels.CompiledKernel` following the destination-passing convention of
:mod:`compiler.kernels`.

- ``"elementwise"``: generated Numba loops (:mod:`compiler.codegen.cpu.elementwise`).
- ``"op"``: the library kernel registered for the node's op (:mod:`compiler.codegen.cpu.library`).
- ``"epilogue"``: the anchor's library kernel writes into the first output array, then the generated loop
  applies the elementwise group reading the anchor's value from that same array (in place is safe: each
  element is read before it is written). The memory planner must not let that output share memory with
  another input of the kernel: the anchor writes it before the loop reads them.
- ``"reduction"``: a generated loop that computes an elementwise group and sums one member on the fly
  (:mod:`compiler.codegen.cpu.reduction`).
- ``"view"``: ``run(*inputs) -> view``: ``np.reshape`` of the first input to the shape the op gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compiler.codegen.cpu import library
from compiler.codegen.cpu.elementwise import build_elementwise
from compiler.codegen.cpu.reduction import build_reduction
from compiler.kernels import CompiledKernel, EpilogueSplit, Kernel, split_epilogue
from symdl.errors import GraphError, where
from symdl.graph import Constant, Tensor
from symdl.ops.conv import Conv
from symdl.ops.elementwise import Add, Greater, Relu
from symdl.ops.pool import MaxPool
from symdl.ops.shape import ExpandDims, Flatten, Reshape, ReshapeLike, Squeeze, Transpose

__all__ = ["ConvEpilogue", "build_kernel", "build_elementwise", "conv_epilogue_spec"]


def build_kernel(kernel: Kernel) -> CompiledKernel:
    """Compile one kernel for the CPU target."""
    if kernel.kind == "elementwise":
        return build_elementwise(kernel)
    if kernel.kind == "op":
        impl = library_impl(kernel.anchor)
        return CompiledKernel(
            kernel, run=impl.run, serial=impl.serial, parallel=impl.parallel, dispatchers=list(impl.dispatchers)
        )
    if kernel.kind == "epilogue":
        return _build_epilogue(kernel)
    if kernel.kind == "reduction":
        return build_reduction(kernel)
    if kernel.kind == "view":
        return CompiledKernel(kernel, run=view_function(kernel.anchor), mode="view")
    raise ValueError(f"unknown kernel kind {kernel.kind!r}")


def library_impl(node: Tensor) -> library.LibraryImpl:
    """The library implementation of ``node``; a :class:`GraphError` naming the op if the target has none."""
    factory = library.lookup(node)
    if factory is None:
        raise GraphError(
            f"the cpu target has no kernel for op {node.op.name} ({type(node.op).__name__}, "
            f"node {node.label()}){where(node.frame)}"
        )
    return factory(node)


# ----------------------------------------------------------------------------------------------------
# Epilogues
# ----------------------------------------------------------------------------------------------------


def _build_epilogue(kernel: Kernel) -> CompiledKernel:
    from compiler.fusion import REDUCTION_OPS

    fused = _fused_conv_epilogue(kernel)
    if fused is not None:
        return fused
    split = split_epilogue(kernel, REDUCTION_OPS)
    impl = library_impl(split.anchor)
    # the loop reads the anchor's value (its input 0) from the buffer it stores its first output into
    if split.loop.kind == "reduction":
        ew = build_reduction(split.loop, ((0, 0),) if len(split.loop.outputs) > 1 else ())
    else:
        ew = build_elementwise(split.loop, ((0, 0),))
    run = split.chain(impl.run, ew.run)
    serial = split.chain(impl.serial or impl.run, ew.serial or ew.run)
    dispatchers = list(impl.dispatchers) + ew.dispatchers
    fused = _fused_matmul_epilogue(kernel, split, ew.source)
    if fused is not None:
        run, serial = fused.runner(run), fused.runner(serial)
        dispatchers.append(fused.function)
    return CompiledKernel(
        kernel,
        run=run,
        serial=serial,
        source=ew.source if fused is None else fused.source,
        parallel=impl.parallel or ew.parallel,
        dispatchers=dispatchers,
    )


@dataclass(frozen=True)
class _FusedMatmul:
    """A 2-d matmul epilogue compiled as one function (:func:`_fused_matmul_epilogue`)."""

    function: Callable[..., None]  # fused(*inputs, *outputs)
    source: str  # the loop's source, then the fused module's
    a: int  # argument positions of the matmul's operands and output
    b: int
    out: int
    red: int | None  # of the loop's summed output (must be C-contiguous for the fused call), if any

    def runner(self, fallback: Callable[..., None]) -> Callable[..., None]:
        """``run(*args)``: the fused function for products and loops below the parallel thresholds, else
        ``fallback`` (the library kernel and the loop, each deciding on threads)."""
        from compiler.codegen.cpu.elementwise import PARALLEL_THRESHOLD
        from compiler.codegen.cpu.library_linalg import PARALLEL_MIN_MACS

        fn, ia, ib, io, ir = self.function, self.a, self.b, self.out, self.red

        def run(*args: np.ndarray) -> None:
            a, b, out = args[ia], args[ib], args[io]
            if (
                a.shape[0] * a.shape[1] * b.shape[1] < PARALLEL_MIN_MACS
                and out.size <= PARALLEL_THRESHOLD
                and (ir is None or args[ir].flags.c_contiguous)
                and _gemm_ready(a)
                and _gemm_ready(b)
            ):
                if not getattr(fn, "symdl_locked", False):  # the first call compiles (or loads) it; no later one may
                    # the fallback too, on copies (its outputs may alias its inputs): the calls the fused
                    # function declines later then compile nothing either. (The flag lives on the dispatcher:
                    # kernels with the same source share it.)
                    fallback(*[_like(x) for x in args])
                    fn(*args)
                    fn.disable_compile()
                    fn.symdl_locked = True
                    return
                try:
                    fn(*args)
                    return
                except TypeError:
                    # a layout its signature does not take: batch 1 makes a transposed (n, 1) view both C- and
                    # F-contiguous, which Numba types as C. The library path handles any layout.
                    pass
            fallback(*args)

        return run


def _like(x: np.ndarray) -> np.ndarray:
    """A copy of ``x`` that Numba types the same: same layout, read-only where ``x`` is."""
    c = np.array(x, copy=True, order="K")
    c.flags.writeable = x.flags.writeable
    return c


def _gemm_ready(x: np.ndarray) -> bool:
    """Whether :func:`compiler.codegen.cpu.gemm.gemm` takes ``x`` as it is: its rows or its columns contiguous."""
    rs, cs = x.strides
    return cs == x.itemsize or rs == x.itemsize or x.shape[0] <= 1 or x.shape[1] <= 1


def _fused_matmul_epilogue(kernel: Kernel, split: EpilogueSplit, loop_source: str) -> _FusedMatmul | None:
    """A 2-d float matmul epilogue as one compiled function ``fused(*inputs, *outputs)``: the product
    (BLAS, :func:`compiler.codegen.cpu.gemm.gemm`), then the generated loop's own function (whole range, one task;
    imported from the loop's module, so the fallback path runs the overloads compiled here). One dispatch
    instead of the library kernel's and the loop's Python wrappers and two or three dispatches: 1.5-3 us per
    kernel on the small MLP train step (32x128 layers), where the loops themselves take 0.3-0.5 us. None for
    other anchors (batched, integer, not a matmul)."""
    from compiler.codegen.cache import NJIT_FLAGS, load_module
    from compiler.codegen.cpu.gemm import GEMM_VERSION
    from symdl.ops.reduce import MatMul

    anchor = split.anchor
    a_t, b_t = anchor.inputs
    if not (
        isinstance(anchor.op, MatMul)
        and a_t.ndim == 2
        and b_t.ndim == 2
        and anchor.ndim == 2
        and a_t.dtype == b_t.dtype == anchor.dtype
        and np.dtype(anchor.dtype) in (np.dtype(np.float32), np.dtype(np.float64))
    ):
        return None
    loop = split.loop
    nargs = len(kernel.inputs) + len(kernel.outputs)
    names = [f"a{k}" for k in range(nargs)]
    loop_names = [names[k] for k in split.loop_args]
    red = None
    if loop.kind == "reduction":
        if "def kernel_call(" not in loop_source:
            return None
        red = split.loop_args[-1]
        call = f"kernel_call({', '.join(loop_names)})"
    else:
        first_out = loop_names[len(loop.inputs)]
        call = f"kernel_range({', '.join(loop_names)}, 0, {first_out}.shape[0])"
    ia, ib, io = split.anchor_args
    loop_module = load_module(loop_source, kernel.name).__name__  # already loaded: memoised
    entry = "kernel_call" if red is not None else "kernel_range"
    source = "\n".join(
        [
            f'"""symdl fused matmul epilogue: the product, then {loop_module}.{entry}."""',
            "",
            "import numba",
            "",
            f"from {loop_module} import {entry}",
            "from compiler.codegen.cpu.gemm import gemm as _gemm",
            f"GEMM = {GEMM_VERSION!r}",
            "",
            "",
            f"@numba.njit({NJIT_FLAGS}, nogil=True)",
            f"def fused({', '.join(names)}):",
            # [:, :] views are typed as any-layout arrays: one compiled gemm per dtype serves every fused
            # epilogue, whatever its operands' layouts
            f"    _gemm({names[ia]}[:, :], {names[ib]}[:, :], {names[io]}[:, :], 0.0)",
            f"    {call}",
            "",
        ]
    )
    mod = load_module(source, kernel.name)
    return _FusedMatmul(mod.fused, loop_source + "\n" + source, ia, ib, io, red)


@dataclass(frozen=True)
class ConvEpilogue:
    """What the SIMD convolution applies in its store (:func:`conv_epilogue_spec`): a per-channel ``bias``
    tensor (or None), ReLU, a 2x2 max pool, and the positions in the kernel's outputs of the stored value and
    of the ``pre-activation > 0`` mask (the ReLU gradient's, in training; None when absent)."""

    bias: Tensor | None
    relu: bool
    pool: bool
    value_output: int
    mask_output: int | None


def conv_epilogue_spec(kernel: Kernel) -> ConvEpilogue | None:
    """The :class:`ConvEpilogue` of a kernel whose members are ``conv [-> + per-channel bias] [-> relu] [-> 2x2
    max pool]`` (in that order; its output the last of them), optionally beside ``pre-activation > 0`` as a
    second output (the ReLU mask of a training step), where the convolution runs the SIMD or Winograd kernel,
    which applies all of them while each tile is still in cache
    (:func:`compiler.codegen.cpu.library_linalg.simd_conv_with_epilogue`); else None."""
    from compiler.codegen.cpu.library_linalg import _pool_geom, default_conv_algo

    anchor, rest = kernel.nodes[0], list(kernel.nodes[1:])
    if not isinstance(anchor.op, Conv) or anchor.ndim not in (3, 4) or anchor.shape[1] is None:
        return None
    nsp = anchor.ndim - 2
    bias, relu, pool, prev = None, False, False, anchor
    if rest and isinstance(rest[0].op, Add) and len(rest[0].inputs) == 2 and prev in rest[0].inputs:
        other = rest[0].inputs[1] if rest[0].inputs[0] is prev else rest[0].inputs[0]
        axis = other.ndim - nsp - 1  # the channel axis, right-aligned with (N, C, *spatial)
        if not (
            other is not prev
            and other.dtype == anchor.dtype
            and 1 <= other.ndim - nsp <= 2
            and other.shape[axis] == anchor.shape[1]
            and all(d == 1 for k, d in enumerate(other.shape) if k != axis)
        ):
            return None
        bias, prev, rest = other, rest[0], rest[1:]
    pre = prev
    mask = next((n for n in rest if _is_positive_mask(n, pre)), None)
    rest = [n for n in rest if n is not mask]
    if rest and isinstance(rest[0].op, Relu) and rest[0].inputs[0] is prev:
        relu, prev, rest = True, rest[0], rest[1:]
    if rest and isinstance(rest[0].op, MaxPool) and rest[0].inputs[0] is prev and nsp == 2 and mask is None:
        op = rest[0].op
        if tuple(_pool_geom(op)) != (2, 2, 2, 2, 0, 0, 1, 1) or getattr(op, "ceil_mode", False):
            return None
        pool, prev, rest = True, rest[0], rest[1:]
    outputs = list(kernel.outputs)
    wanted = [prev] if mask is None else [prev, mask]
    if rest or len(outputs) != len(wanted) or {t.id for t in outputs} != {t.id for t in wanted}:
        return None
    if default_conv_algo(anchor) not in ("simd", "winograd"):
        return None
    index = {t.id: k for k, t in enumerate(outputs)}
    return ConvEpilogue(bias, relu, pool, index[prev.id], None if mask is None else index[mask.id])


def _is_positive_mask(node: Tensor, pre: Tensor) -> bool:
    """Whether ``node`` is ``pre > 0`` (a boolean, the zero a scalar constant)."""
    if not isinstance(node.op, Greater) or len(node.inputs) != 2 or node.inputs[0] is not pre:
        return False
    zero = node.inputs[1]
    return (
        isinstance(zero, Constant)
        and zero.ndim == 0
        and float(np.asarray(zero.value)) == 0.0
        and node.dtype == np.bool_
    )


def _fused_conv_epilogue(kernel: Kernel) -> CompiledKernel | None:
    """An epilogue kernel matching :func:`conv_epilogue_spec` as one SIMD convolution with the bias, ReLU, mask
    and pooling applied to each tile before it is stored, instead of a generated loop making a second pass over
    the output (and a pooling kernel a third); None for any other kernel."""
    from compiler.codegen.cpu.conv_simd import simd_conv_dispatchers
    from compiler.codegen.cpu.conv_winograd import winograd_conv_dispatchers
    from compiler.codegen.cpu.library_linalg import default_conv_algo, simd_conv_with_epilogue

    spec = conv_epilogue_spec(kernel)
    if spec is None:
        return None
    anchor = kernel.nodes[0]
    par, ser = simd_conv_with_epilogue(anchor, spec.relu, spec.pool)
    position = {t.id: k for k, t in enumerate(kernel.inputs)}
    xi, wi = position[anchor.inputs[0].id], position[anchor.inputs[1].id]
    bi = position[spec.bias.id] if spec.bias is not None else None
    nin = len(kernel.inputs)
    vo = nin + spec.value_output
    mo = None if spec.mask_output is None else nin + spec.mask_output

    def call(fn: Callable[..., None]) -> Callable[..., None]:
        def run(*args: np.ndarray) -> None:
            fn(args[xi], args[wi], args[vo], None if bi is None else args[bi], None if mo is None else args[mo])

        return run

    winograd = default_conv_algo(anchor) == "winograd"
    kernels = winograd_conv_dispatchers() if winograd else simd_conv_dispatchers()
    return CompiledKernel(kernel, run=call(par), serial=call(ser), parallel=True, dispatchers=kernels)


# ----------------------------------------------------------------------------------------------------
# Views
# ----------------------------------------------------------------------------------------------------


def view_function(node: Tensor) -> Callable[..., np.ndarray]:
    """``f(*inputs) -> view`` of a reshape-family node."""
    op = node.op
    if isinstance(op, Reshape):
        shape = tuple(op.shape)
        return lambda x: np.reshape(x, shape)
    if isinstance(op, ReshapeLike):
        return lambda x, ref: np.reshape(x, ref.shape)
    if isinstance(op, ExpandDims):
        axes = tuple(op.axes)
        return lambda x: np.expand_dims(x, axes)
    if isinstance(op, Squeeze):
        axes = tuple(op.axes)
        return lambda x: np.squeeze(x, axes)
    if isinstance(op, Flatten):
        ndim = node.inputs[0].ndim
        start, end = op.start % max(ndim, 1), op.end % max(ndim, 1)
        return lambda x: np.reshape(x, x.shape[:start] + (math.prod(x.shape[start : end + 1]),) + x.shape[end + 1 :])
    if isinstance(op, Transpose) and tuple(op.perm) == (1, 0):
        return np.transpose  # an F-contiguous view, read only by matmul (see compiler.fusion)
    raise GraphError(f"the cpu target has no view kernel for op {op.name}{where(node.frame)}")
