"""The kernel IR: the unit of code generation, shared by every target.

Fusion (``compiler/fusion.py``) partitions a Program's non-leaf nodes into :class:`Kernel` s. A target's
emitter (``compiler/codegen/<target>/``) turns each Kernel into a :class:`CompiledKernel`; the runtime
(``runtime/``) runs them over preallocated buffers in the order of a Plan. Fusion decisions are made once,
here, and every target reuses them: only the emitter changes.

Kernel kinds
------------
- ``"elementwise"``: a convex group of :class:`symdl.ops.elementwise.Elementwise` ops (and ``FillLike``) that
  all have the same output shape (the *loop shape*). Broadcasting happens only at the group's inputs. One
  generated loop computes every member and stores the ``outputs``.
- ``"op"``: one non-elementwise node (matmul, conv, reduction, softmax, gather ...) run by a library kernel.
- ``"epilogue"``: an ``"op"`` anchor (``nodes[0]``: matmul or conv) followed by an elementwise group whose loop
  shape is the anchor's shape and which is the anchor's only consumer (bias add + activation). The emitter
  runs the anchor into the epilogue's output buffer and then applies the elementwise chain in place.
- ``"reduction"``: an elementwise group followed by a ``sum``/``unbroadcast`` (``nodes[-1]``, the last output) of
  one of its members, accumulated while the loop runs: the summed value is never stored unless something
  else reads it (softmax and cross-entropy backward sums, BatchNorm statistics, bias gradients, loss means).
- ``"view"``: a reshape-family node (reshape, reshape_like, expand_dims, squeeze, flatten) whose output is a
  view of its C-contiguous input: no copy, no code; also a 2-d transpose read only by 2-d matmuls, whose
  F-contiguous view BLAS takes as it is.

Calling convention (destination passing)
----------------------------------------
``CompiledKernel.run(*input_arrays, *output_arrays)`` reads the inputs (in ``Kernel.inputs`` order) and writes
every output array (in ``Kernel.outputs`` order) in place; output arrays are preallocated, C-contiguous, of the
concrete shape and the dtype the output node's static type says. Input arrays are C-contiguous unless they are
views made by ``"view"`` kernels (still C-contiguous). For ``mode == "view"`` kernels,
``run(*input_arrays) -> array`` returns the view instead. An output may share memory with an input of the
same kernel only for ``"elementwise"``/``"epilogue"`` kernels (elementwise reads and writes the same index),
and only when the memory planner decided so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from symdl.graph import Tensor

KINDS = ("elementwise", "op", "epilogue", "reduction", "view")


@dataclass(eq=False)
class Kernel:
    kind: str
    nodes: list[Tensor]  # members, inputs before consumers
    inputs: list[Tensor]  # values read from outside the kernel, in argument order
    outputs: list[Tensor]  # member values needed outside the kernel, in argument order
    index: int = 0  # position in the schedule (set by the scheduler)

    @property
    def name(self) -> str:
        """Stable readable name from the member ops, e.g. ``k12_conv+add+relu``."""
        ops: list[str] = []
        for n in self.nodes:
            if not ops or ops[-1] != n.op.name:
                ops.append(n.op.name)
        label = "+".join(ops)
        if len(label) > 60:
            label = label[:57] + "..."
        return f"k{self.index}_{label}"

    @property
    def anchor(self) -> Tensor:
        """The library node of an ``"op"``/``"epilogue"``/``"view"`` kernel."""
        return self.nodes[0]

    @property
    def role(self) -> str:
        """``"backward"`` if any member is a gradient node, else ``"forward"``."""
        return "backward" if any(n.role == "backward" for n in self.nodes) else "forward"

    def frames(self) -> list[str]:
        """Distinct user lines of the member ops (for plan dumps and errors)."""
        seen: list[str] = []
        for n in self.nodes:
            s = str(n.frame) if n.frame is not None else "?"
            if s not in seen:
                seen.append(s)
        return seen


@dataclass(eq=False)
class CompiledKernel:
    kernel: Kernel
    run: Callable[..., object]  # see the calling convention above
    mode: str = "write"  # "write" (destination passing) or "view" (returns a view)
    serial: Callable[..., object] | None = None  # the serial twin of a parallel kernel (tests compare them)
    source: str | None = None  # generated source, if any
    parallel: bool = False
    dispatchers: list[object] = field(default_factory=list)  # the Numba dispatchers behind run (compile stats)
    #: ``aliased(pairs) -> run``: a variant for arguments where output ``j`` shares memory with input ``i``
    #: (``pairs`` of ``(j, i)``), when the emitter has one (generated loops vectorise only when they see one name)
    aliased: Callable[[tuple[tuple[int, int], ...]], Callable[..., object]] | None = None

    @property
    def name(self) -> str:
        return self.kernel.name


@dataclass(eq=False)
class EpilogueSplit:
    """An ``"epilogue"`` kernel taken apart for an emitter: the anchor (run by its library kernel into the first
    output array), the loop kernel over the group (``"reduction"`` when the group ends in a fused sum, else
    ``"elementwise"``; its first input is the anchor's value), and the positions in the epilogue's
    ``(*inputs, *outputs)`` argument list that each part takes. Target-independent: every emitter uses it."""

    anchor: Tensor
    loop: Kernel
    anchor_args: tuple[int, ...]
    loop_args: tuple[int, ...]

    def chain(self, anchor_run: Callable[..., object], loop_run: Callable[..., object]) -> Callable[..., None]:
        """``run(*inputs, *outputs)``: the anchor's kernel, then the loop's, each on its own arguments."""
        anchor_args, loop_args = self.anchor_args, self.loop_args

        def run(*args: object) -> None:
            anchor_run(*[args[k] for k in anchor_args])
            loop_run(*[args[k] for k in loop_args])

        return run


def split_epilogue(kernel: Kernel, reduction_ops: tuple[type, ...]) -> EpilogueSplit:
    """Split an ``"epilogue"`` kernel (see :class:`EpilogueSplit`); ``reduction_ops``: the op classes fusion sums
    with (``compiler.fusion.REDUCTION_OPS``)."""
    anchor = kernel.anchor
    group = kernel.nodes[1:]
    read = {i.id for n in group for i in n.inputs}
    others = [t for t in kernel.inputs if t.id in read and t.id != anchor.id]
    summed = (
        isinstance(group[-1].op, reduction_ops) and len(group) > 1 and any(n is group[-1].inputs[0] for n in group[:-1])
    )
    loop = Kernel("reduction" if summed else "elementwise", group, [anchor] + others, list(kernel.outputs))
    loop.index = kernel.index
    nin = len(kernel.inputs)
    position = {t.id: k for k, t in enumerate(kernel.inputs)}
    anchor_args = tuple(position[t.id] for t in anchor.inputs) + (nin,)  # ..., out0 (the anchor's buffer)
    loop_args = (nin,) + tuple(position[t.id] for t in others) + tuple(range(nin, nin + len(kernel.outputs)))
    return EpilogueSplit(anchor, loop, anchor_args, loop_args)
