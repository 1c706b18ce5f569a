"""numba.cuda code generation for fused elementwise kernels.

A fused group (the same :class:`~compiler.kernels.Kernel` the CPU emitter gets) becomes one ``@cuda.jit`` kernel
with a grid-stride loop over the flattened loop index ``i``. Signature: ``(in0, ..., out0, ..., n, n0, ..., n{r-1})``
where every array is a flat 1-d device array (see :class:`~compiler.codegen.cuda.device.DeviceValue`), ``n`` the
number of loop elements and ``n0...`` the concrete loop dims (sizes are arguments, never baked in: a new batch size
does not recompile).

Broadcasting is index arithmetic: an input with the loop's shape is read at ``i``; any other input is read at the
Horner form of its non-broadcast axes (``(i0 * n2) + i2`` for an input of shape ``(N, 1, C)`` in an ``(N, H, C)``
loop), the loop indices ``i0...`` being peeled off ``i`` by div/mod only as deep as some input needs them. Inputs
that are invariant (0-d, or broadcast along every axis) are loaded once before the loop, and members computed only
from invariants are hoisted with them. Every input is loaded before any output is stored, so an output may share
memory with a same-shaped input (in-place reuse by the memory planner).

Scalar expressions come from :mod:`compiler.codegen.scalar` (shared with the CPU target); the float32 helpers
``exp_f32``/``tanh_f32`` are defined here as device functions over ``math.exp``/``math.tanh``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from compiler.codegen.cpu.elementwise import read_inputs
from compiler.codegen.cuda.device import DeviceValue, LaunchConfig, grid_for, launch, launch_config, load_cuda_module
from compiler.codegen.scalar import prelude, scalar_expr
from compiler.kernels import CompiledKernel, Kernel
from symdl.graph import Tensor

_INDENT = "    "

#: header of every generated cuda module (after the scalar prelude)
CUDA_HEADER = """from numba import cuda

from compiler.codegen.cuda.device import simulator_math

math = simulator_math(math)  # the math module itself on a GPU


@cuda.jit(device=True)
def exp_f32(x):
    return F32(math.exp(x))


@cuda.jit(device=True)
def tanh_f32(x):
    return F32(math.tanh(x))
"""


def module_header(doc: str) -> list[str]:
    """Docstring, imports, dtype constructors and the float32 device helpers of a generated cuda module."""
    return [f'"""{doc}"""', "", prelude(), CUDA_HEADER, ""]


def read_axes(t: Tensor, shape: tuple) -> list[int] | None:
    """The loop axes input ``t`` varies along (NumPy broadcasting inside a loop over ``shape``), or None when ``t``
    has the loop's shape exactly (read at the flat loop index)."""
    rank = len(shape)
    axes = []
    full = t.ndim == rank
    for a, d in enumerate(t.shape):
        axis = rank - t.ndim + a
        if d == 1 and shape[axis] != 1:
            full = False
        else:
            axes.append(axis)
    return None if full else axes


def horner(axes: Sequence[int], prefix: str = "") -> str:
    """The flat offset of the loop indices ``axes`` in a C-contiguous array over those loop dims (index and dim
    names ``{prefix}i{a}``/``{prefix}n{a}``)."""
    if not axes:
        return "0"
    expr = f"{prefix}i{axes[0]}"
    for a in axes[1:]:
        expr = f"({expr}) * {prefix}n{a} + {prefix}i{a}"
    return expr


def peel(flat: str, axes: Sequence[int], deepest: int, indent: str, prefix: str = "") -> list[str]:
    """Statements computing loop indices ``i{a}`` for ``a`` in ``axes`` (ascending) from the flat index ``flat``
    of a C-contiguous walk over those axes, down to axis ``deepest`` (the smallest one needed)."""
    need = [a for a in axes if a >= deepest]
    if not need:
        return []
    p = prefix
    lines = [indent + f"{p}q = {flat}"]
    for a in reversed(need):
        if a == need[0] and a == axes[0]:
            lines.append(indent + f"{p}i{a} = {p}q")
        else:
            lines.append(indent + f"{p}i{a} = {p}q % {p}n{a}")
            if a != need[0]:
                lines.append(indent + f"{p}q = {p}q // {p}n{a}")
    return lines


def loop_body(
    kernel: Kernel,
    ins: Sequence[str],
    outs: Sequence[str],
    index: str,
    prefix: str = "",
    values: dict[int, str] | None = None,
    shape: tuple | None = None,
) -> tuple[list[str], list[str]]:
    """(statements before the loop, statements inside it) of an elementwise group at flat loop index ``index``:
    input ``j`` is the flat array named ``ins[j]``, output ``j`` is stored into ``outs[j]`` (None: not stored),
    loop dims are ``{prefix}n{a}`` and every local name starts with ``prefix``. ``values``: value ids already held
    in a local variable (an epilogue's anchor value) instead of being loaded from their input array."""
    shape = tuple(kernel.nodes[-1].shape) if shape is None else shape
    rank = len(shape)
    p = prefix
    outer: list[str] = []
    inner: list[str] = []
    names: dict[int, str] = dict(values or {})
    varies: dict[int, bool] = {t: True for t in names}
    used = {i.id for n in kernel.nodes for i in read_inputs(n)}
    needed_axes: set[int] = set()
    loads: list[tuple[str, str, list[int] | None]] = []
    for j, t in enumerate(kernel.inputs):
        if t.id not in used or t.id in names:
            continue
        axes = read_axes(t, shape)
        names[t.id] = f"{p}x{j}"
        varies[t.id] = axes is None or bool(axes)
        if axes:
            needed_axes.update(axes)
        loads.append((f"{p}x{j}", ins[j], axes))
    for name, arr, axes in loads:
        if axes is None:
            inner.append(f"{name} = {arr}[{index}]")
        elif not axes:
            outer.append(f"{name} = {arr}[0]")
        else:
            inner.append(f"{name} = {arr}[{horner(axes, p)}]")
    for k, n in enumerate(kernel.nodes):
        if n.id in names:
            continue
        args = [names.get(i.id, "None") for i in n.inputs]
        v = any(varies[i.id] for i in read_inputs(n))
        names[n.id], varies[n.id] = f"{p}v{k}", v
        (inner if v else outer).append(f"{p}v{k} = {scalar_expr(n.op, args, n.inputs[-1].dtype)}")
    stores = [f"{o}[{index}] = {names[t.id]}" for o, t in zip(outs, kernel.outputs) if o is not None]
    peeled = peel(index, list(range(rank)), min(needed_axes), "", p) if needed_axes else []
    return outer, peeled + inner + stores


def emit_source(kernel: Kernel) -> str:
    """The generated module of an elementwise kernel (function ``kernel``)."""
    shape = tuple(kernel.nodes[-1].shape)
    rank = len(shape)
    ops = "+".join(n.op.name for n in kernel.nodes)
    lines = module_header(f"symdl cuda elementwise kernel: {ops}; loop rank {rank}.")
    ins = [f"in{j}" for j in range(len(kernel.inputs))]
    outs = [f"out{j}" for j in range(len(kernel.outputs))]
    params = ins + outs + ["n"] + [f"n{a}" for a in range(rank)]
    lines += ["@cuda.jit", f"def kernel({', '.join(params)}):"]
    lines += [_INDENT + "start = cuda.grid(1)", _INDENT + "step = cuda.gridsize(1)"]
    outer, inner = loop_body(kernel, ins, outs, "i")
    lines += [_INDENT + s for s in outer]
    lines.append(_INDENT + "for i in range(start, n, step):")
    lines += [_INDENT * 2 + s for s in inner]
    return "\n".join(lines) + "\n"


def launcher(fn: object, n_in: int, cfg: LaunchConfig) -> Callable[..., None]:
    """``run(*inputs, *outputs)`` over :class:`DeviceValue` s: a grid-stride launch over the loop of ``out0``."""

    def run(*values: DeviceValue) -> None:
        out0 = values[n_in]
        n = out0.size
        if n == 0:
            return
        arrays = [v.flat() for v in values]
        launch(fn, grid_for(n, cfg), cfg.block)(*arrays, n, *out0.shape)  # type: ignore[index]

    return run


def build_elementwise(kernel: Kernel) -> CompiledKernel:
    """Generate, cache and load the cuda kernel of an elementwise group; ``run(*inputs, *outputs)``."""
    source = emit_source(kernel)
    mod = load_cuda_module(source, kernel.name)
    run = launcher(mod.kernel, len(kernel.inputs), launch_config())
    return CompiledKernel(kernel, run=run, serial=run, source=source, dispatchers=[mod.kernel])
