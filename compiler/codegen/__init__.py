"""Code generation: one emitter package per target (``cpu/`` today); ``scalar.py`` holds the scalar expression
of every elementwise op, shared by all emitters (they differ only in how they print loops and indices)."""

from compiler.codegen.numba_cache_lock import install as _install_numba_cache_lock

_install_numba_cache_lock()  # before any kernel is compiled: see numba_cache_lock.py
