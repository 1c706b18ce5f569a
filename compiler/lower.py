"""The compiled-target pipeline: Program → fused kernels → generated code → Plan.

    build_program (validate, resolve modes, graph passes)    compiler/program.py, compiler/passes/
    fuse          (partition into kernels, explain log)      compiler/fusion.py
    codegen       (one CompiledKernel per kernel)            compiler/codegen/<target>/
    build_plan    (steps over value slots)                   runtime/plan.py

Memory planning happens per concrete shape signature when the runtime instantiates the plan
(compiler/memory.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from compiler.kernels import CompiledKernel, Kernel
from compiler.program import Program


@dataclass
class Lowered:
    program: Program
    kernels: list[Kernel]
    compiled: list[CompiledKernel]
    fusion_log: list[str]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase


def lower_cpu(program: Program, fuse_reductions: bool = True, fuse_pooling: bool = True) -> Lowered:
    """Fuse and generate CPU (Numba) kernels for ``program`` (``fuse_reductions``: see :func:`compiler.fusion.fuse`;
    ``fuse_pooling``: :func:`compiler.conv_pool_fusion.fuse_conv_pool`)."""
    from compiler.codegen.cpu import build_kernel
    from compiler.conv_pool_fusion import fuse_conv_pool
    from compiler.fusion import fuse

    t0 = time.perf_counter()
    log: list[str] = []
    kernels = fuse(program, log, fuse_reductions)
    if fuse_pooling:
        kernels = fuse_conv_pool(kernels, program, log)
    t1 = time.perf_counter()
    compiled = [build_kernel(k) for k in kernels]
    t2 = time.perf_counter()
    return Lowered(program, kernels, compiled, log, {"fusion": t1 - t0, "codegen": t2 - t1})


def dispatcher_stats(compiled: list[CompiledKernel]) -> tuple[int, int]:
    """``(cache hits, cache misses)`` summed over the distinct Numba dispatchers behind ``compiled``: a miss is
    a signature Numba compiled, a hit one it loaded from its disk cache."""
    seen: dict[int, object] = {}
    for ck in compiled:
        for d in ck.dispatchers:
            seen.setdefault(id(d), d)
    hits = misses = 0
    for d in seen.values():
        stats = getattr(d, "stats", None)
        if stats is not None:
            hits += sum(stats.cache_hits.values())
            misses += sum(stats.cache_misses.values())
    return hits, misses
