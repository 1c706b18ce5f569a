"""Pooling layers (``torch.nn.MaxPool1d/2d``, ``AvgPool1d/2d``) and :class:`GlobalAvgPool2d`."""

from __future__ import annotations

from typing import Any

from symdl.graph import Tensor
from symdl.nn._checks import as_input, check_rank
from symdl.nn.module import Module
from symdl.ops import avg_pool1d, avg_pool2d, global_avg_pool2d, max_pool1d, max_pool2d

__all__ = ["AvgPool1d", "AvgPool2d", "GlobalAvgPool2d", "MaxPool1d", "MaxPool2d"]

IntOrTuple = int | tuple[int, ...]


class _MaxPoolNd(Module):
    _nsp = 0
    _layout = ""

    def __init__(
        self,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        dilation: IntOrTuple = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x: Any) -> Tensor | tuple[Tensor, Tensor]:
        """The pooled input (and the indices of the maxima with ``return_indices``)."""
        x = as_input(self, x)
        check_rank(self, x, (self._nsp + 2, self._nsp + 1), self._layout)
        pool = max_pool1d if self._nsp == 1 else max_pool2d
        return pool(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)

    def extra_repr(self) -> str:
        """As PyTorch: ``kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False``."""
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class MaxPool1d(_MaxPoolNd):
    """Max over sliding windows of (N, C, L) or (C, L) inputs (``torch.nn.MaxPool1d``).

    ``stride`` defaults to ``kernel_size``; ``padding`` (-inf, at most half the kernel) on both sides;
    ``dilation`` spaces the taps; ``ceil_mode`` rounds the output length up; ``return_indices`` also returns the
    int64 position of each maximum. See :func:`symdl.max_pool1d`.
    """

    _nsp = 1
    _layout = "(N, C, L) or (C, L)"


class MaxPool2d(_MaxPoolNd):
    """Max over sliding windows of (N, C, H, W) or (C, H, W) inputs (``torch.nn.MaxPool2d``).

    Arguments are ints or (h, w) pairs; ``stride`` defaults to ``kernel_size``; ``padding`` is -inf and at most
    half the kernel; ``ceil_mode`` rounds output sizes up; ``return_indices`` also returns the int64 flat index
    ``h * W + w`` of each maximum. See :func:`symdl.max_pool2d`.
    """

    _nsp = 2
    _layout = "(N, C, H, W) or (C, H, W)"


class AvgPool1d(Module):
    """Mean over sliding windows of (N, C, L) or (C, L) inputs (``torch.nn.AvgPool1d``); ``stride`` defaults to
    ``kernel_size``; zero ``padding`` counted in the divisor when ``count_include_pad``."""

    def __init__(
        self,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: Any) -> Tensor:
        """The window means."""
        x = as_input(self, x)
        check_rank(self, x, (3, 2), "(N, C, L) or (C, L)")
        return avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def extra_repr(self) -> str:
        """As PyTorch: ``kernel_size=2, stride=2, padding=0``."""
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """Mean over sliding windows of (N, C, H, W) or (C, H, W) inputs (``torch.nn.AvgPool2d``).

    ``stride`` defaults to ``kernel_size``; zero ``padding`` (at most half the kernel) is counted in the divisor
    when ``count_include_pad``; ``divisor_override`` replaces the divisor. See :func:`symdl.avg_pool2d`.
    """

    def __init__(
        self,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x: Any) -> Tensor:
        """The window means."""
        x = as_input(self, x)
        check_rank(self, x, (4, 3), "(N, C, H, W) or (C, H, W)")
        return avg_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def extra_repr(self) -> str:
        """As PyTorch: ``kernel_size=2, stride=2, padding=0``."""
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class GlobalAvgPool2d(Module):
    """Mean over H and W of an (N, C, H, W) input: (N, C), or (N, C, 1, 1) with ``keepdims=True``.

    Equivalent to ``torch.nn.AdaptiveAvgPool2d(1)`` followed by ``Flatten()`` (or without the flatten with
    ``keepdims=True``). H and W may be unknown until run time.
    """

    def __init__(self, keepdims: bool = False) -> None:
        super().__init__()
        self.keepdims = bool(keepdims)

    def forward(self, x: Any) -> Tensor:
        """The per-channel means."""
        x = as_input(self, x)
        check_rank(self, x, (4,), "(N, C, H, W)")
        return global_avg_pool2d(x, keepdims=self.keepdims)

    def extra_repr(self) -> str:
        """``keepdims=True`` when set, else empty."""
        return "keepdims=True" if self.keepdims else ""
