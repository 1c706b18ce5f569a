"""Graph rebuilding: the single mutation mechanism of the compiler.

Nodes are immutable and hash-consed, so a rewrite builds new nodes: walk the graph inputs-first, let a
callback replace a node (given its already-rewritten inputs), and otherwise re-apply the node's op to the
new inputs when any of them changed. Every replacement is recorded with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from symdl.graph import Tensor, rebuild, toposort

# callback(node, new_inputs) -> replacement tensor, or None to keep the node (rebuilt if inputs changed)
Replacer = Callable[[Tensor, Sequence[Tensor]], "Tensor | None"]


@dataclass
class RewriteLog:
    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, old, new)

    def record(self, reason: str, old: Tensor, new: Tensor) -> None:
        self.entries.append((reason, old.label(), new.label()))

    def __str__(self) -> str:
        return "\n".join(f"{reason}: {old} -> {new}" for reason, old, new in self.entries)


def rewrite(roots: Iterable[Tensor], replace: Replacer, memo: dict[int, Tensor] | None = None) -> dict[int, Tensor]:
    """Rebuild the graph under ``roots``; returns ``{old node id: new node}`` for every visited node."""
    memo = {} if memo is None else memo
    for node in toposort(roots):
        if node.id in memo:
            continue
        new_inputs = [memo[i.id] for i in node.inputs]
        replacement = replace(node, new_inputs)
        if replacement is None:
            if any(a is not b for a, b in zip(new_inputs, node.inputs)):
                replacement = rebuild(node.op, new_inputs, node)
            else:
                replacement = node
        memo[node.id] = replacement
    return memo
