"""Activation modules: ReLU, LeakyReLU, PReLU (learnable slope), ELU, Sigmoid, Tanh, Softmax, LogSoftmax, Maxout."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from symdl.graph import Parameter, Tensor, describe
from symdl.nn._checks import as_input, check_dtype, float_dtype, positive_int
from symdl.nn.module import Module
from symdl.ops import elu, leaky_relu, log_softmax, maximum, prelu, relu, sigmoid, softmax, tanh

__all__ = ["ELU", "LeakyReLU", "LogSoftmax", "Maxout", "PReLU", "ReLU", "Sigmoid", "Softmax", "Tanh"]


class ReLU(Module):
    """``max(x, 0)`` elementwise (``torch.nn.ReLU``)."""

    def forward(self, x: Any) -> Tensor:
        """``relu(x)``."""
        return relu(as_input(self, x))


class LeakyReLU(Module):
    """``x`` where ``x > 0``, else ``negative_slope * x`` (``torch.nn.LeakyReLU``)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Any) -> Tensor:
        """``leaky_relu(x, negative_slope)``."""
        return leaky_relu(as_input(self, x), self.negative_slope)

    def extra_repr(self) -> str:
        """``negative_slope=0.01``."""
        return f"negative_slope={self.negative_slope}"


class PReLU(Module):
    """``x`` where ``x > 0``, else ``weight * x`` with a learnable slope (``torch.nn.PReLU``).

    ``num_parameters`` is 1 (one slope shared by all channels) or the number of channels (axis 1 of the input);
    every slope starts at ``init`` (0.25).
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: Any = "float32") -> None:
        super().__init__()
        self.num_parameters = positive_int(num_parameters, "PReLU", "num_parameters")
        self.init = float(init)
        self.weight = Parameter(np.full(self.num_parameters, self.init, dtype=float_dtype(dtype, "PReLU")))

    def reset_parameters(self) -> None:
        """Every slope back to ``init``."""
        self.weight.value = np.full(self.num_parameters, self.init, dtype=self.weight.dtype)

    def forward(self, x: Any) -> Tensor:
        """``prelu(x, weight)``."""
        x = as_input(self, x)
        check_dtype(self, x, self.weight.dtype)
        return prelu(x, self.weight)

    def extra_repr(self) -> str:
        """``num_parameters=1``."""
        return f"num_parameters={self.num_parameters}"


class ELU(Module):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (``torch.nn.ELU``)."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Any) -> Tensor:
        """``elu(x, alpha)``."""
        return elu(as_input(self, x), self.alpha)

    def extra_repr(self) -> str:
        """``alpha=1.0``."""
        return f"alpha={self.alpha}"


class Sigmoid(Module):
    """``1 / (1 + exp(-x))`` elementwise (``torch.nn.Sigmoid``)."""

    def forward(self, x: Any) -> Tensor:
        """``sigmoid(x)``."""
        return sigmoid(as_input(self, x))


class Tanh(Module):
    """Hyperbolic tangent elementwise (``torch.nn.Tanh``)."""

    def forward(self, x: Any) -> Tensor:
        """``tanh(x)``."""
        return tanh(as_input(self, x))


def _implicit_dim(name: str, ndim: int) -> int:
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated (as in PyTorch). Pass dim explicitly.",
        UserWarning,
        stacklevel=4,
    )
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """``exp(x) / sum(exp(x), dim)`` along ``dim`` (``torch.nn.Softmax``).

    ``dim=None`` follows PyTorch's deprecated implicit choice (axis 0 for 0-, 1- and 3-d inputs, else axis 1) and
    warns; pass ``dim`` explicitly.
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Any) -> Tensor:
        """``softmax(x, axis=dim)``."""
        x = as_input(self, x)
        dim = self.dim if self.dim is not None else _implicit_dim("softmax", x.ndim)
        return softmax(x, axis=dim)

    def extra_repr(self) -> str:
        """``dim=1``."""
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """``log(softmax(x, dim))``, computed stably (``torch.nn.LogSoftmax``); ``dim=None`` as :class:`Softmax`."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Any) -> Tensor:
        """``log_softmax(x, axis=dim)``."""
        x = as_input(self, x)
        dim = self.dim if self.dim is not None else _implicit_dim("log_softmax", x.ndim)
        return log_softmax(x, axis=dim)

    def extra_repr(self) -> str:
        """``dim=1``."""
        return f"dim={self.dim}"


class Maxout(Module):
    """Maxout (Goodfellow et al., 2013): the maximum over groups of ``pool_size`` consecutive features of axis 1.

    An input (N, C, ...) gives (N, C / pool_size, ...) with
    ``out[:, j] = max(x[:, j * pool_size], ..., x[:, j * pool_size + pool_size - 1])``; ``C`` must be static and
    divisible by ``pool_size``. A maxout *layer* of ``k`` units is ``Linear(d, k * pool_size)`` followed by
    ``Maxout(pool_size)``. Ties share the gradient equally (symdl's ``maximum``).
    """

    def __init__(self, pool_size: int) -> None:
        super().__init__()
        self.pool_size = positive_int(pool_size, "Maxout", "pool_size")

    def forward(self, x: Any) -> Tensor:
        """The per-group maxima."""
        x = as_input(self, x)
        k = self.pool_size
        if x.ndim < 2 or x.shape[1] is None or x.shape[1] % k:
            raise self.shape_error(
                f"expected an input (N, C, ...) with a static C divisible by pool_size={k}, got {describe(x)}"
            )
        out = x[:, 0::k]
        for i in range(1, k):
            out = maximum(out, x[:, i::k])
        return out

    def extra_repr(self) -> str:
        """``pool_size=2``."""
        return f"pool_size={self.pool_size}"
