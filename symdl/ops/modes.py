"""Mode-dependent values: one graph serves training and inference.

``mode_switch(train, eval, updates)`` is a node whose value is ``train`` when the graph is compiled with
``mode="train"`` and ``eval`` with ``mode="eval"``. Its ``updates`` (e.g. BatchNorm's running statistics,
the dropout RNG counter) are applied as implicit parameter updates by a train-mode compiled function. The
compiler's ``resolve_modes`` pass replaces every switch by the chosen branch before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from symdl.errors import SymdlError
from symdl.graph import InferError, Op, Parameter, Tensor, TensorType, apply
from symdl.ops.base import DISCONNECTED


@dataclass(frozen=True, eq=False)
class ModeSwitch(Op):
    """Inputs: ``(train_value, eval_value, *new_values)``; ``targets[i]`` is updated to ``new_values[i]``."""

    kind: str = "switch"
    targets: tuple = ()
    name: ClassVar[str] = "mode_switch"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is ModeSwitch
            and other.kind == self.kind
            and len(other.targets) == len(self.targets)
            and all(a is b for a, b in zip(self.targets, other.targets))
        )

    def __hash__(self) -> int:
        return hash((self.kind, tuple(id(t) for t in self.targets)))

    def infer(self, *types: TensorType) -> TensorType:
        train, ev = types[0], types[1]
        if train.dtype != ev.dtype or train.ndim != ev.ndim:
            raise InferError(f"train and eval values differ in type: {train} vs {ev}")
        for target, new in zip(self.targets, types[2:]):
            if target.shape != new.shape or target.dtype != new.dtype:
                raise InferError(f"update of {target.label()} has type {new}, expected {target.type}")
        return train

    def perform(self, *values):  # type: ignore[no-untyped-def]
        raise SymdlError("mode_switch must be resolved by compile(mode=...) before execution")

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        from symdl.ops.elementwise import zeros_like

        z = zeros_like(g)
        sw = ModeSwitch("grad")
        return [apply(sw, g, z), apply(sw, z, g)] + [DISCONNECTED] * (len(inputs) - 2)


def mode_switch(
    train: Tensor,
    eval: Tensor,
    updates: dict[Parameter, Tensor] | None = None,  # noqa: A002
    kind: str = "switch",
) -> Tensor:
    """``train`` in a train-mode compile, ``eval`` in an eval-mode compile; ``updates`` apply in train mode."""
    updates = updates or {}
    return apply(ModeSwitch(kind, tuple(updates)), train, eval, *updates.values())
