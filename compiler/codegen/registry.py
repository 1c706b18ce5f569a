"""A per-target table of kernel factories keyed by op class (each target's library registers into its own)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from symdl.graph import Tensor

F = TypeVar("F", bound=Callable)


class OpRegistry(Generic[F]):
    """``{op class: factory}`` with a decorator to fill it and an MRO-aware lookup."""

    def __init__(self) -> None:
        self.table: dict[type, F] = {}

    def register(self, *op_classes: type) -> Callable[[F], F]:
        """Decorator: register the factory for every class of ``op_classes``."""

        def deco(factory: F) -> F:
            for cls in op_classes:
                self.table[cls] = factory
            return factory

        return deco

    def lookup(self, node: Tensor) -> F | None:
        """The factory for ``node``'s op: its exact class first, then its base classes; None if there is none."""
        for cls in type(node.op).__mro__:
            if cls in self.table:
                return self.table[cls]
        return None
