"""The :class:`Flatten` layer (``torch.nn.Flatten``)."""

from __future__ import annotations

from typing import Any

from symdl.graph import Tensor
from symdl.nn._checks import as_input
from symdl.nn.module import Module
from symdl.ops import flatten

__all__ = ["Flatten"]


class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` (inclusive) into one; by default everything but the batch axis:
    (N, C, H, W) becomes (N, C*H*W) (``torch.nn.Flatten``)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x: Any) -> Tensor:
        """``flatten(x, start_dim, end_dim)``."""
        return flatten(as_input(self, x), self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        """``start_dim=1, end_dim=-1``."""
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
