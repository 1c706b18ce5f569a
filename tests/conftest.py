"""Test configuration.

``pytest --target=cpu`` (or ``SYMDL_TEST_TARGET=cpu``) runs the suite in *validate* mode: every
``symdl.compile`` call made by a test (target ``"reference"``) also compiles the graph for the given target, and
every call runs both and checks that outputs, parameter updates and raised errors agree (float32: rtol 1e-4,
float64: rtol 1e-10). So every op value and gradient test doubles as a compiled-vs-reference test.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import symdl
import symdl.function


def pytest_addoption(parser):
    parser.addoption(
        "--target",
        default=os.environ.get("SYMDL_TEST_TARGET", "reference"),
        help="also compile every graph for this target and compare it with the reference executor",
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _tolerance(dtype):
    return (1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-12)


def _assert_close(what, got, want):
    assert type(got) is type(want) or np.isscalar(want), what
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (
        f"{what}: {got.shape} {got.dtype} vs {want.shape} {want.dtype}"
    )
    if want.dtype.kind == "f":
        rtol, atol = _tolerance(want.dtype)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


class _Validated:
    """Runs the reference function and the compiled one on the same call and compares everything."""

    def __init__(self, ref, compiled):
        self.ref, self.compiled = ref, compiled
        self.program = ref.program
        found = {id(n): n for n in ref.program.order if isinstance(n, symdl.Parameter)}
        found.update({id(p): p for p, _ in ref.program.updates})
        self.params = list(found.values())

    def __getattr__(self, name):
        return getattr(self.ref, name)

    def __repr__(self):
        return repr(self.ref)

    def __call__(self, *arrays):
        saved = [p.value.copy() for p in self.params]
        try:
            want = self.ref(*arrays)
        except Exception as e:  # the compiled target must fail the same way
            for p, v in zip(self.params, saved):
                p.value = v
            with pytest.raises(type(e)):
                self.compiled(*arrays)
            raise
        want_params = [p.value.copy() for p in self.params]
        for p, v in zip(self.params, saved):
            p.value = v
        got = self.compiled(*arrays)
        for k, (g, w) in enumerate(zip(got, want)):
            _assert_close(f"output {k} ({self.compiled.target} vs reference)", g, w)
        for p, w in zip(self.params, want_params):
            _assert_close(f"parameter {p.label()} after the call", p.value, w)
        return got


def _small_warmup_by_default():
    """Tests use tiny shapes that never run a kernel's parallel twin: compile them lazily (``warmup="small"``)
    unless a test asks otherwise. Precompiling every twin would double the suite's cold Numba compile time;
    tests of the full warm-up pass ``warmup=True`` explicitly."""
    original = symdl.function.compile

    @functools.wraps(original)
    def compile_small(inputs, outputs, updates=None, target="reference", **kw):
        kw.setdefault("warmup", "small")
        return original(inputs, outputs, updates, target=target, **kw)

    symdl.compile = compile_small
    symdl.function.compile = compile_small


def _cuda_simulator_without_gpu():
    """``--target=cuda``: switch numba.cuda to Numba's CUDA simulator (before it is first imported) unless a CUDA
    driver is present or ``SYMDL_TEST_CUDA=device`` asks for the real GPU; the simulator runs every CUDA thread as a
    Python thread, so a short GIL switch interval makes its barriers much faster."""
    import ctypes.util
    import sys

    if "numba.cuda" not in sys.modules and os.environ.get("SYMDL_TEST_CUDA") != "device":
        if ctypes.util.find_library("cuda") is None:
            import numba

            numba.core.config.ENABLE_CUDASIM = 1  # read when numba.cuda is first imported
    sys.setswitchinterval(1e-4)


def pytest_configure(config):
    _small_warmup_by_default()
    target = config.getoption("--target")
    if target == "reference":
        return
    if target == "cuda":
        _cuda_simulator_without_gpu()
    original = symdl.function.compile

    def validating_compile(inputs, outputs, updates=None, target_arg=None, **kw):
        if target_arg not in (None, "reference"):
            return original(inputs, outputs, updates, target=target_arg, **kw)
        ref = original(inputs, outputs, updates, target="reference", **kw)
        kw.pop("passes", None)
        kw.setdefault("warmup", "small")  # tiny shapes: the parallel twins are never run here
        try:
            compiled = original(inputs, outputs, updates, target=target, **kw)
        except symdl.GraphError as e:
            if "depends on the data" in str(e):  # documented: compiled targets need data-independent shapes
                return ref
            raise
        return _Validated(ref, compiled)

    def entry(inputs, outputs, updates=None, target=None, **kw):
        return validating_compile(inputs, outputs, updates, target, **kw)

    symdl.compile = entry
    symdl.function.compile = entry
