"""Compiled inference export and safe loading.

::

    f = symdl.compile([x], [y], mode="eval", target="cpu")   # freeze_parameters=True or not: both export
    report = f.export("model.symdl")                          # writes, reloads, checks bit for bit, reports
    g = symdl.load("model.symdl")                             # in any process: no training graph, no autodiff
    g(x_batch)                                                # the same outputs, bit for bit; any batch size

The file format (one zip: ``manifest.json``, ``graph.json``, ``weights.npz``; versioned, checksummed, declarative)
is described in :mod:`runtime.artifact`. In short: the graph is stored as nodes of symdl's closed op vocabulary
with their props, static types (``None`` dims stay ``None``: the batch size is free) and the kernel partition;
weights are ``.npy`` arrays. :func:`load` never executes code from the file, never unpickles, never imports a
module the file names: it rebuilds the graph from symdl's own op classes (re-running every op's shape inference
and comparing with the declared types), re-runs symdl's fusion (which must reproduce the stored partition) and
generates the kernels with symdl's own code generator, whose Numba machine code comes from the disk cache when
it is warm (:mod:`compiler.codegen.cache`).

- :func:`export` (``Function.export``): only eval-mode ``target="cpu"`` (or ``"cuda"``) functions without updates
  (an exported model is frozen inference; parameters are stored with their current values). An op outside the
  vocabulary (a user-defined op class) fails at export time, naming the op and the line that created it. The file
  is written to a temporary name, **reloaded for the same target and run against the original on batch sizes 1, 2
  and 7** (outputs must be equal bit for bit), and only then renamed over ``path``: a failed export leaves nothing
  behind. The file does not depend on the target: a model exported from the cpu target loads for cuda and back.
- :func:`load_artifact`: read and validate a file (metadata, signature, kernel list, parameter count) without
  generating code, for tools that inspect models.
- :func:`load` / :func:`build`: the executable :class:`LoadedFunction`, a :class:`symdl.Function` (``plan``,
  ``profile``, ``memory_report``, ``explain``, ``compile_report``, ``inputs``/``outputs``) plus ``artifact``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifact import (
    FORMAT,
    FORMAT_VERSION,
    Artifact,
    ArtifactError,
    ExportError,
    TensorSpec,
    artifact_bytes,
    describe_function,
    load_artifact,
    write_artifact,
)
from symdl.errors import GraphError
from symdl.function import Function

__all__ = [
    "LOAD_TARGETS",
    "VALIDATION_BATCHES",
    "ArtifactError",
    "ExportError",
    "ExportReport",
    "LoadedFunction",
    "build",
    "export",
    "load",
    "load_artifact",
]

LOAD_TARGETS = ("cpu", "cuda")
"""Targets :func:`load` can build for (``"cuda"``: numba.cuda, a GPU or ``NUMBA_ENABLE_CUDASIM=1``)."""

VALIDATION_BATCHES = (1, 2, 7)
"""Batch sizes (every ``None`` dim) on which :func:`export` compares the reloaded model with the original."""


@dataclass
class ExportReport:
    """What :func:`export` wrote and checked. ``os.fspath(report)`` is the file's path, so
    ``symdl.load(f.export(path))`` works."""

    path: Path
    size_bytes: int
    format_version: int
    symdl_version: str
    nodes: int
    kernels: int
    weight_arrays: int
    param_count: int
    validated_batches: tuple[int, ...]
    seconds: float

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        checked = (
            "reloaded and checked bit for bit at batch sizes " + ", ".join(map(str, self.validated_batches))
            if self.validated_batches
            else "not validated (validate=False)"
        )
        return (
            f"exported {self.path} ({self.size_bytes} bytes, {FORMAT} v{self.format_version}, symdl "
            f"{self.symdl_version}): {self.nodes} nodes, {self.kernels} kernels, {self.weight_arrays} weight arrays "
            f"({self.param_count} values); {checked}; {self.seconds:.2f} s"
        )


class LoadedFunction(Function):
    """A model loaded from a file: a compiled :class:`symdl.Function` (call it with arrays; ``plan``,
    ``profile``, ``memory_report``, ``explain``, ``compile_report``, ``inputs``/``outputs``) plus the
    validated :class:`~runtime.artifact.Artifact` it was built from (``artifact``: versions, signature, kernels,
    weights)."""

    def __init__(self, fn: Function, artifact: Artifact) -> None:
        super().__init__(fn.program, fn._executor, fn.target)
        self.lowered = fn.lowered
        self.compile_report = fn.compile_report
        self.artifact = artifact

    @property
    def input_signature(self) -> list[TensorSpec]:
        """Name, shape (``None`` for free dims) and dtype of each input, in call order."""
        return list(self.artifact.inputs)

    @property
    def output_signature(self) -> list[TensorSpec]:
        """Name, static shape and dtype of each output."""
        return list(self.artifact.outputs)

    @property
    def path(self) -> Path:
        """The file this function was loaded from."""
        return self.artifact.path

    def __repr__(self) -> str:
        ins = ", ".join(str(s) for s in self.artifact.inputs)
        return (
            f"<symdl.LoadedFunction {str(self.path)!r} target={self.target} inputs=[{ins}] "
            f"outputs={len(self.artifact.outputs)} kernels={len(self.artifact.kernels)}>"
        )


# ----------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------


def _check_exportable(fn: Any) -> None:
    if not isinstance(fn, Function):
        raise ExportError(f"export: expected a compiled symdl.Function, got {type(fn).__name__}")
    if fn.lowered is None or fn.target not in LOAD_TARGETS:
        raise ExportError(
            f"export: needs a compiled function (target='cpu' or 'cuda'), this one has target={fn.target!r}; compile "
            "it with "
            "symdl.compile(inputs, outputs, mode='eval', target='cpu')"
        )
    program = fn.program
    if program.mode != "eval":
        raise ExportError(
            f"export: the function was compiled with mode={program.mode!r}; a model file holds inference only: "
            "compile it with mode='eval' (BatchNorm running statistics, no dropout)"
        )
    if program.updates:
        names = ", ".join(p.label() for p, _ in program.updates)
        raise ExportError(
            f"export: the function updates {len(program.updates)} parameter(s) ({names}); a model file holds frozen "
            "inference: compile it without updates"
        )


def synthetic_inputs(specs: Sequence[TensorSpec], batch: int, seed: int = 0) -> list[np.ndarray]:
    """One array per input: every ``None`` dim set to ``batch``; floats standard normal (seeded), other
    dtypes zeros (valid indices and labels for any model)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in specs:
        shape = tuple(batch if d is None else d for d in s.shape)
        if s.dtype.kind == "f":
            out.append(rng.standard_normal(shape).astype(s.dtype))
        else:
            out.append(np.zeros(shape, s.dtype))
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _validate(fn: Function, tmp: Path, final: Path, batches: Sequence[int]) -> None:
    """Reload ``tmp`` for ``fn``'s target and compare it with ``fn`` on synthetic inputs at each batch size, bit
    for bit."""
    loaded = build(load_artifact(tmp), target=fn.target)
    specs = loaded.input_signature
    for batch in batches:
        arrays = synthetic_inputs(specs, batch, seed=batch)
        try:
            want = fn(*arrays)
        except Exception as e:  # noqa: BLE001 - data-dependent checks may reject synthetic inputs
            raise ExportError(
                f"export: cannot validate {str(final)!r}: the function raised on synthetic inputs at batch size "
                f"{batch} "
                f"({type(e).__name__}: {e}); pass validate=False to export without the check"
            ) from e
        got = loaded(*arrays)
        for k, (a, b) in enumerate(zip(want, got)):
            if not _same(a, b):
                diff = "shapes/dtypes differ"
                if a.shape == b.shape and a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
                    diff = (
                        f"max abs difference {np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0)}"
                    )
                raise ExportError(
                    f"export: the reloaded model's output {k} ({fn.outputs[k].label()}) differs from the original's "
                    f"at batch size {batch} ({diff}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}); nothing was "
                    f"written to {str(final)!r}"
                )


def export(
    fn: Function, path: str | os.PathLike[str], validate: bool = True, batches: Sequence[int] = VALIDATION_BATCHES
) -> ExportReport:
    """Write the compiled inference function ``fn`` to the model file ``path`` (see the module docstring).

    ``fn`` must come from ``symdl.compile(..., mode="eval", target="cpu")`` (or ``target="cuda"``) without updates.
    With ``validate`` (the default) the written file is reloaded for ``fn``'s target and compared with ``fn`` bit
    for bit on ``batches`` (every
    ``None`` dim set to each size) before it replaces ``path``. Raises :class:`ExportError` naming the problem
    (the op and the user's line for an op outside symdl's vocabulary); ``path`` is then left untouched.
    """
    from symdl import __version__

    t0 = time.perf_counter()
    _check_exportable(fn)
    graph, arrays = describe_function(fn.program, fn.lowered.kernels)
    data = artifact_bytes(graph, arrays, __version__)
    final = Path(os.fspath(path))
    checked = tuple(int(b) for b in batches) if validate else ()
    if validate and any(b < 1 for b in checked):
        raise ValueError(f"export: batch sizes must be positive, got {list(batches)}")
    write_artifact(final, data, (lambda tmp: _validate(fn, tmp, final, checked)) if validate else None)
    return ExportReport(
        path=final,
        size_bytes=len(data),
        format_version=FORMAT_VERSION,
        symdl_version=__version__,
        nodes=len(graph["nodes"]),
        kernels=len(graph["kernels"]),
        weight_arrays=len(arrays),
        param_count=int(sum(np.asarray(a).size for a in arrays.values())),
        validated_batches=checked,
        seconds=time.perf_counter() - t0,
    )


# ----------------------------------------------------------------------------------------------------
# Load
# ----------------------------------------------------------------------------------------------------


def build(
    artifact: Artifact, target: str = "cpu", warmup: bool | str = True, check_numerics: bool = False
) -> LoadedFunction:
    """Generate the kernels of a validated :class:`~runtime.artifact.Artifact` and return the callable.

    ``warmup`` and ``check_numerics`` mean what they mean for :func:`symdl.compile`."""
    if target not in LOAD_TARGETS:
        raise GraphError(f"load: unknown or unavailable target {target!r}; available: {', '.join(LOAD_TARGETS)}")
    if warmup not in (True, False, "small"):
        raise ValueError(f"load: warmup must be True, False or 'small', got {warmup!r}")
    # load_artifact checked that fusion reproduces the stored partition, so these are the stored kernels (both
    # targets take their kernels from the same fusion; only the emitter differs)
    if target == "cuda":
        from runtime.cuda import _compile_cuda

        fn = _compile_cuda(artifact.program, check_numerics, warmup, 0.0, artifact.fuse_reductions)
    else:
        from symdl.function import _compile_cpu

        fn = _compile_cpu(artifact.program, check_numerics, warmup, 0.0, artifact.fuse_reductions)
    fn.compile_report.timings.pop("passes", None)
    return LoadedFunction(fn, artifact)


def load(
    path: str | os.PathLike[str], target: str = "cpu", warmup: bool | str = True, check_numerics: bool = False
) -> LoadedFunction:
    """Load a model file written by :meth:`symdl.Function.export` into a callable ``g(*arrays) -> list``.

    Validates the whole file first (:func:`load_artifact`: checksums, format version, schema, op vocabulary,
    types, kernel partition) and raises :class:`ArtifactError` naming the problem; then generates the kernels
    for ``target``: ``"cpu"`` (Numba) or ``"cuda"`` (numba.cuda: a GPU, or Numba's simulator with
    ``NUMBA_ENABLE_CUDASIM=1``; a :class:`GraphError` says what is missing). Outputs equal the cpu-loaded model's
    within float rounding (reductions sum in another order); the batch size stays free on both. Never executes
    code from the file and never unpickles."""
    t0 = time.perf_counter()
    artifact = load_artifact(path)
    t_read = time.perf_counter() - t0
    g = build(artifact, target=target, warmup=warmup, check_numerics=check_numerics)
    g.compile_report.timings = {"read": t_read, **g.compile_report.timings}
    return g
