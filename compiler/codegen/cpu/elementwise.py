"""Numba code generation for fused elementwise kernels.

A fused group becomes one module with one ``nogil`` function, ``kernel_range(in0, ..., out0, ..., t0, t1)``,
running the loop nest for outermost indices ``t0 <= i0 < t1`` (every outer index writes a disjoint slice, there
are no reductions): :func:`compiler.codegen.cpu.parallel.parallel_for` runs pieces of the outer range on the
runtime's threads, and the serial twin is the whole range in the calling thread (one compile serves both).
A loop of rank 0 is ``kernel_serial(in0, ..., out0, ...)``. Loop sizes are read from ``out0.shape`` at run
time (only the rank is static), so a new batch size never recompiles. Each
input is indexed with its broadcast pattern: it lacks the leading loop axes it does not have, and reads index
0 on axes where its static dim is 1 and the loop's is not (a ``None`` dim counts as full-size). Member values
are scalar locals computed once each, in topological order; every input is loaded before any output is
stored, so an output may share memory with a same-shaped input.

The source depends only on the kernel's structure (names are positional: ``in0``, ``x0``, ``v3``), so the
content-addressed cache (:mod:`compiler.codegen.cache`) and Numba's disk cache hit across processes and
across graphs with the same structure.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.codegen.cache import NJIT_FLAGS, load_module
from compiler.codegen.cpu.fastmath import FASTMATH_VERSION
from compiler.codegen.cpu.parallel import parallel_for
from compiler.codegen.scalar import prelude, scalar_expr
from compiler.kernels import CompiledKernel, Kernel
from symdl.graph import Tensor
from symdl.ops.elementwise import FillLike
from symdl.ops.shape import BroadcastLike

#: ``(output index, input index)`` pairs of a kernel's arguments that share memory
Aliases = tuple[tuple[int, int], ...]

#: loops with more elements than this are split across the threads: handing a piece to another thread costs
#: 70-100 us on this 2-core VM (thread wake-ups), so only loops of ~0.3 ms or more gain
PARALLEL_THRESHOLD = 2**20

_INDENT = "    "


def loop_shape(kernel: Kernel) -> tuple:
    """The static loop shape of an elementwise kernel (every member has it)."""
    return tuple(kernel.nodes[-1].shape)


def _index(t: Tensor, shape: tuple) -> tuple[str, int]:
    """The index reading input ``t`` inside a loop over ``shape`` (NumPy broadcasting), and its loop depth:
    the number of loops that must be open before the load (0: invariant, hoisted above every loop)."""
    rank = len(shape)
    if t.ndim == 0:
        return "()", 0
    parts = []
    depth = 0
    for a, d in enumerate(t.shape):
        axis = rank - t.ndim + a
        if d == 1 and shape[axis] != 1:
            parts.append("0")
        else:
            parts.append(f"i{axis}")
            depth = axis + 1
    return ", ".join(parts), depth


def read_inputs(node: Tensor) -> tuple[Tensor, ...]:
    """The inputs whose *values* an elementwise member reads (FillLike and BroadcastLike only take a shape
    from their reference operand, which the loop shape already carries)."""
    if isinstance(node.op, FillLike):
        return ()
    if isinstance(node.op, BroadcastLike):
        return node.inputs[:1]
    return node.inputs


def _statements(kernel: Kernel, shape: tuple, aliases: Aliases = ()) -> list[list[str]]:
    """The statements of the loop nest, by depth: loads and member values sit at the shallowest loop where
    they are invariant (loop-invariant code motion), stores at the innermost. An output that shares memory with
    an input (``aliases``: ``(output, input)`` index pairs) is stored through the input's name."""
    rank = len(shape)
    levels: list[list[str]] = [[] for _ in range(rank + 1)]
    names: dict[int, str] = {}
    depth: dict[int, int] = {}
    used = {i.id for n in kernel.nodes for i in read_inputs(n)}
    for j, t in enumerate(kernel.inputs):
        if t.id in used and t.id not in names:
            idx, d = _index(t, shape)
            names[t.id], depth[t.id] = f"x{j}", d
            levels[d].append(f"x{j} = in{j}[{idx}]")
    for k, n in enumerate(kernel.nodes):
        args = [names.get(i.id, "None") for i in n.inputs]
        d = max((depth[i.id] for i in read_inputs(n)), default=0)
        names[n.id], depth[n.id] = f"v{k}", d
        levels[d].append(f"v{k} = {scalar_expr(n.op, args, n.inputs[-1].dtype)}")
    store_idx = ", ".join(f"i{a}" for a in range(rank)) if rank else "()"
    for j, t in enumerate(kernel.outputs):
        levels[rank].append(f"{store_name(j, aliases)}[{store_idx}] = {names[t.id]}")
    return levels


def _function(name: str, kernel: Kernel, shape: tuple, aliases: Aliases = ()) -> list[str]:
    rank = len(shape)
    params = [f"in{j}" for j in range(len(kernel.inputs))] + [f"out{j}" for j in range(len(kernel.outputs))]
    if rank:
        params += ["t0", "t1"]
    lines = [f"@numba.njit({NJIT_FLAGS}, nogil=True)", f"def {name}({', '.join(params)}):"]
    if rank:
        # the task range as views (slices along the outer axis of every operand indexed by i0), so the loops
        # run over range(n): a loop over range(t0, t1) has indices of unknown sign, which keeps LLVM from
        # vectorising it (3x slower on the exp/tanh chain)
        sliced = [f"in{j}" for j, t in enumerate(kernel.inputs) if _index(t, shape)[0].split(", ")[0] == "i0"]
        sliced += [f"out{j}" for j in range(len(kernel.outputs))]
        lines += [_INDENT + f"{a} = {a}[t0:t1]" for a in sliced]
    lines += [_INDENT + f"n{a} = out0.shape[{a}]" for a in range(rank)]
    levels = _statements(kernel, shape, aliases)
    for d, stmts in enumerate(levels):
        lines += [_INDENT * (d + 1) + s for s in stmts]
        if d < rank:
            lines.append(_INDENT * (d + 1) + f"for i{d} in range(n{d}):")
    return lines


def emit_source(kernel: Kernel, aliases: Aliases = ()) -> str:
    """The generated module of an elementwise kernel (``kernel_range`` for loops of rank >= 1); ``aliases``:
    see :func:`build_elementwise`."""
    shape = loop_shape(kernel)
    ops = "+".join(n.op.name for n in kernel.nodes)
    lines = [f'"""symdl elementwise kernel: {ops}; loop rank {len(shape)}."""', "", prelude()]
    lines += ["from compiler.codegen.cpu.fastmath import exp_f32, tanh_f32", f"FASTMATH = {FASTMATH_VERSION!r}", ""]
    if aliases:
        lines += [f"# outputs stored through the inputs they share memory with: {aliases}"]
    lines += _function("kernel_range" if shape else "kernel_serial", kernel, shape, aliases)
    return "\n".join(lines) + "\n"


def _dispatch(kernel: Callable, out_pos: int, threshold: int | None) -> Callable[..., None]:
    """``run(*args)``: ``kernel`` over the whole outer range, split across threads when the loop has more than
    ``threshold`` elements (never when ``threshold`` is None)."""

    def run(*args: np.ndarray) -> None:
        out = args[out_pos]
        if threshold is not None and out.size > threshold:
            parallel_for(kernel, args, out.shape[0])
        else:
            kernel(*args, 0, out.shape[0])

    return run


def build_elementwise(kernel: Kernel, aliases: Aliases = ()) -> CompiledKernel:
    """Generate, cache and load the Numba kernel of an elementwise group.

    ``run(*inputs, *outputs)`` splits the loop across threads when it has more than :data:`PARALLEL_THRESHOLD`
    elements. An output may share memory with a same-shaped input (every element's inputs are loaded before its
    outputs are stored); ``aliases`` (``(output, input)`` index pairs known to share memory) makes the generated
    code store through the input's name, so that LLVM sees one pointer: with two names for the same memory it
    cannot prove the loads and stores independent and gives up vectorising (Adam's in-place update: 6x
    slower). ``CompiledKernel.aliased(pairs)`` returns the run function of that variant (generated on first use).
    """
    source = emit_source(kernel, aliases)
    mod = load_module(source, kernel.name)
    if not loop_shape(kernel):
        serial = mod.kernel_serial
        return CompiledKernel(kernel, run=serial, serial=serial, source=source, dispatchers=[serial])
    fn, out_pos = mod.kernel_range, len(kernel.inputs)
    run, serial = _dispatch(fn, out_pos, PARALLEL_THRESHOLD), _dispatch(fn, out_pos, None)
    ck = CompiledKernel(kernel, run=run, serial=serial, source=source, parallel=True, dispatchers=[fn])
    if not aliases:
        ck.aliased = alias_variants(ck, lambda pairs: build_elementwise(kernel, pairs))
    return ck


def store_name(j: int, aliases: Aliases) -> str:
    """The name output ``j`` is stored through: its aliased input's, or its own."""
    return next((f"in{i}" for o, i in aliases if o == j), f"out{j}")


def alias_variants(ck: CompiledKernel, build: Callable[[Aliases], CompiledKernel]) -> Callable[[Aliases], Callable]:
    """``aliased(pairs) -> run`` for ``ck``: the variant storing through aliased inputs, built once per ``pairs``
    (its dispatchers are added to ``ck``'s, so compile statistics count them)."""
    cache: dict[Aliases, Callable] = {}

    def aliased(pairs: Aliases) -> Callable:
        pairs = tuple(sorted(pairs))
        if not pairs:
            return ck.run
        run = cache.get(pairs)
        if run is None:
            variant = build(pairs)
            ck.dispatchers.extend(variant.dispatchers)
            run = cache[pairs] = variant.run
        return run

    return aliased
