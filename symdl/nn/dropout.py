"""The :class:`Dropout` layer (``torch.nn.Dropout``)."""

from __future__ import annotations

from typing import Any

from symdl.graph import Tensor
from symdl.nn._checks import as_input
from symdl.nn.module import Module
from symdl.ops import dropout
from symdl.ops.random import Generator

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``p`` and scale the others by ``1 / (1 - p)`` in a train-mode compile;
    the identity in an eval-mode compile (``torch.nn.Dropout``).

    Masks come from ``generator`` (default: symdl's default generator, seeded by ``symdl.manual_seed``); every
    call of the layer while building a graph takes a new stream, and every train-mode call of the compiled
    function draws new masks. See :func:`symdl.dropout`.
    """

    def __init__(self, p: float = 0.5, generator: Generator | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"Dropout: p must be a number, got {type(p).__name__} {p!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: dropout probability has to be between 0 and 1, but got {p}")
        if generator is not None and not isinstance(generator, Generator):
            raise TypeError(f"Dropout: generator must be a symdl Generator, got {type(generator).__name__}")
        self.p = float(p)
        self.generator = generator

    def forward(self, x: Any) -> Tensor:
        """``dropout(x, p)``, mode chosen at compile time."""
        return dropout(as_input(self, x), self.p, generator=self.generator)

    def extra_repr(self) -> str:
        """``p=0.5``."""
        return f"p={self.p}"
