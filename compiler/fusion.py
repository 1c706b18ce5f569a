"""Kernel fusion: partition a Program's nodes into :class:`~compiler.kernels.Kernel` s.

One forward pass over ``program.order`` decides every group:

- **elementwise groups**: an elementwise node (``Elementwise`` or ``FillLike``) joins the groups of its
  elementwise producers that have its output shape (the *loop shape*; ``None == None``: the runtime
  guarantees such dims match), merging them, as long as the result stays *convex* and the kernel graph stays
  acyclic. Broadcasting happens only at group inputs.
- **epilogues**: a ``MatMul``/``Conv`` whose only consumer is a member of an elementwise group with the
  anchor's shape is put in front of that group (bias add + activation run on the anchor's output buffer).
- **views**: reshape-family nodes; **ops**: everything else, one node per kernel.

Acyclicity is checked with *ancestor bitsets* over node positions. Every group keeps ``anc``: the bits of the
members of every group it (transitively) depends on through the kernel graph. A node may join a set of groups
only if none of them is an ancestor of one of its outside inputs (else a path would leave the group and
re-enter it). Ancestor sets recorded at consumers would go stale if a group that is already consumed gained
new ancestors later, so such joins are refused: with that invariant the bitsets stay exact and every check is
a few big-integer operations, near-linear in the graph size.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from compiler.kernels import Kernel
from compiler.program import Program
from symdl.graph import Tensor
from symdl.ops.conv import Conv
from symdl.ops.elementwise import Elementwise, FillLike
from symdl.ops.reduce import MatMul, Sum
from symdl.ops.shape import (
    BroadcastLike,
    ExpandDims,
    Flatten,
    Reshape,
    ReshapeLike,
    Squeeze,
    Transpose,
    Unbroadcast,
)

ANCHOR_OPS: tuple[type, ...] = (MatMul, Conv)
REDUCTION_OPS: tuple[type, ...] = (Sum, Unbroadcast)
VIEW_OPS: tuple[type, ...] = (Reshape, ReshapeLike, ExpandDims, Squeeze, Flatten)


def is_elementwise(node: Tensor) -> bool:
    """True for nodes an elementwise loop can compute."""
    return isinstance(node.op, (Elementwise, FillLike, BroadcastLike))


def _kind_of(node: Tensor) -> str:
    if is_elementwise(node):
        return "elementwise"
    if isinstance(node.op, VIEW_OPS):
        return "view"
    return "op"


@dataclass(eq=False)
class _Group:
    kind: str
    shape: tuple | None  # loop shape of elementwise groups
    members: list[int] = field(default_factory=list)  # node positions, ascending
    mask: int = 0  # bits of the members
    anc: int = 0  # bits of members of every ancestor group (through the kernel graph)
    consumed: bool = False  # an outside node reads a member: the ancestry must not grow any more
    anchor: int | None = None  # position of an epilogue anchor
    reduction: int | None = None  # position of the sum that consumes the group (kind "reduction")


class _Partitioner:
    def __init__(self, program: Program, log: list[str], fuse_reductions: bool = True) -> None:
        self.fuse_reductions = fuse_reductions
        self.nodes = [n for n in program.order if not (n.is_leaf or not n.inputs)]
        self.pos = {n.id: k for k, n in enumerate(self.nodes)}
        self.group: list[_Group] = []  # node position -> its group
        self.log = log
        self.needed = {t.id for t in program.outputs} | {v.id for _, v in program.updates}

    # --- the forward pass ----------------------------------------------------------------------
    def partition(self) -> None:
        for k, n in enumerate(self.nodes):
            g = self._join(k, n) if is_elementwise(n) else self._singleton(k, n)
            for i in self._inner_inputs(n):
                if self.group[i] is not g:
                    self.group[i].consumed = True

    def _inner_inputs(self, n: Tensor) -> list[int]:
        """Positions of ``n``'s non-leaf inputs, in order, without repeats."""
        out: list[int] = []
        for i in n.inputs:
            p = self.pos.get(i.id)
            if p is not None and p not in out:
                out.append(p)
        return out

    def _reach(self, n: Tensor, skip: list[_Group]) -> int:
        """Bits of every group ``n``'s inputs outside ``skip`` belong to or depend on."""
        bits = 0
        for i in self._inner_inputs(n):
            g = self.group[i]
            if g not in skip:
                bits |= g.anc | g.mask
        return bits

    def _singleton(self, k: int, n: Tensor) -> _Group:
        kind = "view" if self._transpose_for_matmul(k, n) else _kind_of(n)
        g = _Group(kind, n.shape if is_elementwise(n) else None, [k], 1 << k, self._reach(n, []))
        self.group.append(g)
        return g

    def _transpose_for_matmul(self, k: int, n: Tensor) -> bool:
        """A 2-d transpose read only by 2-d matmuls is a free view: BLAS takes the F-contiguous operand as is."""
        if not isinstance(n.op, Transpose) or n.ndim != 2 or n.id in self.needed:
            return False
        users = [self.nodes[c] for c in self.consumers.get(k, [])]
        return bool(users) and all(isinstance(u.op, MatMul) and u.ndim == 2 and u.inputs[0].ndim == 2 for u in users)

    def _join(self, k: int, n: Tensor) -> _Group:
        parts: list[_Group] = []
        for i in self._inner_inputs(n):
            c = self.group[i]
            if c.kind != "elementwise" or c in parts:
                continue
            producer = self.nodes[i].label()
            if c.shape != n.shape:
                self.log.append(
                    f"{producer} not fused with {n.label()}: loop shapes differ {_fmt(c.shape)} vs {_fmt(n.shape)}"
                )
                continue
            reason = self._blocker(n, parts + [c])
            if reason is not None:
                self.log.append(f"{producer} not fused with {n.label()}: {reason}")
                continue
            parts.append(c)
        if not parts:
            return self._singleton(k, n)
        return self._merge(k, n, parts)

    def _blocker(self, n: Tensor, parts: list[_Group]) -> str | None:
        """Why ``n`` cannot join the union of ``parts`` (None if it can)."""
        mask = 0
        for p in parts:
            mask |= p.mask
        outside: list[_Group] = []
        for i in self._inner_inputs(n):
            g = self.group[i]
            if g in parts or g in outside:
                continue
            if (g.anc | g.mask) & mask:
                return "would make the group non-convex"
            outside.append(g)
        for p in parts:
            if p.anc & (mask & ~p.mask):
                return "would make the group non-convex"
        for p in parts:
            if not p.consumed:
                continue
            # p's consumers recorded its ancestry already: it must not gain new ancestor groups
            new_group = any(not (p.anc & g.mask) for g in outside)
            new_bits = any(q.anc & ~p.anc for q in parts if q is not p)
            if new_group or new_bits:
                return "would add producers to a group whose consumers are already placed (kernel order)"
        return None

    def _merge(self, k: int, n: Tensor, parts: list[_Group]) -> _Group:
        g = parts[0]
        for q in parts[1:]:
            g.members.extend(q.members)
            g.mask |= q.mask
            g.anc |= q.anc
            g.consumed |= q.consumed
            for m in q.members:
                self.group[m] = g
        g.members.append(k)
        g.members.sort()
        g.mask |= 1 << k
        self.group.append(g)
        g.anc = (g.anc | self._reach(n, [g])) & ~g.mask
        return g

    # --- epilogues -----------------------------------------------------------------------------
    def attach_epilogues(self, consumers: dict[int, list[int]]) -> None:
        for k, n in enumerate(self.nodes):
            if isinstance(n.op, ANCHOR_OPS):
                reason = self._epilogue_blocker(k, n, consumers[k])
                if reason is None:
                    target = self.group[consumers[k][0]]
                    target.anchor = k
                    target.mask |= 1 << k
                    target.members.insert(0, k)
                    self.group[k] = target
                elif reason:
                    c = self.nodes[consumers[k][0]].label() if consumers[k] else "its consumers"
                    self.log.append(f"{n.label()} not fused with {c}: {reason}")

    def _epilogue_blocker(self, k: int, n: Tensor, cons: list[int]) -> str | None:
        """Why anchor ``n`` gets no epilogue (None: it gets one; ``""``: no elementwise consumer, not logged)."""
        name = n.op.name
        if n.id in self.needed:
            return f"{name} is a program output" if cons and is_elementwise(self.nodes[cons[0]]) else ""
        if len(cons) != 1:
            return f"{name} has {len(cons)} consumers" if len(cons) > 1 else ""
        g = self.group[cons[0]]
        if g.kind != "elementwise":
            return ""
        if g.shape != n.shape:
            return f"loop shapes differ {_fmt(n.shape)} vs {_fmt(g.shape)}"
        if g.anchor is not None:
            return f"the group already has the anchor {self.nodes[g.anchor].label()}"
        outputs = self._outputs(g)
        if not any(self.nodes[o].dtype == n.dtype for o in outputs):
            return f"no output of the group has the {name}'s dtype {n.dtype}"
        return None

    # --- reductions ---------------------------------------------------------------------------
    def attach_reductions(self) -> None:
        """A sum/unbroadcast of an elementwise group's member joins the group: the value is accumulated while
        the loop computes it instead of being stored and read back by a separate reduction kernel."""
        for k, n in enumerate(self.nodes):
            if not isinstance(n.op, REDUCTION_OPS):
                continue
            reason = self._reduction_blocker(k, n)
            if reason is None:
                own = self.group[k]
                g = self.group[self.pos[n.inputs[0].id]]
                g.reduction = k
                g.members.append(k)
                g.members.sort(key=lambda m: (m != g.anchor, m))  # an epilogue's anchor stays first
                g.mask |= 1 << k
                self.group[k] = g
                if g.anchor is not None and not self._anchor_buffer(g):
                    g.reduction = None  # the anchor would lose its loop-shaped output buffer: undo
                    g.members.remove(k)
                    g.mask &= ~(1 << k)
                    self.group[k] = own
                    self.log.append(
                        f"{n.label()} not fused with its producer {n.inputs[0].label()}: the epilogue of "
                        f"{self.nodes[g.anchor].label()} would keep no output of its shape"
                    )
            elif reason:
                self.log.append(f"{n.label()} not fused with its producer {n.inputs[0].label()}: {reason}")

    def _standalone_reduction(self, n: Tensor) -> bool:
        """A float sum with statically known axes runs as a generated reduction loop even without a producer to
        fuse (the generic library reduction compiles for seconds; a generated loop for a fraction of one)."""
        from compiler.codegen.cpu.reduction import reduced_axes

        return isinstance(n.op, REDUCTION_OPS) and n.inputs[0].ndim >= 1 and reduced_axes(n) is not None

    def _anchor_buffer(self, g: _Group) -> bool:
        """Whether an epilogue group keeps a loop-shaped output of its anchor's dtype (the anchor writes there)."""
        anchor = self.nodes[g.anchor]  # type: ignore[index]
        return any(m != g.reduction and self.nodes[m].dtype == anchor.dtype for m in self._outputs(g))

    def _reduction_blocker(self, k: int, n: Tensor) -> str | None:
        """Why reduction ``n`` stays a kernel of its own (None: it joins its producer's group; ``""``: its
        producer is not an elementwise group, not logged)."""
        from compiler.codegen.cpu.reduction import reduced_axes

        p = self.pos.get(n.inputs[0].id)
        if p is None:
            return ""
        g = self.group[p]
        if g.kind != "elementwise":
            return ""
        if g.reduction is not None:
            return "its producer's group already ends in a reduction"
        if g.anchor is not None and p == g.anchor:
            return ""
        if n.inputs[0].ndim == 0:
            return ""
        if reduced_axes(n) is None:
            return "the summed axes are not known statically or the sum changes dtype"
        first = g.members[0]
        for ref in n.inputs[1:]:  # unbroadcast's shape reference must not depend on the group
            q = self.pos.get(ref.id)
            if q is not None and self.group[q] is not g and q > first:
                return f"its shape reference {ref.label()} may depend on the group"
        return None

    def _outputs(self, g: _Group) -> list[int]:
        """Members read outside the group or by the program's outputs/updates, in order."""
        out = []
        for m in g.members:
            node = self.nodes[m]
            if node.id in self.needed or any(self.group[c] is not g for c in self.consumers[m]):
                out.append(m)
        return out

    # --- kernels -------------------------------------------------------------------------------
    def kernels(self) -> list[Kernel]:
        self.consumers: dict[int, list[int]] = {k: [] for k in range(len(self.nodes))}
        for k, n in enumerate(self.nodes):
            for i in self._inner_inputs(n):
                self.consumers[i].append(k)
        self.partition()
        self.attach_epilogues(self.consumers)
        if self.fuse_reductions:
            self.attach_reductions()
        groups = _unique(self.group)
        kernels = {id(g): self._kernel(g) for g in groups}
        order = self._schedule(groups)
        result = []
        for idx, g in enumerate(order):
            kern = kernels[id(g)]
            kern.index = idx
            result.append(kern)
            if len(kern.nodes) > 1:
                ops = "+".join(n.op.name for n in kern.nodes)
                verb = {"epilogue": "epilogue", "reduction": "fused reduction"}.get(kern.kind, "fused")
                if kern.kind == "epilogue" and isinstance(kern.nodes[-1].op, REDUCTION_OPS):
                    verb = "epilogue with reduction"
                self.log.append(f"k{idx}: {verb} {ops} ({len(kern.nodes)} ops)")
        return result

    def _kernel(self, g: _Group) -> Kernel:
        nodes = [self.nodes[m] for m in g.members]
        if g.reduction is not None and g.anchor is None:
            r = self.nodes[g.reduction]
            nodes = [m for m in nodes if m is not r] + [r]
            outputs = [self.nodes[m] for m in self._outputs(g) if self.nodes[m] is not r] + [r]
            member_ids = {m.id for m in nodes}
            inputs = _distinct(i for m in nodes for i in m.inputs if i.id not in member_ids)
            return Kernel("reduction", nodes, inputs, outputs)
        if g.kind != "elementwise":
            n = nodes[0]
            if g.kind == "op" and self.fuse_reductions and self._standalone_reduction(n):
                return Kernel("reduction", nodes, list(n.inputs), [n])  # a generated loop: compiles in ~0.2 s
            return Kernel(g.kind, nodes, list(n.inputs), [n])
        outputs = [self.nodes[m] for m in self._outputs(g)]
        member_ids = {n.id for n in nodes}
        inputs = _distinct(i for n in nodes for i in n.inputs if i.id not in member_ids)
        if g.anchor is None:
            return Kernel("elementwise", nodes, inputs, outputs)
        anchor = nodes[0]
        r = self.nodes[g.reduction] if g.reduction is not None else None
        first = next(o for o in outputs if o.dtype == anchor.dtype and o is not r)  # the anchor's buffer
        outputs = [first] + [o for o in outputs if o is not first and o is not r] + ([r] if r is not None else [])
        if r is not None:  # the summed member goes last (the reduction loop's convention)
            nodes = [m for m in nodes if m is not r] + [r]
        return Kernel("epilogue", nodes, _distinct([*anchor.inputs, *inputs]), outputs)

    def _schedule(self, groups: list[_Group]) -> list[_Group]:
        """Kahn's algorithm over the kernel graph; ties go to the group whose first member comes first."""
        preds: dict[int, set[int]] = {id(g): set() for g in groups}
        succs: dict[int, list[_Group]] = {id(g): [] for g in groups}
        for g in groups:
            for m in g.members:
                for i in self._inner_inputs(self.nodes[m]):
                    p = self.group[i]
                    if p is not g and id(p) not in preds[id(g)]:
                        preds[id(g)].add(id(p))
                        succs[id(p)].append(g)
        waiting = {id(g): len(preds[id(g)]) for g in groups}
        ready = [(g.members[0], id(g), g) for g in groups if waiting[id(g)] == 0]
        heapq.heapify(ready)
        order: list[_Group] = []
        while ready:
            _, _, g = heapq.heappop(ready)
            order.append(g)
            for s in succs[id(g)]:
                waiting[id(s)] -= 1
                if waiting[id(s)] == 0:
                    heapq.heappush(ready, (s.members[0], id(s), s))
        if len(order) != len(groups):  # pragma: no cover - excluded by construction
            raise AssertionError("fusion produced a cyclic kernel graph")
        return order


def _unique(groups: list[_Group]) -> list[_Group]:
    seen: set[int] = set()
    out = []
    for g in groups:
        if id(g) not in seen:
            seen.add(id(g))
            out.append(g)
    return out


def _distinct(tensors: Iterable[Tensor]) -> list[Tensor]:
    """``tensors`` without repeats, first occurrences in order (by identity: ``==`` builds graph nodes)."""
    seen: set[int] = set()
    out = []
    for t in tensors:
        if t.id not in seen:
            seen.add(t.id)
            out.append(t)
    return out


def _fmt(shape: tuple | None) -> str:
    return str(tuple(shape)) if shape is not None else "?"


def fuse(program: Program, log: list[str], fuse_reductions: bool = True) -> list[Kernel]:
    """Partition the non-leaf nodes of ``program`` into kernels, in a valid execution order.

    ``fuse_reductions=False`` keeps every sum a kernel of its own (``compile(passes={"fuse_reductions": False})``).

    Appends one line per decision worth explaining to ``log`` (fused groups, rejected candidates and why).
    Deterministic: the same graph gives the same kernels, names and log.
    """
    return _Partitioner(program, log, fuse_reductions).kernels()
