"""Horizontal fusion for the cuda target: independent elementwise and sum kernels run as one device launch.

:func:`compiler.fusion.fuse` (shared by every target) leaves one elementwise kernel per fused group; a training
step ends with one optimiser-update kernel per parameter, each a tiny launch, and a backward pass has small bias
gradient sums that nothing waits for. On a GPU every launch costs a few microseconds whatever its size, so
:func:`fuse_horizontal` merges kernels that do not depend on each other (elementwise groups, and ``"reduction"``
kernels ending in a sum: :func:`mergeable`) into a :class:`HorizontalKernel` (kind ``"horizontal"``): one launch
whose first blocks run the elementwise parts over the concatenation of their index spaces and whose other blocks
each reduce one output element of a sum part (``compiler/codegen/cuda/horizontal.py``). The CPU target never calls
it and never sees the kind; the parts keep the CPU target's fused groups (``validate=True`` pairs them one by one).

Placement: a kernel may run anywhere after the last kernel that writes one of its inputs and before the first
kernel that reads one of its outputs. The pass stabs these intervals greedily (the interval that closes first
fixes the slot; every other candidate whose interval contains the slot, that neither reads nor writes a value of a
kernel already in the group, whose mergeable producers already run before the slot and whose placed readers run
after it, joins), which gives the fewest launches for the given intervals. Groups of one stay where they were; the
order of every other kernel is unchanged. A launch's parameters must fit :data:`MAX_PARAM_BYTES`; equal small
constants (:func:`constant_key`) share one array argument.

In-place parameter updates: an update value ``v`` of parameter ``p`` computed by a part (or by the elementwise group
of a matmul/conv epilogue that runs as one launch: :func:`compiler.codegen.cuda.fused.single_launch_epilogue`) that
also reads ``p``
may be written straight over ``p``'s storage (:attr:`HorizontalKernel.in_place`) when nothing can observe the
old value of ``p`` afterwards: no later kernel (nor another part of the group) reads ``p`` or a view of it, no
output or other update takes ``p``'s old value, and ``v`` is read by no kernel and is no program output. The
update copy the runtime then makes from ``v`` to ``p`` is a copy of a value onto itself, which
:func:`compiler.codegen.cuda.library.strided_copy` skips: the update costs no launch of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.kernels import Kernel
from symdl.graph import Constant, Parameter, Tensor

#: bytes of a launch's parameters at most (CUDA's limit is 4 KiB; some margin for Numba's own arguments)
MAX_PARAM_BYTES = 3584
#: bytes one flat 1-d array argument takes (Numba passes meminfo, parent, nitems, itemsize, data, shape, strides)
ARRAY_BYTES = 56
#: bytes of one scalar (size) argument
SCALAR_BYTES = 8
#: array arguments per launch at most, for launches of 1-d arrays only (kept for callers; see :data:`MAX_PARAM_BYTES`)
MAX_ARRAYS = MAX_PARAM_BYTES // ARRAY_BYTES


def constant_key(t: Tensor) -> tuple[Any, ...] | None:
    """A key equal for constants with the same dtype, shape and value (small ones only), None for anything else:
    inputs with the same key share one array argument of a horizontal launch (each optimiser-update part has its own
    ``0.9`` and ``0.01`` constants, since leaves are never shared)."""
    if not isinstance(t, Constant):
        return None
    v = np.asarray(t.value)
    if v.size > 16:
        return None
    return ("constant", v.dtype.str, v.shape, v.tobytes())


def family(k: Kernel) -> str | None:
    """``"loop"`` for kernels :func:`mergeable` accepts, ``"gemm"`` for 2-d matmul epilogues that run as one launch
    (:func:`compiler.codegen.cuda.fused.groupable_gemm`: several become one grouped GEMM launch), else None. Only
    kernels of one family share a launch."""
    if mergeable(k):
        return "loop"
    from compiler.codegen.cuda.fused import groupable_gemm

    return "gemm" if groupable_gemm(k) else None


def mergeable(k: Kernel) -> bool:
    """An elementwise kernel, or a ``"reduction"`` kernel ending in a sum/unbroadcast over axes known before run time
    (a horizontal launch gives each of its outputs a block: :mod:`compiler.codegen.cuda.horizontal`)."""
    if k.kind == "elementwise":
        return True
    if k.kind != "reduction":
        return False
    from compiler.codegen.cuda.reduction import reduction_axes
    from compiler.fusion import REDUCTION_OPS

    r = k.nodes[-1]
    return isinstance(r.op, REDUCTION_OPS) and r.inputs[0].ndim >= 1 and reduction_axes(r) is not None


@dataclass(eq=False)
class HorizontalKernel(Kernel):
    """Independent elementwise or sum-reduction ``parts`` run by one launch. ``inputs`` are the parts' inputs (each
    value once) and ``outputs`` the parts' outputs, in part order. ``in_place``: output value id -> id of the
    parameter (an input of the same elementwise part, of the same shape) that the output may be written over (see
    the module docstring)."""

    parts: list[Kernel] = field(default_factory=list)
    in_place: dict[int, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        first = self.parts[0].name.split("_", 1)[1] if self.parts else ""
        return f"k{self.index}_horizontal{len(self.parts)}({first}...)"

    @property
    def role(self) -> str:
        roles = {p.role for p in self.parts}
        return "backward" if "backward" in roles else "forward"

    def input_slots(self) -> list[int]:
        """The array argument of each input (in ``inputs`` order): equal small constants share one."""
        return _slots(self.inputs)[0]


def _slots(inputs: Sequence[Tensor]) -> tuple[list[int], int]:
    """(argument slot per input, number of slots): inputs with an equal :func:`constant_key` share a slot."""
    by_key: dict[Any, int] = {}
    slots: list[int] = []
    for t in inputs:
        key = constant_key(t)
        if key is None:
            key = ("value", t.id)
        slots.append(by_key.setdefault(key, len(by_key)))
    return slots, len(by_key)


def param_bytes(kernels: Sequence[Kernel]) -> int:
    """Bytes of the parameters of one launch running ``kernels`` (arrays after constant sharing, and the sizes)."""
    if any(k.kind == "epilogue" for k in kernels):  # a grouped GEMM: every problem passes its own arrays
        arrays = sum(len(k.inputs) + len(k.outputs) for k in kernels)
        return arrays * ARRAY_BYTES + (13 * len(kernels) + 1) * SCALAR_BYTES
    inputs: dict[int, Tensor] = {}
    for k in kernels:
        for t in k.inputs:
            inputs.setdefault(t.id, t)
    arrays = _slots(list(inputs.values()))[1] + sum(len(k.outputs) for k in kernels)
    scalars = sum(4 + len(k.nodes[-1].inputs[0].shape if k.kind == "reduction" else k.nodes[-1].shape) for k in kernels)
    return arrays * ARRAY_BYTES + (scalars + 4) * SCALAR_BYTES


def merge(parts: Sequence[Kernel], index: int = 0) -> HorizontalKernel:
    """One :class:`HorizontalKernel` running ``parts`` (independent kernels that :func:`mergeable` accepts)."""
    inputs: dict[int, Tensor] = {}
    for k in parts:
        for t in k.inputs:
            inputs.setdefault(t.id, t)
    nodes = [n for k in parts for n in k.nodes]
    outputs = [t for k in parts for t in k.outputs]
    return HorizontalKernel("horizontal", nodes, list(inputs.values()), outputs, index, parts=list(parts))


def fuse_horizontal(kernels: Sequence[Kernel], program: Any, log: list[str] | None = None) -> list[Kernel]:
    """``kernels`` (a schedule) with independent elementwise and sum kernels merged into :class:`HorizontalKernel`
    s; indices renumbered in the new order. ``program``: the :class:`compiler.program.Program` (updates, outputs)."""
    kernels = list(kernels)
    writer: dict[int, int] = {}
    for pos, k in enumerate(kernels):
        for t in k.outputs:
            writer[t.id] = pos
    readers: dict[int, list[int]] = {}
    for pos, k in enumerate(kernels):
        for t in k.inputs:
            readers.setdefault(t.id, []).append(pos)
    n = len(kernels)
    interval: dict[int, tuple[int, int]] = {}  # position -> (first slot, last slot); slot s = "after kernel s"
    fam: dict[int, str] = {}
    for pos, k in enumerate(kernels):
        f = family(k)
        if f is None:
            continue
        fam[pos] = f
        lo = max((writer[t.id] for t in k.inputs if t.id in writer), default=-1)
        hi = min((r for t in k.outputs for r in readers.get(t.id, [])), default=n) - 1
        interval[pos] = (lo, hi)
    groups: list[tuple[int, list[int]]] = []
    left = sorted(interval, key=lambda p: (interval[p][1], p))
    taken: dict[int, int] = {}  # position -> the slot its group runs at

    def placeable(q: int, slot: int) -> bool:
        """Every mergeable producer of ``q``'s inputs runs before ``slot`` and every mergeable reader of its outputs
        after it (producers and readers that are not mergeable keep their positions, which the interval respects)."""
        for t in kernels[q].inputs:
            w = writer.get(t.id)
            if w is not None and w in interval and taken.get(w, slot) >= slot:
                return False
        for t in kernels[q].outputs:
            for r in readers.get(t.id, []):
                if r in taken and taken[r] <= slot:
                    return False
        return True

    for p in left:
        if p in taken:
            continue
        slot = interval[p][1]
        group = [p]
        taken[p] = slot
        values = {t.id for t in (*kernels[p].inputs, *kernels[p].outputs)}
        outs = {t.id for t in kernels[p].outputs}
        for q in left:
            if q in taken or fam[q] != fam[p] or not interval[q][0] <= slot <= interval[q][1]:
                continue
            kq = kernels[q]
            if any(t.id in outs for t in kq.inputs) or any(t.id in values for t in kq.outputs):
                continue
            if param_bytes([kernels[g] for g in group] + [kq]) > MAX_PARAM_BYTES or not placeable(q, slot):
                continue
            group.append(q)
            taken[q] = slot
            values |= {t.id for t in (*kq.inputs, *kq.outputs)}
            outs |= {t.id for t in kq.outputs}
        groups.append((slot, sorted(group)))
    at_slot: dict[int, list[list[int]]] = {}
    moved: set[int] = set()
    for slot, g in groups:
        if len(g) > 1:
            at_slot.setdefault(slot, []).append(g)
            moved.update(g)
    out: list[Kernel] = []

    def emit_slot(s: int) -> None:
        for g in at_slot.get(s, []):
            h = merge([kernels[p] for p in g])
            out.append(h)
            if log is not None:
                log.append(f"horizontal: {len(g)} independent elementwise/sum kernels run as one launch: {h.name}")

    emit_slot(-1)
    for pos, k in enumerate(kernels):
        if pos not in moved:
            out.append(k)
        emit_slot(pos)
    for i, k in enumerate(out):
        k.index = i
        if isinstance(k, HorizontalKernel):
            for part in k.parts:
                part.index = i
    _mark_in_place(out, program)
    return out


def _mark_in_place(kernels: list[Kernel], program: Any) -> None:
    """Fill :attr:`HorizontalKernel.in_place` (see the module docstring for the conditions)."""
    targets: dict[int, list[Tensor]] = {}
    for p, v in program.updates:
        targets.setdefault(v.id, []).append(p)
    update_count: dict[int, int] = {}
    for p, _ in program.updates:
        update_count[p.id] = update_count.get(p.id, 0) + 1
    view_root: dict[int, int] = {}  # view output -> the leaf or value it aliases
    for k in kernels:
        if k.kind == "view":
            base = k.inputs[0].id
            view_root[k.outputs[0].id] = view_root.get(base, base)
    output_ids = {t.id for t in program.outputs}

    def root(t: Tensor) -> int:
        return view_root.get(t.id, t.id)

    observed_at_end = {root(t) for t in program.outputs} | {root(v) for _, v in program.updates}
    read_by_kernels = {t.id for k in kernels for t in k.inputs}
    from compiler.codegen.cuda.fused import single_launch_epilogue

    for pos, k in enumerate(kernels):
        if isinstance(k, HorizontalKernel):
            parts: list[Kernel] = k.parts
            anchor_inputs: set[int] = set()
        elif single_launch_epilogue(k):  # matmul/conv + elementwise in one launch: the group reads index by index
            parts = [k]
            anchor_inputs = {root(t) for t in k.anchor.inputs}
            k.in_place = {}  # type: ignore[attr-defined]
        else:
            continue
        later = {root(t) for k2 in kernels[pos + 1 :] for t in k2.inputs}
        for part in parts:
            if part.kind == "reduction":
                continue  # a reduction part reads other elements than the one it writes
            others = {root(t) for q in parts if q is not part for t in q.inputs} | anchor_inputs
            if part.kind == "epilogue":  # a grouped GEMM's problem: its matmul reads other elements
                others |= {root(t) for t in part.anchor.inputs}
            for v in part.outputs:
                ps = targets.get(v.id, [])
                if len(ps) != 1 or v.id in output_ids or v.id in read_by_kernels:
                    continue
                p = ps[0]
                ok = (
                    isinstance(p, Parameter)
                    and update_count[p.id] == 1
                    and tuple(p.shape) == tuple(v.shape)
                    and p.dtype == v.dtype
                    and any(t is p for t in part.inputs)
                    and p.id not in later
                    and p.id not in others
                    and p.id not in observed_at_end
                )
                if ok:
                    k.in_place[v.id] = p.id  # type: ignore[attr-defined]


def launch_hazards(kernels: Sequence[Kernel]) -> list[str]:
    """Read/write hazards inside the launches of a schedule (empty when there are none): every part of a
    :class:`HorizontalKernel` (and the anchor and loop of a single-launch epilogue) runs concurrently with every
    other, in any block order, so no part may read a value another part of the same launch writes, two parts may not
    write one value, and a parameter written in place (``in_place``) may be read by no other part (nor the anchor, nor
    a view of it) of its launch and by no later kernel. A structural check of :func:`fuse_horizontal` and
    :func:`_mark_in_place` (tests), independent of thread timing."""
    from compiler.codegen.cuda.fused import single_launch_epilogue

    view_root: dict[int, int] = {}
    for k in kernels:
        if k.kind == "view":
            base = k.inputs[0].id
            view_root[k.outputs[0].id] = view_root.get(base, base)

    def root(t: Tensor) -> int:
        return view_root.get(t.id, t.id)

    problems: list[str] = []
    for pos, k in enumerate(kernels):
        in_place: dict[int, int] = getattr(k, "in_place", None) or {}
        if isinstance(k, HorizontalKernel):
            parts: list[Kernel] = list(k.parts)
            anchor: set[int] = set()
        elif single_launch_epilogue(k):
            parts = [k]
            anchor = {root(t) for t in k.anchor.inputs}
        else:
            continue
        written: dict[int, int] = {}
        for j, part in enumerate(parts):
            for t in part.outputs:
                if t.id in written:
                    problems.append(f"{k.name}: parts {written[t.id]} and {j} both write value #{t.id}")
                written[t.id] = j
        for j, part in enumerate(parts):
            for t in part.inputs:
                w = written.get(t.id)
                if w is not None and w != j:
                    problems.append(f"{k.name}: part {j} reads value #{t.id} that part {w} of the same launch writes")
        later = {root(t) for k2 in kernels[pos + 1 :] for t in k2.inputs}
        for v, p in in_place.items():
            j = written.get(v)
            if j is None:
                problems.append(f"{k.name}: in-place output #{v} is no output of the launch")
                continue
            if parts[j].kind == "reduction":
                problems.append(f"{k.name}: reduction part {j} writes #{v} in place over parameter #{p}")
            readers = [q for q, part in enumerate(parts) if q != j and any(root(t) == p for t in part.inputs)]
            if p in anchor or (parts[j].kind == "epilogue" and any(root(t) == p for t in parts[j].anchor.inputs)):
                readers.append(-1)
            if readers:
                problems.append(f"{k.name}: parameter #{p} written in place by part {j} is read by parts {readers}")
            if p in later:
                problems.append(f"{k.name}: parameter #{p} written in place is read by a later kernel")
    return problems


__all__ = [
    "launch_hazards",
    "MAX_ARRAYS",
    "MAX_PARAM_BYTES",
    "HorizontalKernel",
    "constant_key",
    "family",
    "fuse_horizontal",
    "merge",
    "mergeable",
]
