"""``symdl.compile``: turn a graph into a callable, and the :class:`Function` it returns."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from symdl.errors import GraphError
from symdl.graph import Parameter, Tensor

TARGETS = ("reference", "cpu", "cuda")


@dataclass
class CompileReport:
    """What compiling cost: seconds per phase, and what Numba compiled or loaded from its disk cache."""

    timings: dict[str, float] = field(default_factory=dict)
    kernels: int = 0
    numba_compiled: int = 0  # signatures compiled by Numba during this compile (0 with a warm disk cache)
    numba_cache_hits: int = 0  # signatures loaded from Numba's disk cache
    notes: list[str] = field(default_factory=list)  # cache misses that could not be cached, warm-up problems

    def __str__(self) -> str:
        phases = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in self.timings.items())
        text = (
            f"compile: {self.kernels} kernels; {phases}; Numba compiled {self.numba_compiled} signatures, "
            f"loaded {self.numba_cache_hits} from the disk cache"
        )
        return text + "".join(f"\n  note: {n}" for n in self.notes)


class Function:
    """A compiled function: ``f(*arrays) -> list[np.ndarray]``. Parameter updates apply after each call.

    Compiled targets also offer ``plan`` (a printable kernel plan), ``explain()`` (what every pass and the fusion
    did, and why candidates were rejected), ``profile(*arrays)``, ``memory_report()`` and ``compile_report``.
    """

    def __init__(self, program: Any, executor: Any, target: str) -> None:
        self.program = program
        self.target = target
        self._executor = executor
        self.lowered: Any = None  # compiled targets: kernels, fusion log
        self.compile_report = CompileReport()

    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        return self._executor(*arrays)

    @property
    def inputs(self) -> list[Tensor]:
        return list(self.program.inputs)

    @property
    def outputs(self) -> list[Tensor]:
        return list(self.program.outputs)

    @property
    def plan(self) -> Any:
        """The kernel plan (compiled targets); ``print(f.plan)`` lists kernels, fused ops, shapes and lines."""
        self._need_compiled("plan")
        return self._executor.plan

    def explain(self) -> str:
        """The graph passes' rewrite log and the fusion decisions, one line each."""
        lines = [str(self.program.log)] if self.program.log.entries else []
        if self.lowered is not None:
            lines += self.lowered.fusion_log
        return "\n".join(lines)

    def profile(self, *arrays: Any, repeat: int = 10) -> Any:
        """Per-kernel calls, time and share (forward / backward / update), and runtime overhead per launch.
        Parameters are updated by each profiled call, as by a normal call."""
        self._need_compiled("profile")
        return self._executor.profile(*arrays, repeat=repeat)

    @property
    def validation(self) -> Any:
        """``target="cuda", validate=True``: the last call's per-kernel cuda-vs-cpu errors
        (:class:`runtime.cuda_validate.ValidationReport`); None otherwise or before the first call."""
        return getattr(self._executor, "validation", None)

    def memory_report(self) -> Any:
        """Planned peak bytes vs bytes without planning, for the last input shapes."""
        self._need_compiled("memory_report")
        return self._executor.memory_report()

    def export(self, path: str | os.PathLike[str], validate: bool = True) -> Any:
        """Write this eval-mode ``target="cpu"`` (or ``"cuda"``) function to one model file that :func:`symdl.load`
        reads back; the file is reloaded for the same target and checked bit for bit first. Returns a
        :class:`runtime.export.ExportReport`."""
        from runtime.export import export

        return export(self, path, validate=validate)

    def _need_compiled(self, what: str) -> None:
        if self.lowered is None:
            raise GraphError(f"Function.{what} is available for compiled targets (target='cpu'), not {self.target!r}")

    def __repr__(self) -> str:
        kernels = f" kernels={len(self.lowered.compiled)}" if self.lowered is not None else ""
        return (
            f"<symdl.Function target={self.target} mode={self.program.mode} "
            f"inputs={[t.label() for t in self.program.inputs]} outputs={len(self.program.outputs)} "
            f"updates={len(self.program.updates)} nodes={len(self.program.order)}{kernels}>"
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
    warmup: bool | str = True,
    validate: bool = False,
) -> Function:
    """Compile a graph into ``f(*arrays) -> list of arrays``.

    - ``inputs``: the placeholders, in the order the arrays are passed.
    - ``outputs``: tensors to compute.
    - ``updates``: ``{parameter: new value}``; all read the old values and apply after the outputs.
    - ``mode``: ``"train"`` (batch statistics, running-stat updates, dropout masks) or ``"eval"`` (running
      statistics, dropout is the identity).
    - ``target``: ``"reference"`` (the NumPy interpreter, the oracle), ``"cpu"`` (fused Numba kernels) or
      ``"cuda"`` (the same fused kernels emitted for numba.cuda; needs ``symdl[cuda]`` and a GPU or
      ``NUMBA_ENABLE_CUDASIM=1``; a first slice: unsupported ops are a compile error naming them).
    - ``check_numerics``: raise at the first op (forward or gradient) producing NaN/Inf, naming its line.
    - ``passes``: graph passes to run, all by default on compiled targets and none on ``"reference"``;
      switch one off by name, e.g. ``passes={"fold_bn": False}`` (names: ``compiler.passes.PASS_NAMES``; the
      fusion switch ``"fuse_reductions"`` keeps every sum a separate kernel; ``"fuse_pooling"``, cpu only, keeps
      a 2x2 max pool out of the convolution kernel that feeds it).
    - ``freeze_parameters``: inference only (``mode="eval"``): parameters become constants holding their
      current values, so everything computed from weights alone (folded BatchNorm) is precomputed.
    - ``warmup``: compiled targets run every kernel once on zero inputs inside ``compile`` (dims declared
      ``None`` set to 2), so that no Numba compilation happens at call time, whatever the batch size (a CPU
      kernel is one compiled function for serial and multi-threaded runs alike). ``False``: compile lazily on
      first use. ``"small"`` is accepted as the same as ``True`` (it used to skip the parallel variants).
    - ``validate`` (``target="cuda"`` only; a debugging mode): every call runs the cuda plan kernel by kernel and
      checks each kernel against the CPU kernel of the same fused group, run on the same (downloaded) inputs
      (float32 ``rtol=1e-4, atol=1e-5``, float64 ``rtol=1e-10, atol=1e-12``, integers and booleans exactly). The
      first kernel that disagrees raises :class:`runtime.cuda_validate.KernelMismatchError` naming the kernel (e.g.
      ``k12_conv2d+add+relu``), its ops, the output, the max abs/rel error, the worst element and the user's
      lines; a buffer overwritten before its last reader is reported too. Otherwise the call returns its outputs
      and applies its updates as usual, and ``f.validation`` holds the per-kernel errors of the last call. Slow
      (every kernel runs on both targets, every value is downloaded); the CPU kernels compile on the first call.
      For the other targets it is an error: compare ``target="cpu"`` with ``target="reference"`` instead.
    """
    from compiler.program import build_program

    if warmup not in (True, False, "small"):
        raise ValueError(f"compile: warmup must be True, False or 'small', got {warmup!r}")

    if target not in TARGETS:
        raise GraphError(f"compile: unknown or unavailable target {target!r}; available: {', '.join(TARGETS)}")
    if validate and target != "cuda":
        raise GraphError(
            f"compile: validate=True compares each cuda kernel with the cpu kernel of the same fused group and "
            f"applies to target='cuda' only, not {target!r}; to check target='cpu', compare its outputs with "
            "target='reference'"
        )
    if passes is None and target != "reference":
        passes = {}
    t0 = time.perf_counter()
    program = build_program(inputs, outputs, updates, mode, passes=passes, freeze_parameters=freeze_parameters)
    t_passes = time.perf_counter() - t0
    if target in ("cpu", "cuda"):
        fuse_reductions = bool((passes or {}).get("fuse_reductions", True))
        fuse_pooling = bool((passes or {}).get("fuse_pooling", True))
        if target == "cuda":  # numba.cuda (or its simulator) via runtime/cuda.py; a GraphError says what is missing
            from runtime.cuda import _compile_cuda

            return _compile_cuda(program, check_numerics, warmup, t_passes, fuse_reductions, validate=bool(validate))
        return _compile_cpu(program, check_numerics, warmup, t_passes, fuse_reductions, fuse_pooling)
    from runtime.reference import ReferenceFunction

    fn = Function(program, ReferenceFunction(program, check_numerics=check_numerics), target)
    fn.compile_report.timings["passes"] = t_passes
    return fn


def _compile_cpu(
    program: Any,
    check_numerics: bool,
    warmup: bool | str,
    t_passes: float,
    fuse_reductions: bool = True,
    fuse_pooling: bool = True,
) -> Function:
    from compiler.lower import dispatcher_stats, lower_cpu
    from runtime.cpu import CpuFunction
    from runtime.plan import build_plan

    lowered = lower_cpu(program, fuse_reductions, fuse_pooling)
    executor = CpuFunction(build_plan(program, lowered.compiled), check_numerics=check_numerics)
    fn = Function(program, executor, "cpu")
    fn.lowered = lowered
    report = fn.compile_report
    report.kernels = len(lowered.compiled)
    report.timings = {"passes": t_passes, **lowered.timings}
    if warmup:
        before = dispatcher_stats(lowered.compiled)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                executor.warmup()
            except Exception as e:  # noqa: BLE001 - data-dependent ops may reject zeros; the first call compiles
                report.notes.append(f"warm-up stopped early ({type(e).__name__}: {e}); the rest compiles on first call")
        report.timings["numba_jit"] = time.perf_counter() - t0
        after = dispatcher_stats(lowered.compiled)
        report.numba_compiled = after[1] - before[1]
        report.numba_cache_hits = after[0] - before[0]
        if report.numba_compiled:
            report.notes.append(
                f"cache miss: {report.numba_compiled} kernel signatures were not in Numba's disk cache and were "
                "compiled (first use of these kernels, dtypes or layouts on this machine and versions)"
            )
        # Numba warns when a function cannot be cached (e.g. it refers to dynamic globals): say which and why
        report.notes += sorted({str(w.message).splitlines()[0] for w in caught if "cach" in str(w.message).lower()})
    return fn
