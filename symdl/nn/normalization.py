"""Batch normalisation layers :class:`BatchNorm1d` and :class:`BatchNorm2d` (``torch.nn.BatchNorm1d/2d``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from symdl.graph import Parameter, Tensor
from symdl.nn import init
from symdl.nn._checks import as_input, check_dim, check_dtype, check_rank, float_dtype, positive_int
from symdl.nn.module import Module
from symdl.ops import batch_norm, mode_switch

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    _ranks: tuple[int, ...] = ()
    _layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = "float32",
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(num_features, name, "num_features")
        if momentum is None:
            raise ValueError(
                f"{name}: momentum=None (a cumulative moving average) is not supported; pass a float such as 0.1"
            )
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be a number in [0, 1], got {momentum!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise ValueError(f"{name}: eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dt = float_dtype(dtype, name)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(c, dt))
            if bias:
                self.bias = Parameter(np.zeros(c, dt))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Parameter(np.zeros(c, dt), trainable=False))
            self.register_buffer("running_var", Parameter(np.ones(c, dt), trainable=False))
            self.register_buffer("num_batches_tracked", Parameter(np.array(0, np.int64), trainable=False))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, batch count 0."""
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            init.zeros_(self.num_batches_tracked)

    def reset_parameters(self) -> None:
        """Reset the running statistics, and the affine weight to 1 and bias to 0."""
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, x: Any) -> Tensor:
        """Normalised ``x``: batch statistics in a train-mode compile (which also updates the running statistics
        and ``num_batches_tracked``), running statistics in an eval-mode compile."""
        x = as_input(self, x)
        check_rank(self, x, self._ranks, self._layout)
        check_dim(self, x, 1, self.num_features, "channel dim (axis 1)", "num_features", self._layout)
        dt = self.weight.dtype if self.affine else self.running_mean.dtype if self.track_running_stats else None
        if dt is not None:
            check_dtype(self, x, dt)
        y = batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.momentum, self.eps)
        nbt = self.num_batches_tracked
        if nbt is not None:
            y = mode_switch(y, y, updates={nbt: nbt + 1}, kind="num_batches_tracked")
        return y

    def extra_repr(self) -> str:
        """As PyTorch: ``16, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True``."""
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over the channel axis 1 of (N, C) or (N, C, L) inputs (``torch.nn.BatchNorm1d``).

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel. The same graph does both behaviours, chosen
    by ``symdl.compile(..., mode=...)``:

    - ``mode="train"``: batch statistics (biased variance); the compiled function then updates the buffers
      ``running_mean <- (1 - momentum) * running_mean + momentum * batch_mean``, ``running_var`` likewise with the
      *unbiased* batch variance, and ``num_batches_tracked += 1``;
    - ``mode="eval"``: the running statistics, left unchanged.

    ``weight`` (1) and ``bias`` (0) are learnable when ``affine`` (no ``bias`` with the keyword ``bias=False``, as
    torch 2.13); ``track_running_stats=False`` uses batch
    statistics in both modes. ``momentum=None`` (torch's cumulative average) is not supported.
    """

    _ranks = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over the channel axis 1 of (N, C, H, W) inputs (``torch.nn.BatchNorm2d``); statistics
    over N, H and W. Everything else as :class:`BatchNorm1d`."""

    _ranks = (4,)
    _layout = "(N, C, H, W)"
