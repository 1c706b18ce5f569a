"""The :class:`Plan`: the declarative, printable result of compiling a Program for a kernel target.

A Plan is the Program (inputs, outputs, updates, mode) plus the ordered list of compiled kernels, each with the
*value slots* it reads and writes. Values are graph nodes:

- placeholders: copied each call into a per-shape input buffer owned by the runtime;
- parameters: their current ``Parameter._value`` arrays, bound directly (no copy);
- constants: their arrays;
- outputs of ``"write"`` kernels: buffers planned by :mod:`compiler.memory`;
- outputs of ``"view"`` kernels: views of their first input, made once when a shape signature is bound.

Nothing in a Plan depends on concrete shapes; :meth:`Plan.concrete_shapes` derives them for one call signature
by re-running every op's ``infer`` on concrete types. The executor is :class:`runtime.cpu.CpuFunction`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compiler.kernels import CompiledKernel
from compiler.memory import MemoryPlan, StepUse
from compiler.program import Program
from runtime.reference import _none_dim_checks, check_none_dims_against_static, none_dim_static_checks
from symdl.errors import Frame, GraphError, OpRuntimeError, SymdlError, where
from symdl.graph import Constant, InferError, Parameter, Tensor, TensorType, describe, is_placeholder, toposort
from symdl.ops.base import shape_matches

ROLES = ("forward", "backward", "update")


@dataclass(eq=False)
class PlanStep:
    """One kernel launch: the compiled kernel, the values it reads and writes (argument order) and its role."""

    compiled: CompiledKernel
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    role: str  # "forward", "backward" or "update" (its outputs are only parameter-update values)

    @property
    def name(self) -> str:
        return self.compiled.name

    @property
    def kind(self) -> str:
        return self.compiled.kernel.kind

    @property
    def is_view(self) -> bool:
        return self.compiled.mode == "view"

    def ops(self) -> list[str]:
        """Member op names in kernel order."""
        return [n.op.name for n in self.compiled.kernel.nodes]

    def frames(self) -> list[str]:
        return self.compiled.kernel.frames()

    def where(self) -> str:
        """``created at`` lines of the member ops (for error messages)."""
        frames: list[Frame] = []
        for n in self.compiled.kernel.nodes:
            if n.frame is not None and n.frame not in frames:
                frames.append(n.frame)
        return "".join(where(f) for f in frames)


class Plan:
    """Program + ordered kernels + value slots (see the module docstring). Build with :func:`build_plan`."""

    def __init__(self, program: Program, kernels: Sequence[CompiledKernel]) -> None:
        self.program = program
        update_values = {v.id for _, v in program.updates}
        output_ids = {t.id for t in program.outputs}
        self.steps: list[PlanStep] = []
        for ck in kernels:
            outs = tuple(ck.kernel.outputs)
            only_update = bool(outs) and all(o.id in update_values and o.id not in output_ids for o in outs)
            role = "update" if only_update else ck.kernel.role
            self.steps.append(PlanStep(ck, tuple(ck.kernel.inputs), outs, role))
        self._validate()
        # view output -> the value whose storage it aliases (its first input)
        self.view_bases: dict[int, Tensor] = {s.outputs[0].id: s.inputs[0] for s in self.steps if s.is_view}
        slots = [t for s in self.steps for t in (*s.inputs, *s.outputs)]
        slots += list(program.outputs) + [v for _, v in program.updates]
        self.shape_order: list[Tensor] = toposort(slots)  # every node whose concrete shape is needed
        self._none_checks = {n.id: _none_dim_checks(n) for n in self.shape_order if n.inputs}
        self._static_checks = {n.id for n in self.shape_order if n.inputs and none_dim_static_checks(n)}
        self.step_uses: list[StepUse] = [
            StepUse(
                "view" if s.is_view else s.kind,
                tuple(t.id for t in s.inputs),
                tuple(t.id for t in s.outputs),
            )
            for s in self.steps
        ]
        self.dtypes: dict[int, np.dtype] = {n.id: n.dtype for n in self.shape_order}
        self.keep_alive: tuple[int, ...] = tuple(t.id for t in program.outputs) + tuple(
            v.id for _, v in program.updates
        )
        self.used_inputs: list[int] = [k for k, ph in enumerate(program.inputs) if ph.id in self.dtypes]
        # filled in by the runtime after each new instantiation, for dumps
        self.last_memory: MemoryPlan | None = None
        self.last_signature: tuple[tuple[int, ...], ...] | None = None

    @property
    def kernels(self) -> list[CompiledKernel]:
        """The compiled kernels in execution order."""
        return [s.compiled for s in self.steps]

    # ------------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        """Every slot is a leaf the runtime can provide or a value written by exactly one earlier step."""
        input_ids = {p.id for p in self.program.inputs}
        written: dict[int, str] = {}
        for s in self.steps:
            for t in s.inputs:
                if t.id in written:
                    continue
                if is_placeholder(t) and t.id not in input_ids:
                    raise GraphError(f"plan: kernel {s.name} reads placeholder {t.label()}, which is not an input")
                if not t.inputs and not isinstance(t, (Parameter, Constant)) and not is_placeholder(t):
                    raise GraphError(f"plan: kernel {s.name} reads leaf {t.label()} of unknown kind")
                if t.inputs:
                    raise GraphError(f"plan: kernel {s.name} reads {t.label()} before any kernel writes it")
            if s.is_view and (len(s.outputs) != 1 or not s.inputs):
                raise GraphError(f"plan: view kernel {s.name} must have inputs and exactly one output")
            for t in s.outputs:
                if t.id in written:
                    raise GraphError(f"plan: {t.label()} is written by kernels {written[t.id]} and {s.name}")
                if not t.inputs:
                    raise GraphError(f"plan: kernel {s.name} writes leaf {t.label()}")
                written[t.id] = s.name
        needed = [(t, "output") for t in self.program.outputs]
        needed += [(v, f"update of {p.label()}") for p, v in self.program.updates]
        for t, what in needed:
            if t.inputs and t.id not in written:
                raise GraphError(f"plan: {what} {t.label()} is not written by any kernel")
            if is_placeholder(t) and t.id not in input_ids:  # pragma: no cover - build_program checks this
                raise GraphError(f"plan: {what} {t.label()} is a placeholder that is not an input")

    # ------------------------------------------------------------------------------------------------
    def concrete_shapes(self, input_shapes: Sequence[tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
        """Concrete shape of every needed node for one call signature (``input_shapes`` in input order).

        Re-runs each op's ``infer`` on concrete types. Raises :class:`OpRuntimeError` naming the op and its
        user line when the run-time shapes are inconsistent, with the reference executor's message for
        elementwise operands whose ``None`` dims differ.
        """
        shapes: dict[int, tuple[int, ...]] = {p.id: tuple(s) for p, s in zip(self.program.inputs, input_shapes)}
        for n in self.shape_order:
            if n.id in shapes:
                continue
            if not n.inputs:
                if is_placeholder(n):  # pragma: no cover - _validate guarantees inputs are complete
                    raise SymdlError(f"placeholder {n.label()} has no value")
                shapes[n.id] = tuple(n.shape)
                continue
            ins = [shapes[i.id] for i in n.inputs]
            self._check_none_dims(n, ins)
            if n.id in self._static_checks:
                check_none_dims_against_static(n, ins)
            try:
                tt = n.op.infer(*(TensorType(s, i.dtype) for s, i in zip(ins, n.inputs)))
            except InferError as e:
                props = n.op.props_str()
                props = f" [{props}]" if props else ""
                operands = ", ".join(f"{s} {i.dtype}" for s, i in zip(ins, n.inputs))
                raise OpRuntimeError(
                    f"{n.op.name}{props}: {e}; operands at run time: {operands}{where(n.frame)}"
                ) from None
            shape = tuple(tt.shape)
            if any(d is None for d in shape) or tt.dtype != n.dtype or not shape_matches(n.shape, shape):
                raise SymdlError(
                    f"internal: {n.op.name} infers {tt} from concrete operands, but its static type is "
                    f"{describe(n)}{where(n.frame)}"
                )
            shapes[n.id] = shape
        for p, v in self.program.updates:
            if shapes[v.id] != tuple(p.shape):
                raise OpRuntimeError(
                    f"update of parameter {p.label()}: value has shape {shapes[v.id]}, expected {p.shape}"
                )
        return shapes

    def _check_none_dims(self, n: Tensor, ins: list[tuple[int, ...]]) -> None:
        for ax, idx in self._none_checks[n.id]:
            sizes = {ins[k][ax - n.ndim + len(ins[k])] for k in idx}
            if len(sizes) > 1:
                raise OpRuntimeError(
                    f"{n.op.name}: operands whose axis {ax} is declared None have different sizes "
                    f"{sorted(sizes)} at run time; dims declared None must match (broadcast explicitly with "
                    f"broadcast_to if you mean it){where(n.frame)}"
                )

    # ------------------------------------------------------------------------------------------------
    def dump(self) -> str:
        """One line per kernel (name, kind, role, member ops, typed slots, user lines) and a memory summary."""
        p = self.program
        lines = [f"Plan(mode={p.mode}, {len(self.steps)} kernels)"]
        lines.append("  inputs: " + ", ".join(f"{t.label()} {t.type}" for t in p.inputs))
        lines.append("  outputs: " + ", ".join(f"{t.label()} {t.type}" for t in p.outputs))
        for prm, v in p.updates:
            lines.append(f"  update {prm.label()} <- {v.label()}")
        width = max((len(s.name) for s in self.steps), default=0)
        for s in self.steps:
            ins = ", ".join(f"{t.label()} {t.type}" for t in s.inputs)
            outs = ", ".join(f"{t.label()} {t.type}" for t in s.outputs)
            at = "; ".join(_short_frame(f) for f in s.frames())
            lines.append(
                f"  {s.name:<{width}}  {s.kind:<11} {s.role:<8} [{', '.join(s.ops())}]  ({ins}) -> ({outs})  @ {at}"
            )
        if self.last_memory is not None:
            sig = ", ".join(f"{t.label()}={shape}" for t, shape in zip(p.inputs, self.last_signature or ()))
            lines.append(f"  memory for {sig}: {self.last_memory}")
        else:
            lines.append("  memory: not instantiated yet (buffers are planned at the first call per shape)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.dump()

    def __repr__(self) -> str:
        return f"<Plan mode={self.program.mode} kernels={len(self.steps)}>"


def _short_frame(s: str) -> str:
    """``/long/path/model.py:12 in f`` -> ``model.py:12 in f``."""
    path, _, rest = s.partition(":")
    return f"{os.path.basename(path)}:{rest}" if rest else s


def build_plan(program: Program, kernels: Sequence[CompiledKernel]) -> Plan:
    """The Plan of ``program`` run as ``kernels`` (in execution order). Validates the slots."""
    return Plan(program, kernels)
