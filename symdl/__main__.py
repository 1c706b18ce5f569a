"""``python -m symdl``: the symdl command line; with no arguments, the demo (see :mod:`symdl.demo`)."""

from symdl.cli import entry_point

entry_point()
