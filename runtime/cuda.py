"""The cuda runtime: runs a :class:`runtime.plan.Plan` of cuda kernels over device buffers.

Semantics are the reference executor's (strict input validation, outputs computed first, then every update reads
the old values and applies; outputs are fresh host arrays). Where the data lives:

- **Parameters live on the device** across calls and across compiled functions: one flat device array per
  :class:`~symdl.graph.Parameter` (a process-wide store, :func:`device_parameter`), uploaded on first use and
  again only when ``p._value`` is a different array object than the one last synced (``p.value = ...``, which
  every symdl API uses; editing the array in place is not seen). Updates are written on the device (update
  values are staged first when they live in a parameter, so swaps read old values) and **downloaded on demand**:
  an updated parameter gets ``p._pull``, so the next read of ``p.value`` (or a CPU-compiled function binding it)
  copies the device value into the parameter's existing host array (in place, like the CPU target); a training
  loop on the device moves no parameter bytes to the host.
- **Inputs** are uploaded each call into per-signature device buffers; **outputs** are downloaded each call.
- **Buffers**: per input-shape signature (LRU, as the CPU runtime) the plan's values are placed by
  :mod:`compiler.memory` (liveness-based reuse, in-place elementwise outputs): one device allocation per planned
  buffer. :meth:`CudaFunction.memory_report` gives the peak device bytes (planned buffers, input buffers,
  staging, parameters, constants and kernel scratch).

Not thread-safe: one call at a time per function.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from compiler.codegen.cuda.device import CudaCompiledKernel, DeviceValue, device_empty, download, upload
from compiler.memory import DEFAULT_INPLACE_KINDS, MemoryPlan, fmt_bytes, plan_memory
from runtime.cpu import MAX_INSTANCES, KernelTiming, Profile
from runtime.plan import ROLES, Plan, PlanStep, build_plan
from runtime.reference import validate_inputs
from symdl.errors import NumericsError, OpRuntimeError, SymdlError
from symdl.graph import Constant, Parameter, Tensor, is_float

Signature = tuple[tuple[int, ...], ...]

# ----------------------------------------------------------------------------------------------------
# Device-resident parameters (shared by every cuda function of the process)
# ----------------------------------------------------------------------------------------------------


class _ParamEntry:
    __slots__ = ("device", "host")

    def __init__(self, device: Any, host: np.ndarray) -> None:
        self.device = device
        self.host = host


_PARAMS: dict[int, _ParamEntry] = {}


def device_parameter(p: Parameter) -> Any:
    """The flat device array holding ``p``'s value, uploaded now if ``p._value`` changed since the last sync."""
    entry = _PARAMS.get(p.id)
    if entry is None:
        entry = _PARAMS[p.id] = _ParamEntry(upload(p._value), p._value)
        weakref.finalize(p, _PARAMS.pop, p.id, None)
    elif entry.host is not p._value:
        upload(p._value, entry.device)
        entry.host = p._value
    return entry.device


def _pull_parameter(p: Parameter) -> None:
    """``Parameter._pull`` of a parameter whose newest value is on the device: copy it to the host, once."""
    p._pull = None
    if p.id in _PARAMS:
        _download_parameter(p)


def _download_parameter(p: Parameter) -> None:
    """Copy ``p``'s device value into its host array (in place when the array allows it)."""
    entry = _PARAMS[p.id]
    host = p._value
    n = host.size
    if n == 0:
        return
    data = entry.device if entry.device.shape[0] == n else entry.device[:n]
    if host.flags.c_contiguous and host.flags.writeable:
        data.copy_to_host(host.reshape(-1))
    else:
        p._value = data.copy_to_host().reshape(p.shape)
        entry.host = p._value


def synchronize() -> None:
    """Wait for every launched kernel (no-op under the simulator, which runs launches synchronously)."""
    from numba import cuda

    cuda.synchronize()


# ----------------------------------------------------------------------------------------------------
# One input-shape signature
# ----------------------------------------------------------------------------------------------------


class CudaInstance:
    """Device buffers, views and bound launches for one input-shape signature."""

    def __init__(
        self, fn: CudaFunction, signature: Signature, shapes: dict[int, tuple[int, ...]], memory: MemoryPlan
    ) -> None:
        plan, prog = fn.plan, fn.program
        self.signature = signature
        self.shapes = shapes
        self.memory = memory
        self.backings = [device_empty(b.capacity, b.dtype) for b in memory.buffers]
        values: dict[int, DeviceValue] = {}
        for v, b in memory.assignment.items():
            values[v] = DeviceValue(self.backings[b], shapes[v], plan.dtypes[v])
        self.inputs: list[tuple[int, DeviceValue]] = []
        for k in plan.used_inputs:
            ph = prog.inputs[k]
            dv = DeviceValue(device_empty(int(np.prod(signature[k])), ph.dtype), signature[k], ph.dtype)
            values[ph.id] = dv
            self.inputs.append((k, dv))
        self.params: dict[int, Parameter] = {}

        def value(t: Tensor) -> DeviceValue:
            if t.id not in values:
                if isinstance(t, Parameter):
                    values[t.id] = DeviceValue(device_parameter(t), t.shape, t.dtype)
                    self.params[t.id] = t
                elif isinstance(t, Constant):
                    values[t.id] = DeviceValue(fn.constant(t), t.shape, t.dtype)
                else:  # pragma: no cover - Plan validates the slots
                    raise SymdlError(f"internal: no device value for {t.label()}")
            return values[t.id]

        self.bound: list[tuple[Callable[..., object], list[DeviceValue], int]] = []
        for k, s in enumerate(plan.steps):
            ins = [value(t) for t in s.inputs]
            if s.is_view:
                out = s.compiled.run(*ins, shape=shapes[s.outputs[0].id])
                values[s.outputs[0].id] = out
                continue
            args = [*ins, *(values[t.id] for t in s.outputs)]
            self.bound.append((s.compiled.run, args, k))
        self.outputs = [value(t) for t in prog.outputs]
        # update values stored in (a view of) a parameter are staged first, so that swaps read old values
        self.staging: dict[int, DeviceValue] = {}
        for p, v in prog.updates:
            dv = value(v)
            value(p)
            if isinstance(_storage_root(plan, v), Parameter) and v.id not in self.staging:
                self.staging[v.id] = DeviceValue(device_empty(dv.size, dv.dtype), dv.shape, dv.dtype)
        self.stage_copies = [(self.staging[vid], values[vid]) for vid in self.staging]
        self.update_copies = [
            (values[p.id], self.staging[v.id] if v.id in self.staging else values[v.id]) for p, v in prog.updates
        ]
        self.updated = list({p.id: p for p, _ in prog.updates}.values())
        self.values = values

    def feed(self, vals: list[np.ndarray]) -> None:
        """Upload this call's input arrays into their device buffers."""
        for k, dv in self.inputs:
            upload(vals[k], dv.data)
            dv.host = vals[k]

    def sync_parameters(self) -> None:
        """Upload parameters whose host array object changed since the last sync."""
        for p in self.params.values():
            device_parameter(p)

    def apply_updates(self) -> None:
        """Write the update values into the parameters' device arrays (staged ones first)."""
        from compiler.codegen.cuda.library import strided_copy

        for dst, src in self.stage_copies:
            strided_copy(src, dst)
        for dst, src in self.update_copies:
            strided_copy(src, dst)

    def device_bytes(self) -> dict[str, int]:
        """Bytes of this instance's device allocations, by kind."""
        return {
            "planned": self.memory.planned_peak_bytes,
            "inputs": sum(dv.nbytes for _, dv in self.inputs),
            "staging": sum(dv.nbytes for dv in self.staging.values()),
        }


def _storage_root(plan: Plan, t: Tensor) -> Tensor:
    while t.id in plan.view_bases:
        t = plan.view_bases[t.id]
    return t


# ----------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------


@dataclass
class CudaMemoryReport:
    """Device bytes of one instantiation: planned buffers (vs one buffer per value) and everything else."""

    signature: Signature
    buffers: int
    planned_peak_bytes: int
    unplanned_bytes: int
    live_peak_bytes: int
    inplace: int
    input_bytes: int
    staging_bytes: int
    parameter_bytes: int
    constant_bytes: int
    scratch_bytes: int

    @property
    def peak_device_bytes(self) -> int:
        """Every device byte this function holds for this signature (buffers persist for the whole call)."""
        return (
            self.planned_peak_bytes
            + self.input_bytes
            + self.staging_bytes
            + self.parameter_bytes
            + self.constant_bytes
            + self.scratch_bytes
        )

    def __str__(self) -> str:
        saved = 1 - self.planned_peak_bytes / self.unplanned_bytes if self.unplanned_bytes else 0.0
        return (
            f"device memory for input shapes {list(self.signature)}: {self.buffers} buffers, planned peak "
            f"{fmt_bytes(self.planned_peak_bytes)} vs unplanned {fmt_bytes(self.unplanned_bytes)} ({saved:.0%} saved; "
            f"{self.inplace} in-place); inputs {fmt_bytes(self.input_bytes)}, update staging "
            f"{fmt_bytes(self.staging_bytes)}, parameters {fmt_bytes(self.parameter_bytes)}, constants "
            f"{fmt_bytes(self.constant_bytes)}, kernel scratch {fmt_bytes(self.scratch_bytes)}; peak device "
            f"{fmt_bytes(self.peak_device_bytes)}"
        )


# ----------------------------------------------------------------------------------------------------
# The executor
# ----------------------------------------------------------------------------------------------------


class CudaFunction:
    """``f(*arrays) -> list[np.ndarray]`` running a Plan of cuda kernels; see the module docstring.

    - ``check_numerics``: download every kernel's float outputs after it runs and name the first kernel that
      produces NaN/Inf (slow; in-place buffer reuse is then off).
    - ``max_instances``: how many input-shape signatures stay instantiated (LRU).
    - ``validator``: a :class:`runtime.cuda_validate.KernelValidator` (``compile(..., validate=True)``): every call
      then runs kernel by kernel, each compared with the CPU kernel of the same fused group; the last call's
      :class:`~runtime.cuda_validate.ValidationReport` is ``validation``.
    """

    def __init__(
        self, plan: Plan, check_numerics: bool = False, max_instances: int = MAX_INSTANCES, validator: Any = None
    ) -> None:
        self.plan = plan
        self.validator = validator
        self.validation: Any = None  # the last validated call's report
        self.program = plan.program
        self.check_numerics = check_numerics
        self.max_instances = max(1, max_instances)
        self.inplace_kinds = () if check_numerics else DEFAULT_INPLACE_KINDS
        self._instances: OrderedDict[Signature, CudaInstance] = OrderedDict()
        self._constants: dict[int, Any] = {}
        self.instantiations = 0
        self._last: CudaInstance | None = None

    # --- the call ---------------------------------------------------------------------------------
    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        from compiler.codegen.cuda.library import materialize

        vals = validate_inputs(self.program, arrays)
        inst = self._instance_for(tuple(a.shape for a in vals))
        inst.sync_parameters()
        inst.feed(vals)
        if self.validator is not None:
            self.validation = self.validator.run(self, inst)
        else:
            self._run(inst)
        outs = [download(materialize(dv)) for dv in inst.outputs]
        inst.apply_updates()
        for p in inst.updated:  # the host copy is brought up to date when something reads it (p.value, a cpu call)
            p._pull = _pull_parameter
        return outs

    def _run(self, inst: CudaInstance) -> None:
        for run, args, k in inst.bound:
            try:
                run(*args)
            except Exception as e:
                self._kernel_error(k, e)
            if self.check_numerics:
                self._check_finite(self.plan.steps[k], args)

    def warmup(self, batch: int = 2) -> None:
        """Launch every kernel (every variant of kernels that have several) once on zero inputs, dims declared
        None set to ``batch``, so that numba.cuda compiles everything inside ``compile``. Parameters are not
        updated."""
        sig = tuple(tuple(batch if d is None else d for d in p.shape) for p in self.program.inputs)
        inst = self._instance_for(sig)
        inst.sync_parameters()
        inst.feed([np.zeros(shape, p.dtype) for shape, p in zip(sig, self.program.inputs)])
        for run, args, k in inst.bound:
            ck = self.plan.steps[k].compiled
            warm = ck.warm if isinstance(ck, CudaCompiledKernel) and ck.warm is not None else run
            try:
                warm(*args)
            except Exception as e:
                self._kernel_error(k, e)
        synchronize()

    def constant(self, c: Constant) -> Any:
        """The device array of a constant (uploaded once per function)."""
        dev = self._constants.get(c.id)
        if dev is None:
            dev = self._constants[c.id] = upload(np.asarray(c.value))
        return dev

    def _instance_for(self, sig: Signature) -> CudaInstance:
        last = self._last
        if last is not None and last.signature == sig:
            return last
        inst = self._instances.get(sig)
        if inst is None:
            plan = self.plan
            shapes = plan.concrete_shapes(sig)
            memory = plan_memory(
                plan.step_uses,
                shapes,
                plan.dtypes,
                views={o: b.id for o, b in plan.view_bases.items()},
                keep_alive=plan.keep_alive,
                inplace_kinds=self.inplace_kinds,
            )
            inst = CudaInstance(self, sig, shapes, memory)
            self.instantiations += 1
            plan.last_memory, plan.last_signature = memory, sig
            self._instances[sig] = inst
            if len(self._instances) > self.max_instances:
                self._instances.popitem(last=False)
        else:
            self._instances.move_to_end(sig)
        self._last = inst
        return inst

    # --- errors and checks ------------------------------------------------------------------------
    def _kernel_error(self, k: int, e: Exception) -> NoReturn:
        s = self.plan.steps[k]
        ops = "+".join(dict.fromkeys(s.ops()))
        if isinstance(e, OpRuntimeError):
            raise OpRuntimeError(f"{ops}: {e}{s.where()}") from None
        e.add_note(f"in cuda kernel {s.name} (ops: {ops}){s.where()}")
        raise e

    def _check_finite(self, s: PlanStep, args: list[DeviceValue]) -> None:
        from compiler.codegen.cuda.library import materialize

        n_in = len(s.inputs)
        for t, out in zip(s.outputs, args[n_in:]):
            if not is_float(t.dtype):
                continue
            host = download(materialize(out))
            if np.all(np.isfinite(host)):
                continue
            n_nan, n_inf = int(np.isnan(host).sum()), int(np.isinf(host).sum())
            kind = {"backward": "gradient kernel", "update": "update kernel"}.get(s.role, "kernel")
            raise NumericsError(
                f"check_numerics: {kind} {s.name} (ops: {', '.join(s.ops())}) produced {n_nan} NaN and {n_inf} Inf "
                f"values in {t.label()} out of {host.size}{s.where()}"
            )

    # --- introspection ----------------------------------------------------------------------------
    def profile(self, *arrays: Any, repeat: int = 10) -> Profile:
        """Run ``repeat`` calls (updates included), synchronising after every launch to time it. Returns a
        :class:`runtime.cuda_profile.CudaProfile`: ``launches`` counts the device launches of one call (a step)."""
        from compiler.codegen.cuda.device import LAUNCHES
        from compiler.codegen.cuda.library import materialize
        from runtime.cuda_profile import CudaProfile

        timings = [KernelTiming(s.name, s.kind, s.role) for s in self.plan.steps]
        per_kernel = [0] * len(self.plan.steps)
        call_s = 0.0
        launches = 0
        clock = time.perf_counter
        by_function: dict[str, int] = {}
        for _ in range(repeat):
            t_call = clock()
            before, funcs_before = LAUNCHES.snapshot()
            vals = validate_inputs(self.program, arrays)
            inst = self._instance_for(tuple(a.shape for a in vals))
            inst.sync_parameters()
            inst.feed(vals)
            for run, args, k in inst.bound:
                t0 = clock()
                n0 = LAUNCHES.total
                run(*args)
                synchronize()
                per_kernel[k] = LAUNCHES.total - n0
                timings[k].calls += 1
                timings[k].total_s += clock() - t0
            [download(materialize(dv)) for dv in inst.outputs]
            inst.apply_updates()
            for p in inst.updated:
                p._pull = _pull_parameter
            call_s += clock() - t_call
            launches = LAUNCHES.total - before
            by_function = {k: v - funcs_before.get(k, 0) for k, v in LAUNCHES.by_kernel.items()}
        kernels = [t for t in timings if t.calls]
        roles = {r: sum(t.total_s for t in kernels if t.role == r) for r in ROLES}
        steps = self.plan.steps
        return CudaProfile(
            kernels,
            repeat,
            call_s,
            launches,
            roles,
            plan_kernels=sum(not s.is_view for s in steps),
            kernel_launches={steps[k].name: per_kernel[k] for k in range(len(steps)) if not steps[k].is_view},
            other_launches=launches - sum(per_kernel),
            by_function={k: v for k, v in by_function.items() if v},
        )

    def memory_report(self) -> CudaMemoryReport:
        """Device bytes of the most recently used instantiation (see :class:`CudaMemoryReport`)."""
        inst = self._last
        if inst is None:
            raise RuntimeError("memory_report: the function has not been called yet (buffers are planned per shape)")
        m = inst.memory
        by = inst.device_bytes()
        scratch = sum(s.compiled.scratch_bytes() for s in self.plan.steps if isinstance(s.compiled, CudaCompiledKernel))
        return CudaMemoryReport(
            signature=inst.signature,
            buffers=len(m.buffers),
            planned_peak_bytes=m.planned_peak_bytes,
            unplanned_bytes=m.unplanned_bytes,
            live_peak_bytes=m.live_peak_bytes,
            inplace=len(m.inplace),
            input_bytes=by["inputs"],
            staging_bytes=by["staging"],
            parameter_bytes=sum(p._value.nbytes for p in inst.params.values()),
            constant_bytes=sum(int(a.shape[0]) * np.dtype(a.dtype).itemsize for a in self._constants.values()),
            scratch_bytes=scratch,
        )

    def dump(self) -> str:
        """The plan's text form."""
        return self.plan.dump()

    @property
    def cached_signatures(self) -> list[Signature]:
        """Input-shape signatures currently instantiated (LRU order)."""
        return list(self._instances)

    def __repr__(self) -> str:
        return f"<CudaFunction kernels={len(self.plan.steps)} instances={len(self._instances)}>"


# ----------------------------------------------------------------------------------------------------
# Compiling
# ----------------------------------------------------------------------------------------------------


def lower_cuda(program: Any, fuse_reductions: bool = True, horizontal: bool = True) -> Any:
    """Fuse ``program`` (the CPU target's fusion decisions, unchanged), refuse what this target cannot run, merge
    independent elementwise kernels into one launch each (``horizontal``: :mod:`compiler.horizontal`, this target
    only; off, the kernels pair one to one with the CPU target's) and generate a cuda kernel per fused kernel.
    Returns a :class:`compiler.lower.Lowered`."""
    from compiler.codegen.cuda import build_kernel, check_supported
    from compiler.fusion import fuse
    from compiler.horizontal import fuse_horizontal
    from compiler.lower import Lowered

    t0 = time.perf_counter()
    log: list[str] = []
    kernels = fuse(program, log, fuse_reductions)
    check_supported(kernels)
    if horizontal:
        kernels = fuse_horizontal(kernels, program, log)
    t1 = time.perf_counter()
    compiled = [build_kernel(k) for k in kernels]
    t2 = time.perf_counter()
    return Lowered(program, kernels, compiled, log, {"fusion": t1 - t0, "codegen": t2 - t1})


def _compile_cuda(
    program: Any,
    check_numerics: bool,
    warmup: bool | str,
    t_passes: float,
    fuse_reductions: bool = True,
    validate: bool = False,
) -> Any:
    """``symdl.compile(..., target="cuda")`` after the graph passes: lower, plan, warm up. ``validate``: pair every
    kernel with the CPU kernel of the same fused group (:mod:`runtime.cuda_validate`)."""
    from compiler.codegen.cuda.device import cuda_module
    from symdl.function import Function

    cuda_module()  # a GraphError saying what is missing (package, device or simulator)
    lowered = lower_cuda(program, fuse_reductions)  # validate pairs horizontal kernels' parts with cpu kernels too
    validator = None
    if validate:
        from runtime.cuda_validate import KernelValidator

        validator = KernelValidator(program, lowered, fuse_reductions)
    executor = CudaFunction(build_plan(program, lowered.compiled), check_numerics=check_numerics, validator=validator)
    fn = Function(program, executor, "cuda")
    fn.lowered = lowered
    report = fn.compile_report
    report.kernels = len(lowered.compiled)
    report.timings = {"passes": t_passes, **lowered.timings}
    if warmup:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=Warning)  # the simulator warns about tiny grids
            try:
                executor.warmup()
            except Exception as e:  # noqa: BLE001 - data-dependent ops may reject zeros; the first call compiles
                report.notes.append(f"warm-up stopped early ({type(e).__name__}: {e}); the rest compiles on first call")
        report.timings["cuda_jit"] = time.perf_counter() - t0
    return fn


__all__ = ["CudaFunction", "CudaInstance", "CudaMemoryReport", "device_parameter", "lower_cuda"]
