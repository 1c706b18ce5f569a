"""Content-addressed cache of generated kernel modules.

Generated source is written once to ``<cache_dir>/kernels/<sha256>.py`` and imported from there. The key
covers the source and everything that changes what it compiles to (Numba, NumPy and Python versions, the
flags below), so a file is never rewritten: its path and modification time stay fixed, which is what Numba's
own disk cache (``cache=True``, keyed on the file and the function's source) needs to load compiled machine
code in a second process instead of compiling again.

Generated functions never close over arrays: everything a kernel reads is an argument.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import numba
import numpy as np

#: the decorator flags every generated function uses (part of the cache key)
NJIT_FLAGS = 'cache=True, error_model="numpy", fastmath=False'

#: bump when the layout of cached files or module naming changes, so stale entries are never reused
CACHE_FORMAT = "symdl-kernels-2"

_modules: dict[str, ModuleType] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """``$SYMDL_CACHE_DIR`` or ``~/.cache/symdl``."""
    env = os.environ.get("SYMDL_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "symdl"


def source_key(source: str) -> str:
    """The sha256 of the source and of everything else that changes the compiled code."""
    h = hashlib.sha256()
    for part in (CACHE_FORMAT, source, numba.__version__, np.__version__, sys.version, NJIT_FLAGS):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _write_once(path: Path, source: str) -> None:
    """Write ``source`` to ``path`` atomically unless it is already there."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_module(source: str, tag: str) -> ModuleType:
    """Import ``source`` as a module from the content-addressed cache (memoised in-process).

    ``tag`` (e.g. the kernel name) is informational only: neither the key nor the module name depend on it.
    """
    key = source_key(source)
    with _lock:
        mod = _modules.get(key)
        if mod is not None:
            return mod
        path = cache_dir() / "kernels" / f"{key}.py"
        _write_once(path, source)
        # the module name must depend on the content alone: Numba's disk cache records it, and a second process
        # (where the same source may be reached under another kernel name) must resolve the same module name
        name = f"_symdl_kernel_{key[:32]}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # Numba resolves some globals through the module's name
        spec.loader.exec_module(mod)
        _modules[key] = mod
        return mod
