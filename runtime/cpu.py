"""The CPU runtime: runs a :class:`runtime.plan.Plan` over preallocated buffers.

Semantics are exactly the reference executor's (strict input validation, outputs first, then all updates read
the old values and apply, outputs returned as fresh copies). The difference is *when* work happens:

- **Instantiation** (once per input-shape signature, cached LRU): infer every node's concrete shape, plan
  memory (:mod:`compiler.memory`), allocate the input buffers and planned buffers, make the views and bind
  every kernel's argument tuple.
- **Call** (steady state, zero buffer allocation): validate, copy inputs into their buffers, check that no
  parameter's ``_value`` object changed (re-bind if one did), ``for run, args in bound: run(*args)``, copy the
  outputs out, copy the update values into the parameters' arrays in place.

Parameters are updated *in place* (``np.copyto`` into ``Parameter._value``), so an array obtained from
``p.value`` before a call sees the new values afterwards (the reference executor replaces the array instead).
Not thread-safe: one call at a time per function.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from compiler.memory import DEFAULT_INPLACE_KINDS, MemoryPlan, check_plan, fmt_bytes, plan_memory, poison
from runtime.plan import ROLES, Plan, PlanStep
from runtime.reference import validate_inputs
from symdl.errors import NumericsError, OpRuntimeError, SymdlError
from symdl.graph import Constant, Parameter, Tensor, is_float

MAX_INSTANCES = 8

Signature = tuple[tuple[int, ...], ...]
Bound = list[tuple[Callable[..., object], list[np.ndarray]]]


class Instance:
    """Everything bound for one input-shape signature: buffers, views and each kernel's argument tuple."""

    def __init__(
        self, plan: Plan, signature: Signature, shapes: dict[int, tuple[int, ...]], memory: MemoryPlan, debug: bool
    ) -> None:
        self.plan = plan
        self.signature = signature
        self.shapes = shapes
        self.memory = memory
        self.backings = memory.allocate(fill=float("nan") if debug else None)
        prog = plan.program
        # inputs read only by kernels are bound to the caller's arrays each call (no copy); inputs that views,
        # outputs or updates refer to are copied into a buffer of their own, so those stay fixed
        fixed = {t.id for s in plan.steps if s.is_view for t in s.inputs}
        fixed |= {t.id for t in prog.outputs} | {v.id for _, v in prog.updates}
        self.direct_inputs = [k for k in plan.used_inputs if prog.inputs[k].id not in fixed]
        self.input_buffers: dict[int, np.ndarray] = {
            prog.inputs[k].id: np.zeros(signature[k], prog.inputs[k].dtype) for k in plan.used_inputs
        }
        direct_ids = {prog.inputs[k].id for k in self.direct_inputs}
        self.input_copies = [
            (self.input_buffers[prog.inputs[k].id], k) for k in plan.used_inputs if prog.inputs[k].id not in direct_ids
        ]
        # update values whose storage is (a view of) a parameter are staged, so that swaps read old values
        self.staging: dict[int, np.ndarray] = {
            v.id: np.empty(p.shape, p.dtype) for p, v in prog.updates if isinstance(_storage_root(plan, v), Parameter)
        }
        self.in_place_updates = _in_place_updates(plan, set(self.staging))
        self.bind()

    # ------------------------------------------------------------------------------------------------
    def bind(self) -> None:
        """(Re)compute views and argument tuples from the current buffers and parameter arrays."""
        plan, prog = self.plan, self.plan.program
        arrays: dict[int, np.ndarray] = dict(self.input_buffers)
        for v in self.memory.assignment:
            arrays[v] = self.memory.array(self.backings, v)
        for p, v in self.in_place_updates:  # the update kernel writes the new value over the parameter itself
            arrays[v.id] = self._leaf(p, True)
        update_targets = {p.id for p, _ in prog.updates}
        params: dict[int, Parameter] = {}

        def value(t: Tensor) -> np.ndarray:
            if t.id not in arrays:
                arrays[t.id] = self._leaf(t, t.id in update_targets)
                if isinstance(t, Parameter):
                    params[t.id] = t
            return arrays[t.id]

        bound: Bound = []
        self.step_of_args: dict[int, int] = {}
        self.bound_steps: list[int] = []  # plan step index of each bound entry
        direct = {prog.inputs[k].id: k for k in self.direct_inputs}
        patches: dict[int, list[tuple[list, int]]] = {k: [] for k in self.direct_inputs}
        for k, s in enumerate(plan.steps):
            ins = [value(t) for t in s.inputs]
            if s.is_view:
                arrays[s.outputs[0].id] = self._view(s, ins)
                continue
            args = [*ins, *(arrays[t.id] for t in s.outputs)]
            for pos, t in enumerate(s.inputs):
                if t.id in direct:
                    patches[direct[t.id]].append((args, pos))
            self.step_of_args[id(args)] = k
            self.bound_steps.append(k)
            bound.append((s.compiled.run, args))
        self.patches = list(patches.items())
        self.bound = bound
        self.outputs = [value(t) for t in prog.outputs]
        self._plan_fresh_outputs(bound, arrays)
        self._use_alias_variants()
        for p, _ in prog.updates:
            value(p)
        self.stage_copies = [(self.staging[v.id], value(v)) for _, v in prog.updates if v.id in self.staging]
        in_place = {v.id for _, v in self.in_place_updates}
        self.update_copies = [
            (value(p), self.staging[v.id] if v.id in self.staging else value(v))
            for p, v in prog.updates
            if v.id not in in_place
        ]
        self.param_values = [(p, arrays[pid]) for pid, p in params.items()]
        self.arrays = arrays

    def _plan_fresh_outputs(self, bound: Bound, arrays: dict[int, np.ndarray]) -> None:
        """Program outputs written by a kernel straight into a new array each call (returned as is, no copy).

        An output qualifies when its array is a kernel output that no view, update or earlier output refers to;
        every argument slot holding its buffer is re-pointed at the new array before the kernels run."""
        prog = self.plan.program
        pinned = {t.id for s in self.plan.steps if s.is_view for t in s.inputs}
        pinned |= {v.id for _, v in prog.updates} | {p.id for p, _ in prog.updates}
        produced = {t.id for s in self.plan.steps if not s.is_view for t in s.outputs}
        self.fresh: list[tuple[int, tuple[int, ...], np.dtype, list[tuple[list, int]]]] = []
        first: dict[int, int] = {}  # node id -> position of its first occurrence among the outputs
        for k, t in enumerate(prog.outputs):
            if t.id in first or t.id in pinned or t.id not in produced:
                first.setdefault(t.id, k)
                continue
            first[t.id] = k
            buf = arrays[t.id]
            uses = [(args, pos) for _, args in bound for pos, a in enumerate(args) if a is buf]
            self.fresh.append((k, buf.shape, buf.dtype, uses))
        fresh_k = {k for k, *_ in self.fresh}
        # the other outputs are copied: from the fresh array when the same node was returned fresh earlier
        self.copied_outputs = [
            (k, first[t.id] if first[t.id] in fresh_k else None) for k, t in enumerate(prog.outputs) if k not in fresh_k
        ]

    def _use_alias_variants(self) -> None:
        """Update kernels that write a parameter's new value over the parameter itself run the variant of their
        code that stores through the input's name, when the emitter has one (``CompiledKernel.aliased``):
        generated loops vectorise only when LLVM sees one pointer (Adam's update: 8x faster).

        Only these pairs are used: they are structural, the same for every input shape, so the warm-up compiles the
        one variant every later batch size runs. Buffers the memory planner shares depend on the shapes (a new
        batch size could ask for a new variant, a compile at call time), so those kernels run their plain code.
        Argument slots re-pointed at each call (fresh outputs, caller-bound inputs) are never paired."""
        moving = {(id(args), pos) for *_, uses in self.fresh for args, pos in uses}
        moving |= {(id(args), pos) for _, uses in self.patches for args, pos in uses}
        over_parameter = {v.id for _, v in self.in_place_updates}
        for b, (k, (_, args)) in enumerate(zip(self.bound_steps, self.bound)):
            step = self.plan.steps[k]
            ck = step.compiled
            if ck.aliased is None or not any(t.id in over_parameter for t in step.outputs):
                continue
            nin = len(step.inputs)
            pairs = []
            for j, out in enumerate(args[nin:]):
                if (id(args), nin + j) in moving or step.outputs[j].id not in over_parameter:
                    continue
                for i, a in enumerate(args[:nin]):
                    if (id(args), i) not in moving and _same_memory(a, out):
                        pairs.append((j, i))
                        break
            if pairs:
                self.bound[b] = (ck.aliased(tuple(pairs)), args)

    def new_outputs(self) -> list[np.ndarray | None]:
        """Fresh arrays for the qualifying outputs, bound into the kernels' arguments (see above)."""
        outs: list[np.ndarray | None] = [None] * len(self.outputs)
        for k, shape, dtype, uses in self.fresh:
            a = np.empty(shape, dtype)
            for args, pos in uses:
                args[pos] = a
            outs[k] = a
        return outs

    def feed(self, vals: list[np.ndarray]) -> None:
        """Put this call's input arrays in place: copy into fixed buffers, or bind directly into the kernels'
        argument lists (C-contiguous arrays as they are; others as a C-contiguous copy)."""
        for buf, k in self.input_copies:
            np.copyto(buf, vals[k])
        for k, uses in self.patches:
            a = vals[k]
            if not a.flags.c_contiguous:
                a = np.ascontiguousarray(a)
            for args, pos in uses:
                args[pos] = a

    def stale(self) -> bool:
        """True when some parameter's ``_value`` object is not the one bound (the user assigned ``p.value``).
        Parameters whose newest value is on a device (a cuda step updated them) are brought up to date first."""
        for p, v in self.param_values:
            if p._pull is not None:
                p._pull(p)
            if p._value is not v:
                return True
        return False

    def _leaf(self, t: Tensor, updated: bool) -> np.ndarray:
        if isinstance(t, Parameter):
            v = t.host_value()
            if not v.flags.c_contiguous or (updated and not v.flags.writeable):
                t._value = v = np.array(v, order="C", copy=True)  # same value, the layout kernels expect
            return v
        if isinstance(t, Constant):
            return t.value if t.value.flags.c_contiguous else np.ascontiguousarray(t.value)
        raise SymdlError(f"internal: no array for {t.label()}")  # pragma: no cover - Plan validates slots

    def _view(self, s: PlanStep, ins: list[np.ndarray]) -> np.ndarray:
        out = s.compiled.run(*ins)
        node = s.outputs[0]
        ok = (
            isinstance(out, np.ndarray)
            and out.shape == self.shapes[node.id]
            and out.dtype == node.dtype
            and (out.flags.c_contiguous or (out.flags.f_contiguous and out.ndim == 2))  # F: transposes for BLAS
            and (out.size == 0 or np.may_share_memory(out, ins[0]))
        )
        if not ok:
            got = f"{getattr(out, 'shape', '?')} {getattr(out, 'dtype', type(out).__name__)}"
            raise SymdlError(
                f"internal: view kernel {s.name} returned {got}, not a contiguous view of its input of shape "
                f"{self.shapes[node.id]} {node.dtype}{s.where()}"
            )
        return out

    def apply_updates(self) -> None:
        for dst, src in self.stage_copies:
            np.copyto(dst, src)
        for dst, src in self.update_copies:
            np.copyto(dst, src)


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays are the same elements of the same memory (same start, shape and strides)."""
    if a is b:
        return True
    return (
        a.shape == b.shape
        and a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def _in_place_updates(plan: Plan, staged: set[int]) -> list[tuple[Parameter, Tensor]]:
    """Updates ``p <- v`` whose elementwise kernel may write ``v`` straight into ``p``'s array.

    Safe when ``v`` is computed by an ``"elementwise"`` kernel (each element is read before it is written, so
    reading ``p`` in the same kernel is fine), is not a program output or staged, is read by no later step,
    no later step reads ``p`` (or a view of it), and neither another update nor an output takes ``p``'s old
    value: then nothing can observe the old value after the write.
    The optimiser update of a parameter then costs one pass over memory and no copy."""
    prog = plan.program
    outputs = {t.id for t in prog.outputs}
    producer: dict[int, int] = {}
    for k, s in enumerate(plan.steps):
        for t in s.outputs:
            producer[t.id] = k
    targets: dict[int, int] = {}
    result = []
    for p, v in prog.updates:
        k = producer.get(v.id)
        if k is None or v.id in outputs or v.id in staged or plan.steps[k].kind != "elementwise":
            continue
        if sum(1 for q, _ in prog.updates if q is p) != 1 or targets.get(v.id) is not None:
            continue
        aliases = {p.id}
        for s in plan.steps:  # views of p read p too
            if s.is_view and any(t.id in aliases for t in s.inputs):
                aliases |= {t.id for t in s.outputs}
        later = plan.steps[k + 1 :]
        if any(t.id in aliases or t.id == v.id for s in later for t in s.inputs):
            continue
        if any(v2.id in aliases for q, v2 in prog.updates if q is not p):  # another update copies p's old value
            continue
        if any(t.id in aliases for t in prog.outputs):  # outputs are copied after the kernels ran
            continue
        targets[v.id] = p.id
        result.append((p, v))
    return result


def _storage_root(plan: Plan, t: Tensor) -> Tensor:
    """The value whose storage ``t`` lives in (through view kernels)."""
    while t.id in plan.view_bases:
        t = plan.view_bases[t.id]
    return t


# ----------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------


@dataclass
class MemoryReport:
    """Planned vs unplanned bytes of one instantiation."""

    signature: Signature
    buffers: int
    planned_peak_bytes: int
    unplanned_bytes: int
    live_peak_bytes: int
    inplace: int
    input_bytes: int
    staging_bytes: int

    def __str__(self) -> str:
        saved = 1 - self.planned_peak_bytes / self.unplanned_bytes if self.unplanned_bytes else 0.0
        return (
            f"memory for input shapes {list(self.signature)}: {self.buffers} buffers, planned peak "
            f"{fmt_bytes(self.planned_peak_bytes)} vs unplanned {fmt_bytes(self.unplanned_bytes)} "
            f"({saved:.0%} saved; live lower bound {fmt_bytes(self.live_peak_bytes)}; {self.inplace} in-place); "
            f"input buffers {fmt_bytes(self.input_bytes)}, update staging {fmt_bytes(self.staging_bytes)}"
        )


@dataclass
class KernelTiming:
    name: str
    kind: str
    role: str
    calls: int = 0
    total_s: float = 0.0


@dataclass
class Profile:
    """Per-kernel times over ``calls`` calls, the role split and the runtime overhead per kernel launch."""

    kernels: list[KernelTiming]
    calls: int
    call_s: float  # wall time of all the calls, end to end
    launches_per_call: int
    roles: dict[str, float] = field(default_factory=dict)

    @property
    def kernel_s(self) -> float:
        return sum(k.total_s for k in self.kernels)

    @property
    def overhead_per_launch_s(self) -> float:
        """(call time - kernel time) / launches: validation, copies, dispatch, all included."""
        launches = self.calls * self.launches_per_call
        return (self.call_s - self.kernel_s) / launches if launches else 0.0

    def __str__(self) -> str:
        total = self.call_s or 1e-30
        width = max([len(k.name) for k in self.kernels] + [6])
        lines = [f"{'kernel':<{width}}  {'kind':<11} {'role':<8} {'calls':>6} {'total ms':>10} {'mean us':>9} share"]
        for k in sorted(self.kernels, key=lambda k: -k.total_s):
            mean = k.total_s / k.calls * 1e6 if k.calls else 0.0
            lines.append(
                f"{k.name:<{width}}  {k.kind:<11} {k.role:<8} {k.calls:>6} {k.total_s * 1e3:>10.3f} {mean:>9.1f} "
                f"{k.total_s / total:6.1%}"
            )
        split = ", ".join(f"{r} {t * 1e3:.3f} ms ({t / total:.1%})" for r, t in self.roles.items())
        lines.append(f"{self.calls} calls, {self.call_s * 1e3:.3f} ms in all; kernels: {split}")
        lines.append(
            f"runtime overhead {self.overhead_per_launch_s * 1e6:.2f} us per kernel launch "
            f"({self.launches_per_call} launches per call)"
        )
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# The executor
# ----------------------------------------------------------------------------------------------------


class CpuFunction:
    """``f(*arrays) -> list[np.ndarray]`` running a Plan; see the module docstring.

    - ``check_numerics``: check every kernel's float outputs for NaN/Inf after it runs and name the first
      kernel that produces any (in-place reuse is then off, so the inputs in the message are intact).
    - ``debug``: poison (NaN) every buffer as soon as the planner considers it free, and check the memory plan:
      a liveness bug then shows up as wrong results.
    - ``max_instances``: how many input-shape signatures stay instantiated (LRU).
    """

    def __init__(
        self,
        plan: Plan,
        check_numerics: bool = False,
        debug: bool = False,
        max_instances: int = MAX_INSTANCES,
        inplace_kinds: Iterable[str] = DEFAULT_INPLACE_KINDS,
    ) -> None:
        self.plan = plan
        self.program = plan.program
        self.check_numerics = check_numerics
        self.debug = debug
        self.max_instances = max(1, max_instances)
        self.inplace_kinds = () if check_numerics else tuple(inplace_kinds)
        self._instances: OrderedDict[Signature, Instance] = OrderedDict()
        self.instantiations = 0  # instances created so far (a steady loop keeps this constant)
        self._last: Instance | None = None

    # --- the call ---------------------------------------------------------------------------------
    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        vals = validate_inputs(self.program, arrays)
        inst = self._instance(vals)
        if inst.stale():
            inst.bind()
        inst.feed(vals)
        outs = inst.new_outputs()
        if self.check_numerics or self.debug:
            self._run_checked(inst)
        else:
            bound = inst.bound
            args: tuple = ()
            try:
                for run, args in bound:
                    run(*args)
            except Exception as e:
                self._kernel_error(inst, args, e)
        for k, src in inst.copied_outputs:
            outs[k] = np.array(inst.outputs[k] if src is None else outs[src], copy=True)
        inst.apply_updates()
        return outs

    def warmup(self, batch: int = 2) -> None:
        """Run every kernel once on zero inputs (dims declared None set to ``batch``) so that Numba compiles
        (or loads from its disk cache) everything before the first real call. Parameters keep their values
        (in-place update kernels write into them, so those are saved and restored)."""
        sig = tuple(tuple(batch if d is None else d for d in p.shape) for p in self.program.inputs)
        inst = self._instance_for(sig)
        if inst.stale():
            inst.bind()
        inst.feed([np.zeros(shape, p.dtype) for shape, p in zip(sig, self.program.inputs)])
        inst.new_outputs()
        saved = [(p, p._value.copy()) for p, _ in inst.in_place_updates]
        try:
            for run, args in inst.bound:
                run(*args)
        finally:
            for p, value in saved:
                np.copyto(p._value, value)

    def _instance(self, vals: list[np.ndarray]) -> Instance:
        return self._instance_for(tuple(a.shape for a in vals))

    def _instance_for(self, sig: Signature) -> Instance:
        last = self._last
        if last is not None and last.signature == sig:
            return last
        inst = self._instances.get(sig)
        if inst is None:
            inst = self._instantiate(sig)
            self._instances[sig] = inst
            if len(self._instances) > self.max_instances:
                self._instances.popitem(last=False)
        else:
            self._instances.move_to_end(sig)
        self._last = inst
        return inst

    def _instantiate(self, sig: Signature) -> Instance:
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
        if self.debug:
            check_plan(memory)
        inst = Instance(plan, sig, shapes, memory, self.debug)
        self.instantiations += 1
        plan.last_memory, plan.last_signature = memory, sig
        return inst

    # --- slow paths -------------------------------------------------------------------------------
    def _run_checked(self, inst: Instance) -> None:
        """Kernel by kernel, with the numerics check and/or debug poisoning of freed buffers."""
        steps = self.plan.steps
        bound_at = dict(zip(inst.bound_steps, inst.bound))
        for k, s in enumerate(steps):
            entry = bound_at.get(k)
            if entry is not None:
                run, args = entry
                try:
                    run(*args)
                except Exception as e:
                    self._kernel_error(inst, args, e)
                if self.check_numerics:
                    self._check_finite(s, args)
            if self.debug:
                for b in inst.memory.free_after[k]:
                    poison(inst.backings[b])

    def _check_finite(self, s: PlanStep, args: tuple[np.ndarray, ...]) -> None:
        n_in = len(s.inputs)
        for t, out in zip(s.outputs, args[n_in:]):
            if not is_float(t.dtype) or np.all(np.isfinite(out)):
                continue
            n_nan, n_inf = int(np.isnan(out).sum()), int(np.isinf(out).sum())
            ins = []
            for i, a in zip(s.inputs, args[:n_in]):
                finite = bool(np.all(np.isfinite(a))) if a.dtype.kind == "f" else True
                ins.append(f"{i.label()} ({'finite' if finite else 'NOT finite'})")
            kind = {"backward": "gradient kernel", "update": "update kernel"}.get(s.role, "kernel")
            raise NumericsError(
                f"check_numerics: {kind} {s.name} (ops: {', '.join(s.ops())}) produced {n_nan} NaN and {n_inf} Inf "
                f"values in {t.label()} out of {out.size}; inputs: {', '.join(ins)}{s.where()}"
            )

    def _kernel_error(self, inst: Instance, args: tuple, e: Exception) -> NoReturn:
        """Re-raise ``e`` (raised by the kernel bound to ``args``) naming the kernel's ops and user lines."""
        k = inst.step_of_args.get(id(args))
        if k is None:  # pragma: no cover - the failure was not inside a kernel
            raise e
        s = self.plan.steps[k]
        ops = "+".join(dict.fromkeys(s.ops()))
        if isinstance(e, OpRuntimeError):  # like the reference executor: "op: message\n  created at ..."
            raise OpRuntimeError(f"{ops}: {e}{s.where()}") from None
        e.add_note(f"in kernel {s.name} (ops: {ops}){s.where()}")
        raise e

    # --- introspection ----------------------------------------------------------------------------
    def profile(self, *arrays: Any, repeat: int = 10) -> Profile:
        """Run ``repeat`` calls (updates included, like training steps) timing every kernel launch."""
        timings = [KernelTiming(s.name, s.kind, s.role) for s in self.plan.steps]
        call_s = 0.0
        launches = 0
        clock = time.perf_counter
        for _ in range(repeat):
            t_call = clock()
            vals = validate_inputs(self.program, arrays)
            inst = self._instance(vals)
            if inst.stale():
                inst.bind()
            inst.feed(vals)
            for k, (run, args) in zip(inst.bound_steps, inst.bound):
                t0 = clock()
                run(*args)
                dt = clock() - t0
                timings[k].calls += 1
                timings[k].total_s += dt
            [np.array(a, copy=True) for a in inst.outputs]
            inst.apply_updates()
            call_s += clock() - t_call
            launches = len(inst.bound)
        kernels = [t for t in timings if t.calls]
        roles = {r: sum(t.total_s for t in kernels if t.role == r) for r in ROLES}
        return Profile(kernels, repeat, call_s, launches, roles)

    def memory_report(self) -> MemoryReport:
        """Planned vs unplanned bytes of the most recently used instantiation."""
        inst = self._last
        if inst is None:
            raise RuntimeError("memory_report: the function has not been called yet (buffers are planned per shape)")
        m = inst.memory
        return MemoryReport(
            signature=inst.signature,
            buffers=len(m.buffers),
            planned_peak_bytes=m.planned_peak_bytes,
            unplanned_bytes=m.unplanned_bytes,
            live_peak_bytes=m.live_peak_bytes,
            inplace=len(m.inplace),
            input_bytes=sum(b.nbytes for b in inst.input_buffers.values()),
            staging_bytes=sum(b.nbytes for b in inst.staging.values()),
        )

    def dump(self) -> str:
        return self.plan.dump()

    @property
    def cached_signatures(self) -> list[Signature]:
        return list(self._instances)

    def __repr__(self) -> str:
        return f"<CpuFunction kernels={len(self.plan.steps)} instances={len(self._instances)}>"
