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
from compiler.kernels import CompiledKernel, Kernel
from symdl.errors import GraphError, where
from symdl.graph import Tensor
from symdl.ops.reduce import Sum
from symdl.ops.shape import ExpandDims, Flatten, Reshape, ReshapeLike, Squeeze, Transpose, Unbroadcast

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
    anchor = kernel.anchor
    impl = library_impl(anchor)
    group = kernel.nodes[1:]
    read = {i.id for n in group for i in n.inputs}
    others = [t for t in kernel.inputs if t.id in read and t.id != anchor.id]
    summed = (
        isinstance(group[-1].op, (Sum, Unbroadcast))
        and len(group) > 1
        and any(n is group[-1].inputs[0] for n in group[:-1])
    )
    loop = Kernel("reduction" if summed else "elementwise", group, [anchor] + others, list(kernel.outputs))
    loop.index = kernel.index
    ew = build_reduction(loop) if summed else build_elementwise(loop)
    nin = len(kernel.inputs)
    position = {t.id: k for k, t in enumerate(kernel.inputs)}
    anchor_args = tuple(position[t.id] for t in anchor.inputs) + (nin,)  # ..., out0
    loop_args = (nin,) + tuple(position[t.id] for t in others) + tuple(range(nin, nin + len(kernel.outputs)))
    run = _epilogue_run(impl.run, ew.run, anchor_args, loop_args)
    serial = _epilogue_run(impl.serial or impl.run, ew.serial or ew.run, anchor_args, loop_args)
    return CompiledKernel(
        kernel,
        run=run,
        serial=serial,
        source=ew.source,
        parallel=impl.parallel or ew.parallel,
        dispatchers=list(impl.dispatchers) + ew.dispatchers,
    )


def _epilogue_run(
    anchor_run: Callable[..., object], loop_run: Callable[..., object], anchor_args: tuple, loop_args: tuple
) -> Callable[..., None]:
    def run(*args: object) -> None:
        anchor_run(*[args[k] for k in anchor_args])
        loop_run(*[args[k] for k in loop_args])

    return run


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
