"""Kernel-by-kernel validation of the cuda target against the CPU target: ``compile(..., target="cuda",
validate=True)``.

Both targets take their fused groups from the same :func:`compiler.fusion.fuse` (deterministic: the same Program
gives the same kernels), so the Program is lowered a second time for the CPU and the kernels are paired by
position; :class:`KernelValidator` checks that the pairing is sound (same kernel count, kinds, member nodes,
inputs and outputs) when it is built, and refuses to validate otherwise.

A validated call runs the cuda plan one kernel at a time. Before each kernel its inputs are downloaded; after it,
its outputs are downloaded, the CPU kernel of the same fused group runs on the downloaded inputs (into fresh host
arrays), and the outputs are compared (float32: ``rtol=1e-4, atol=1e-5``; float64: ``rtol=1e-10, atol=1e-12``;
integers and booleans exactly; NaN must meet NaN). Each kernel thus sees exactly the inputs the cuda kernel saw,
so errors do not accumulate and the *first* disagreeing kernel is the culprit. It raises
:class:`KernelMismatchError` naming the kernel (its stable name, e.g. ``k12_conv2d+add+relu``), kind, role, member
ops, the output that disagrees, max abs/rel error and the worst element, and the user's source lines.

Two more things are checked on the way: a value read by a kernel must still hold what its producer wrote (a
planned buffer that was overwritten too early is reported as such, naming both kernels), and a view kernel's
cuda view must hold the same elements as the CPU view.

Outputs, parameter updates and errors raised by kernels are those of an ordinary call. The last call's per-kernel
errors are kept as a :class:`ValidationReport` (``f.validation``). Slow by design (every value crosses the bus
twice and every kernel runs twice): a debugging mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from symdl.errors import GraphError, SymdlError
from symdl.graph import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from compiler.kernels import CompiledKernel, Kernel
    from compiler.lower import Lowered
    from compiler.program import Program
    from runtime.cuda import CudaFunction, CudaInstance
    from runtime.plan import PlanStep

TOLERANCES: dict[str, tuple[float, float]] = {"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}
"""``(rtol, atol)`` per float dtype name; other float dtypes use the float32 entry, other dtypes compare exactly."""


class KernelMismatchError(SymdlError, AssertionError):
    """A cuda kernel's output disagrees with the CPU kernel of the same fused group (``validate=True``)."""


@dataclass
class OutputCheck:
    """One compared output of one kernel."""

    value: str  # the output node's label
    shape: tuple[int, ...]
    dtype: str
    max_abs: float  # over elements where both are finite (0 for exact dtypes that agree)
    max_rel: float  # max |cuda - cpu| / |cpu| over elements where both are finite and cpu != 0
    mismatches: int  # elements outside the tolerance (or unequal, for exact dtypes)
    worst: str = ""  # "index (i, j): cuda a vs cpu b" of the worst mismatching element


@dataclass
class KernelCheck:
    """The comparison of one kernel (outputs in kernel order)."""

    name: str
    kind: str
    role: str
    ops: list[str]
    outputs: list[OutputCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.mismatches == 0 for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)


@dataclass
class ValidationReport:
    """Per-kernel comparison of the last validated call (``f.validation``)."""

    signature: tuple[tuple[int, ...], ...]
    kernels: list[KernelCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(k.ok for k in self.kernels)

    def __str__(self) -> str:
        width = max((len(k.name) for k in self.kernels), default=6)
        lines = [
            f"cuda vs cpu, kernel by kernel, input shapes {list(self.signature)}: {len(self.kernels)} kernels, "
            + ("all agree" if self.ok else f"{sum(not k.ok for k in self.kernels)} disagree"),
            f"  {'kernel':<{width}}  {'kind':<11} {'role':<8} {'max abs err':>12} {'max rel err':>12}",
        ]
        for k in self.kernels:
            flag = "" if k.ok else "  MISMATCH"
            lines.append(f"  {k.name:<{width}}  {k.kind:<11} {k.role:<8} {k.max_abs:>12.3g} {k.max_rel:>12.3g}{flag}")
        return "\n".join(lines)


def tolerance(dtype: np.dtype) -> tuple[float, float] | None:
    """``(rtol, atol)`` for a float dtype, None for dtypes compared exactly."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return None
    return TOLERANCES.get(dtype.name, TOLERANCES["float32"])


def compare(t: Tensor, cuda: np.ndarray, cpu: np.ndarray) -> OutputCheck:
    """Compare one output (cuda's against cpu's) with :func:`tolerance`."""
    if cuda.shape != cpu.shape or cuda.dtype != cpu.dtype:
        return OutputCheck(
            t.label(),
            tuple(cpu.shape),
            str(cpu.dtype),
            float("inf"),
            float("inf"),
            max(cpu.size, 1),
            f"cuda gave {cuda.shape} {cuda.dtype}, cpu {cpu.shape} {cpu.dtype}",
        )
    tol = tolerance(cpu.dtype)
    if tol is None:
        bad = cuda != cpu
        a = cuda.astype(np.float64) if cuda.dtype.kind in "iub" else None
        b = cpu.astype(np.float64) if cpu.dtype.kind in "iub" else None
        diff = np.abs(a - b) if a is not None and b is not None else bad.astype(np.float64)
        rel = np.zeros_like(diff)
    else:
        rtol, atol = tol
        a, b = cuda.astype(np.float64), cpu.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            close = np.isclose(a, b, rtol=rtol, atol=atol) | (np.isnan(a) & np.isnan(b))
            finite = np.isfinite(a) & np.isfinite(b)
            diff = np.where(finite, np.abs(a - b), 0.0)
            rel = np.where(finite & (b != 0), diff / np.where(b != 0, np.abs(b), 1.0), 0.0)
            # a NaN/inf on one side only ranks as the worst element
            score = np.where(close, -1.0, np.where(finite, diff, np.inf))
        bad = ~close
    n_bad = int(np.count_nonzero(bad))
    worst = ""
    if n_bad:
        if tol is None:
            score = np.where(bad, diff, -1.0)
        idx = np.unravel_index(int(np.argmax(score)), cpu.shape) if cpu.ndim else ()
        worst = f"index {tuple(int(i) for i in idx)}: cuda {cuda[idx]!r} vs cpu {cpu[idx]!r}"
    return OutputCheck(
        t.label(),
        tuple(cpu.shape),
        str(cpu.dtype),
        float(diff.max(initial=0.0)),
        float(rel.max(initial=0.0)),
        n_bad,
        worst,
    )


class KernelValidator:
    """Pairs a cuda :class:`~compiler.lower.Lowered` with the CPU lowering of the same Program and runs validated
    calls (see the module docstring). Built by ``compile(..., target="cuda", validate=True)``."""

    def __init__(self, program: Program, cuda_lowered: Lowered, fuse_reductions: bool = True) -> None:
        from compiler.lower import lower_cpu

        self.cpu = lower_cpu(program, fuse_reductions, fuse_pooling=False)  # the cuda fusion, group for group
        # per cuda kernel (plan order): its parts (itself, or the groups a horizontal kernel launches together),
        # each with the cpu kernel of the same fused group
        self.pairs: list[list[tuple[Kernel, CompiledKernel]]] = self._pair(cuda_lowered)

    def _pair(self, cuda: Lowered) -> list[list[tuple[Kernel, CompiledKernel]]]:
        """Pair every fused group of the cuda plan with the cpu kernel that has the same member nodes; a
        :class:`GraphError` when the two lowerings did not make the same groups."""
        cpu_by_members = {tuple(n.id for n in c.kernel.nodes): c for c in self.cpu.compiled}
        pairs: list[list[tuple[Kernel, CompiledKernel]]] = []
        for g in cuda.kernels:
            row = []
            for part in getattr(g, "parts", None) or [g]:
                c = cpu_by_members.pop(tuple(n.id for n in part.nodes), None)
                if c is None:
                    ops = ", ".join(n.op.name for n in part.nodes)
                    raise GraphError(
                        f"validate: cuda kernel {g.name} ({part.kind}; ops: {ops}) has no cpu kernel with the same "
                        f"member nodes: the cpu lowering of the same program fused differently "
                        f"({len(cuda.kernels)} cuda kernels, {len(self.cpu.kernels)} cpu kernels), so the kernels "
                        "cannot be paired"
                    )
                for what, a, b in (
                    ("kinds", part.kind, c.kernel.kind),
                    ("inputs", sorted(t.id for t in part.inputs), sorted(t.id for t in c.kernel.inputs)),
                    ("outputs", sorted(t.id for t in part.outputs), sorted(t.id for t in c.kernel.outputs)),
                ):
                    if a != b:
                        raise GraphError(
                            f"validate: cuda kernel {g.name} and cpu kernel {c.name} have the same member nodes but "
                            f"their {what} differ ({a} vs {b}); the kernels cannot be paired"
                        )
                row.append((part, c))
            pairs.append(row)
        if cpu_by_members:
            left = ", ".join(c.name for c in cpu_by_members.values())
            raise GraphError(f"validate: cpu kernels {left} have no cuda counterpart; the kernels cannot be paired")
        return pairs

    # ------------------------------------------------------------------------------------------------
    def run(self, fn: CudaFunction, inst: CudaInstance) -> ValidationReport:
        """Run ``inst``'s kernels one by one, each checked against its CPU twin (inputs already fed)."""
        from compiler.codegen.cuda.device import download
        from compiler.codegen.cuda.library import materialize

        plan = fn.plan
        report = ValidationReport(inst.signature)
        host: dict[int, np.ndarray] = {}  # downloaded values (written by earlier kernels or leaves)
        producer: dict[int, str] = {}  # value id -> the kernel that wrote it
        bound = {k: (run, args) for run, args, k in inst.bound}

        def fetch(t: Tensor) -> np.ndarray:
            return download(materialize(inst.values[t.id]))

        def read(t: Tensor, s: PlanStep) -> np.ndarray:
            """The value ``t`` as the device holds it now; must equal what its producer wrote."""
            now = fetch(t)
            before = host.get(t.id)
            if before is None:
                host[t.id] = now
                return now
            if not _identical(now, before):
                raise KernelMismatchError(
                    f"validate: {t.label()} written by cuda kernel {producer.get(t.id, '?')} was changed on the device "
                    f"before kernel {s.name} read it (a planned buffer was reused or written in place too early); "
                    f"input shapes {list(inst.signature)}{s.where()}"
                )
            return before

        for k, s in enumerate(plan.steps):
            parts = self.pairs[k]
            ins = [read(t, s) for t in s.inputs]
            by_id = {t.id: a for t, a in zip(s.inputs, ins)}
            if s.is_view:
                out = s.outputs[0]
                view = parts[0][1].run(*ins)  # the cpu view (a transpose read by matmul: F-contiguous, as on cpu)
                got = fetch(out)
                check = KernelCheck(s.name, s.kind, s.role, s.ops(), [compare(out, got, np.ascontiguousarray(view))])
                report.kernels.append(check)
                if not check.ok:
                    self._raise(s, check, inst.signature, k, len(plan.steps), s.compiled.kernel)
                host[out.id], producer[out.id] = view, s.name
                continue
            run, args = bound[k]
            try:
                run(*args)
            except Exception as e:
                fn._kernel_error(k, e)
            if fn.check_numerics:
                fn._check_finite(s, args)
            got_outs = [fetch(t) for t in s.outputs]
            want_by_id: dict[int, np.ndarray] = {}
            part_of: dict[int, Kernel] = {}
            for part, cpu in parts:  # the groups of one launch are independent: any order
                cpu_out = [np.empty(inst.shapes[t.id], t.dtype) for t in cpu.kernel.outputs]
                try:
                    cpu.run(*(by_id[t.id] for t in cpu.kernel.inputs), *cpu_out)
                except Exception as e:  # noqa: BLE001 - reported with the kernel's name
                    ops = ", ".join(n.op.name for n in part.nodes)
                    raise KernelMismatchError(
                        f"validate: cuda kernel {s.name}{_part(s, part)} (ops: {ops}) ran, but the cpu kernel of the "
                        f"same fused group ({cpu.name}) raised {type(e).__name__}: {e}; input shapes "
                        f"{list(inst.signature)}{s.where()}"
                    ) from e
                for t, a in zip(cpu.kernel.outputs, cpu_out):
                    want_by_id[t.id], part_of[t.id] = a, part
            check = KernelCheck(s.name, s.kind, s.role, s.ops())
            for t, got in zip(s.outputs, got_outs):
                check.outputs.append(compare(t, got, want_by_id[t.id]))
                host[t.id], producer[t.id] = got, s.name
            report.kernels.append(check)
            if not check.ok:
                bad = next(t for t, o in zip(s.outputs, check.outputs) if o.mismatches)
                self._raise(s, check, inst.signature, k, len(plan.steps), part_of[bad.id])
        return report

    @staticmethod
    def _raise(
        s: PlanStep, check: KernelCheck, signature: tuple[tuple[int, ...], ...], k: int, total: int, part: Kernel
    ) -> NoReturn:
        bad = next(o for o in check.outputs if o.mismatches)
        pos = next(j for j, o in enumerate(check.outputs) if o is bad)
        tol = tolerance(np.dtype(bad.dtype))
        how = f"rtol={tol[0]:g}, atol={tol[1]:g}" if tol is not None else "exact comparison"
        size = int(np.prod(bad.shape)) if bad.shape else 1
        ops = ", ".join(n.op.name for n in part.nodes)
        raise KernelMismatchError(
            f"validate: cuda kernel {s.name}{_part(s, part)} ({part.kind}, {s.role}; ops: {ops}) disagrees with the "
            f"cpu kernel of the same fused group: output {pos} {bad.value} {bad.dtype}{list(bad.shape)}: "
            f"{bad.mismatches} of {size} elements differ ({how}); max abs error {bad.max_abs:.6g}, max rel error "
            f"{bad.max_rel:.6g}; worst at {bad.worst}; kernels before it ({k} of {total}) agree; input shapes "
            f"{list(signature)}{s.where()}"
        )


def _part(s: PlanStep, part: Kernel) -> str:
    """`` part k7_mul+add`` when ``part`` is one of the groups a horizontal cuda kernel launches together."""
    return "" if part is s.compiled.kernel else f" part {part.name}"


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


__all__ = [
    "TOLERANCES",
    "KernelCheck",
    "KernelMismatchError",
    "KernelValidator",
    "OutputCheck",
    "ValidationReport",
    "compare",
    "tolerance",
]
