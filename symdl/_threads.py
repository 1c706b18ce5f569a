"""Thread settings that keep Numba's parallel loops and BLAS from starving each other on small machines.

Numba's parallel loops run on OpenMP threads, which by default spin for a while after every parallel region;
OpenBLAS (the GEMMs of matmul and conv) runs threads of its own. With both on a 2-core machine, the spinning
OpenMP threads starve the next GEMM (MLP train step: 58 ms spinning vs 5.8 ms without). So:

- if no OpenMP runtime is loaded yet, set ``GOMP_SPINCOUNT=0`` before one is (an explicit setting wins);
- if one was loaded already with default spinning (e.g. ``import torch`` came first: PyTorch ships its own
  ``libgomp.so.1``, which Numba then shares), its spinning can no longer be changed, so Numba's parallel
  loops use the ``workqueue`` threading layer instead (unless ``NUMBA_THREADING_LAYER`` says otherwise).
"""

from __future__ import annotations

import os
import sys


def _openmp_loaded() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps") as maps:  # the soname Numba's OpenMP layer binds to (PyTorch ships one)
            return any(line.rstrip().endswith("/libgomp.so.1") for line in maps)
    except OSError:
        return False


def configure() -> str:
    """Apply the settings above; returns what was done (for diagnostics)."""
    if "GOMP_SPINCOUNT" in os.environ:
        return "GOMP_SPINCOUNT set by the user"
    if _openmp_loaded():
        if "NUMBA_THREADING_LAYER" not in os.environ:
            os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
            if "numba" in sys.modules:
                import numba

                numba.config.THREADING_LAYER = "workqueue"
            return "OpenMP already loaded with spinning threads: Numba uses the workqueue threading layer"
        return "OpenMP already loaded; NUMBA_THREADING_LAYER set by the user"
    os.environ["GOMP_SPINCOUNT"] = "0"
    return "GOMP_SPINCOUNT=0"


THREADS_CONFIG = configure()
