"""The reference executor: a plain NumPy interpreter of a :class:`Program`.

Every compiled target is checked against it. It validates inputs strictly (nothing is cast or broadcast
silently), checks every op's output against its static type (so an op whose NumPy code disagrees with its
shape rule is caught at once), optionally checks numerics, and applies parameter updates after all outputs
are computed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.program import Program
from symdl.errors import NumericsError, OpRuntimeError, SymdlError, where
from symdl.graph import Constant, Parameter, Tensor, describe, is_float, is_placeholder
from symdl.ops.base import shape_matches
from symdl.ops.elementwise import Elementwise


def validate_inputs(program: Program, arrays: tuple[Any, ...]) -> list[np.ndarray]:
    """Check count, dtype, rank and fixed dims of the call's arrays against the placeholders."""
    if len(arrays) != len(program.inputs):
        names = ", ".join(p.label() for p in program.inputs)
        raise ValueError(f"compiled function takes {len(program.inputs)} arrays ({names}), got {len(arrays)}")
    out = []
    for ph, a in zip(program.inputs, arrays):
        arr = np.asarray(a)
        if arr.dtype != ph.dtype:
            raise ValueError(
                f"input {ph.label()}: expected dtype {ph.dtype}, got {arr.dtype} "
                f"(cast it explicitly, e.g. x.astype(np.{ph.dtype}))"
            )
        if arr.ndim != ph.ndim:
            raise ValueError(f"input {ph.label()}: expected rank {ph.ndim} {describe(ph)}, got shape {arr.shape}")
        if not shape_matches(ph.shape, arr.shape):
            raise ValueError(f"input {ph.label()}: shape {arr.shape} contradicts the placeholder's {describe(ph)}")
        out.append(arr)
    return out


def _none_dim_checks(node: Tensor) -> list[tuple[int, list[int]]]:
    """For elementwise ops: output axes where two or more operands have a ``None`` dim (must match at run time)."""
    if not isinstance(node.op, Elementwise) or len(node.inputs) < 2:
        return []
    checks = []
    nd = node.ndim
    for ax in range(nd):
        idx = [k for k, i in enumerate(node.inputs) if ax - nd + i.ndim >= 0 and i.shape[ax - nd + i.ndim] is None]
        if len(idx) > 1:
            checks.append((ax, idx))
    return checks


def none_dim_static_checks(node: Tensor) -> list[tuple[int, list[int], int]]:
    """For elementwise ops: ``(axis, operands, size)`` where operands declare the axis ``None`` but the result's
    static dim is a known ``size`` (another operand fixes it). At run time those operands must have that size:
    compiled kernels index a ``None`` dim as full size (a 1 would not broadcast), so every target refuses it."""
    if not isinstance(node.op, Elementwise) or len(node.inputs) < 2:
        return []
    checks = []
    nd = node.ndim
    for ax in range(nd):
        size = node.shape[ax]
        if size is None or size == 1:
            continue
        idx = [k for k, i in enumerate(node.inputs) if ax - nd + i.ndim >= 0 and i.shape[ax - nd + i.ndim] is None]
        if idx:
            checks.append((ax, idx, size))
    return checks


def check_none_dims_against_static(node: Tensor, shapes: list[tuple[int, ...]]) -> None:
    """Raise :class:`OpRuntimeError` when an operand's ``None`` dim does not have the size the graph fixed."""
    for ax, idx, size in none_dim_static_checks(node):
        for k in idx:
            got = shapes[k][ax - node.ndim + len(shapes[k])]
            if got != size:
                raise OpRuntimeError(
                    f"{node.op.name}: operand {k} ({node.inputs[k].label()}) has axis {ax} declared None, which the "
                    f"other operands fix to {size}, but it is {got} at run time (shape {tuple(shapes[k])}); a None "
                    f"dim takes the size the graph gives it and does not broadcast (use broadcast_to, or declare "
                    f"the dim 1){where(node.frame)}"
                )


class ReferenceFunction:
    """``f(*arrays) -> list of arrays``; applies the program's updates after computing the outputs."""

    def __init__(self, program: Program, check_numerics: bool = False) -> None:
        self.program = program
        self.check_numerics = check_numerics
        self._steps = [
            (n, [i.id for i in n.inputs], _none_dim_checks(n), bool(none_dim_static_checks(n))) for n in program.order
        ]
        self._input_ids = [p.id for p in program.inputs]
        self._leaves = [n for n in program.order if not n.inputs]

    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        values: dict[int, np.ndarray] = dict(zip(self._input_ids, validate_inputs(self.program, arrays)))
        for node, input_ids, none_checks, static_checks in self._steps:
            if node.id in values:
                continue
            if isinstance(node, (Parameter, Constant)):
                values[node.id] = node.value
                continue
            if is_placeholder(node):  # pragma: no cover - build_program guarantees inputs are complete
                raise SymdlError(f"placeholder {node.label()} has no value")
            args = [values[i] for i in input_ids]
            for ax, idx in none_checks:
                sizes = {args[k].shape[ax - node.ndim + args[k].ndim] for k in idx}
                if len(sizes) > 1:
                    raise OpRuntimeError(
                        f"{node.op.name}: operands whose axis {ax} is declared None have different sizes "
                        f"{sorted(sizes)} at run time; dims declared None must match (broadcast explicitly with "
                        f"broadcast_to if you mean it){where(node.frame)}"
                    )
            if static_checks:
                check_none_dims_against_static(node, [a.shape for a in args])
            try:
                out = node.op.perform(*args)
                if isinstance(out, np.generic):
                    out = np.asarray(out)
            except OpRuntimeError as e:
                raise OpRuntimeError(f"{node.op.name}: {e}{where(node.frame)}") from None
            self._check_type(node, out)
            if self.check_numerics and is_float(node.dtype) and not np.all(np.isfinite(out)):
                self._report_numerics(node, out, args)
            values[node.id] = out
        # never hand out an array that is also a caller's input, a parameter's storage or another output
        shared = {id(values[n.id]) for n in self._leaves if n.id in values}
        outputs = []
        for t in self.program.outputs:
            out = self._owned(values[t.id], shared)
            shared.add(id(out))
            outputs.append(out)
        new_values = [(p, values[v.id]) for p, v in self.program.updates]
        for p, v in new_values:
            if v.shape != p.shape:
                raise OpRuntimeError(f"update of parameter {p.label()}: value has shape {v.shape}, expected {p.shape}")
        for p, v in new_values:
            p._pull = None  # this value is the newest, whatever a device held
            p._value = np.array(v, copy=True)
        return outputs

    @staticmethod
    def _owned(a: np.ndarray, shared: set[int]) -> np.ndarray:
        return a if a.flags.owndata and a.flags.writeable and id(a) not in shared else np.array(a, copy=True)

    @staticmethod
    def _check_type(node: Tensor, out: Any) -> None:
        if not isinstance(out, np.ndarray) or out.dtype != node.dtype or not shape_matches(node.shape, out.shape):
            got = f"{getattr(out, 'shape', '?')} {getattr(out, 'dtype', type(out).__name__)}"
            raise SymdlError(
                f"internal: {node.op.name} produced {got}, but its static type is {describe(node)} "
                f"(an op's perform disagrees with its infer){where(node.frame)}"
            )

    @staticmethod
    def _report_numerics(node: Tensor, out: np.ndarray, args: list[np.ndarray]) -> None:
        n_nan = int(np.isnan(out).sum())
        n_inf = int(np.isinf(out).sum())
        ins = []
        for i, a in zip(node.inputs, args):
            finite = bool(np.all(np.isfinite(a))) if a.dtype.kind == "f" else True
            ins.append(f"{i.label()} ({'finite' if finite else 'NOT finite'})")
        kind = "gradient op" if node.role == "backward" else "op"
        raise NumericsError(
            f"check_numerics: {kind} {node.op.name} ({node.label()}) produced {n_nan} NaN and {n_inf} Inf values "
            f"out of {out.size}; inputs: {', '.join(ins)}{where(node.frame)}"
        )
