"""Lower a compile request to a :class:`Program`: validated inputs, outputs and updates over one linear,
topologically ordered list of nodes, with train/eval semantics resolved.

This is the boundary between compiler and runtime: executors (runtime/) only consume Programs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.modes import resolve_modes
from compiler.rewrite import RewriteLog, rewrite
from symdl.errors import GraphError, where
from symdl.graph import Constant, Parameter, Tensor, build_context, constant, describe, is_placeholder, toposort


@dataclass
class Program:
    inputs: list[Tensor]
    outputs: list[Tensor]
    updates: list[tuple[Parameter, Tensor]]  # explicit first, then implicit (train-mode state)
    order: list[Tensor]  # every node needed, inputs before consumers
    mode: str
    implicit_updates: list[Parameter] = field(default_factory=list)
    log: RewriteLog = field(default_factory=RewriteLog)  # what each pass did, and why

    def __str__(self) -> str:
        lines = [f"Program(mode={self.mode}, {len(self.order)} nodes)"]
        lines.append("  inputs: " + ", ".join(f"{t.label()} {t.type}" for t in self.inputs))
        lines.append("  outputs: " + ", ".join(f"{t.label()} {t.type}" for t in self.outputs))
        for p, v in self.updates:
            lines.append(f"  update {p.label()} <- {v.label()}")
        return "\n".join(lines)


def _as_list(x: Any, what: str) -> list[Tensor]:
    if isinstance(x, Tensor):
        return [x]
    if x is None:
        return []
    items = list(x)
    for t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"compile: {what} must be symbolic Tensors, got {type(t).__name__} {t!r}")
    return items


def build_program(
    inputs: Any,
    outputs: Any,
    updates: Mapping[Parameter, Any] | None = None,
    mode: str = "train",
    passes: Mapping[str, bool] | None = None,
    freeze_parameters: bool = False,
) -> Program:
    """Validate a compile request and lower it to a Program.

    ``passes``: ``None`` runs no graph pass (the reference semantics, as written); a mapping runs every pass of
    :data:`compiler.passes.PASSES` except those switched off (``{"fold_bn": False}``). ``freeze_parameters``
    (eval mode only) turns every parameter into a constant holding its current value, so constant folding can
    precompute everything that depends only on weights (folded BatchNorm weights, for instance).
    """
    ins = _as_list(inputs, "inputs")
    outs = _as_list(outputs, "outputs")
    seen: set[int] = set()
    for t in ins:
        if not is_placeholder(t):
            raise GraphError(f"compile: inputs must be placeholders; {t.label()} is a {t.op.name}{where(t.frame)}")
        if t.id in seen:
            raise GraphError(f"compile: placeholder {t.label()} is listed twice in inputs")
        seen.add(t.id)

    explicit: list[tuple[Parameter, Tensor]] = []
    for p, v in (updates or {}).items():
        if not isinstance(p, Parameter):
            raise GraphError(f"compile: update keys must be parameters, got {p!r}")
        v = v if isinstance(v, Tensor) else constant(v, dtype=p.dtype)
        if (
            v.dtype != p.dtype
            or len(v.shape) != len(p.shape)
            or any(d is not None and d != e for d, e in zip(v.shape, p.shape))
        ):
            raise GraphError(
                f"compile: update for parameter {p.label()} {describe(p)} has type {describe(v)}{where(v.frame)}"
            )
        explicit.append((p, v))

    roots = outs + [v for _, v in explicit]
    memo, implicit = resolve_modes(roots, mode)
    new_outs = [memo[t.id] for t in outs]
    new_explicit = [(p, memo[v.id]) for p, v in explicit]
    explicit_params = {id(p) for p, _ in explicit}
    for p in implicit:
        if id(p) in explicit_params:
            raise GraphError(
                f"compile: parameter {p.label()} has an explicit update and is also updated "
                "implicitly (BatchNorm running statistics / dropout RNG state) in train mode"
            )
    all_updates = new_explicit + list(implicit.items())
    log = RewriteLog()
    if freeze_parameters:
        if mode != "eval" or all_updates:
            raise GraphError("compile: freeze_parameters=True needs mode='eval' and no updates")
        frozen = freeze(new_outs, log)
        new_outs = [frozen[t.id] for t in new_outs]
    if passes is not None:
        from compiler.passes import run_passes

        roots = new_outs + [v for _, v in all_updates]
        mapped = run_passes(roots, passes, log)
        new_outs = [mapped[t.id] for t in new_outs]
        all_updates = [(p, mapped[v.id]) for p, v in all_updates]
    order = toposort(new_outs + [v for _, v in all_updates])
    for n in order:
        if is_placeholder(n) and n.id not in seen:
            raise GraphError(
                f"compile: the outputs need placeholder {n.label()} {describe(n)}, which is not in "
                f"inputs{where(n.frame)}"
            )
    return Program(ins, new_outs, all_updates, order, mode, list(implicit), log)


def freeze(roots: list[Tensor], log: RewriteLog) -> dict[int, Tensor]:
    """Replace every parameter under ``roots`` by a constant holding a copy of its current value."""

    def replace(node: Tensor, ins: Any) -> Tensor | None:
        if not isinstance(node, Parameter):
            return None
        with build_context(node.role, node.frame):
            c = Constant(node.value, name=node.name)
        log.record("freeze_parameters", node, c)
        return c

    return rewrite(roots, replace)
