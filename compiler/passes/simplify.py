"""Algebraic simplification: local rewrites that each remove at least one node.

``x + 0``, ``x - 0``, ``x * 1``, ``x / 1`` → ``x`` (only where the result's static type equals ``x``'s: a
neutral constant that broadcasts ``x`` to a larger shape is kept); ``neg(neg(x))``, ``log(exp(x))`` → ``x``;
transpose of transpose → one transpose (or none); reshape of reshape → one reshape; ``squeeze(expand_dims(x))``
on the same axes → ``x``; ``stop_gradient(x)`` → ``x`` (gradients were already built); unbroadcast or
broadcast to an identical fully static shape → the operand; a lossless cast round trip → ``x``.
Each rule strictly shrinks the graph, so re-applying rules to a replacement always terminates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler.rewrite import RewriteLog, rewrite
from symdl.graph import Constant, Tensor, TensorType, apply
from symdl.ops.elementwise import Add, Cast, Div, Exp, Log, Mul, Neg, StopGradient, Sub
from symdl.ops.shape import BroadcastLike, ExpandDims, Reshape, ReshapeLike, Squeeze, Transpose, Unbroadcast


def _is_const(t: Tensor, value: float) -> bool:
    return isinstance(t, Constant) and t.value.size > 0 and bool(np.all(t.value == value))


def _same_type(a: TensorType, b: TensorType) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype


def _static(t: Tensor) -> bool:
    return None not in t.shape


def _rule(node: Tensor, ins: Sequence[Tensor]) -> tuple[Tensor, str] | None:
    op = node.op
    if isinstance(op, (Add, Sub)):
        if _is_const(ins[1], 0) and _same_type(ins[0].type, node.type):
            return ins[0], f"x {op.name} 0 -> x"
        if isinstance(op, Add) and _is_const(ins[0], 0) and _same_type(ins[1].type, node.type):
            return ins[1], "0 + x -> x"
    elif isinstance(op, (Mul, Div)):
        if _is_const(ins[1], 1) and _same_type(ins[0].type, node.type):
            return ins[0], f"x {op.name} 1 -> x"
        if isinstance(op, Mul) and _is_const(ins[0], 1) and _same_type(ins[1].type, node.type):
            return ins[1], "1 * x -> x"
    elif isinstance(op, Neg) and isinstance(ins[0].op, Neg):
        return ins[0].inputs[0], "neg(neg(x)) -> x"
    elif isinstance(op, Log) and isinstance(ins[0].op, Exp):
        return ins[0].inputs[0], "log(exp(x)) -> x"
    elif isinstance(op, Transpose) and isinstance(ins[0].op, Transpose):
        inner = ins[0].op.perm
        perm = tuple(inner[p] for p in op.perm)
        src = ins[0].inputs[0]
        if perm == tuple(range(len(perm))):
            return src, "transpose(transpose(x)) -> x"
        return apply(Transpose(perm), src), "transpose(transpose(x)) -> transpose(x)"
    elif isinstance(op, (Reshape, ReshapeLike)) and isinstance(ins[0].op, (Reshape, ReshapeLike)):
        src = ins[0].inputs[0]
        return apply(op, src, *ins[1:]), "reshape(reshape(x)) -> reshape(x)"
    elif isinstance(op, (Reshape, ReshapeLike)) and _static(ins[0]) and ins[0].shape == node.shape:
        return ins[0], "reshape to the same shape -> x"
    elif isinstance(op, Squeeze) and isinstance(ins[0].op, ExpandDims) and ins[0].op.axes == op.axes:
        return ins[0].inputs[0], "squeeze(expand_dims(x)) -> x"
    elif isinstance(op, StopGradient):
        return ins[0], "stop_gradient is the identity once gradients are built"
    elif isinstance(op, (Unbroadcast, BroadcastLike)) and _static(ins[0]) and ins[0].shape == node.shape:
        return ins[0], f"{op.name} to the same static shape -> x"
    elif isinstance(op, Cast) and isinstance(ins[0].op, Cast):
        src = ins[0].inputs[0]
        mid = ins[0].op.dtype
        if src.dtype == op.dtype and np.can_cast(src.dtype, mid, casting="safe"):
            return src, "lossless cast round trip -> x"
    return None


def simplify(roots: Sequence[Tensor], log: RewriteLog, max_steps: int = 16) -> dict[int, Tensor]:
    """One bottom-up walk; a replacement is simplified again (its inputs already are) until no rule applies."""

    def replace(node: Tensor, ins: Sequence[Tensor]) -> Tensor | None:
        hit = _rule(node, ins)
        if hit is None:
            return None
        new = node
        for _ in range(max_steps):
            if hit is None:
                break
            log.record(f"simplify: {hit[1]}", new, hit[0])
            new = hit[0]
            hit = _rule(new, new.inputs) if new.inputs else None
        return new

    return rewrite(roots, replace)
