"""Shared helpers of the core test files."""

from __future__ import annotations

import sys

import numpy as np

import symdl


def line_here() -> int:
    """The caller's current line number (use ``line_here() + 1`` for the next line)."""
    return sys._getframe(1).f_lineno


def run(inputs, outputs, *arrays, **kw):
    """Compile and call once."""
    return symdl.compile(inputs, outputs, **kw)(*arrays)


def evaluate(fn, *arrays):
    """Build ``fn`` on placeholders shaped like ``arrays`` and run it; returns ``(tensor, value)``."""
    arrays = [np.asarray(a) for a in arrays]
    phs = [symdl.placeholder(a.shape, a.dtype, name=f"in{k}") for k, a in enumerate(arrays)]
    out = fn(*phs)
    (value,) = symdl.compile(phs, [out])(*arrays)
    return out, value


def assert_value(out, value, expected, rtol=None, atol=None):
    """Static type agrees with the run-time value, and the value matches ``expected``."""
    expected = np.asarray(expected)
    assert value.shape == expected.shape, (value.shape, expected.shape)
    assert tuple(out.shape) == value.shape
    assert value.dtype == out.dtype
    if rtol is None:
        rtol = 1e-6 if value.dtype == np.float32 else 1e-12
    if atol is None:
        atol = 1e-6 if value.dtype == np.float32 else 1e-14
    if value.dtype.kind in "fc":
        np.testing.assert_allclose(value, expected, rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(value, expected)


def rand(rng, shape, low=-2.0, high=2.0, dtype=np.float64):
    return rng.uniform(low, high, size=shape).astype(dtype)


def away_from(rng, shape, points=(0.0,), margin=0.1, low=-2.0, high=2.0):
    """Random float64 values in [low, high] at least ``margin`` from each of ``points`` (kinks)."""
    x = rng.uniform(low, high, size=shape)
    for p in points:
        close = np.abs(x - p) < margin
        x = np.where(close, p + np.where(x >= p, margin, -margin) * 1.5, x)
    return x
