"""Code generation: one emitter package per target (``cpu/`` today); ``scalar.py`` holds the scalar expression
of every elementwise op, shared by all emitters (they differ only in how they print loops and indices)."""
