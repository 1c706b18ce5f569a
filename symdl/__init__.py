"""symdl: a graph-compiling symbolic deep-learning engine.

Declare a static graph with placeholders and parameters, differentiate it symbolically with
:func:`grad`, and :func:`compile` it into a callable.
"""

from symdl.errors import GradientError, GraphError, NumericsError, OpRuntimeError, ShapeError, SymdlError
from symdl.graph import Parameter, Tensor, constant, parameter, placeholder
from symdl.ops import *  # noqa: F403
from symdl.ops import (
    abs,
    add,
    argmax,
    broadcast_to,
    cast,
    clip,
    concat,
    div,
    elu,
    exp,
    flatten,
    leaky_relu,
    log,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mul,
    neg,
    pad,
    pow,
    relu,
    reshape,
    sigmoid,
    softplus,
    sqrt,
    square,
    stack,
    sub,
    sum,
    tanh,
    transpose,
    var,
    where,
)
from symdl.losses import *  # noqa: F403
from symdl.render import *  # noqa: F403
from symdl.function import Function, compile
from symdl.gradcheck import GradCheckError, check_grad
from compiler.autodiff import grad
from symdl import data, nn, optim  # noqa: E402 - subpackages built on the names above
from symdl.training import History, Trainer, accuracy, evaluate, fit, plot_history, predict
from symdl.checkpoint import Checkpoint, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from symdl.ops.random import host_rng

__version__ = "0.1.0"

# runtime.export / runtime.artifact import the compiler, which imports symdl: load them on first use
_LAZY = {
    "load": "runtime.export",
    "load_artifact": "runtime.artifact",
    "ArtifactError": "runtime.artifact",
    "ExportError": "runtime.artifact",
    "get_num_threads": "compiler.codegen.cpu.parallel",  # the CPU kernels' threads
    "set_num_threads": "compiler.codegen.cpu.parallel",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'symdl' has no attribute {name!r}")
