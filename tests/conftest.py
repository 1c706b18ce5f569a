"""Test configuration.

``pytest --target=cpu`` (or ``SYMDL_TEST_TARGET=cpu``) runs the suite in *validate* mode: every
``symdl.compile`` call made by a test (target ``"reference"``) also compiles the graph for the given target, and
every call runs both and checks that outputs, parameter updates and raised errors agree (float32: rtol 1e-4,
float64: rtol 1e-10). So every op value and gradient test doubles as a compiled-vs-reference test.

``--validate-calls=N`` (or ``SYMDL_TEST_VALIDATE_CALLS``) bounds the cost of a slow target: each compiled function is
compared with the reference on its first ``N`` calls and on the first call of every new input-shape signature; its
other calls run the reference only (a call the reference rejects is still checked to fail the same way on the
target). ``0`` compares every call. The default, ``auto``, is every call for ``cpu`` and ``2`` for ``cuda``, whose
simulator runs each device thread in Python: training loops and repeated calls then cost reference time, while
every compiled graph, forward and gradient alike, is still compared at least once. The terminal summary says how
many calls were compared and how many ran the reference only. A graph that the target refuses to compile (e.g.
"not yet supported on the cuda target") fails its test: nothing falls back to the reference unvalidated, except
graphs whose shapes depend on the data (documented: compiled targets need data-independent shapes).
"""

from __future__ import annotations

import functools
import os
import sys

# pytest-xdist (``-n``): each worker gets its own Numba disk cache, so that what a test counts as compiled or loaded
# depends on its own worker alone (concurrent saves into one cache are safe: compiler/codegen/numba_cache_lock.py).
# symdl's own source cache is content-addressed and written atomically, so it stays shared. (Set before anything
# imports Numba, which reads it once.)
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _XDIST_WORKER and "numba" not in sys.modules:
    _numba_cache = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("SYMDL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "symdl"), "numba"
    )
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_numba_cache, f"xdist-{_XDIST_WORKER}")

import numpy as np  # noqa: E402 - after the Numba cache set-up above
import pytest  # noqa: E402 - after the Numba cache set-up above

import symdl  # noqa: E402 - after the Numba cache set-up above
import symdl.function  # noqa: E402 - after the Numba cache set-up above


def pytest_addoption(parser):
    parser.addoption(
        "--target",
        default=os.environ.get("SYMDL_TEST_TARGET", "reference"),
        help="also compile every graph for this target and compare it with the reference executor",
    )
    parser.addoption(
        "--validate-calls",
        default=os.environ.get("SYMDL_TEST_VALIDATE_CALLS", "auto"),
        help="with --target: compare each compiled function on its first N calls (and the first call of each new "
        "input shape), then run the reference only; 0 = every call; auto = every call for cpu, 2 for cuda",
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


_STATS = {"functions": 0, "compared": 0, "reference_only": 0}


class _Validated:
    """Runs the reference function and the compiled one on the same call and compares everything (on the first
    ``limit`` calls and the first call of each input-shape signature; every call when ``limit`` is 0)."""

    def __init__(self, ref, compiled, limit=0):
        self.ref, self.compiled = ref, compiled
        self.program = ref.program
        found = {id(n): n for n in ref.program.order if isinstance(n, symdl.Parameter)}
        found.update({id(p): p for p, _ in ref.program.updates})
        self.params = list(found.values())
        self.limit = limit
        self.compared = 0
        self.signatures = set()
        _STATS["functions"] += 1

    def __getattr__(self, name):
        return getattr(self.ref, name)

    def __repr__(self):
        return repr(self.ref)

    def __call__(self, *arrays):
        sig = tuple(np.shape(a) for a in arrays)
        compare = not self.limit or self.compared < self.limit or sig not in self.signatures
        saved = [p.value.copy() for p in self.params]
        try:
            want = self.ref(*arrays)
        except Exception as e:  # the compiled target must fail the same way
            for p, v in zip(self.params, saved):
                p.value = v
            with pytest.raises(type(e)):
                self.compiled(*arrays)
            raise
        if not compare:
            _STATS["reference_only"] += 1
            return want  # the reference's outputs and parameter updates
        self.compared += 1
        self.signatures.add(sig)
        _STATS["compared"] += 1
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
    calls = config.getoption("--validate-calls")
    if calls == "auto":
        limit = 2 if target == "cuda" else 0
    else:
        try:
            limit = int(calls)
        except ValueError:
            raise pytest.UsageError(
                f"--validate-calls must be a non-negative integer or 'auto', got {calls!r}"
            ) from None
        if limit < 0:
            raise pytest.UsageError(f"--validate-calls must be a non-negative integer or 'auto', got {calls!r}")
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
            raise  # a refusal of the target fails the test: every graph a test compiles is validated
        return _Validated(ref, compiled, limit)

    def entry(inputs, outputs, updates=None, target=None, **kw):
        return validating_compile(inputs, outputs, updates, target, **kw)

    symdl.compile = entry
    symdl.function.compile = entry


def pytest_sessionfinish(session, exitstatus):
    """Under pytest-xdist (``-n``), each worker hands its validate-mode counts to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["symdl_validate_stats"] = dict(_STATS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist's controller: add a finished worker's validate-mode counts to the summary's."""
    for k, v in getattr(node, "workeroutput", {}).get("symdl_validate_stats", {}).items():
        _STATS[k] += v


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    target = config.getoption("--target")
    if target == "reference" or not _STATS["functions"]:
        return
    terminalreporter.write_line(
        f"validate mode (--target={target}, --validate-calls={config.getoption('--validate-calls')}): "
        f"{_STATS['functions']} compiled functions, {_STATS['compared']} calls compared with the reference, "
        f"{_STATS['reference_only']} calls ran the reference only"
    )
