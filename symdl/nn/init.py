"""Weight initialisers (``torch.nn.init``): fill a :class:`~symdl.graph.Parameter` in place and return it.

Every function takes the target (a symdl Parameter, whose ``.value`` is replaced by an array of the same shape and
dtype, or a NumPy array, filled in place) and returns it. Random ones draw from ``generator`` (a
``np.random.Generator``) or, by default, from :func:`symdl.ops.random.host_rng`, which
:func:`symdl.manual_seed` resets: seeding and then building a model gives the same weights in every run. Samples
are drawn in float64 and rounded to the target's dtype.

Names without and with PyTorch's trailing underscore are the same functions (``xavier_uniform`` is
``xavier_uniform_``).
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np

from symdl.graph import Parameter
from symdl.ops.random import host_rng

__all__ = [
    "calculate_fan_in_and_fan_out",
    "calculate_gain",
    "constant",
    "constant_",
    "kaiming_normal",
    "kaiming_normal_",
    "kaiming_uniform",
    "kaiming_uniform_",
    "normal",
    "normal_",
    "ones",
    "ones_",
    "uniform",
    "uniform_",
    "xavier_normal",
    "xavier_normal_",
    "xavier_uniform",
    "xavier_uniform_",
    "zeros",
    "zeros_",
]

T = TypeVar("T", Parameter, np.ndarray)

_LINEAR_GAIN = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (``torch.nn.init.calculate_gain``).

    ============================================  ====================================
    nonlinearity                                  gain
    ============================================  ====================================
    linear, conv{1,2,3}d,                         1
    conv_transpose{1,2,3}d, sigmoid
    tanh                                          5/3
    relu                                          sqrt(2)
    leaky_relu                                    sqrt(2 / (1 + negative_slope**2))
    selu                                          3/4
    ============================================  ====================================

    ``param`` is leaky_relu's negative slope (default 0.01).
    """
    if nonlinearity in _LINEAR_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, (int, float, np.integer, np.floating)):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def calculate_fan_in_and_fan_out(shape: Any) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape`` (or of a Parameter / array): for ``(out, in, *kernel)``,
    ``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``; at least 2 dims."""
    if isinstance(shape, (Parameter, np.ndarray)):
        shape = shape.shape
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(
            f"fan in and fan out can not be computed for a tensor with fewer than 2 dimensions (shape {shape})"
        )
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _target_info(tensor: Any, fn: str, need_float: bool) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(tensor, Parameter):
        shape, dtype = tuple(tensor.shape), tensor.dtype
    elif isinstance(tensor, np.ndarray):
        shape, dtype = tensor.shape, tensor.dtype
    else:
        raise TypeError(f"init.{fn}: expected a symdl Parameter or a NumPy array, got {type(tensor).__name__}")
    if need_float and dtype.kind != "f":
        raise TypeError(f"init.{fn}: needs a floating-point target, got dtype {dtype}")
    return shape, dtype


def _assign(tensor: T, values: np.ndarray) -> T:
    if isinstance(tensor, Parameter):
        tensor.value = np.asarray(values).astype(tensor.dtype)
    else:
        tensor[...] = values
    return tensor


def _rng(generator: np.random.Generator | None, fn: str) -> np.random.Generator:
    if generator is None:
        return host_rng()
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"init.{fn}: generator must be a numpy.random.Generator, got {type(generator).__name__}")
    return generator


def _fan(tensor: Any, mode: str, fn: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init.{fn}: mode {mode!r} is not supported; use 'fan_in' or 'fan_out'")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor.shape)
    return fan_in if mode == "fan_in" else fan_out


def zeros_(tensor: T) -> T:
    """Fill with 0."""
    shape, dtype = _target_info(tensor, "zeros_", need_float=False)
    return _assign(tensor, np.zeros(shape, dtype))


def ones_(tensor: T) -> T:
    """Fill with 1."""
    shape, dtype = _target_info(tensor, "ones_", need_float=False)
    return _assign(tensor, np.ones(shape, dtype))


def constant_(tensor: T, val: float) -> T:
    """Fill with ``val``."""
    shape, dtype = _target_info(tensor, "constant_", need_float=False)
    return _assign(tensor, np.full(shape, val, dtype=dtype))


def uniform_(tensor: T, a: float = 0.0, b: float = 1.0, generator: np.random.Generator | None = None) -> T:
    """Fill with samples of U(a, b)."""
    shape, _ = _target_info(tensor, "uniform_", need_float=True)
    if b < a:
        raise ValueError(f"init.uniform_: expected a <= b, got a={a}, b={b}")
    return _assign(tensor, _rng(generator, "uniform_").uniform(a, b, size=shape))


def normal_(tensor: T, mean: float = 0.0, std: float = 1.0, generator: np.random.Generator | None = None) -> T:
    """Fill with samples of N(mean, std**2)."""
    shape, _ = _target_info(tensor, "normal_", need_float=True)
    if std < 0:
        raise ValueError(f"init.normal_: std must be >= 0, got {std}")
    return _assign(tensor, _rng(generator, "normal_").normal(mean, std, size=shape))


def xavier_uniform_(tensor: T, gain: float = 1.0, generator: np.random.Generator | None = None) -> T:
    """Glorot uniform: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    shape, _ = _target_info(tensor, "xavier_uniform_", need_float=True)
    if math.prod(shape) == 0:  # nothing to fill (and no fan to divide by)
        return tensor
    fan_in, fan_out = calculate_fan_in_and_fan_out(shape)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return _assign(tensor, _rng(generator, "xavier_uniform_").uniform(-bound, bound, size=shape))


def xavier_normal_(tensor: T, gain: float = 1.0, generator: np.random.Generator | None = None) -> T:
    """Glorot normal: N(0, std**2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    shape, _ = _target_info(tensor, "xavier_normal_", need_float=True)
    if math.prod(shape) == 0:  # nothing to fill (and no fan to divide by)
        return tensor
    fan_in, fan_out = calculate_fan_in_and_fan_out(shape)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return _assign(tensor, _rng(generator, "xavier_normal_").normal(0.0, std, size=shape))


def kaiming_uniform_(
    tensor: T,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: np.random.Generator | None = None,
) -> T:
    """He uniform: U(-bound, bound) with ``bound = gain * sqrt(3 / fan)``, ``gain = calculate_gain(nonlinearity,
    a)`` and ``fan`` the weight's ``fan_in`` or ``fan_out`` (``mode``). ``a`` is the negative slope of the
    rectifier that follows (leaky_relu). With ``a = sqrt(5)`` (Linear/Conv defaults) ``bound = 1 / sqrt(fan_in)``.
    """
    shape, _ = _target_info(tensor, "kaiming_uniform_", need_float=True)
    if math.prod(shape) == 0:  # nothing to fill (and no fan to divide by)
        return tensor
    fan = _fan(tensor, mode, "kaiming_uniform_")
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    return _assign(tensor, _rng(generator, "kaiming_uniform_").uniform(-bound, bound, size=shape))


def kaiming_normal_(
    tensor: T,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: np.random.Generator | None = None,
) -> T:
    """He normal: N(0, std**2) with ``std = calculate_gain(nonlinearity, a) / sqrt(fan)`` (``fan`` per ``mode``)."""
    shape, _ = _target_info(tensor, "kaiming_normal_", need_float=True)
    if math.prod(shape) == 0:  # nothing to fill (and no fan to divide by)
        return tensor
    fan = _fan(tensor, mode, "kaiming_normal_")
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return _assign(tensor, _rng(generator, "kaiming_normal_").normal(0.0, std, size=shape))


zeros = zeros_
ones = ones_
constant = constant_
uniform = uniform_
normal = normal_
xavier_uniform = xavier_uniform_
xavier_normal = xavier_normal_
kaiming_uniform = kaiming_uniform_
kaiming_normal = kaiming_normal_
