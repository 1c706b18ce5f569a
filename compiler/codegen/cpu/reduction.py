"""Numba code generation for ``"reduction"`` kernels: an elementwise group whose value is summed on the fly.

A fused group ``{producers..., r}`` where ``r`` (a ``sum`` or ``unbroadcast``) reduces a member ``p`` of an
elementwise group never materialises ``p`` unless something else reads it. One loop nest over ``p``'s shape (the
*loop shape*) computes every member, stores the group's loop-shaped outputs, and accumulates ``p`` into a
per-task partial array of the reduction's keepdims shape:

- the accumulator is a float64 scalar opened at the loop depth where every kept axis index is fixed (the
  deepest kept axis + 1) and added into the partial after the inner (reduced) loops close, so the innermost
  loop is a plain ``s += v`` that vectorises (``fastmath={"reassoc"}`` on this function only);
- the outermost loop is split into ``T`` contiguous chunks (tasks); task ``t`` writes only ``part[t]`` (its
  own partial) and the loop-shaped outputs of its chunk: disjoint writes, no shared accumulator. The one
  ``nogil`` function ``kernel_range`` runs tasks ``t0 <= t < t1``; the runtime's threads run pieces of the task
  range (:func:`compiler.codegen.cpu.parallel.parallel_for`), the serial twin runs ``T = 1`` task in the
  calling thread. ``combine`` sums the partials afterwards in task order, so the result does not depend on
  thread timing.

Signature: ``(in0, ..., out0, ..., part, dims, t0, t1)``: ``dims`` is the concrete loop shape (a tuple: a new
batch size does not recompile), ``part`` the float64 partials ``(T, *keepdims shape)``. The runtime wrapper
reshapes the reduction's output to the keepdims shape (a view of its C-contiguous buffer) and casts the
combined float64 sums into it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np

from compiler.codegen.cache import NJIT_FLAGS, load_module
from compiler.codegen.cpu.elementwise import (
    PARALLEL_THRESHOLD,
    Aliases,
    _index,
    alias_variants,
    read_inputs,
    store_name,
)
from compiler.codegen.cpu.fastmath import FASTMATH_VERSION
from compiler.codegen.cpu.parallel import get_num_threads, parallel_for
from compiler.codegen.scalar import prelude, scalar_expr
from compiler.kernels import CompiledKernel, Kernel
from symdl.graph import Tensor
from symdl.ops.reduce import Sum
from symdl.ops.shape import Unbroadcast

_INDENT = "    "
_TASKS_PER_THREAD = 2
#: in the source of every ``kernel_call`` (which calls :func:`combine`): bump when ``combine`` changes, so that
#: the content-addressed cache never serves a generated module compiled against an older one
COMBINE_VERSION = "1"


def reduced_axes(node: Tensor) -> tuple[int, ...] | None:
    """The loop axes a fusable reduction node sums over, or None if it cannot be fused (the axes of an
    ``unbroadcast`` must be known statically: its reference's dims must all be known)."""
    x = node.inputs[0]
    if isinstance(node.op, Sum):
        if not (x.dtype.kind == "f" and node.dtype == x.dtype):
            return None
        return tuple(sorted(node.op.axes))
    if isinstance(node.op, Unbroadcast):
        ref = node.inputs[1]
        if any(d is None for d in ref.shape) or x.dtype.kind != "f":
            return None
        lead = x.ndim - ref.ndim
        keep = tuple(i + lead for i, d in enumerate(ref.shape) if d == 1 and x.shape[i + lead] != 1)
        return tuple(range(lead)) + keep
    return None


def emit_source(kernel: Kernel, aliases: Aliases = ()) -> str:
    """The generated module of a reduction kernel (``aliases``: see :func:`build_elementwise`)."""
    r = kernel.nodes[-1]
    shape = tuple(r.inputs[0].shape)
    axes = reduced_axes(r)
    assert axes is not None
    ops = "+".join(n.op.name for n in kernel.nodes)
    lines = [f'"""symdl reduction kernel: {ops}; loop rank {len(shape)}, summed axes {axes}."""', "", prelude()]
    lines += ["from compiler.codegen.cpu.fastmath import exp_f32, tanh_f32", f"FASTMATH = {FASTMATH_VERSION!r}", ""]
    if aliases:
        lines += [f"# outputs stored through the inputs they share memory with: {aliases}"]
    lines += _function("kernel_range", kernel, shape, axes, aliases)
    dims_arg = _dims_arg(kernel)
    if dims_arg is not None:
        lines += [
            "",
            "from compiler.codegen.cpu.reduction import combine as _combine",
            f"COMBINE = {COMBINE_VERSION!r}",
        ]
        lines += ["", ""] + _call_function(kernel, axes, dims_arg)
    return "\n".join(lines) + "\n"


def _dims_arg(kernel: Kernel) -> str | None:
    """The parameter of ``kernel_range`` whose shape is the concrete loop shape: the first stored output, else an
    input whose static shape is the loop's (see :func:`build_reduction`); None when the shape must be broadcast
    from several inputs."""
    if len(kernel.outputs) > 1:
        return "out0"
    full = _full_input(kernel)
    return None if full is None else f"in{full}"


def _full_input(kernel: Kernel) -> int | None:
    """An input whose static shape is the loop's (it gives the concrete loop shape directly), or None."""
    loop = tuple(kernel.nodes[-1].inputs[0].shape)
    shapes = [t.shape for t in kernel.inputs]
    return next(
        (j for j, s in enumerate(shapes) if len(s) == len(loop) and all(d != 1 or e == 1 for d, e in zip(s, loop))),
        None,
    )


def _call_function(kernel: Kernel, axes: tuple[int, ...], dims_arg: str) -> list[str]:
    """``kernel_call(in0, ..., out0, ..., red)``: the whole serial call in one compiled function (one task; the
    partials allocated, ``kernel_range`` run, :func:`combine` into ``red``, which must be C-contiguous), what
    :func:`build_reduction`'s runner calls below the parallel threshold: the same calls as the task path with
    one task, so the same results, without the Python glue and two dispatches (a 32x10 bias gradient: 2.9 ->
    1.2 us). Calling ``kernel_range`` and ``combine`` from here compiles them for the argument types the task
    path passes too, so a small warm-up still compiles everything a large batch runs."""
    rank = len(kernel.nodes[-1].inputs[0].shape)
    params = [f"in{j}" for j in range(len(kernel.inputs))] + [f"out{j}" for j in range(len(kernel.outputs) - 1)]
    flags = NJIT_FLAGS + ", nogil=True"
    keep = ", ".join("1" if a in axes else f"dims[{a}]" for a in range(rank))
    size = " * ".join(f"dims[{a}]" for a in range(rank))
    return [
        f"@numba.njit({flags})",
        f"def kernel_call({', '.join([*params, 'red'])}):",
        _INDENT + f"dims = {dims_arg}.shape",
        _INDENT + "red1 = red.reshape(-1)",
        _INDENT + f"if {size} == 0:",
        _INDENT * 2 + "red1[:] = 0",
        _INDENT * 2 + "return",
        _INDENT + f"part = np.empty((1, {keep}), np.float64)",
        _INDENT + f"kernel_range({', '.join(params)}, part, dims, 0, 1)",
        _INDENT + "_combine(part.reshape(1, -1), red1)",
    ]


def _function(name: str, kernel: Kernel, shape: tuple, axes: tuple[int, ...], aliases: Aliases = ()) -> list[str]:
    rank = len(shape)
    r = kernel.nodes[-1]
    members = kernel.nodes[:-1]
    stored = kernel.outputs[:-1]
    params = [f"in{j}" for j in range(len(kernel.inputs))] + [f"out{j}" for j in range(len(stored))]
    params += ["part", "dims", "t0", "t1"]
    flags = NJIT_FLAGS.replace("fastmath=False", 'fastmath={"reassoc"}') + ", nogil=True"
    kept = [a for a in range(rank) if a not in axes]
    acc_depth = (max(kept) + 1) if kept else 0  # every kept index is fixed from this depth on

    levels: list[list[str]] = [[] for _ in range(rank + 1)]
    names: dict[int, str] = {}
    depth: dict[int, int] = {}
    used = {i.id for n in members for i in read_inputs(n)} | {r.inputs[0].id}
    for j, t in enumerate(kernel.inputs):
        if t.id in used and t.id not in names:
            idx, d = _index(t, shape)
            names[t.id], depth[t.id] = f"x{j}", d
            levels[d].append(f"x{j} = in{j}[{idx}]")
    for k, n in enumerate(members):
        args = [names.get(i.id, "None") for i in n.inputs]
        d = max((depth[i.id] for i in read_inputs(n)), default=0)
        names[n.id], depth[n.id] = f"v{k}", d
        levels[d].append(f"v{k} = {scalar_expr(n.op, args, n.inputs[-1].dtype)}")
    store_idx = ", ".join(f"i{a}" for a in range(rank))
    for j, t in enumerate(stored):
        levels[rank].append(f"{store_name(j, aliases)}[{store_idx}] = {names[t.id]}")
    levels[rank].append(f"s += {names[r.inputs[0].id]}")
    acc_idx = ", ".join("0" if a in axes else f"i{a}" for a in range(rank))

    lines = [f"@numba.njit({flags})", f"def {name}({', '.join(params)}):"]
    lines += [_INDENT + f"n{a} = dims[{a}]" for a in range(rank)]
    lines += [_INDENT + "ntasks = part.shape[0]"]
    # loop-invariant loads and values are hoisted above the task loop; depth d >= 1 statements sit inside d
    # open loops of the task's chunk
    lines += [_INDENT + st for st in levels[0]]
    levels[0] = []
    body: list[str] = []
    for d in range(rank + 1):
        ind = _INDENT * (d + 2)
        if d == acc_depth:
            body.append(ind + "s = 0.0")
        body += [ind + st for st in levels[d]]
        if d < rank:
            rng = "range(lo, hi)" if d == 0 else f"range(n{d})"
            body.append(ind + f"for i{d} in {rng}:")
    # close the reduced loops below acc_depth: the flush sits at depth acc_depth, after its inner loops
    body.append(_INDENT * (acc_depth + 2) + f"acc[{acc_idx}] += s")
    lines.append(_INDENT + "for t in range(t0, t1):")
    lines.append(_INDENT * 2 + "lo = (t * n0) // ntasks")
    lines.append(_INDENT * 2 + "hi = ((t + 1) * n0) // ntasks")
    lines.append(_INDENT * 2 + "acc = part[t]")
    lines.append(_INDENT * 2 + "acc[...] = 0.0")
    lines += body
    return lines


@numba.njit(cache=True)
def combine(part2: np.ndarray, out1: np.ndarray) -> None:
    """``out1[j] = sum_t part2[t, j]`` in task order (deterministic), cast to ``out1``'s dtype."""
    for j in range(out1.size):
        s = 0.0
        for t in range(part2.shape[0]):
            s += part2[t, j]
        out1[j] = s


def _keep_shape(dims: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if a in axes else d for a, d in enumerate(dims))


def build_reduction(kernel: Kernel, aliases: Aliases = ()) -> CompiledKernel:
    """Generate, cache and load a reduction kernel; ``run(*inputs, *outputs)``. ``aliases``: stored outputs that
    share memory with inputs (see :func:`compiler.codegen.cpu.elementwise.build_elementwise`)."""
    r = kernel.nodes[-1]
    axes = reduced_axes(r)
    assert axes is not None and r.inputs[0].ndim >= 1
    source = emit_source(kernel, aliases)
    mod = load_module(source, kernel.name)
    nin, nstored = len(kernel.inputs), len(kernel.outputs) - 1
    # an input whose static shape is the loop's gives the concrete loop shape directly
    full = _full_input(kernel)
    scratch: dict[tuple, np.ndarray] = {}

    fn = mod.kernel_range
    call = getattr(mod, "kernel_call", None)  # the whole serial call in one dispatch (see _call_function)
    dpos = nin if nstored else full  # the argument whose shape is the loop shape
    rpos = nin + nstored

    def make(parallel: bool) -> Callable[..., None]:

        def run(*args: np.ndarray) -> None:
            if call is not None:
                red = args[rpos]
                if (not parallel or args[dpos].size <= PARALLEL_THRESHOLD) and red.flags.c_contiguous:
                    call(*args)
                    return
            slow(*args)

        def slow(*args: np.ndarray) -> None:
            if nstored:
                dims = args[nin].shape
            elif full is not None:
                dims = args[full].shape
            else:
                dims = np.broadcast_shapes(*(a.shape for a in args[:nin]))
            red = args[nin + nstored]
            n = math.prod(dims)
            if n == 0:  # a sum of nothing is 0; the loop-shaped outputs are empty
                red.fill(0)
                return
            tasks = 1
            if parallel and n > PARALLEL_THRESHOLD and dims[0] > 1:
                tasks = min(dims[0], get_num_threads() * _TASKS_PER_THREAD)
            key = (tasks, dims)
            part = scratch.get(key)
            if part is None:
                part = scratch[key] = np.empty((tasks, *_keep_shape(dims, axes)), np.float64)
            if tasks > 1:
                parallel_for(fn, (*args[: nin + nstored], part, dims), tasks)
            else:
                fn(*args[: nin + nstored], part, dims, 0, 1)
            combine(part.reshape(tasks, -1), red.reshape(-1))

        return run

    ck = CompiledKernel(
        kernel,
        run=make(True),
        serial=make(False),
        source=source,
        parallel=True,
        dispatchers=[fn, combine] + ([call] if call is not None else []),
    )
    if not aliases and nstored:
        ck.aliased = alias_variants(ck, lambda pairs: build_reduction(kernel, pairs))
    return ck
