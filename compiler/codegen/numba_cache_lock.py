"""Numba's disk-cache writes, made safe for several processes sharing one cache.

Numba saves a compiled signature with a read-modify-write of the function's index file
(``numba.core.caching.IndexDataCacheFile.save``): it reads the index, takes the first free data-file number, writes
the index, then the data file. Two processes that first compile two signatures of one function at the same moment
(two training scripts started together on a new machine, two test workers) can both take number 1: the index one of
them leaves then names the machine code the other one wrote, and a later process loads code compiled for another
signature. :func:`install` wraps that method so that each save holds an exclusive ``flock`` on the cache
directory: saves in one directory take turns (each is a few milliseconds), and the numbering is always read after
the previous save is complete. Loads need no lock: Numba replaces index and data files by renaming complete ones.

Without ``fcntl`` (Windows), or if Numba's cache class no longer has that method, nothing is changed.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["directory_lock", "install"]


@contextlib.contextmanager
def directory_lock(path: str) -> Iterator[None]:
    """An exclusive ``flock`` on directory ``path`` (created if missing) for the ``with`` block; released when the
    block ends or the process dies."""
    os.makedirs(path, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def install() -> bool:
    """Wrap ``IndexDataCacheFile.save`` (once per process); whether the guard is in place."""
    if fcntl is None:  # pragma: no cover - Windows
        return False
    from numba.core import caching

    cls = getattr(caching, "IndexDataCacheFile", None)
    save = getattr(cls, "save", None)
    if save is None:  # pragma: no cover - a Numba without this class: leave it alone
        return False
    if getattr(save, "symdl_locked", False):
        return True

    @functools.wraps(save)
    def locked_save(self: Any, key: Any, data: Any) -> None:
        path = getattr(self, "_cache_path", None)
        if path is None:  # pragma: no cover - a Numba that names it otherwise: save as Numba would
            save(self, key, data)
            return
        with directory_lock(path):
            save(self, key, data)

    locked_save.symdl_locked = True  # type: ignore[attr-defined]
    cls.save = locked_save
    return True
