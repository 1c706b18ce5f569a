"""``symdl.nn``: modules (layers and models) that build symdl graphs, and their initialisers (``symdl.nn.init``).

A :class:`Module` owns parameters, buffers and submodules; calling it on symbolic tensors builds graph nodes::

    import symdl as sd
    from symdl import nn

    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
    x = sd.placeholder((None, 784), name="x")
    logits = model(x)                       # a symbolic tensor
    params = list(model.parameters())       # for sd.grad / an optimiser
    predict = sd.compile([x], [logits], mode="eval")

Train/eval behaviour (BatchNorm, Dropout) is chosen by ``symdl.compile(..., mode=...)``, not by
``model.train()``/``model.eval()``.
"""

from symdl.nn import init
from symdl.nn.activation import ELU, LeakyReLU, LogSoftmax, Maxout, PReLU, ReLU, Sigmoid, Softmax, Tanh
from symdl.nn.conv import Conv1d, Conv2d
from symdl.nn.dropout import Dropout
from symdl.nn.embedding import Embedding
from symdl.nn.flatten import Flatten
from symdl.nn.linear import Identity, Linear
from symdl.nn.module import (
    ROOT_NAME,
    IncompatibleKeys,
    Module,
    ModuleDict,
    ModuleList,
    Sequential,
    StateDictError,
)
from symdl.nn.normalization import BatchNorm1d, BatchNorm2d
from symdl.nn.pooling import AvgPool1d, AvgPool2d, GlobalAvgPool2d, MaxPool1d, MaxPool2d

__all__ = [
    "ROOT_NAME",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "Dropout",
    "ELU",
    "Embedding",
    "Flatten",
    "GlobalAvgPool2d",
    "Identity",
    "IncompatibleKeys",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "Maxout",
    "Module",
    "ModuleDict",
    "ModuleList",
    "PReLU",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "StateDictError",
    "Tanh",
    "init",
]
