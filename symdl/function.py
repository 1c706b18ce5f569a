"""``symdl.compile``: turn a graph into a callable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from symdl.errors import GraphError
from symdl.graph import Parameter, Tensor

TARGETS = ("reference", "cpu")


class Function:
    """A compiled function: ``f(*arrays) -> list[np.ndarray]``. Parameter updates apply after each call."""

    def __init__(self, program: Any, executor: Any, target: str) -> None:
        self.program = program
        self.target = target
        self._executor = executor
        self.lowered: Any = None  # compiled targets: kernels, fusion log, compile timings

    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        return self._executor(*arrays)

    @property
    def inputs(self) -> list[Tensor]:
        return list(self.program.inputs)

    @property
    def outputs(self) -> list[Tensor]:
        return list(self.program.outputs)

    def __repr__(self) -> str:
        return (
            f"<symdl.Function target={self.target} mode={self.program.mode} "
            f"inputs={[t.label() for t in self.program.inputs]} outputs={len(self.program.outputs)} "
            f"updates={len(self.program.updates)} nodes={len(self.program.order)}>"
        )


def compile(  # noqa: A001 - the API name
    inputs: Tensor | Sequence[Tensor],
    outputs: Tensor | Sequence[Tensor],
    updates: Mapping[Parameter, Any] | None = None,
    target: str = "reference",
    mode: str = "train",
    check_numerics: bool = False,
    passes: Mapping[str, bool] | None = None,
    freeze_parameters: bool = False,
) -> Function:
    """Compile a graph into ``f(*arrays) -> list of arrays``.

    - ``inputs``: the placeholders, in the order the arrays are passed.
    - ``outputs``: tensors to compute.
    - ``updates``: ``{parameter: new value}``; all read the old values and apply after the outputs.
    - ``mode``: ``"train"`` (batch statistics, running-stat updates, dropout masks) or ``"eval"`` (running
      statistics, dropout is the identity).
    - ``target``: ``"reference"`` (the NumPy interpreter).
    - ``check_numerics``: raise at the first op (forward or gradient) producing NaN/Inf, naming its line.
    - ``passes``: graph passes to run, all by default on compiled targets and none on ``"reference"``;
      switch one off by name, e.g. ``passes={"fold_bn": False}`` (names: ``compiler.passes.PASS_NAMES``).
    - ``freeze_parameters``: inference only (``mode="eval"``): parameters become constants holding their
      current values, so everything computed from weights alone (folded BatchNorm) is precomputed.
    """
    from compiler.program import build_program

    if target not in TARGETS:
        raise GraphError(
            f"compile: unknown or unavailable target {target!r}; available: {', '.join(TARGETS)} "
            "(the numba.cuda 'cuda' target is not implemented yet)"
        )
    if passes is None and target != "reference":
        passes = {}
    program = build_program(inputs, outputs, updates, mode, passes=passes, freeze_parameters=freeze_parameters)
    if target == "cpu":
        from compiler.lower import lower_cpu
        from runtime.cpu import CpuFunction
        from runtime.plan import build_plan

        lowered = lower_cpu(program)
        executor = CpuFunction(build_plan(program, lowered.compiled), check_numerics=check_numerics)
        fn = Function(program, executor, target)
        fn.lowered = lowered
        return fn
    from runtime.reference import ReferenceFunction

    return Function(program, ReferenceFunction(program, check_numerics=check_numerics), target)
