"""numba.cuda access, launch configuration and device values for the cuda target.

``numba.cuda`` is imported lazily (:func:`cuda_module`): symdl imports and runs without it. Under Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``, set before ``numba`` is imported) every thread is a Python thread, so the
launch configuration (:func:`launch_config`) uses tiny blocks there; on a real GPU it uses ordinary sizes.

A :class:`DeviceValue` is what cuda kernels receive and produce: a flat 1-d device array holding the elements, the
concrete shape, element strides and an element offset. Kernels index the flat array themselves, so the runtime never
needs multi-dimensional device arrays (nor 0-d ones), reshapes are free and a 2-d transpose read by a matmul is a
view with swapped strides.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from compiler.kernels import CompiledKernel
from symdl.errors import GraphError

INSTALL_HINT = "pip install 'symdl[cuda]'"


def cuda_problem() -> str | None:
    """Why the cuda target cannot run here (None when it can: a CUDA device or the simulator is available)."""
    try:
        cuda = importlib.import_module("numba.cuda")
    except ImportError as e:
        return f"numba.cuda is not importable ({e}); install the numba-cuda package: {INSTALL_HINT}"
    if is_simulator(cuda):
        return None
    try:
        ok = bool(cuda.is_available())
    except Exception as e:  # noqa: BLE001 - a broken driver install raises all sorts of errors
        return f"no CUDA device found ({type(e).__name__}: {e}); set NUMBA_ENABLE_CUDASIM=1 to use the simulator"
    if not ok:
        return (
            "no CUDA device found (numba.cuda.is_available() is False: no GPU or no CUDA driver); set "
            "NUMBA_ENABLE_CUDASIM=1 before importing numba to run on Numba's CUDA simulator"
        )
    return None


def cuda_module() -> ModuleType:
    """``numba.cuda``; a :class:`GraphError` saying what is missing when the cuda target cannot run."""
    problem = cuda_problem()
    if problem is not None:
        raise GraphError(f"compile(target='cuda'): {problem}")
    return importlib.import_module("numba.cuda")


def is_simulator(cuda: ModuleType | None = None) -> bool:
    """True when ``numba.cuda`` is Numba's CUDA simulator."""
    if cuda is None:
        cuda = importlib.import_module("numba.cuda")
    return bool(getattr(cuda.config, "ENABLE_CUDASIM", 0))


def kernel_decorator() -> str:
    """The decorator line of every generated and library cuda kernel: ``@cuda.jit(cache=True)`` where
    ``numba.cuda.jit`` takes ``cache`` (on a GPU numba-cuda then keeps the compiled kernel in its on-disk cache
    next to the content-addressed module file of :mod:`compiler.codegen.cache`, so a second process loads it
    instead of compiling again; Numba's simulator takes the argument for API compatibility and ignores it), else
    a plain ``@cuda.jit``. Device functions (``@cuda.jit(device=True)``) are compiled into the kernels that call
    them and stay as they are."""
    import inspect

    cuda = importlib.import_module("numba.cuda")
    try:
        takes_cache = "cache" in inspect.signature(cuda.jit).parameters
    except (TypeError, ValueError):  # pragma: no cover - a jit without an inspectable signature
        takes_cache = False
    return "@cuda.jit(cache=True)" if takes_cache else "@cuda.jit"


def load_cuda_module(source: str, tag: str) -> ModuleType:
    """:func:`compiler.codegen.cache.load_module` for cuda sources: every bare ``@cuda.jit`` line (a kernel) gets
    :func:`kernel_decorator` first."""
    from compiler.codegen.cache import load_module

    deco = kernel_decorator()
    lines = [deco if line == "@cuda.jit" else line for line in source.split("\n")]
    return load_module("\n".join(lines), tag)


@dataclass(frozen=True)
class LaunchConfig:
    """Block and grid sizes of the generated and library kernels."""

    block: int  # threads per block of 1-d grid-stride kernels
    max_blocks: int  # cap on the grid of grid-stride kernels
    reduce_block: int  # threads per block of the shared-memory tree reduction (a power of two)
    rows_max: int  # reductions over at most this many elements per output run one thread per output
    reduce_items: int  # elements per thread of one block's slice in the tree reduction
    tile: int  # GEMM tile edge (tile x tile threads per block)
    one_pass_max: int  # reductions over at most this many elements per output run one block per output, one launch


GPU_CONFIG = LaunchConfig(
    block=256, max_blocks=4096, reduce_block=256, rows_max=256, reduce_items=8, tile=16, one_pass_max=1 << 18
)
SIMULATOR_CONFIG = LaunchConfig(
    block=16, max_blocks=2, reduce_block=8, rows_max=8, reduce_items=2, tile=4, one_pass_max=1024
)


def launch_config() -> LaunchConfig:
    """:data:`SIMULATOR_CONFIG` under the simulator (every thread is a Python thread), else :data:`GPU_CONFIG`."""
    return SIMULATOR_CONFIG if is_simulator() else GPU_CONFIG


def grid_for(n: int, cfg: LaunchConfig) -> int:
    """Blocks of a 1-d grid-stride launch over ``n`` items."""
    return max(1, min(cfg.max_blocks, -(-n // cfg.block)))


class LaunchCounter:
    """Counts device kernel launches: every launch of the cuda target goes through :func:`launch` (views, host-side
    checks and copies to or from the host launch nothing). ``total`` only grows; :class:`CudaFunction.profile`
    (``runtime/cuda.py``) reads the difference over a call: the launches per step."""

    __slots__ = ("total", "by_kernel")

    def __init__(self) -> None:
        self.total = 0
        self.by_kernel: dict[str, int] = {}

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """``(total, launches by kernel function name)`` now (a copy)."""
        return self.total, dict(self.by_kernel)


LAUNCHES = LaunchCounter()


_SHARED_ARRAYS_PATCHED = False
_SHARED_ARRAYS_CHECKED = False  # patch_simulator_shared_arrays ran (launch calls it once)


def _thread_safe_shared_array(self: Any, shape: Any, dtype: Any, alignment: Any = None) -> Any:
    """``cuda.shared.array`` under the simulator, as Numba's ``FakeCUDAShared.array`` but thread safe (see
    :func:`patch_simulator_shared_arrays`). One array per calling source line per launch, as there."""
    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    if alignment is not None:
        raise RuntimeError("Array alignment is not supported in cudasim")
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    if shape == 0:  # dynamic shared memory: one buffer for every request
        count = self._dynshared_size // dtype.itemsize
        return np.frombuffer(self._dynshared.data, dtype=dtype, count=count)
    frame = sys._getframe(1)
    caller = (frame.f_code.co_filename, frame.f_lineno)
    with _SHARED_LOCK:
        res = self._allocations.get(caller)
        if res is None:
            res = self._allocations[caller] = kernelapi.np.empty(shape, dtype)
    return res


_SHARED_LOCK = threading.Lock()


def patch_simulator_shared_arrays() -> bool:
    """Make the simulator's ``cuda.shared.array`` thread safe; True when the simulator is active (patched).

    Numba's simulator runs a block's threads as Python threads, and ``FakeCUDAShared.array`` allocates a launch's
    shared array for a source line on first use with an unlocked get-then-set: when several threads of the first
    block reach the line together (likely under CPU load), some get an array of their own, so their partials never
    reach the tree (a wrong element, or ``np.empty`` garbage). That is a race of the simulator only (on a GPU shared
    memory exists before the block runs), and it made the cuda tests flaky. The replacement does the get-or-create
    under a lock (and finds the caller with ``sys._getframe`` rather than ``traceback.extract_stack``: cheaper).
    Idempotent; called by :func:`launch`, through which every launch goes."""
    global _SHARED_ARRAYS_PATCHED, _SHARED_ARRAYS_CHECKED
    _SHARED_ARRAYS_CHECKED = True
    if _SHARED_ARRAYS_PATCHED:
        return True
    if not is_simulator():
        return False
    from numba.cuda.simulator import kernelapi

    kernelapi.FakeCUDAShared.array = _thread_safe_shared_array
    _SHARED_ARRAYS_PATCHED = True
    return True


def launch(fn: Any, grid: Any, block: Any) -> Callable[..., None]:
    """``fn[grid, block]`` counted in :data:`LAUNCHES`: ``launch(kernel, grid, block)(*args)``."""
    if not _SHARED_ARRAYS_CHECKED:
        patch_simulator_shared_arrays()
    configured = fn[grid, block]
    name = getattr(getattr(fn, "py_func", None), "__name__", None) or getattr(fn, "__name__", "kernel")
    counter = LAUNCHES

    def call(*args: Any) -> None:
        counter.total += 1
        counter.by_kernel[name] = counter.by_kernel.get(name, 0) + 1
        configured(*args)

    return call


def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-contiguous array of ``shape``."""
    out = []
    acc = 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


class DeviceValue:
    """A value on the device: ``data`` (a flat 1-d device array) seen with ``shape``, element ``strides`` and an
    element ``offset``. ``host`` optionally holds the host array the value was uploaded from this call (program
    inputs), so that host-side checks (label ranges) need no download."""

    __slots__ = ("data", "shape", "strides", "offset", "dtype", "host")

    def __init__(
        self,
        data: Any,
        shape: tuple[int, ...],
        dtype: np.dtype,
        strides: tuple[int, ...] | None = None,
        offset: int = 0,
    ) -> None:
        self.data = data
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.strides = c_strides(self.shape) if strides is None else tuple(strides)
        self.offset = int(offset)
        self.host: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the elements (not of the whole backing array)."""
        return self.size * self.dtype.itemsize

    @property
    def contiguous(self) -> bool:
        """C-contiguous at offset 0 of ``data`` (size-1 dims ignored)."""
        if self.offset != 0:
            return False
        return all(s == c for s, c, d in zip(self.strides, c_strides(self.shape), self.shape) if d != 1)

    def flat(self) -> Any:
        """The flat device array of a C-contiguous value (length >= 1, so a 0-d value has one element)."""
        if not self.contiguous:
            raise ValueError(f"internal: device value of shape {self.shape} strides {self.strides} is not contiguous")
        return self.data

    def reshaped(self, shape: tuple[int, ...]) -> DeviceValue:
        """The same C-contiguous storage seen with another shape of the same size."""
        if math.prod(shape) != self.size:
            raise ValueError(f"internal: cannot view {self.shape} as {shape}")
        self.flat()
        return DeviceValue(self.data, shape, self.dtype)

    def transposed(self, perm: tuple[int, ...]) -> DeviceValue:
        """A strided view with permuted axes (no copy)."""
        return DeviceValue(
            self.data,
            tuple(self.shape[p] for p in perm),
            self.dtype,
            tuple(self.strides[p] for p in perm),
            self.offset,
        )

    def __repr__(self) -> str:
        return f"<DeviceValue {self.dtype}{list(self.shape)} strides={self.strides} offset={self.offset}>"


class _SimulatorMath:
    """``math`` for generated kernels under the simulator, where device code runs as Python: the functions follow
    device semantics (NaN or inf out of domain, as CUDA's libdevice) instead of raising like Python's ``math``."""

    inf = math.inf
    nan = math.nan
    pi = math.pi
    e = math.e

    def __getattr__(self, name: str) -> Any:
        fn = getattr(math, name)

        def call(*args: Any) -> Any:
            try:
                return fn(*args)
            except (ValueError, OverflowError, ZeroDivisionError):
                ufunc = getattr(np, {"fabs": "abs"}.get(name, name), None)
                if ufunc is None:
                    raise
                with np.errstate(all="ignore"):
                    return ufunc(*(np.float64(a) for a in args))

        return call


def simulator_math(module: ModuleType) -> Any:
    """``module`` (``math``) on a GPU; under the simulator a stand-in whose functions return NaN/inf out of domain
    (generated cuda modules rebind their ``math`` through this)."""
    return _SimulatorMath() if is_simulator() else module


def device_empty(n: int, dtype: np.dtype) -> Any:
    """A flat uninitialised device array of ``max(n, 1)`` elements."""
    cuda = importlib.import_module("numba.cuda")
    return cuda.device_array(max(int(n), 1), dtype=np.dtype(dtype))


def upload(host: np.ndarray, dev: Any | None = None) -> Any:
    """Copy ``host`` (any layout) into the flat device array ``dev`` (allocated when None); returns ``dev``."""
    flat = np.ascontiguousarray(host).reshape(-1)
    if dev is None:
        dev = device_empty(flat.size, flat.dtype)
    if flat.size:
        target = dev if dev.shape[0] == flat.size else dev[: flat.size]
        target.copy_to_device(flat)
    return dev


def download(value: DeviceValue) -> np.ndarray:
    """A new host array holding ``value`` (a contiguous one; see :func:`compiler.codegen.cuda.library.materialize`)."""
    n = value.size
    if n == 0:
        return np.empty(value.shape, value.dtype)
    data = value.flat()
    part = data if data.shape[0] == n else data[:n]
    return part.copy_to_host().reshape(value.shape)


def retarget(
    outs: list[DeviceValue],
    values: tuple[DeviceValue, ...],
    over: dict[int, int],
    original: dict[int, tuple[Any, tuple[int, ...], int]],
    writes_parameters: bool,
) -> list[DeviceValue]:
    """In-place parameter updates (:mod:`compiler.horizontal`): output ``m`` in ``over`` is written over the storage of
    input ``over[m]`` (a parameter). With ``writes_parameters`` the output's device value is pointed at that storage
    (once; its planned buffer is then unused, and the runtime's update copy is a copy onto itself); without (the
    warm-up on zeros, which must not change parameters) a value over the planned buffer is used instead. Returns the
    output values to write."""
    outs = list(outs)
    for m, q in over.items():
        out, param = outs[m], values[q]
        if writes_parameters and out.data is not param.data:
            original[id(out)] = (out.data, out.strides, out.offset)
            out.data, out.strides, out.offset = param.data, param.strides, param.offset
        elif not writes_parameters and id(out) in original:
            data, strides, offset = original[id(out)]
            outs[m] = DeviceValue(data, out.shape, out.dtype, strides, offset)
    return outs


@dataclass(eq=False)
class CudaCompiledKernel(CompiledKernel):
    """A cuda kernel: ``run(*device values)`` (destination passing), plus ``warm`` (launches every variant a
    kernel has, so that warm-up compiles them all whatever the shapes) and ``scratch`` (device scratch arrays it
    allocated, keyed by size: counted in the peak device bytes)."""

    warm: Callable[..., None] | None = None
    scratch: dict[Any, Any] = field(default_factory=dict)

    def scratch_bytes(self) -> int:
        """Bytes of the scratch arrays allocated so far."""
        return sum(int(a.shape[0]) * np.dtype(a.dtype).itemsize for a in self.scratch.values())
