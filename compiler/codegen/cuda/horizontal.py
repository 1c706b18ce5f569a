"""numba.cuda code generation for :class:`compiler.horizontal.HorizontalKernel`: independent elementwise and sum
groups run by one launch.

The launch's first ``gew`` blocks run the elementwise parts: one grid-stride loop over ``i < n0 + n1 + ...`` whose
body branches on the range ``i`` falls in (part ``j`` runs its own loop body at the local index
``i - (n0 + ... + n{j-1})``, with its own loop dims). Every sum part (a ``"reduction"`` kernel: a group whose member
is summed, or a lone sum) then owns a range of blocks, one per output element (block-strided when there are more
outputs than :attr:`LaunchConfig.max_blocks` allows): the block's threads stride over the reduced elements (storing
the group's loop-shaped outputs on the way, each element exactly once) into float64 (integers: int64) partials
combined by a shared-memory tree, so the result depends only on the shapes (no atomics). Each input array is passed
once however many parts read it, and equal small constants once (:func:`compiler.horizontal.constant_key`).
Invariant loads of every part are hoisted before the loop. Outputs listed in ``in_place`` are written over their
parameter's storage: on the first call the
output's :class:`~compiler.codegen.cuda.device.DeviceValue` is pointed at the parameter's array (the planned buffer
is then unused), so the runtime's update copy is a copy onto itself, which
:func:`compiler.codegen.cuda.library.strided_copy` skips. ``warm`` (the compile-time warm-up on zeros) never writes
parameters.
"""

from __future__ import annotations

from typing import Any

from compiler.codegen.cuda.device import (
    CudaCompiledKernel,
    DeviceValue,
    grid_for,
    launch,
    launch_config,
    load_cuda_module,
    retarget,
)
from compiler.codegen.cuda.elementwise import loop_body, module_header, peel
from compiler.codegen.cuda.reduction import _body, loop_dims_of, reduction_axes, split_sizes
from compiler.horizontal import HorizontalKernel

_INDENT = "    "


def _sum_parts(kernel: HorizontalKernel) -> list[tuple[int, tuple[int, ...]]]:
    """(part position, summed axes) of the reduction parts."""
    out = []
    for j, part in enumerate(kernel.parts):
        if part.kind == "reduction":
            axes = reduction_axes(part.nodes[-1])
            assert axes is not None
            out.append((j, axes))
    return out


def emit_source(kernel: HorizontalKernel, block: int) -> str:
    """The generated module (function ``kernel``) of a horizontal kernel; ``block``: threads per block (a power of
    two: the shared-memory tree of the sum parts)."""
    slots = kernel.input_slots()
    position = {t.id: slots[j] for j, t in enumerate(kernel.inputs)}
    nslots = max(slots, default=-1) + 1
    params = [f"in{j}" for j in range(nslots)] + [f"out{j}" for j in range(len(kernel.outputs))] + ["gew"]
    outer: list[str] = []
    branches: list[tuple[int, list[str]]] = []
    sums: list[list[str]] = []
    dtypes: set[str] = set()
    first_out = 0
    axes_of = dict(_sum_parts(kernel))
    ew = [j for j, part in enumerate(kernel.parts) if part.kind != "reduction"]
    for j, part in enumerate(kernel.parts):
        ins = [f"in{position[t.id]}" for t in part.inputs]
        outs = [f"out{first_out + m}" for m in range(len(part.outputs))]
        first_out += len(part.outputs)
        p = f"p{j}_"
        if part.kind != "reduction":
            rank = len(part.nodes[-1].shape)
            params += [f"e{j}"] + [f"{p}n{a}" for a in range(rank)]
            o, inner = loop_body(part, ins, outs, "li", prefix=p)
            outer += o
            branches.append((j, inner))
            continue
        axes = axes_of[j]
        r = part.nodes[-1]
        shape = tuple(r.inputs[0].shape)
        rank = len(shape)
        params += [f"{p}lo", f"{p}hi", f"{p}nk", f"{p}nr"] + [f"{p}n{a}" for a in range(rank)]
        inv, kept_stmts, red_stmts, value = _body(part, shape, axes, ins, outs[:-1], p)
        outer += inv
        floating = r.inputs[0].dtype.kind == "f"
        buf = "fbuf" if floating else "ibuf"
        dtypes.add(buf)
        init = "F64(0.0)" if floating else "I64(0)"
        kept = [a for a in range(rank) if a not in axes]
        red = list(axes)
        lines = [f"for {p}k in range(bid - {p}lo, {p}nk, {p}hi - {p}lo):"]
        ind = _INDENT
        if kept:
            lines += peel(f"{p}k", kept, kept[0], ind, p)
        lines += [ind + s for s in kept_stmts]
        lines.append(ind + f"{p}s = {init}")
        lines.append(ind + f"for {p}r in range(tid, {p}nr, {block}):")
        if red:
            lines += peel(f"{p}r", red, red[0], ind * 2, p)
        lines += [ind * 2 + s for s in red_stmts]
        lines.append(ind * 2 + f"{p}s += {value}")
        lines += [
            ind + f"{buf}[tid] = {p}s",
            ind + "cuda.syncthreads()",
            ind + f"w = {block // 2}",
            ind + "while w > 0:",
            ind * 2 + "if tid < w:",
            ind * 3 + f"{buf}[tid] += {buf}[tid + w]",
            ind * 2 + "cuda.syncthreads()",
            ind * 2 + "w //= 2",
            ind + "if tid == 0:",
            ind * 2 + f"{outs[-1]}[{p}k] = {buf}[0]",
            ind + "cuda.syncthreads()",
        ]
        sums.append([f"elif bid < {p}hi:", *[_INDENT + s for s in lines]])
    ops = "; ".join("+".join(n.op.name for n in part.nodes) for part in kernel.parts)
    lines = module_header(f"symdl cuda horizontal kernel: {len(kernel.parts)} parts: {ops}.")
    lines += ["@cuda.jit", f"def kernel({', '.join(params)}):"]
    lines += [_INDENT + "tid = cuda.threadIdx.x", _INDENT + "bid = cuda.blockIdx.x"]
    if "fbuf" in dtypes:
        lines.append(_INDENT + f"fbuf = cuda.shared.array({block}, numba.float64)")
    if "ibuf" in dtypes:
        lines.append(_INDENT + f"ibuf = cuda.shared.array({block}, numba.int64)")
    lines += [_INDENT + s for s in outer]
    if ew:
        last = ew[-1]
        lines.append(_INDENT + "if bid < gew:")
        lines.append(_INDENT * 2 + f"for i in range(bid * {block} + tid, e{last}, gew * {block}):")
        prev = None
        for k, (j, inner) in enumerate(branches):
            lines.append(_INDENT * 3 + ("if" if k == 0 else "elif") + f" i < e{j}:")
            lines.append(_INDENT * 4 + ("li = i" if prev is None else f"li = i - e{prev}"))
            lines += [_INDENT * 4 + s for s in inner]
            prev = j
    else:
        lines.append(_INDENT + "if bid < gew:")
        lines.append(_INDENT * 2 + "pass")
    for branch in sums:
        lines += [_INDENT + s for s in branch]
    return "\n".join(lines) + "\n"


def build_horizontal(kernel: HorizontalKernel) -> CudaCompiledKernel:
    """Generate and load a horizontal kernel; ``run(*inputs, *outputs)`` over device values."""
    cfg = launch_config()
    sum_parts = _sum_parts(kernel)
    block = cfg.reduce_block if sum_parts else cfg.block
    source = emit_source(kernel, block)
    mod = load_cuda_module(source, kernel.name.split("(")[0])
    nin = len(kernel.inputs)
    slots = kernel.input_slots()
    first_of_slot = sorted({s: j for j, s in reversed(list(enumerate(slots)))}.items())
    position = {t.id: j for j, t in enumerate(kernel.inputs)}
    # output position -> input position of the parameter it is written over
    over = {m: position[kernel.in_place[t.id]] for m, t in enumerate(kernel.outputs) if t.id in kernel.in_place}
    first_out: list[int] = []
    acc = 0
    for part in kernel.parts:
        first_out.append(acc)
        acc += len(part.outputs)
    axes_of = dict(sum_parts)
    dims_of = {j: loop_dims_of(kernel.parts[j]) for j in axes_of}
    part_in = {j: [position[t.id] for t in part.inputs] for j, part in enumerate(kernel.parts)}
    cap = cfg.max_blocks * 16
    original: dict[int, tuple[Any, tuple[int, ...], int]] = {}  # id(out value) -> its planned storage

    def go(values: tuple[DeviceValue, ...], in_place: bool) -> None:
        outs = retarget(list(values[nin:]), values, over, original, in_place)
        ew_sizes: list[Any] = []
        red_sizes: list[Any] = []
        end = 0
        for j, part in enumerate(kernel.parts):
            f = first_out[j]
            if j not in axes_of:
                out0 = outs[f]
                end += out0.size
                ew_sizes.append((j, [end, *out0.shape]))
                continue
            mine = [values[q] for q in part_in[j]] + outs[f : f + len(part.outputs)]
            dims = dims_of[j](mine)
            nk, nr = split_sizes(dims, axes_of[j])
            red_sizes.append((j, nk, nr, dims))
        gew = grid_for(end, cfg) if end else 0
        hi = gew
        sizes: dict[int, list[Any]] = dict(ew_sizes)
        for j, nk, nr, dims in red_sizes:
            lo, hi = hi, hi + min(nk, cap)
            sizes[j] = [lo, hi, nk, nr, *dims]
        if hi == 0:
            return
        arrays = [values[j].flat() for _, j in first_of_slot] + [v.flat() for v in outs]
        args = [a for j in range(len(kernel.parts)) for a in sizes[j]]
        launch(mod.kernel, hi, block)(*arrays, gew, *args)

    def run(*values: DeviceValue) -> None:
        go(values, True)

    def warm(*values: DeviceValue) -> None:
        go(values, False)

    return CudaCompiledKernel(kernel, run=run, serial=run, source=source, dispatchers=[mod.kernel], warm=warm)
