"""Accuracy and special values of the vectorisable float32 ``exp_f32``/``tanh_f32`` (compiler/codegen/cpu/fastmath.py).

The functions are checked inside a loop of the same shape as the generated kernels (``error_model="numpy"``,
``fastmath=False``), so the code under test is the vectorised one, against NumPy in float64.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from compiler.codegen.cpu.fastmath import exp_f32, tanh_f32

RTOL, ATOL = 1.3e-6, 1e-5  # the float32 contract: |got - exact| <= ATOL + RTOL * |exact|
TINY = np.finfo(np.float32).tiny


@numba.njit(error_model="numpy", fastmath=False)
def _exp_loop(x, out):  # noqa: ANN001, ANN202
    for i in range(x.shape[0]):
        out[i] = exp_f32(x[i])


@numba.njit(error_model="numpy", fastmath=False)
def _tanh_loop(x, out):  # noqa: ANN001, ANN202
    for i in range(x.shape[0]):
        out[i] = tanh_f32(x[i])


FUNCS = {"exp": (_exp_loop, np.exp), "tanh": (_tanh_loop, np.tanh)}


def run(name: str, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    FUNCS[name][0](x, out)
    return out


def sweep(stride: int) -> np.ndarray:
    """Every ``stride``-th finite float32 bit pattern, both signs."""
    bits = np.arange(0, 0x7F800000, stride, dtype=np.uint32)
    return np.concatenate([bits, bits | np.uint32(0x80000000)]).view(np.float32)


@pytest.mark.parametrize("name", ["exp", "tanh"])
def test_dense_sweep_matches_float64(name):
    x = np.concatenate([sweep(997), np.linspace(-110, 110, 400_001, dtype=np.float32)])
    got = run(name, x).astype(np.float64)
    with np.errstate(all="ignore"):
        want = FUNCS[name][1](x.astype(np.float64))
        want32 = want.astype(np.float32)
    overflow = np.isinf(want32)
    assert np.array_equal(got[overflow], want32[overflow])  # exp overflows exactly where float32 does
    got, want = got[~overflow], want[~overflow]
    err = np.abs(got - want)
    assert np.all(err <= ATOL + RTOL * np.abs(want))
    # and a few ulp in relative terms wherever the result is a normal float32
    normal = np.abs(want) >= TINY
    rel = err[normal] / np.abs(want[normal])
    assert rel.max() < 4e-7, rel.max()


def test_exp_range_ends():
    x = np.array([88.72, 88.7228, 88.73, 89.0, 1e30, np.inf], np.float32)
    got = run("exp", x)
    assert np.isfinite(got[:2]).all() and np.isposinf(got[2:]).all()
    # gradual underflow: subnormal results, then 0 (never early, never negative)
    x = np.array([-87.0, -88.0, -95.0, -100.0, -103.0, -103.9, -104.0, -200.0, -1e30, -np.inf], np.float32)
    got = run("exp", x)
    want = np.exp(x.astype(np.float64))
    assert np.all(got >= 0)
    # within one quantum of the subnormals (2**-149) of the exact value
    assert np.all(np.abs(got[:6] - want[:6]) <= 2.0**-149) and got[5] > 0 and np.all(got[6:] == 0)
    assert np.all(run("exp", np.array([0.0, -0.0, 1e-30, -1e-30, 5e-45], np.float32)) == 1.0)


def test_tanh_saturates_and_keeps_tiny_inputs():
    x = np.array([9.0, 9.1, 20.0, 1e30, np.inf], np.float32)
    assert np.all(run("tanh", x) == 1.0) and np.all(run("tanh", -x) == -1.0)
    tiny = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, 1e-45, -1e-45, 1e-8, -1e-8], np.float32)
    got = run("tanh", tiny)
    assert np.array_equal(got, tiny) and np.array_equal(np.signbit(got), np.signbit(tiny))


@pytest.mark.parametrize("name", ["exp", "tanh"])
def test_nan_in_nan_out(name):
    x = np.array([np.nan, -np.nan, np.float32(np.nan) * 0, 1.0] * 8, np.float32)
    got = run(name, x)
    assert np.isnan(got[np.isnan(x)]).all() and not np.isnan(got[~np.isnan(x)]).any()
