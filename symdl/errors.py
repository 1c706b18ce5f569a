"""Exceptions raised by symdl, and the user-frame bookkeeping they rely on.

Every graph node records the *user's* stack frame that created it (frames inside symdl, compiler and
runtime are skipped), so that errors raised long after graph construction can still point at the line
the user wrote.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

_REPO_PACKAGES = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), pkg) + os.sep
    for pkg in ("symdl", "compiler", "runtime")
)


@dataclass(frozen=True)
class Frame:
    """Where in user code a node was created."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"


def user_frame() -> Frame | None:
    """The innermost stack frame that is not inside symdl's own packages."""
    f = sys._getframe(1)
    while f is not None:
        filename = f.f_code.co_filename
        if not filename.startswith(_REPO_PACKAGES) and not filename.startswith("<frozen"):
            return Frame(filename, f.f_lineno, f.f_code.co_name)
        f = f.f_back
    return None


def where(frame: Frame | None) -> str:
    return f"\n  created at {frame}" if frame is not None else ""


class SymdlError(Exception):
    """Base class of symdl's own errors."""


class ShapeError(SymdlError, ValueError):
    """An op was given operands whose shapes or dtypes it cannot accept (raised at graph-build time)."""


class GradientError(SymdlError, ValueError):
    """`grad` was asked for a gradient that does not exist (unconnected or non-differentiable)."""


class GraphError(SymdlError, ValueError):
    """A graph cannot be compiled as asked (missing inputs, bad updates, unknown target ...)."""


class NumericsError(SymdlError, FloatingPointError):
    """`check_numerics=True` found NaN or Inf in an op's output."""


class OpRuntimeError(SymdlError, ValueError):
    """An op found invalid data at run time (e.g. a label out of range)."""
