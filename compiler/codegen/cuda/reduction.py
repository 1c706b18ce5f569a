"""numba.cuda code generation for reductions: ``"reduction"`` kernels (an elementwise group whose member is summed
on the fly, or a lone sum/unbroadcast) and the library max/min/sum of other dtypes.

The loop shape is the reduced value's shape; its axes split into *kept* axes (the output's, flattened in order to
the output index ``k < nk``) and *reduced* axes (flattened to ``r < nr``). Two generated kernels share the loop body
(loads by index arithmetic as in :mod:`compiler.codegen.cuda.elementwise`, member values, stores of the group's
loop-shaped outputs, the accumulation):

- ``kernel_rows`` — one thread per output element, a serial loop over ``r``: used when ``nr`` is small
  (:attr:`LaunchConfig.rows_max`), where a block per output would idle;
- ``kernel_blocks`` — ``nparts`` blocks per output element (one, and no second launch, when ``nr`` is at most
  :attr:`LaunchConfig.one_pass_max`), each reducing a contiguous slice of ``r`` (thread
  ``t`` takes ``r = lo + t, lo + t + B, ...``) and combining its threads' partials with a shared-memory tree; block
  ``(k, c)`` writes ``part[k * nparts + c]``, and ``combine`` (a second launch, one thread per output) folds each
  output's partials in order. No float atomics: the result depends only on the shapes, never on scheduling.

Sums accumulate floats in float64 and integers/bools in int64 (the output dtype is then written), max/min fold
with NaN propagation like ``np.max``. Every element of the loop is visited exactly once in both kernels, so the
group's loop-shaped outputs are stored exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from compiler.codegen.cpu.elementwise import read_inputs
from compiler.codegen.cuda.device import (
    CudaCompiledKernel,
    DeviceValue,
    LaunchConfig,
    device_empty,
    grid_for,
    launch,
    launch_config,
    load_cuda_module,
)
from compiler.codegen.cuda.elementwise import horner, module_header, peel, read_axes
from compiler.codegen.scalar import scalar_expr
from compiler.kernels import Kernel
from symdl.errors import OpRuntimeError
from symdl.graph import Tensor
from symdl.ops.reduce import Max, Min, Sum
from symdl.ops.shape import Unbroadcast

_INDENT = "    "


def reduction_axes(node: Tensor) -> tuple[int, ...] | None:
    """The loop axes a sum/unbroadcast/max/min node reduces (any dtype), or None when not static (an
    ``unbroadcast`` whose reference has dims unknown before run time)."""
    x = node.inputs[0]
    if isinstance(node.op, (Sum, Max)):
        return tuple(sorted(a % max(x.ndim, 1) for a in node.op.axes))
    if isinstance(node.op, Unbroadcast):
        ref = node.inputs[1]
        if any(d is None for d in ref.shape):
            return None
        lead = x.ndim - ref.ndim
        keep = tuple(i + lead for i, d in enumerate(ref.shape) if d == 1 and x.shape[i + lead] != 1)
        return tuple(range(lead)) + keep
    return None


def fold_kind(node: Tensor) -> str:
    """``"sum"``, ``"max"`` or ``"min"``."""
    if isinstance(node.op, Min):
        return "min"
    if isinstance(node.op, Max):
        return "max"
    return "sum"


def _acc(kind: str, dtype: np.dtype) -> tuple[str, str]:
    """(shared-memory numba dtype, initial accumulator value) for folding values of ``dtype``: float64 for floats,
    int64 for integers and bools."""
    floating = np.dtype(dtype).kind == "f"
    if kind == "sum":
        return ("numba.float64", "F64(0.0)") if floating else ("numba.int64", "I64(0)")
    if floating:
        return "numba.float64", "F64(-math.inf)" if kind == "max" else "F64(math.inf)"
    info = np.iinfo(np.int64)
    return "numba.int64", f"I64({info.min if kind == 'max' else info.max})"


def _fold(kind: str, acc: str, v: str, floating: bool) -> list[str]:
    """The statements folding ``v`` into ``acc`` (NaN-propagating max/min for floats)."""
    if kind == "sum":
        return [f"{acc} += {v}"]
    cmp = ">" if kind == "max" else "<"
    nan = f" or {v} != {v}" if floating else ""
    return [f"if {v} {cmp} {acc}{nan}:", f"{_INDENT}{acc} = {v}"]


def _body(
    kernel: Kernel,
    shape: tuple,
    axes: tuple[int, ...],
    ins: list[str] | None = None,
    outs: list[str] | None = None,
    prefix: str = "",
) -> tuple[list[str], list[str], list[str], str]:
    """(invariant statements, statements that depend on kept axes only, statements inside the reduced loop (incl.
    stores), the name of the folded value). Input ``j`` is the flat array ``ins[j]`` (default ``in{j}``), stored
    output ``j`` is ``outs[j]`` (default ``out{j}``); loop indices, dims and locals start with ``prefix``."""
    r = kernel.nodes[-1]
    members = kernel.nodes[:-1]
    stored = kernel.outputs[:-1]
    ins = [f"in{j}" for j in range(len(kernel.inputs))] if ins is None else ins
    outs = [f"out{j}" for j in range(len(stored))] if outs is None else outs
    p = prefix
    rank = len(shape)
    red = set(axes)
    levels: dict[str, list[str]] = {"inv": [], "kept": [], "red": []}
    names: dict[int, str] = {}
    level: dict[int, str] = {}
    order = {"inv": 0, "kept": 1, "red": 2}
    used = {i.id for n in members for i in read_inputs(n)} | {r.inputs[0].id}
    for j, t in enumerate(kernel.inputs):
        if t.id not in used or t.id in names:
            continue
        ax = read_axes(t, shape)
        ax_list = list(range(rank)) if ax is None else ax
        lv = "red" if red & set(ax_list) else ("kept" if ax_list else "inv")
        names[t.id], level[t.id] = f"{p}x{j}", lv
        levels[lv].append(f"{p}x{j} = {ins[j]}[{horner(ax_list, p)}]")
    for k, n in enumerate(members):
        args = [names.get(i.id, "None") for i in n.inputs]
        lv = max((level[i.id] for i in read_inputs(n)), key=order.__getitem__, default="inv")
        names[n.id], level[n.id] = f"{p}v{k}", lv
        levels[lv].append(f"{p}v{k} = {scalar_expr(n.op, args, n.inputs[-1].dtype)}")
    if stored:
        levels["red"].append(f"{p}li = {horner(list(range(rank)), p)}")
        levels["red"] += [f"{outs[j]}[{p}li] = {names[t.id]}" for j, t in enumerate(stored)]
    return levels["inv"], levels["kept"], levels["red"], names[r.inputs[0].id]


def emit_source(kernel: Kernel, axes: tuple[int, ...], kind: str, cfg: LaunchConfig) -> str:
    """The generated module (``kernel_rows``, ``kernel_blocks``, ``combine``) of a reduction kernel."""
    r = kernel.nodes[-1]
    shape = tuple(r.inputs[0].shape)
    rank = len(shape)
    kept = [a for a in range(rank) if a not in axes]
    red = list(axes)
    value_dtype = r.inputs[0].dtype
    floating = value_dtype.kind == "f"
    shared_dtype, init = _acc(kind, value_dtype)
    ops = "+".join(n.op.name for n in kernel.nodes)
    lines = module_header(f"symdl cuda reduction kernel: {ops}; loop rank {rank}, {kind} over axes {tuple(axes)}.")
    inv, kept_stmts, red_stmts, value = _body(kernel, shape, tuple(axes))
    nstored = len(kernel.outputs) - 1
    params = [f"in{j}" for j in range(len(kernel.inputs))] + [f"out{j}" for j in range(nstored)]
    dims = [f"n{a}" for a in range(rank)]

    def fold(ind: str, acc: str, v: str) -> list[str]:
        return [ind + s for s in _fold(kind, acc, v, floating)]

    def inner_loop(ind: str, rng: str) -> list[str]:
        out = [ind + f"for r in {rng}:"]
        body = ind + _INDENT
        if red:
            out += peel("r", red, red[0], body)
        out += [body + s for s in red_stmts]
        out += fold(body, "s", value)
        return out

    def kept_prologue(ind: str) -> list[str]:
        out = peel("k", kept, kept[0], ind) if kept else []
        return out + [ind + s for s in kept_stmts]

    # one thread per output element
    lines += ["@cuda.jit", f"def kernel_rows({', '.join(params + ['red', 'nk', 'nr'] + dims)}):"]
    lines += [_INDENT + s for s in inv]
    lines.append(_INDENT + "for k in range(cuda.grid(1), nk, cuda.gridsize(1)):")
    ind = _INDENT * 2
    lines += kept_prologue(ind)
    lines.append(ind + f"s = {init}")
    lines += inner_loop(ind, "range(nr)")
    lines += [ind + "red[k] = s", "", ""]

    # nparts blocks per output element, shared-memory tree inside each block
    block = cfg.reduce_block
    params_b = params + ["red", "part", "nk", "nr", "nparts", "chunk"] + dims
    lines += ["@cuda.jit", f"def kernel_blocks({', '.join(params_b)}):"]
    lines.append(_INDENT + f"buf = cuda.shared.array({block}, {shared_dtype})")
    lines.append(_INDENT + "tid = cuda.threadIdx.x")
    lines += [_INDENT + s for s in inv]
    lines.append(_INDENT + "for b in range(cuda.blockIdx.x, nk * nparts, cuda.gridDim.x):")
    lines.append(ind + "k = b // nparts")
    lines.append(ind + "lo = (b - k * nparts) * chunk")
    lines.append(ind + "hi = min(lo + chunk, nr)")
    lines += kept_prologue(ind)
    lines.append(ind + f"s = {init}")
    lines += inner_loop(ind, f"range(lo + tid, hi, {block})")
    lines.append(ind + "buf[tid] = s")
    lines.append(ind + "cuda.syncthreads()")
    lines.append(ind + f"w = {block // 2}")
    lines.append(ind + "while w > 0:")
    lines.append(ind + _INDENT + "if tid < w:")
    lines.append(ind + _INDENT * 2 + "t = buf[tid + w]")
    lines += fold(ind + _INDENT * 2, "buf[tid]", "t")
    lines.append(ind + _INDENT + "cuda.syncthreads()")
    lines.append(ind + _INDENT + "w //= 2")
    lines.append(ind + "if tid == 0:")
    lines.append(ind + _INDENT + "if nparts == 1:")
    lines.append(ind + _INDENT * 2 + "red[k] = buf[0]")
    lines.append(ind + _INDENT + "else:")
    lines.append(ind + _INDENT * 2 + "part[b] = buf[0]")
    lines.append(ind + "cuda.syncthreads()")
    lines += ["", ""]

    # second pass: fold each output's partials in order
    lines += ["@cuda.jit", "def combine(part, red, nk, nparts):"]
    lines.append(_INDENT + "for k in range(cuda.grid(1), nk, cuda.gridsize(1)):")
    lines.append(ind + f"s = {init}")
    lines.append(ind + "for c in range(nparts):")
    lines.append(ind + _INDENT + "t = part[k * nparts + c]")
    lines += fold(ind + _INDENT, "s", "t")
    lines.append(ind + "red[k] = s")
    return "\n".join(lines) + "\n"


def _split(dims: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, int]:
    nk = math.prod(d for a, d in enumerate(dims) if a not in axes)
    nr = math.prod(d for a, d in enumerate(dims) if a in axes)
    return nk, nr


def loop_dims_of(kernel: Kernel) -> Callable[[Sequence[DeviceValue]], tuple[int, ...]]:
    """``dims(values)``: the concrete loop dims of a reduction kernel from its ``(*inputs, *outputs)`` values (the
    first stored output's shape, else an input with the loop's shape, else the inputs' broadcast shape)."""
    nin, nstored = len(kernel.inputs), len(kernel.outputs) - 1
    loop_static = tuple(kernel.nodes[-1].inputs[0].shape)
    # a kernel input with the loop's shape (the reduced value itself for a lone reduction) gives the loop dims
    full = next((j for j, t in enumerate(kernel.inputs) if read_axes(t, loop_static) is None), None)

    def dims(values: Sequence[DeviceValue]) -> tuple[int, ...]:
        if nstored:
            return tuple(values[nin].shape)
        if full is not None:
            return tuple(values[full].shape)
        return tuple(np.broadcast_shapes(*(v.shape for v in values[:nin])))

    return dims


def split_sizes(dims: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, int]:
    """``(nk, nr)``: elements kept (outputs) and reduced per output of a loop over ``dims``."""
    return _split(dims, axes)


def build_reduction(
    kernel: Kernel, axes: tuple[int, ...] | None = None, scratch: dict[int, object] | None = None
) -> CudaCompiledKernel:
    """Generate and load a reduction kernel; ``run(*inputs, *stored outputs, reduced output)`` over device values.

    ``warm(...)`` launches both kernels, so that warm-up compiles every variant whatever the sizes. An
    ``unbroadcast`` whose summed axes are known only at run time gets :func:`build_runtime_axes_reduction`.
    ``scratch``: the dict of partial-sum arrays to use (shared by the variants of one kernel)."""
    r = kernel.nodes[-1]
    if axes is None:
        axes = reduction_axes(r)
    if axes is None:
        return build_runtime_axes_reduction(kernel)
    kind = fold_kind(r)
    cfg = launch_config()
    source = emit_source(kernel, axes, kind, cfg)
    mod = load_cuda_module(source, kernel.name)
    nin, nstored = len(kernel.inputs), len(kernel.outputs) - 1
    value_node = r.inputs[0]
    if scratch is None:
        scratch = {}
    floating = value_node.dtype.kind == "f"
    loop_dims = loop_dims_of(kernel)

    def go(values: tuple[DeviceValue, ...], mode: str) -> None:
        dims = loop_dims(values)
        out = values[nin + nstored]
        nk, nr = _split(dims, axes)
        if kind != "sum" and nk * nr == 0:
            raise OpRuntimeError(f"{r.op.name} of an empty array (shape {dims})")
        if nk == 0:
            return
        if nr == 0:  # a sum of nothing is 0
            from compiler.codegen.cuda.library import fill

            fill(out, 0)
            return
        arrays = [v.flat() for v in values[: nin + nstored]]
        red = out.flat()
        if mode == "rows" or (mode == "auto" and nr <= cfg.rows_max):
            launch(mod.kernel_rows, grid_for(nk, cfg), cfg.block)(*arrays, red, nk, nr, *dims)
            return
        chunk = cfg.reduce_block * cfg.reduce_items
        if mode == "auto" and nr <= cfg.one_pass_max:
            chunk = nr  # one block per output element: no second pass
        nparts = -(-nr // chunk)
        part = scratch.get(nk * nparts)
        if part is None:
            part = scratch[nk * nparts] = device_empty(nk * nparts, np.float64 if floating else np.int64)
        blocks = max(1, min(nk * nparts, cfg.max_blocks * 16))
        launch(mod.kernel_blocks, blocks, cfg.reduce_block)(*arrays, red, part, nk, nr, nparts, chunk, *dims)
        if nparts > 1:
            launch(mod.combine, grid_for(nk, cfg), cfg.block)(part, red, nk, nparts)

    def run(*values: DeviceValue) -> None:
        go(values, "auto")

    def warm(*values: DeviceValue) -> None:
        go(values, "rows")
        go(values, "blocks")

    return CudaCompiledKernel(
        kernel,
        run=run,
        serial=run,
        source=source,
        dispatchers=[mod.kernel_rows, mod.kernel_blocks, mod.combine],
        warm=warm,
        scratch=scratch,
    )


def runtime_axes(kernel: Kernel) -> Callable[[Sequence[DeviceValue]], tuple[int, ...]]:
    """``axes(values)``: the loop axes an ``unbroadcast`` kernel sums, from the concrete shapes of its
    ``(*inputs, *outputs)`` values: the leading axes the reference lacks, and every axis where the reference (the
    reduced output, which has its shape) is 1 and the loop is not (as ``symdl.ops.shape._unbroadcast_axes``)."""
    r = kernel.nodes[-1]
    assert isinstance(r.op, Unbroadcast)
    nin, nstored = len(kernel.inputs), len(kernel.outputs) - 1
    lead = r.inputs[0].ndim - r.inputs[1].ndim
    loop_dims = loop_dims_of(kernel)

    def axes(values: Sequence[DeviceValue]) -> tuple[int, ...]:
        dims = loop_dims(values)
        out = values[nin + nstored].shape
        return tuple(range(lead)) + tuple(a + lead for a, d in enumerate(out) if d == 1 and dims[a + lead] != 1)

    return axes


def build_runtime_axes_reduction(kernel: Kernel) -> CudaCompiledKernel:
    """A reduction kernel ending in an ``unbroadcast`` whose reference has dims unknown before run time (e.g. a
    gradient with respect to a value of shape ``(None, 4)`` broadcast against ``(None, 4)``): each call decides the
    summed axes from the concrete shapes (:func:`runtime_axes`) and runs the :func:`build_reduction` kernel of those
    axes, generated on first use and kept (one variant per axes tuple; usually one or two). The variants share
    their partial-sum scratch arrays. ``source``/``dispatchers`` start with the variant of the axes assumed when
    every unknown reference dim is not 1, and grow as variants are built."""
    r = kernel.nodes[-1]
    ref = r.inputs[1]
    lead = r.inputs[0].ndim - ref.ndim
    loop_static = tuple(r.inputs[0].shape)
    guess = tuple(range(lead)) + tuple(
        a + lead for a, d in enumerate(ref.shape) if d == 1 and loop_static[a + lead] != 1
    )
    scratch: dict[int, object] = {}
    variants: dict[tuple[int, ...], CudaCompiledKernel] = {guess: build_reduction(kernel, guess, scratch)}
    axes_of = runtime_axes(kernel)
    first = variants[guess]
    ck = CudaCompiledKernel(
        kernel, run=first.run, serial=first.run, source=first.source, dispatchers=list(first.dispatchers)
    )

    def variant(values: Sequence[DeviceValue]) -> CudaCompiledKernel:
        axes = axes_of(values)
        v = variants.get(axes)
        if v is None:
            v = variants[axes] = build_reduction(kernel, axes, scratch)
            ck.dispatchers.extend(v.dispatchers)
            ck.source += "\n# variant summing loop axes " + str(axes) + "\n" + v.source
        return v

    def run(*values: DeviceValue) -> None:
        variant(values).run(*values)

    def warm(*values: DeviceValue) -> None:
        w = variant(values).warm
        assert w is not None
        w(*values)

    ck.run = ck.serial = run
    ck.warm = warm
    ck.scratch = scratch
    return ck
