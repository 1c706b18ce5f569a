"""The CPU library-kernel registry: one factory per non-elementwise op class.

``@register(OpClass)`` marks ``factory(node) -> LibraryImpl``. The factory sees the node (its op props and
static input/output types) and returns a callable ``run(*input_arrays, out)`` that writes the op's value into
the preallocated C-contiguous ``out`` (destination passing, see :mod:`compiler.kernels`). Factories are called
once per compile; ``run`` is called every step, so it must not allocate more than it needs nor do per-call
work that the factory could do. Kernels are ``numba.njit(cache=True)`` functions (compiled once per
dtype/rank/layout, cached on disk): ``dispatchers`` lists them so the runtime can count compiles.

Implementations live in ``library_linalg.py`` (matmul, conv, pooling) and ``library_misc.py`` (reductions,
softmax family, indexing, dropout, batch-norm eval, shape copies); both register themselves on import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from compiler.codegen.registry import OpRegistry
from symdl.graph import Tensor


@dataclass
class LibraryImpl:
    run: Callable[..., None]  # run(*inputs, out)
    dispatchers: list[object] = field(default_factory=list)
    parallel: bool = False
    serial: Callable[..., None] | None = None  # serial twin when run uses prange


Factory = Callable[[Tensor], LibraryImpl]
_REGISTRY: OpRegistry[Factory] = OpRegistry()
LIBRARY = _REGISTRY.table
register = _REGISTRY.register
lookup = _REGISTRY.lookup


def _load_implementations() -> None:
    from compiler.codegen.cpu import library_linalg, library_misc  # noqa: F401 - registration side effects


_load_implementations()
