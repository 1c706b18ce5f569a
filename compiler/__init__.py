"""symdl's compiler: passes that turn user graphs into executable programs.

- :mod:`compiler.autodiff` — reverse-mode symbolic differentiation (gradients are new graph nodes).
- :mod:`compiler.rewrite` — the one graph-rebuilding primitive that every rewrite uses.
- :mod:`compiler.modes` — resolves train/eval ``mode_switch`` nodes and collects implicit updates.
- :mod:`compiler.program` — validates a compile request and lowers it to a linear :class:`Program`.
"""
