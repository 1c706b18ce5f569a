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

import numpy as np

from compiler.codegen.cpu import library
from compiler.codegen.cpu.elementwise import build_elementwise
from compiler.codegen.cpu.reduction import build_reduction
from compiler.kernels import CompiledKernel, EpilogueSplit, Kernel, split_epilogue
from symdl.errors import GraphError, where
from symdl.graph import Tensor
from symdl.ops.conv import Conv
from symdl.ops.elementwise import Add, Relu
from symdl.ops.shape import ExpandDims, Flatten, Reshape, ReshapeLike, Squeeze, Transpose

__all__ = ["build_kernel", "build_elementwise"]


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

    split = split_epilogue(kernel, REDUCTION_OPS)
    fused = _conv_bias_relu(kernel, split)
    if fused is not None:
        return fused
    impl = library_impl(split.anchor)
    # the loop reads the anchor's value (its input 0) from the buffer it stores its first output into
    if split.loop.kind == "reduction":
        ew = build_reduction(split.loop, ((0, 0),) if len(split.loop.outputs) > 1 else ())
    else:
        ew = build_elementwise(split.loop, ((0, 0),))
    return CompiledKernel(
        kernel,
        run=split.chain(impl.run, ew.run),
        serial=split.chain(impl.serial or impl.run, ew.serial or ew.run),
        source=ew.source,
        parallel=impl.parallel or ew.parallel,
        dispatchers=list(impl.dispatchers) + ew.dispatchers,
    )


def _conv_bias_relu(kernel: Kernel, split: EpilogueSplit) -> CompiledKernel | None:
    """The epilogue ``conv -> + per-channel bias [-> relu]`` (one output) of a convolution that runs the SIMD
    kernel, as that kernel with the bias and ReLU applied while each tile is still in cache, instead of a second
    pass over the output; None for any other epilogue."""
    from compiler.codegen.cpu.library_linalg import simd_conv_with_epilogue

    anchor, group = split.anchor, kernel.nodes[1:]
    if not isinstance(anchor.op, Conv) or not 1 <= len(group) <= 2 or list(kernel.outputs) != [group[-1]]:
        return None
    add = group[0]
    if (
        not isinstance(add.op, Add)
        or len(group) == 2
        and not (isinstance(group[1].op, Relu) and group[1].inputs[0] is add)
    ):
        return None
    others = [t for t in add.inputs if t is not anchor]
    if len(others) != 1 or len(add.inputs) != 2:
        return None
    bias, channels, nsp = others[0], anchor.shape[1], anchor.ndim - 2
    per_channel = (
        bias.dtype == anchor.dtype
        and bias.ndim <= anchor.ndim
        and bias.ndim >= nsp + 1
        and bias.shape[bias.ndim - nsp - 1] == channels
        and all(d == 1 for k, d in enumerate(bias.shape) if k != bias.ndim - nsp - 1)
    )
    if not per_channel or channels is None:
        return None
    run = simd_conv_with_epilogue(anchor, relu=len(group) == 2)
    if run is None:
        return None
    position = {t.id: k for k, t in enumerate(kernel.inputs)}
    xi, wi, bi = position[anchor.inputs[0].id], position[anchor.inputs[1].id], position[bias.id]
    nin = len(kernel.inputs)
    par, ser = run

    def fused_run(*args: np.ndarray) -> None:
        par(args[xi], args[wi], args[nin], args[bi])

    def fused_serial(*args: np.ndarray) -> None:
        ser(args[xi], args[wi], args[nin], args[bi])

    from compiler.codegen.cpu.conv_simd import simd_conv_dispatchers

    return CompiledKernel(
        kernel, run=fused_run, serial=fused_serial, parallel=True, dispatchers=simd_conv_dispatchers()
    )


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
