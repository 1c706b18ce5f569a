"""CUDA (numba.cuda) emitter: :func:`build_kernel` turns a :class:`~compiler.kernels.Kernel` — the *same* fusion
output the CPU target compiles (:func:`compiler.fusion.fuse`) — into a
:class:`~compiler.codegen.cuda.device.CudaCompiledKernel` whose ``run`` takes
:class:`~compiler.codegen.cuda.device.DeviceValue` s (destination passing, as :mod:`compiler.kernels` describes).

- ``"elementwise"``: a generated grid-stride kernel (:mod:`compiler.codegen.cuda.elementwise`).
- ``"reduction"``: generated row / block-tree kernels (:mod:`compiler.codegen.cuda.reduction`).
- ``"op"``: a library kernel (:mod:`compiler.codegen.cuda.library`).
- ``"epilogue"``: the anchor (matmul) writes the first output, then the elementwise (or reduction) loop runs on
  it in place, as on the CPU.
- ``"horizontal"`` (this target only, made by :func:`compiler.horizontal.fuse_horizontal`): independent elementwise
  and sum groups in one launch (:mod:`compiler.codegen.cuda.horizontal`), or independent 2-d matmul epilogues as
  one grouped GEMM launch (:func:`compiler.codegen.cuda.fused.build_gemm_group`).
- ``"view"``: ``run(*inputs, shape=...) -> DeviceValue``: reshapes of contiguous values and 2-d transposes are free
  (new shape/strides over the same device array).

Ops outside this slice are refused at compile time by :func:`check_supported` (a :class:`GraphError` naming the
op and saying it is not yet supported on the cuda target): there is no silent CPU fallback. ``numba.cuda`` is
imported lazily (:func:`compiler.codegen.cuda.device.cuda_module`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from compiler.codegen.cuda.device import (
    CudaCompiledKernel,
    DeviceValue,
    cuda_module,
    cuda_problem,
    is_simulator,
    launch_config,
)
from compiler.codegen.scalar import DTYPE_NAMES, SCALAR_EXPR
from compiler.kernels import Kernel, split_epilogue
from symdl.errors import GraphError, where
from symdl.graph import Tensor
from symdl.ops.conv import Conv
from symdl.ops.reduce import MatMul, Sum
from symdl.ops.shape import ExpandDims, Flatten, Reshape, ReshapeLike, Squeeze, Transpose, Unbroadcast

__all__ = [
    "CudaCompiledKernel",
    "DeviceValue",
    "build_kernel",
    "check_supported",
    "cuda_module",
    "cuda_problem",
    "is_simulator",
    "launch_config",
]

EPILOGUE_ANCHORS: tuple[type, ...] = (MatMul, Conv)
VIEW_OPS: tuple[type, ...] = (Reshape, ReshapeLike, ExpandDims, Squeeze, Flatten)


def _refuse(node: Tensor, why: str) -> GraphError:
    return GraphError(
        f"op {node.op.name} ({type(node.op).__name__}, node {node.label()}) is not yet supported on the cuda "
        f"target: {why}{where(node.frame)}"
    )


def _check_scalar(node: Tensor) -> None:
    if type(node.op) not in SCALAR_EXPR:
        raise _refuse(node, "no scalar expression for this elementwise op")
    for t in (node, *node.inputs):
        if t.dtype not in DTYPE_NAMES:
            raise _refuse(node, f"dtype {t.dtype} is not supported")


def check_supported(kernels: Sequence[Kernel]) -> None:
    """Raise a :class:`GraphError` naming the first node the cuda target cannot run (no CPU fallback)."""
    from compiler.codegen.cuda.library import unsupported_reason
    from compiler.codegen.cuda.reduction import reduction_axes

    for k in kernels:
        nodes = list(k.nodes)
        if k.kind == "view":
            n = k.anchor
            if not (isinstance(n.op, VIEW_OPS) or (isinstance(n.op, Transpose) and tuple(n.op.perm) == (1, 0))):
                raise _refuse(n, "no view kernel")
            continue
        if k.kind == "op":
            why = unsupported_reason(k.anchor)
            if why is not None:
                raise _refuse(k.anchor, why)
            continue
        if k.kind == "epilogue":
            if not isinstance(k.anchor.op, EPILOGUE_ANCHORS):
                raise _refuse(k.anchor, "no cuda kernel yet")
            nodes = nodes[1:]
        if k.kind in ("reduction", "epilogue") and isinstance(nodes[-1].op, (Sum, Unbroadcast)):
            r = nodes[-1]
            if isinstance(r.op, Sum) and reduction_axes(r) is None:  # pragma: no cover - a sum's axes are static
                raise _refuse(r, "its summed axes are known only at run time")
            nodes = nodes[:-1]  # an unbroadcast's axes may be decided at run time (build_runtime_axes_reduction)
        for n in nodes:
            _check_scalar(n)


def build_kernel(kernel: Kernel) -> CudaCompiledKernel:
    """Compile one kernel for the cuda target (call :func:`check_supported` on the whole list first)."""
    from compiler.codegen.cuda.elementwise import build_elementwise
    from compiler.codegen.cuda.library import lookup
    from compiler.codegen.cuda.reduction import build_reduction

    if kernel.kind == "elementwise":
        ck = build_elementwise(kernel)
        return CudaCompiledKernel(kernel, run=ck.run, serial=ck.run, source=ck.source, dispatchers=ck.dispatchers)
    if kernel.kind == "reduction":
        return build_reduction(kernel)
    if kernel.kind == "op":
        factory = lookup(kernel.anchor)
        if factory is None:  # pragma: no cover - check_supported refuses it first
            raise _refuse(kernel.anchor, "no cuda kernel yet")
        return factory(kernel)
    if kernel.kind == "epilogue":
        from compiler.codegen.cuda.fused import build_fused_epilogue, single_launch_epilogue

        if single_launch_epilogue(kernel):
            return build_fused_epilogue(kernel)
        return _build_epilogue(kernel)
    if kernel.kind == "view":
        return CudaCompiledKernel(kernel, run=view_function(kernel.anchor), mode="view")
    if kernel.kind == "horizontal":
        from compiler.codegen.cuda.horizontal import build_horizontal
        from compiler.horizontal import HorizontalKernel

        assert isinstance(kernel, HorizontalKernel)
        if all(p.kind == "epilogue" for p in kernel.parts):
            from compiler.codegen.cuda.fused import build_gemm_group

            return build_gemm_group(kernel)
        return build_horizontal(kernel)
    raise ValueError(f"unknown kernel kind {kernel.kind!r}")


# ----------------------------------------------------------------------------------------------------
# Epilogues
# ----------------------------------------------------------------------------------------------------


def _build_epilogue(kernel: Kernel) -> CudaCompiledKernel:
    from compiler.codegen.cuda.elementwise import build_elementwise
    from compiler.codegen.cuda.library import lookup
    from compiler.codegen.cuda.reduction import build_reduction
    from compiler.fusion import REDUCTION_OPS

    split = split_epilogue(kernel, REDUCTION_OPS)
    factory = lookup(split.anchor)
    assert factory is not None
    impl = factory(Kernel("op", [split.anchor], list(split.anchor.inputs), [split.anchor], kernel.index))
    ew = build_reduction(split.loop) if split.loop.kind == "reduction" else build_elementwise(split.loop)
    run = split.chain(impl.run, ew.run)
    warm = split.chain(impl.warm or impl.run, getattr(ew, "warm", None) or ew.run)
    scratch = dict(getattr(ew, "scratch", {}))
    ck = CudaCompiledKernel(
        kernel,
        run=run,
        serial=run,
        source=ew.source,
        dispatchers=list(impl.dispatchers) + list(ew.dispatchers),
        warm=warm,
    )
    ck.scratch = getattr(ew, "scratch", scratch)
    return ck


# ----------------------------------------------------------------------------------------------------
# Views
# ----------------------------------------------------------------------------------------------------


def view_function(node: Tensor) -> Callable[..., DeviceValue]:
    """``f(*inputs, shape=concrete output shape) -> DeviceValue`` of a reshape-family node (the same contiguous
    storage seen with the new shape) or a 2-d transpose (swapped strides); no copy either way."""
    op = node.op
    if isinstance(op, Transpose):
        perm = tuple(op.perm)
        return lambda x, *rest, shape: x.transposed(perm)
    if isinstance(op, VIEW_OPS):
        return lambda x, *rest, shape: x.reshaped(tuple(shape))
    raise GraphError(f"the cuda target has no view kernel for op {op.name}{where(node.frame)}")
