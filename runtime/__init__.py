"""symdl's runtime: executors of compiled :class:`compiler.program.Program` objects.

- :mod:`runtime.reference` — the NumPy reference interpreter, the correctness oracle for every target.
"""
