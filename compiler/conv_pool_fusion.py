"""CPU only: a 2x2 max pool joins the convolution kernel that feeds it.

After :func:`compiler.fusion.fuse`, an inference block ``conv -> + bias -> relu -> max_pool(2)`` is two kernels:
the convolution with its epilogue, which writes the full-resolution activation, and the pooling kernel, which
reads it back. When the convolution runs the CPU target's SIMD kernel, the tile it has just computed (8
channels x whole output planes, in L1) can be pooled as it is stored, so the full-resolution activation is
never written at all: :func:`fuse_conv_pool` merges the two kernels into one ``"epilogue"`` kernel whose members
end in the pool (:func:`compiler.codegen.cpu.conv_epilogue_spec` says which chains qualify; the emitter is
``compiler.codegen.cpu._fused_conv_epilogue``).

It applies only where nothing else needs the activation: it is read by the pool alone and is no program output
(so never in training, where the ReLU mask and the pooling indices read it). Switch: ``compile(...,
passes={"fuse_pooling": False})``. The cuda target does not run this pass.
"""

from __future__ import annotations

from compiler.kernels import Kernel
from compiler.program import Program
from symdl.ops.pool import MaxPool

__all__ = ["fuse_conv_pool"]


def fuse_conv_pool(kernels: list[Kernel], program: Program, log: list[str]) -> list[Kernel]:
    """``kernels`` with every qualifying (convolution kernel, max-pool kernel) pair merged into one kernel at
    the convolution's place; one line per merge in ``log``."""
    from compiler.codegen.cpu import conv_epilogue_spec

    readers: dict[int, int] = {}
    for k in kernels:
        for t in {t.id: t for t in k.inputs}.values():
            readers[t.id] = readers.get(t.id, 0) + 1
    kept = {t.id for t in program.outputs} | {v.id for _, v in program.updates}
    producer = {t.id: k for k in kernels for t in k.outputs}
    merged: dict[int, Kernel] = {}  # id(conv kernel) -> merged kernel
    dropped: set[int] = set()  # id(pool kernel)
    for pool in kernels:
        if pool.kind != "op" or not isinstance(pool.anchor.op, MaxPool):
            continue
        src = pool.anchor.inputs[0]
        conv = producer.get(src.id)
        if conv is None or conv.kind not in ("op", "epilogue") or id(conv) in merged:
            continue
        if readers.get(src.id, 0) != 1 or src.id in kept or list(conv.outputs) != [src]:
            continue
        candidate = Kernel("epilogue", [*conv.nodes, pool.anchor], list(conv.inputs), list(pool.outputs), conv.index)
        if conv_epilogue_spec(candidate) is None:
            continue
        merged[id(conv)] = candidate
        dropped.add(id(pool))
        log.append(f"fuse_pooling: {conv.name} + {pool.name}: the 2x2 max pool runs in the convolution's store")
    return [merged.get(id(k), k) for k in kernels if id(k) not in dropped]
