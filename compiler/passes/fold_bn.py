"""Fold inference-mode BatchNorm into the preceding conv or linear layer.

For ``y = BN(conv(x, W) + b)`` with running statistics μ, σ², affine γ, β and the BN's own ε:
``s = γ / sqrt(σ² + ε)``, ``W' = W · s`` along the output-channel axis, ``b' = (b − μ) · s + β`` (``b = 0`` when
the layer has no bias, which then gains one). The same holds for ``x @ W (+ b)`` followed by BatchNorm1d
(output channels on ``W``'s last axis). The folded weights are graph nodes over the original parameters:
with frozen parameters constant folding turns them into constants; with live parameters they are recomputed
each call (a few small kernels) and stay correct after training continues.

Guards (each rejection is logged with its reason): the BN input must be produced by conv/matmul (+ a
per-channel bias) whose output has the BN as its only consumer; the weight must be used by nothing else;
the conv/matmul must be 2-d-weight linear or an N-d conv (groups and depthwise are fine: the output channel
is always weight axis 0); dtypes are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler.rewrite import RewriteLog, rewrite
from symdl.graph import Tensor, apply, build_context, toposort
from symdl.ops.conv import Conv
from symdl.ops.elementwise import Add, add, mul, neg, sqrt, sub
from symdl.ops.normalization import BatchNormEval
from symdl.ops.reduce import MatMul
from symdl.ops.shape import reshape


def _users(order: Sequence[Tensor]) -> dict[int, int]:
    count: dict[int, int] = {}
    for n in order:
        for i in set(i.id for i in n.inputs):
            count[i] = count.get(i, 0) + 1
    return count


def _split_bias(t: Tensor) -> tuple[Tensor, Tensor | None]:
    """``layer + bias`` → (layer, bias); a bare layer → (layer, None)."""
    if isinstance(t.op, Add):
        a, b = t.inputs
        if isinstance(a.op, (Conv, MatMul)):
            return a, b
        if isinstance(b.op, (Conv, MatMul)):
            return b, a
    return t, None


def _per_channel(b: Tensor, layer: Tensor, channels: int) -> bool:
    """Is ``b`` a bias that varies only along the layer's output-channel axis?"""
    if isinstance(layer.op, Conv):
        spatial = layer.ndim - 2
        return tuple(b.shape) in ((channels,) + (1,) * spatial, (1, channels) + (1,) * spatial)
    return tuple(b.shape) in ((channels,), (1, channels))


def _check(node: Tensor, users: dict[int, int], root_ids: set[int]) -> str | None:
    """Why ``node`` (a BatchNormEval) cannot be folded, or None if it can."""
    x = node.inputs[0]
    layer, bias = _split_bias(x)
    if not isinstance(layer.op, (Conv, MatMul)):
        return f"input {x.label()} is a {x.op.name}, not a conv/linear layer"
    for t in (x, layer) if bias is not None else (x,):
        if users.get(t.id, 0) != 1 or t.id in root_ids:
            n = users.get(t.id, 0) + (t.id in root_ids)
            return f"{t.op.name} {t.label()} has {n} consumers"
    weight = layer.inputs[1]
    if users.get(weight.id, 0) != 1:
        return f"weight {weight.label()} is used {users.get(weight.id, 0)} times"
    if isinstance(layer.op, MatMul) and (weight.ndim != 2 or layer.ndim != 2):
        return "linear layer is not a 2-d matmul"
    channels = node.shape[1]
    if channels is None:
        return "channel count unknown"
    if bias is not None and not _per_channel(bias, layer, channels):
        return f"bias {bias.label()} of shape {bias.shape} is not per-channel"
    return None


def fold_bn(roots: Sequence[Tensor], log: RewriteLog) -> dict[int, Tensor]:
    """Decide on the original graph which BatchNorms fold, then rebuild with the folded layers."""
    order = toposort(roots)
    users = _users(order)
    root_ids = {r.id for r in roots}
    foldable: set[int] = set()
    for node in order:
        if isinstance(node.op, BatchNormEval):
            why = _check(node, users, root_ids)
            if why is None:
                foldable.add(node.id)
            else:
                log.record(f"fold_bn: not folded: {why}", node, node)

    def replace(node: Tensor, ins: Sequence[Tensor]) -> Tensor | None:
        if node.id not in foldable:
            return None
        x, mean, var, gamma, beta = ins
        layer, bias = _split_bias(x)  # the rebuilt x mirrors the original structure
        inp, weight = layer.inputs
        channels = node.shape[1]
        with build_context(node.role, node.frame):
            s = gamma / sqrt(add(var, node.op.eps))
            if isinstance(layer.op, Conv):
                new_w = mul(weight, reshape(s, (channels,) + (1,) * (weight.ndim - 1)))
                bshape: tuple[int, ...] = (channels,) + (1,) * (layer.ndim - 2)
            else:
                new_w = mul(weight, s)
                bshape = (channels,)
            mean_c = reshape(mean, bshape)
            shift = sub(reshape(bias, bshape), mean_c) if bias is not None else neg(mean_c)
            new_b = add(mul(shift, reshape(s, bshape)), reshape(beta, bshape))
            out = add(apply(layer.op, inp, new_w), new_b)
        log.record(f"fold_bn: folded into {layer.op.name} {layer.label()} (eps={node.op.eps})", node, out)
        return out

    return rewrite(roots, replace)
