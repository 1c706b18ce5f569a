"""``symdl.optim``: optimisers, gradient clipping, L1/L2 penalties and learning-rate schedules.

Optimisers build symbolic updates for :func:`symdl.compile` (PyTorch's argument names, defaults and formulas)::

    opt = symdl.optim.Adam(params, lr=1e-3)
    step = symdl.compile([x, y], [loss], updates=opt.minimize(loss, clip_grad_norm=1.0))
    sched = symdl.optim.lr_scheduler.StepLR(opt, step_size=10)   # writes opt's lr parameter: no recompile

See :mod:`symdl.optim.optimizer` (the base class, state dicts), :mod:`symdl.optim.optimizers`,
:mod:`symdl.optim.clip`, :mod:`symdl.optim.penalties` and :mod:`symdl.optim.lr_scheduler`.
"""

from symdl.optim import lr_scheduler
from symdl.optim.clip import clip_grad_norm, clip_grad_value, global_norm
from symdl.optim.optimizer import Optimizer, ParamGroup
from symdl.optim.optimizers import SGD, Adagrad, Adam, AdamW, NAdam, RMSprop
from symdl.optim.penalties import l1_penalty, l2_penalty

__all__ = [
    "Optimizer",
    "ParamGroup",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "NAdam",
    "clip_grad_norm",
    "clip_grad_value",
    "global_norm",
    "l1_penalty",
    "l2_penalty",
    "lr_scheduler",
]
