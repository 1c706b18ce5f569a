"""``check_grad``: a public finite-difference gradient checker (float64, central differences)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from symdl.errors import SymdlError
from symdl.graph import Parameter, Tensor, apply, constant, is_float, placeholder, toposort
from symdl.ops.modes import ModeSwitch

F32, F64 = np.dtype("float32"), np.dtype("float64")


class GradCheckError(SymdlError, AssertionError):
    """Analytic and numerical gradients disagree."""


@dataclass
class GradCheckResult:
    max_abs_error: float
    max_rel_error: float
    checked: int  # number of scalar partial derivatives compared
    report: str

    def __str__(self) -> str:
        return self.report


def _promote_op(op: Any) -> Any:
    """The same op with every float32 dtype prop widened to float64."""
    if not dataclasses.is_dataclass(op):
        return op
    changes = {
        f.name: F64
        for f in dataclasses.fields(op)
        if getattr(op, f.name) is not None and isinstance(getattr(op, f.name), np.dtype) and getattr(op, f.name) == F32
    }
    return dataclasses.replace(op, **changes) if changes else op


def _to_float64(y: Tensor, leaves: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Rebuild the graph of ``y`` in float64: ``leaves`` become float64 placeholders, other float32 parameters and
    constants become float64 constants."""
    new: dict[int, Tensor] = {}
    new_leaves = []
    for leaf in leaves:
        dt = F64 if is_float(leaf.dtype) else leaf.dtype
        ph = placeholder(leaf.shape, dt, name=leaf.label())
        new[leaf.id] = ph
        new_leaves.append(ph)
    for n in toposort([y]):
        if n.id in new:
            continue
        if not n.inputs:
            if isinstance(n, (Parameter,)) or n.op.name == "constant":
                v = n.value
                new[n.id] = constant(v.astype(F64) if v.dtype == F32 else v)
            else:
                raise SymdlError(f"check_grad: the graph needs {n.label()}, which has no value given")
            continue
        op, ins = _promote_op(n.op), [new[i.id] for i in n.inputs]
        if isinstance(op, ModeSwitch) and op.targets:
            # check_grad never applies implicit updates, and the float64 update values no longer match their
            # (float32) target parameters: rebuild the switch without them
            op, ins = ModeSwitch(op.kind), ins[:2]
        new[n.id] = apply(op, *ins)
    return new[y.id], new_leaves


def check_grad(
    fn_or_output: Callable[..., Tensor] | Tensor,
    inputs: Sequence[np.ndarray] | Mapping[Tensor, np.ndarray],
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    max_elements: int = 200,
    seed: int = 0,
    mode: str = "train",
    raise_on_error: bool = True,
) -> GradCheckResult:
    """Compare symbolic gradients with central finite differences, in float64.

    Two forms:

    - ``check_grad(fn, [x0, x1, ...])``: ``fn`` receives float64 placeholders shaped like the arrays (integer
      arrays stay integer and are not differentiated) and returns a tensor;
    - ``check_grad(y, {x: x0, W: W0, ...})``: an existing graph; the given leaves (placeholders or parameters)
      are differentiated, and the graph is rebuilt in float64 first.

    A non-scalar output is reduced as ``sum(y * r)`` with a fixed random ``r``. At most ``max_elements``
    entries of each input are perturbed (a random subset). Passes where ``|analytic - numeric| <= atol +
    rtol * |numeric|``; otherwise raises :class:`GradCheckError` (or returns, with ``raise_on_error=False``).
    """
    from compiler.autodiff import grad
    from compiler.program import build_program
    from runtime.reference import ReferenceFunction

    rng = np.random.default_rng(seed)
    if isinstance(fn_or_output, Tensor):
        if not isinstance(inputs, Mapping):
            raise TypeError("check_grad(y, inputs): inputs must map the graph's leaves to arrays")
        leaves = list(inputs)
        values = [np.asarray(inputs[k]) for k in leaves]
        y, phs = _to_float64(fn_or_output, leaves)
    else:
        if isinstance(inputs, Mapping):
            raise TypeError("check_grad(fn, inputs): inputs must be a list of arrays")
        values = [np.asarray(v) for v in inputs]
        phs = [
            placeholder(v.shape, F64 if v.dtype.kind == "f" else v.dtype, name=f"input{k}")
            for k, v in enumerate(values)
        ]
        y = fn_or_output(*phs)
        if not isinstance(y, Tensor):
            raise TypeError(f"check_grad: fn must return a symbolic Tensor, got {type(y).__name__}")
    values = [v.astype(F64) if v.dtype.kind == "f" else v for v in values]
    if y.ndim:
        shape = tuple(y.shape)
        if None in shape:  # dims known only at run time: evaluate once to learn them
            probe = build_program(phs, [y], None, mode)
            probe.updates = []
            shape = ReferenceFunction(probe)(*values)[0].shape
        r = constant(rng.standard_normal(shape))
        y = (y * r).sum()
    diff = [(k, ph) for k, ph in enumerate(phs) if is_float(ph.dtype)]
    grads = grad(y, [ph for _, ph in diff], unconnected="zero")
    program = build_program(phs, [y, *grads], None, mode)
    program.updates = []  # keep RNG counters etc. fixed so that every evaluation sees the same function
    f = ReferenceFunction(program)
    analytic = f(*values)[1:]

    def value_at(vals: list[np.ndarray]) -> float:
        sub = dataclasses.replace(program, outputs=[program.outputs[0]])
        return float(ReferenceFunction(sub)(*vals)[0])

    worst_abs, worst_rel, checked, failures = 0.0, 0.0, 0, []
    for (k, ph), a in zip(diff, analytic):
        base = values[k]
        flat_idx = np.arange(base.size)
        if base.size > max_elements:
            flat_idx = rng.choice(base.size, size=max_elements, replace=False)
        for fi in flat_idx:
            idx = np.unravel_index(fi, base.shape)
            plus = [v.copy() for v in values]
            minus = [v.copy() for v in values]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            numeric = (value_at(plus) - value_at(minus)) / (2 * eps)
            got = float(a[idx])
            err = abs(got - numeric)
            rel = err / max(abs(numeric), 1e-12)
            worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, rel if err > atol else 0.0)
            checked += 1
            if not err <= atol + rtol * abs(numeric):
                failures.append(f"  d/d{ph.label()}{list(map(int, idx))}: symbolic {got:.8g}, numeric {numeric:.8g}")
    report = f"check_grad: {checked} partial derivatives, max abs error {worst_abs:.3g}, max rel error {worst_rel:.3g}"
    if failures:
        report += f"; {len(failures)} mismatches:\n" + "\n".join(failures[:10])
        if raise_on_error:
            raise GradCheckError(report)
    return GradCheckResult(worst_abs, worst_rel, checked, report)
