"""Reverse-mode symbolic differentiation.

One reverse walk over the graph with a memoised cotangent per node; contributions of all consumers are
summed. Gradients are ordinary graph nodes (role ``"backward"``, attributed to the forward op's user line),
so they can be printed, rendered, compiled and differentiated again.

The broadcast rule lives here, once: when an op returns a cotangent whose shape differs from its input's,
the driver sums it back to the input's shape (:func:`symdl.ops.shape.unbroadcast`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from symdl.errors import GradientError, where
from symdl.graph import Tensor, apply, build_context, constant, is_float, toposort
from symdl.ops.base import DISCONNECTED, NotDifferentiable, broadcast_shapes
from symdl.ops.elementwise import add, cast, zeros_like
from symdl.ops.shape import ReshapeLike, broadcast_like, unbroadcast

UNCONNECTED = ("raise", "zero")


def _fit(g: Tensor, x: Tensor) -> Tensor:
    """Bring a cotangent to ``x``'s shape and dtype (sum broadcast axes, or broadcast a reduced one)."""
    if g.dtype != x.dtype:
        g = cast(g, x.dtype)
    if g.shape == x.shape:
        return g
    joint = broadcast_shapes(g.shape, x.shape)
    if joint == tuple(g.shape) or len(g.shape) > len(x.shape):
        return unbroadcast(g, x)
    return broadcast_like(g, x)


def _sum(terms: list[Tensor]) -> Tensor:
    total = terms[0]
    for t in terms[1:]:
        total = add(total, t)
    return total


def _cuts(order: list[Tensor], depends: set[int], blocked: set[tuple[int, int]], w: Tensor) -> str:
    """Where the paths from ``w`` lose their gradient: ops with integer/bool outputs of float operands (argmax,
    comparisons, casts to int) and ops whose gradient is zero by definition (stop_gradient)."""
    reach = {w.id}
    lines = []
    for n in order:
        if not any(i.id in reach for i in n.inputs):
            continue
        reach.add(n.id)
        if any(
            i.id in reach and is_float(i.dtype) and (not is_float(n.dtype) or (n.id, i.id) in blocked) for i in n.inputs
        ):
            lines.append(f"\n  - {n.op.name} ({n.label()}){where(n.frame).replace(chr(10) + '  ', ' ')}")
    return "".join(lines[:5]) + (f"{where(w.frame)}" if not lines else "")


def grad(y: Tensor, wrt: Tensor | Sequence[Tensor], unconnected: str = "raise") -> list[Tensor] | Tensor:
    """Symbolic gradient of the scalar ``y`` with respect to each tensor of ``wrt``.

    Returns new tensors of the same graph (a single tensor if ``wrt`` is a single tensor). ``unconnected``:
    ``"raise"`` (default) raises if ``y`` does not depend on some ``wrt``; ``"zero"`` returns zeros for it.
    """
    single = isinstance(wrt, Tensor)
    wrt_list = [wrt] if single else list(wrt)
    if not isinstance(y, Tensor):
        raise TypeError(f"grad: y must be a symbolic Tensor, got {type(y).__name__}")
    if y.ndim != 0:
        raise GradientError(
            f"grad: y must be a scalar (0-d) tensor, got shape {y.shape} ({y.label()}); "
            f"reduce it first, e.g. y.sum(){where(y.frame)}"
        )
    if not is_float(y.dtype):
        raise GradientError(f"grad: y must be floating-point, got {y.dtype} ({y.label()}){where(y.frame)}")
    if unconnected not in UNCONNECTED:
        raise ValueError(f"grad: unconnected must be one of {UNCONNECTED}, got {unconnected!r}")
    for w in wrt_list:
        if not isinstance(w, Tensor):
            raise TypeError(f"grad: wrt must hold symbolic Tensors, got {type(w).__name__}")
        if not is_float(w.dtype):
            raise GradientError(
                f"grad: cannot differentiate with respect to {w.label()}: it is {w.dtype}, and gradients exist "
                f"only for floating-point tensors{where(w.frame)}"
            )

    order = toposort([y])
    wrt_ids = {w.id for w in wrt_list}
    depends: set[int] = set()
    for n in order:
        if n.id in wrt_ids or any(i.id in depends for i in n.inputs):
            depends.add(n.id)

    contributions: dict[int, list[Tensor]] = {}
    totals: dict[int, Tensor] = {}
    blocked: set[tuple[int, int]] = set()  # (node, input) edges on a path to wrt whose gradient is cut
    if y.id in depends:
        with build_context("backward", y.frame):
            contributions[y.id] = [constant(np.ones((), dtype=y.dtype))]
    for node in reversed(order):
        terms = contributions.pop(node.id, None)
        if terms is None or node.id not in depends:
            continue
        with build_context("backward", node.frame):
            g = _sum(terms)
            totals[node.id] = g
            if not node.inputs:
                continue
            results = node.op.grad(node.inputs, node, g)
            if len(results) != len(node.inputs):
                raise GradientError(
                    f"{node.op.name}.grad returned {len(results)} results for {len(node.inputs)} inputs (op bug)"
                )
            for inp, gi in zip(node.inputs, results):
                if inp.id not in depends:
                    continue
                if gi is DISCONNECTED:
                    blocked.add((node.id, inp.id))
                    continue
                if isinstance(gi, NotDifferentiable):
                    raise GradientError(
                        f"grad: the path from {', '.join(w.label() for w in wrt_list)} to {y.label()} goes through "
                        f"{node.op.name} ({node.label()}), which is not differentiable with respect to its input "
                        f"{inp.label()}: {gi.reason}{where(node.frame)}"
                    )
                contributions.setdefault(inp.id, []).append(_fit(gi, inp))

    out: list[Tensor] = []
    for w in wrt_list:
        if w.id in totals:
            g = totals[w.id]
        elif unconnected == "zero":
            with build_context("backward", w.frame):
                g = zeros_like(w)
        elif w.id in depends:
            raise GradientError(
                f"grad: {y.label()} depends on {w.label()} only through non-differentiable ops, so it has no "
                f"gradient (pass unconnected='zero' to get zeros); the gradient is cut at:"
                + _cuts(order, depends, blocked, w)
            )
        else:
            raise GradientError(
                f"grad: {y.label()} does not depend on {w.label()} (pass unconnected='zero' to get zeros)"
                f"{where(w.frame)}"
            )
        if any(g is o for o in out):
            # two wrt share one gradient node (e.g. y = sum(a + b)): give this one its own node so that each
            # gradient carries its own name
            with build_context("backward", w.frame):
                g = apply(ReshapeLike(), g, w)
        if g.name is None and g.role == "backward":
            g.name = f"d{y.label()}/d{w.label()}"
        out.append(g)
    return out[0] if single else out
