"""Liveness-based buffer planning over a step list, for one *concrete* shape assignment.

The runtime (``runtime/cpu.py``) plans once per input-shape signature and then runs every call over the same
buffers. The planner only sees integer value ids, their concrete shapes and dtypes, and which step reads and
writes which value, so it is independent of kernels and graph nodes:

- **Planned values** are the outputs of non-view steps. Placeholders, parameters and constants are not planned
  (the runtime owns them), and view outputs share their base's storage.
- **Liveness**: a value is live from the step that writes it to the last step that reads it. A view keeps its
  storage *root* (the planned value it aliases, through chains of views) alive until the view's last use.
  Values in ``keep_alive`` (program outputs, update values) live to the end.
- **Reuse**: outputs take a buffer freed at an earlier step (same dtype; best fit by capacity, else the largest
  free one grown to fit, else a new one). Buffers are flat 1-D arrays; a value is ``backing[:n].reshape(shape)``
  (C-contiguous, offset 0).
- **In place**: for kernels whose kind is in ``inplace_kinds`` an output may take the buffer of an input whose
  root dies at this very step and that has exactly the output's shape and dtype (each index is read before it
  is written). Everything is deterministic: ties break by step order, argument order and buffer index.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_INPLACE_KINDS = ("elementwise",)
"""Kinds whose outputs may overwrite a dying input. ``"epilogue"`` is deliberately not in the default: the CPU
emitter runs the anchor (matmul/conv) into the output buffer *before* the elementwise chain reads its other
operands, so aliasing the output with any input of an epilogue kernel would be read-after-overwrite."""


@dataclass(frozen=True)
class StepUse:
    """What one step reads and writes (value ids, in argument order)."""

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass
class BufferSpec:
    """One flat backing array: ``capacity`` elements of ``dtype``."""

    dtype: np.dtype
    capacity: int

    @property
    def nbytes(self) -> int:
        return self.capacity * self.dtype.itemsize


@dataclass
class MemoryPlan:
    """The result of :func:`plan_memory` (see the module docstring)."""

    buffers: list[BufferSpec]
    assignment: dict[int, int]  # planned value -> buffer index
    shapes: dict[int, tuple[int, ...]]  # planned value -> concrete shape
    first_use: dict[int, int]  # planned value -> step that writes it
    last_use: dict[int, int]  # planned value -> last step that needs its storage (n_steps: the end)
    inplace: list[tuple[int, int, int]]  # (step, output value, input value) whose buffers were shared
    free_after: list[list[int]]  # per step: buffers that hold no live value after it (debug poisoning)
    unplanned_bytes: int  # every planned value in its own buffer
    live_peak_bytes: int  # max over steps of the bytes of live planned values (a lower bound)
    roots: dict[int, int] = field(default_factory=dict)  # view value -> the planned value it aliases

    @property
    def planned_peak_bytes(self) -> int:
        """Bytes actually allocated: buffers persist for the whole call, so the peak is their sum."""
        return sum(b.nbytes for b in self.buffers)

    def allocate(self, fill: float | None = None) -> list[np.ndarray]:
        """Allocate the backing arrays (``fill``: poison value for debugging, else uninitialised)."""
        out = []
        for b in self.buffers:
            arr = np.empty(b.capacity, b.dtype)
            if fill is not None:
                poison(arr, fill)
            out.append(arr)
        return out

    def array(self, backings: Sequence[np.ndarray], value: int) -> np.ndarray:
        """The C-contiguous array of planned ``value`` over ``backings``."""
        shape = self.shapes[value]
        return backings[self.assignment[value]][: math.prod(shape)].reshape(shape)

    def __str__(self) -> str:
        return (
            f"{len(self.buffers)} buffers, planned peak {fmt_bytes(self.planned_peak_bytes)} "
            f"(unplanned {fmt_bytes(self.unplanned_bytes)}, live peak {fmt_bytes(self.live_peak_bytes)}, "
            f"{len(self.inplace)} in-place)"
        )


def poison(arr: np.ndarray, value: float = float("nan")) -> None:
    """Fill ``arr`` with a value that makes any read of it visible (NaN for floats, extremes otherwise)."""
    if arr.dtype.kind == "f":
        arr.fill(value)
    elif arr.dtype.kind in "iu":
        arr.fill(np.iinfo(arr.dtype).max)
    elif arr.dtype.kind == "b":
        arr.fill(True)


def fmt_bytes(n: int) -> str:
    """``1536 -> '1.5 KiB'``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError  # pragma: no cover


def _roots(views: Mapping[int, int], planned: set[int]) -> dict[int, int]:
    """Map each view value to the planned value it aliases (views of leaves alias nothing planned)."""
    roots: dict[int, int] = {}
    for v in views:
        r = v
        seen = set()
        while r in views:
            if r in seen:
                raise ValueError(f"view cycle through value {r}")
            seen.add(r)
            r = views[r]
        if r in planned:
            roots[v] = r
    return roots


def plan_memory(
    steps: Sequence[StepUse],
    shapes: Mapping[int, tuple[int, ...]],
    dtypes: Mapping[int, np.dtype],
    views: Mapping[int, int] | None = None,
    keep_alive: Iterable[int] = (),
    inplace_kinds: Iterable[str] = DEFAULT_INPLACE_KINDS,
) -> MemoryPlan:
    """Plan buffers for the outputs of the non-view steps.

    ``views`` maps each view step's output to its base value (the value it aliases); ``keep_alive`` lists the
    values that must survive the last step. ``shapes``/``dtypes`` must cover every planned value and every
    input of an in-place-capable step.
    """
    views = dict(views or {})
    inplace_kinds = frozenset(inplace_kinds)
    planned = {o for s in steps if s.kind != "view" for o in s.outputs}
    roots = _roots(views, planned)
    root_of = lambda v: roots.get(v, v)  # noqa: E731 - tiny local helper
    n = len(steps)

    first_use: dict[int, int] = {}
    last_use: dict[int, int] = {}
    for k, s in enumerate(steps):
        if s.kind != "view":
            for o in s.outputs:
                if o in first_use:
                    raise ValueError(f"value {o} is written by steps {first_use[o]} and {k}")
                first_use[o] = last_use[o] = k
        for i in s.inputs:
            r = root_of(i)
            if r in planned:
                last_use[r] = max(last_use[r], k)
        for o in s.outputs:  # a view's own last use is accounted for at its readers (via root_of)
            r = root_of(o)
            if r in planned and s.kind == "view":
                last_use[r] = max(last_use[r], k)
    for v in keep_alive:
        r = root_of(v)
        if r in planned:
            last_use[r] = n

    nelems = {v: math.prod(shapes[v]) for v in planned}
    buffers: list[BufferSpec] = []
    assignment: dict[int, int] = {}
    free: list[int] = []  # buffer indices holding no live value
    inplace: list[tuple[int, int, int]] = []
    free_after: list[list[int]] = []
    live_bytes = live_peak = 0
    for k, s in enumerate(steps):
        taken: dict[int, int] = {}  # root dying here -> output that took its buffer
        if s.kind != "view":
            for o in s.outputs:
                donor = _inplace_donor(s, k, o, shapes, dtypes, root_of, planned, last_use, taken, inplace_kinds)
                if donor is not None:
                    taken[root_of(donor)] = o
                    assignment[o] = assignment[root_of(donor)]
                    inplace.append((k, o, donor))
                else:
                    assignment[o] = _take(free, buffers, np.dtype(dtypes[o]), nelems[o])
                live_bytes += nelems[o] * np.dtype(dtypes[o]).itemsize
        live_peak = max(live_peak, live_bytes)
        released = []
        for v in _dying(s, k, root_of, planned, last_use):
            live_bytes -= nelems[v] * np.dtype(dtypes[v]).itemsize
            if v not in taken:
                released.append(assignment[v])
        free.extend(released)
        free_after.append(sorted(released))

    unplanned = sum(nelems[v] * np.dtype(dtypes[v]).itemsize for v in planned)
    return MemoryPlan(
        buffers=buffers,
        assignment=assignment,
        shapes={v: tuple(shapes[v]) for v in planned},
        first_use=first_use,
        last_use=last_use,
        inplace=inplace,
        free_after=free_after,
        unplanned_bytes=unplanned,
        live_peak_bytes=live_peak,
        roots=roots,
    )


def _dying(s: StepUse, k: int, root_of, planned: set[int], last_use: dict[int, int]) -> list[int]:  # noqa: ANN001
    """Planned values (roots) whose last use is step ``k``, in argument order, without duplicates."""
    out: list[int] = []
    for v in (*s.inputs, *s.outputs):
        r = root_of(v)
        if r in planned and last_use[r] == k and r not in out:
            out.append(r)
    return out


def _inplace_donor(
    s: StepUse,
    k: int,
    out: int,
    shapes: Mapping[int, tuple[int, ...]],
    dtypes: Mapping[int, np.dtype],
    root_of,  # noqa: ANN001
    planned: set[int],
    last_use: dict[int, int],
    taken: dict[int, int],
    inplace_kinds: frozenset[str],
) -> int | None:
    """The first input of step ``k`` whose buffer output ``out`` may take in place, if any."""
    if s.kind not in inplace_kinds:
        return None
    for i in s.inputs:
        r = root_of(i)
        if (
            r in planned
            and r not in taken
            and last_use[r] == k
            and tuple(shapes[i]) == tuple(shapes[out])
            and np.dtype(dtypes[i]) == np.dtype(dtypes[out])
            and math.prod(shapes[r]) == math.prod(shapes[i])  # the view covers its whole root
        ):
            return i
    return None


def _take(free: list[int], buffers: list[BufferSpec], dtype: np.dtype, n: int) -> int:
    """A free buffer of ``dtype`` for ``n`` elements: best fit, else the largest grown, else a new one."""
    same = [b for b in free if buffers[b].dtype == dtype]
    fits = [b for b in same if buffers[b].capacity >= n]
    if fits:
        best = min(fits, key=lambda b: (buffers[b].capacity, b))
    elif same:
        best = max(same, key=lambda b: (buffers[b].capacity, -b))
        buffers[best].capacity = n
    else:
        buffers.append(BufferSpec(dtype, n))
        return len(buffers) - 1
    free.remove(best)
    return best


def check_plan(mp: MemoryPlan) -> None:
    """Assert that no two planned values that are live at the same time share a buffer (except an in-place
    output and its donor at the donor's last step). Used by tests and the runtime's debug mode."""
    allowed = {(o, r) for _, o, i in mp.inplace for r in [mp.roots.get(i, i)]}
    by_buffer: dict[int, list[int]] = {}
    for v, b in mp.assignment.items():
        by_buffer.setdefault(b, []).append(v)
    for vals in by_buffer.values():
        vals.sort(key=lambda v: mp.first_use[v])
        for a, b in zip(vals, vals[1:]):
            overlap = mp.first_use[b] < mp.last_use[a] or (mp.first_use[b] == mp.last_use[a] and (b, a) not in allowed)
            if overlap:
                raise AssertionError(
                    f"values {a} (steps {mp.first_use[a]}..{mp.last_use[a]}) and {b} "
                    f"(steps {mp.first_use[b]}..{mp.last_use[b]}) share buffer {mp.assignment[a]}"
                )
        for v in vals:
            assert mp.buffers[mp.assignment[v]].capacity >= math.prod(mp.shapes[v])
