"""Constant folding: a node whose inputs are all constants is evaluated once at compile time with its NumPy
``perform`` (the same code as the reference executor) and replaced by a constant. Outputs larger than
``max_elements`` are left alone so that folding never bloats a compiled program."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler.rewrite import RewriteLog, rewrite
from symdl.graph import Constant, Tensor, build_context
from symdl.ops.modes import ModeSwitch

MAX_ELEMENTS = 1 << 16


def constant_fold(roots: Sequence[Tensor], log: RewriteLog) -> dict[int, Tensor]:
    def replace(node: Tensor, ins: Sequence[Tensor]) -> Tensor | None:
        if not ins or isinstance(node.op, ModeSwitch) or not all(isinstance(i, Constant) for i in ins):
            return None
        if None in node.shape or int(np.prod(node.shape, dtype=np.int64)) > MAX_ELEMENTS:
            return None
        try:
            value = np.asarray(node.op.perform(*(i.value for i in ins)))
        except Exception:  # noqa: BLE001 - an op that fails on constants is left for run time to report
            return None
        if value.dtype != node.dtype or value.shape != node.shape:
            return None
        with build_context(node.role, node.frame):
            new = Constant(value, name=node.name)
        log.record("constant_fold", node, new)
        return new

    return rewrite(roots, replace)
