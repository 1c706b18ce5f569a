"""Fully connected layers: :class:`Linear` and :class:`Identity`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from symdl.graph import Parameter, Tensor, describe
from symdl.nn import init
from symdl.nn._checks import as_input, check_dim, check_dtype, float_dtype, positive_int
from symdl.nn.module import Module
from symdl.ops import matmul

__all__ = ["Identity", "Linear"]


class Identity(Module):
    """Returns its input unchanged (a placeholder layer, e.g. to remove a head)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        """``x``."""
        return x


class Linear(Module):
    """``y = x @ weight.T + bias`` over the last axis of ``x`` (``torch.nn.Linear``).

    ``weight``: (out_features, in_features), initialised by ``kaiming_uniform(a=sqrt(5))``, i.e.
    U(-1/sqrt(in_features), 1/sqrt(in_features)); ``bias``: (out_features,) from the same distribution (``None``
    with ``bias=False``). Input (*, in_features) of the layer's dtype (float32 unless ``dtype`` says otherwise);
    output (*, out_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = "float32") -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "Linear", "in_features", minimum=0)
        self.out_features = positive_int(out_features, "Linear", "out_features", minimum=0)
        dt = float_dtype(dtype, "Linear")
        self.weight = Parameter(np.zeros((self.out_features, self.in_features), dt))
        if bias:
            self.bias = Parameter(np.zeros(self.out_features, dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the weights with PyTorch's defaults (from ``symdl.ops.random.host_rng()``)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Any) -> Tensor:
        """``x @ weight.T + bias``."""
        x = as_input(self, x)
        if x.ndim == 0:
            raise self.shape_error(f"expected an input of shape (*, {self.in_features}), got {describe(x)}")
        check_dim(self, x, -1, self.in_features, "last dim", "in_features", f"(*, {self.in_features})")
        check_dtype(self, x, self.weight.dtype)
        y = matmul(x, self.weight.T)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        """``in_features=..., out_features=..., bias=...``."""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
