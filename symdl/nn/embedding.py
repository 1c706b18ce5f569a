"""The :class:`Embedding` lookup table (``torch.nn.Embedding``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from symdl.graph import Parameter, Tensor
from symdl.nn import init
from symdl.nn._checks import as_input, float_dtype, positive_int
from symdl.nn.module import Module
from symdl.ops import embedding

__all__ = ["Embedding"]


class Embedding(Module):
    """Rows of ``weight`` (num_embeddings, embedding_dim) picked by an integer input of any shape: the output has
    shape ``input.shape + (embedding_dim,)`` (``torch.nn.Embedding``).

    ``weight`` starts as N(0, 1); the row ``padding_idx`` (negative values count from the end) starts at zero
    and receives no gradient. Indices outside ``[0, num_embeddings)`` raise at run time.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        dtype: Any = "float32",
        _weight: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = positive_int(num_embeddings, "Embedding", "num_embeddings")
        self.embedding_dim = positive_int(embedding_dim, "Embedding", "embedding_dim", minimum=0)
        if padding_idx is not None:
            p = positive_int(padding_idx, "Embedding", "padding_idx", minimum=-self.num_embeddings)
            if p >= self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be within num_embeddings, got {padding_idx}")
            padding_idx = p + self.num_embeddings if p < 0 else p
        self.padding_idx = padding_idx
        dt = float_dtype(dtype, "Embedding")
        if _weight is None:
            self.weight = Parameter(np.zeros((self.num_embeddings, self.embedding_dim), dt))
            self.reset_parameters()
        else:  # from_pretrained: no random draw
            self.weight = Parameter(np.asarray(_weight, dtype=dt).reshape(self.num_embeddings, self.embedding_dim))

    @classmethod
    def from_pretrained(cls, embeddings: Any, freeze: bool = True, padding_idx: int | None = None) -> Embedding:
        """An Embedding holding a copy of the 2-d float array ``embeddings``; ``freeze`` makes it non-trainable."""
        arr = np.asarray(embeddings)
        if arr.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-d, got shape {arr.shape}")
        layer = cls(arr.shape[0], arr.shape[1], padding_idx=padding_idx, dtype=arr.dtype, _weight=arr)
        layer.weight.trainable = not freeze
        return layer

    def reset_parameters(self) -> None:
        """``weight`` ~ N(0, 1) (from ``symdl.ops.random.host_rng()``), the ``padding_idx`` row zero."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            w = self.weight.value.copy()
            w[self.padding_idx] = 0
            self.weight.value = w

    def forward(self, x: Any) -> Tensor:
        """``weight[x]``."""
        return embedding(as_input(self, x), self.weight, padding_idx=self.padding_idx)

    def extra_repr(self) -> str:
        """As PyTorch: ``10, 3, padding_idx=0``."""
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
