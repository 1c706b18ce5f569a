"""The op library. Each module holds op definitions (``Op`` subclasses) and the user-facing functions that
build them; this package re-exports the functions."""

from symdl.ops.base import DISCONNECTED, NotDifferentiable
from symdl.ops.elementwise import (
    abs, add, cast, clip, div, elu, equal, exp, full_like, greater, greater_equal, leaky_relu, less,
    less_equal, log, log1p, logical_and, logical_not, logical_or, maximum, minimum, mul, neg, not_equal,
    ones_like, pow, relu, sigmoid, sign, softplus, sqrt, square, stop_gradient, sub, tanh, where, zeros_like,
)
from symdl.ops.reduce import argmax, matmul, max, mean, min, sum, var
from symdl.ops.shape import (
    broadcast_like, broadcast_to, concat, expand_dims, flatten, getitem, pad, reshape, reshape_like, squeeze,
    stack, swapaxes, transpose, unbroadcast,
)
from symdl.ops.modes import mode_switch
from symdl.ops.nn import *  # noqa: F403
from symdl.ops.conv import *  # noqa: F403
from symdl.ops.indexing import *  # noqa: F403
from symdl.ops.normalization import *  # noqa: F403
from symdl.ops.pool import *  # noqa: F403
from symdl.ops.random import *  # noqa: F403
