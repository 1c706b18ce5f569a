"""Resolve train/eval semantics: replace every ``mode_switch`` by its branch for the compile's mode.

In train mode, the switches' updates (BatchNorm running statistics, the dropout RNG counter) become
implicit parameter updates of the compiled function.
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler.rewrite import rewrite
from symdl.errors import GraphError, where
from symdl.graph import Parameter, Tensor
from symdl.ops.modes import ModeSwitch

MODES = ("train", "eval")


def resolve_modes(roots: Sequence[Tensor], mode: str) -> tuple[dict[int, Tensor], dict[Parameter, Tensor]]:
    """Returns the old→new node map and the implicit updates ``{parameter: new value}`` (train mode only)."""
    if mode not in MODES:
        raise GraphError(f"compile: mode must be one of {MODES}, got {mode!r}")
    implicit: dict[Parameter, Tensor] = {}
    origin: dict[Parameter, Tensor] = {}

    def choose(node: Tensor, new_inputs: Sequence[Tensor]) -> Tensor | None:
        if not isinstance(node.op, ModeSwitch):
            return None
        if mode == "train":
            for target, value in zip(node.op.targets, new_inputs[2:]):
                if target in implicit and implicit[target] is not value:
                    raise GraphError(
                        f"parameter {target.label()} is updated by two different {node.op.kind} nodes in train "
                        f"mode (a layer's running state used twice?){where(origin[target].frame)}"
                        f"{where(node.frame)}"
                    )
                implicit[target] = value
                origin[target] = node
            return new_inputs[0]
        return new_inputs[1]

    memo = rewrite(roots, choose)
    return memo, implicit
