"""Convolution layers :class:`Conv1d` and :class:`Conv2d` (``torch.nn.Conv1d`` / ``Conv2d``, NCL / NCHW)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from symdl.graph import Parameter, Tensor
from symdl.nn import init
from symdl.nn._checks import as_input, check_dim, check_dtype, check_rank, float_dtype, int_tuple, positive_int
from symdl.nn.module import Module
from symdl.ops import conv1d, conv2d

__all__ = ["Conv1d", "Conv2d"]


class _ConvNd(Module):
    """Shared implementation of :class:`Conv1d` and :class:`Conv2d`."""

    _nsp = 0
    _layout = ""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        dtype: Any = "float32",
    ) -> None:
        super().__init__()
        name, n = type(self).__name__, self._nsp
        self.in_channels = positive_int(in_channels, name, "in_channels")
        self.out_channels = positive_int(out_channels, name, "out_channels")
        self.groups = positive_int(groups, name, "groups")
        if self.in_channels % self.groups:
            raise ValueError(f"{name}: in_channels ({self.in_channels}) must be divisible by groups ({self.groups})")
        if self.out_channels % self.groups:
            raise ValueError(f"{name}: out_channels ({self.out_channels}) must be divisible by groups ({self.groups})")
        self.kernel_size = int_tuple(kernel_size, n, name, "kernel_size")
        self.stride = int_tuple(stride, n, name, "stride")
        self.dilation = int_tuple(dilation, n, name, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: invalid padding string {padding!r}; expected 'same' or 'valid'")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions")
            self.padding: tuple[int, ...] | str = padding
        else:
            self.padding = int_tuple(padding, n, name, "padding", minimum=0)
        if padding_mode != "zeros":
            raise ValueError(f"{name}: padding_mode {padding_mode!r} is not supported (only 'zeros')")
        self.padding_mode = padding_mode
        dt = float_dtype(dtype, name)
        self.weight = Parameter(np.zeros((self.out_channels, self.in_channels // self.groups, *self.kernel_size), dt))
        if bias:
            self.bias = Parameter(np.zeros(self.out_channels, dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the weights with PyTorch's defaults: ``kaiming_uniform(a=sqrt(5))`` for the weight (i.e.
        U(-1/sqrt(fan_in), 1/sqrt(fan_in)), ``fan_in = in_channels / groups * prod(kernel_size)``) and the same
        bound for the bias."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def _conv(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Any) -> Tensor:
        """The convolution of ``x`` with ``weight`` (plus ``bias``)."""
        x = as_input(self, x)
        n = self._nsp
        check_rank(self, x, (n + 2, n + 1), self._layout)
        check_dim(self, x, -(n + 1), self.in_channels, "channel dim", "in_channels", self._layout)
        check_dtype(self, x, self.weight.dtype)
        return self._conv(x)

    def extra_repr(self) -> str:
        """As PyTorch: ``16, 33, kernel_size=(3, 3), stride=(1, 1)`` and the non-default options."""
        n = self._nsp
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * n:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv1d(_ConvNd):
    """1-d convolution (cross-correlation) over (N, C_in, L) or unbatched (C_in, L) inputs (``torch.nn.Conv1d``).

    Arguments as torch: ``in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
    bias=True, padding_mode="zeros"``; ``padding`` may be ``"same"`` (stride 1) or ``"valid"``; only zero padding.
    ``weight``: (out_channels, in_channels / groups, kernel_size); ``bias``: (out_channels,). Defaults as torch
    (see :meth:`reset_parameters`); ``dtype`` float32 or float64.
    """

    _nsp = 1
    _layout = "(N, C_in, L) or (C_in, L)"

    def _conv(self, x: Tensor) -> Tensor:
        return conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2d(_ConvNd):
    """2-d convolution (cross-correlation) over (N, C_in, H, W) or unbatched (C_in, H, W) inputs
    (``torch.nn.Conv2d``).

    Arguments as torch: ``in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
    bias=True, padding_mode="zeros"``; ints or (h, w) pairs; ``padding`` may be ``"same"`` (stride 1) or
    ``"valid"``; only zero padding. ``weight``: (out_channels, in_channels / groups, kH, kW); ``bias``:
    (out_channels,). Defaults as torch (see :meth:`reset_parameters`); ``dtype`` float32 or float64.
    """

    _nsp = 2
    _layout = "(N, C_in, H, W) or (C_in, H, W)"

    def _conv(self, x: Tensor) -> Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
