"""The BLAS behind Numba's ``np.dot`` runs single-threaded; the CPU target splits large GEMMs across its own
threads instead (:mod:`compiler.codegen.cpu.parallel`).

Large GEMMs (a matmul of at least ``PARALLEL_MIN_MACS`` multiply-adds) get all the threads for the duration of
that one call (:func:`run_with_blas_threads`); every other BLAS call runs on one thread.

Why: OpenBLAS's worker threads busy-wait after every call. Beside another thread system (the runtime's task
threads, PyTorch's OpenMP threads, any other busy process) they fight for the cores: on this 2-core machine with
other work running, the LeNet-5 train step took 114 ms per call with a two-thread BLAS and 9 ms with a
one-thread BLAS (``f.profile``: each small GEMM epilogue 15-21 ms instead of 0.05-0.3 ms). Switching the thread
count around each call was tried and thrashed (commit 33a2845). So the count is set once, when the CPU kernels
are first built, and only for the OpenBLAS that SciPy's BLAS bindings load (the one Numba calls; NumPy's own
copy is left alone).

``SYMDL_BLAS_THREADS`` (an int >= 1) sets another count; ``0`` leaves BLAS as it is.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

__all__ = ["configure_blas", "openblas_thread_controls", "run_with_blas_threads"]

_configured: str | None = None
_controls: list[tuple[Callable[[], int], Callable[[int], None]]] = []
_base_threads = 1


def openblas_thread_controls(
    scipy_only: bool = True,
) -> list[tuple[Callable[[], int], Callable[[int], None]]]:
    """``(get, set)`` thread-count functions of the loaded OpenBLAS libraries: the one(s) SciPy's BLAS bindings
    use (``scipy_only``; every one found when none is recognisably SciPy's), or all of them. Empty where none is
    found (another BLAS, another platform)."""
    import scipy.linalg.cython_blas  # noqa: F401 - loads the BLAS that Numba's np.dot calls

    paths: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                path = fields[-1] if len(fields) >= 6 else ""
                if "openblas" in path.rsplit("/", 1)[-1].lower() and path not in paths:
                    paths.append(path)
    except OSError:
        return []
    if scipy_only:
        scipy_paths = [p for p in paths if any(part.startswith("scipy") for part in p.split("/")[:-1])]
        paths = scipy_paths or paths
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    set_.restype = None
                    controls.append((get, set_))
                    break
            else:
                continue
            break
    return controls


def configure_blas() -> str:
    """Set the BLAS thread count once per process (see the module docstring); returns what was done."""
    global _configured
    if _configured is not None:
        return _configured
    raw = os.environ.get("SYMDL_BLAS_THREADS", "1")
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"SYMDL_BLAS_THREADS must be an int >= 0 (0: leave BLAS as it is), got {raw!r}")
    if n == 0:
        _configured = "BLAS threads left as they are (SYMDL_BLAS_THREADS=0)"
        return _configured
    controls = openblas_thread_controls()
    for _, set_ in controls:
        set_(n)
    global _controls, _base_threads
    _controls, _base_threads = controls, n
    _configured = f"OpenBLAS behind Numba set to {n} thread(s)" if controls else "no OpenBLAS found; BLAS untouched"
    return _configured


def run_with_blas_threads(threads: int, fn: Callable[..., object], *args: object) -> bool:
    """``fn(*args)`` with the BLAS behind Numba on ``threads`` threads, then back to its configured count; returns
    False (and runs nothing) when that BLAS cannot be controlled (not OpenBLAS, or ``SYMDL_BLAS_THREADS=0``).

    For single large GEMMs only: OpenBLAS hands work to its own (spinning) threads in a few microseconds, where
    the runtime's task threads need 70-100 us per hand-off on this VM (MLP 784-512-512-10 Adam step: 3.8-4.0 ms
    vs 4.6-5.6 ms with row blocks on the task threads). Setting the count is a plain store in OpenBLAS once its
    threads exist."""
    if not _controls:
        return False
    for _, set_ in _controls:
        set_(threads)
    try:
        fn(*args)
    finally:
        for _, set_ in _controls:
            set_(_base_threads)
    return True
