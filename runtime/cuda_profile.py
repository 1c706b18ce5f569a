"""The cuda target's profile: :class:`runtime.cpu.Profile` plus the *device launches* of a step.

A plan kernel may launch several device kernels (a reduction's tree pass and its combining pass, a library op's
copies) or none (a view), and a call launches more than its plan's kernels (parameter-update copies, copies that
make a strided output contiguous before the download). Every launch of the cuda target goes through
:func:`compiler.codegen.cuda.device.launch`, which counts it; :meth:`runtime.cuda.CudaFunction.profile` reads the
counter around every call and every plan kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.cpu import Profile


@dataclass
class CudaProfile(Profile):
    """``launches_per_call`` counts device launches (not plan kernels); ``plan_kernels``: the plan's non-view
    kernels; ``kernel_launches``: device launches per call of each plan kernel (by name); ``other_launches``:
    launches outside the plan kernels (update copies, output copies) per call; ``by_function``: launches per call
    of each device function (``gemm``, ``strided_copy``, a generated ``kernel`` ...)."""

    plan_kernels: int = 0
    kernel_launches: dict[str, int] = field(default_factory=dict)
    other_launches: int = 0
    by_function: dict[str, int] = field(default_factory=dict)

    @property
    def launches(self) -> int:
        """Device launches per call (per training step): the number issue 6 bounds."""
        return self.launches_per_call

    def __str__(self) -> str:
        funcs = ", ".join(f"{k} {v}" for k, v in sorted(self.by_function.items(), key=lambda kv: (-kv[1], kv[0])))
        several = ", ".join(f"{k} {v}" for k, v in self.kernel_launches.items() if v > 1)
        lines = [
            super().__str__(),
            f"device launches per step: {self.launches_per_call} ({self.plan_kernels} plan kernels; "
            f"{self.other_launches} outside them: update and output copies)",
            f"  by device function: {funcs or 'none'}",
        ]
        if several:
            lines.append(f"  plan kernels launching more than once: {several}")
        return "\n".join(lines)


__all__ = ["CudaProfile"]
