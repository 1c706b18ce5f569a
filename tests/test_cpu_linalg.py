"""CPU library kernels for matmul, convolution and pooling against each op's NumPy ``perform``.

Every kernel runs through its factory's ``run(*inputs, out)`` on an ``out`` this file allocates; parallel
kernels are also compared with their serial twins. Numba compiles once per dtype: the configurations below
share those compiled functions (the serial twins and the dtype sweep are restricted where compiles dominate).
"""

from __future__ import annotations

import numpy as np
import pytest

import symdl as sd
from compiler.codegen.cpu import library_linalg as L
from compiler.codegen.cpu.library import LIBRARY, lookup
from symdl.graph import apply
from symdl.ops.conv import Conv, ConvGradInput, ConvGradWeight
from symdl.ops.pool import AvgPool, AvgPoolGrad, MaxPool, MaxPoolGather, MaxPoolGrad, MaxPoolIndices
from symdl.ops.reduce import MatMul

DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


@pytest.fixture(autouse=True)
def always_parallel(monkeypatch):
    """The test arrays are small: force ``run`` onto the parallel kernels so that the twins really differ."""
    monkeypatch.setattr(L, "PARALLEL_MIN_SIZE", 0)


def ph(shape, dtype):
    return sd.placeholder(shape, dtype=np.dtype(dtype).name)


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def check(node, arrays, impl=None, serial=False):
    """``impl.run`` (and its serial twin when ``serial``) agrees with ``node.op.perform``; returns the impl."""
    impl = impl or lookup(node)(node)
    ref = np.asarray(node.op.perform(*arrays))
    out = np.full(ref.shape, 7, ref.dtype)  # garbage: kernels must overwrite every element
    impl.run(*arrays, out)
    if ref.dtype.kind == "f":
        rtol = RTOL[ref.dtype]
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * max(1.0, float(np.abs(ref).max(initial=0))))
    else:
        np.testing.assert_array_equal(out, ref)
    if serial:
        assert impl.parallel and impl.serial is not None
        out2 = np.full(ref.shape, -3, ref.dtype)
        impl.serial(*arrays, out2)
        np.testing.assert_allclose(out2, out, rtol=RTOL.get(ref.dtype, 0), atol=0)
    return impl


def test_registered():
    for cls in (
        MatMul,
        Conv,
        ConvGradInput,
        ConvGradWeight,
        MaxPool,
        MaxPoolGrad,
        MaxPoolGather,
        MaxPoolIndices,
        AvgPool,
        AvgPoolGrad,
    ):
        assert cls in LIBRARY, cls


# ----------------------------------------------------------------------------------------------------
# MatMul
# ----------------------------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((5, 3), (3, 4)),
    ((2, 3, 5, 4), (4, 6)),  # right operand rank 2: one GEMM over the folded batch
    ((3, 5, 4), (3, 4, 2)),
    ((2, 1, 5, 4), (3, 4, 2)),  # broadcast batch dims
    ((5, 4), (2, 4, 3)),
    ((4, 0), (0, 3)),  # empty inner dim: zeros
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul(rng, dtype, sa, sb):
    a, b = ph(sa, dtype), ph(sb, dtype)
    check(a @ b, [randn(rng, sa, dtype), randn(rng, sb, dtype)])


def test_matmul_non_contiguous_inputs(rng):
    a, b = ph((2, 5, 4), np.float32), ph((4, 3), np.float32)
    av = randn(rng, (2, 4, 5), np.float32).transpose(0, 2, 1)
    bv = randn(rng, (6, 4), np.float32)[::2].T
    check(a @ b, [av, bv])
    c = ph((2, 4, 3), np.float32)
    check(a @ c, [av, randn(rng, (2, 3, 4), np.float32).transpose(0, 2, 1)])


def test_matmul_new_batch_size_does_not_recompile(rng):
    # (a's static shape, b's shape, a's first and second run-time shapes)
    cases = [((None, 5, 4), (4, 3), (1, 5, 4), (7, 5, 4)), ((2, None, 4), (2, 4, 3), (2, 1, 4), (2, 9, 4))]
    for sa, sb, first, second in cases:
        node = ph(sa, np.float32) @ ph(sb, np.float32)
        impl = lookup(node)(node)
        check(node, [randn(rng, first, np.float32), randn(rng, sb, np.float32)], impl)
        before = [len(d.signatures) for d in impl.dispatchers]
        check(node, [randn(rng, second, np.float32), randn(rng, sb, np.float32)], impl)
        assert [len(d.signatures) for d in impl.dispatchers] == before


# ----------------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------------

# (x shape, w shape, stride, padding as (before, after) per dim, dilation, groups)
CONV_CONFIGS = {
    "plain": ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "stride-asym-pad-dilation": ((2, 3, 9, 8), (4, 3, 3, 2), (2, 3), ((1, 2), (0, 1)), (2, 1), 1),
    "groups": ((2, 4, 8, 7), (6, 2, 3, 2), (2, 1), ((1, 1), (1, 1)), (1, 2), 2),
    "depthwise": ((2, 4, 6, 6), (4, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 4),
    "depthwise-multiplier": ((1, 3, 7, 5), (6, 1, 2, 3), (3, 2), ((0, 1), (2, 0)), (1, 1), 3),
    "1x1": ((3, 5, 4, 4), (2, 5, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),  # no im2col: x[i] is the operand
    "1x1-groups": ((3, 4, 3, 5), (6, 2, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 2),
    "1x1-strided-padded": ((2, 3, 5, 4), (4, 3, 1, 1), (2, 1), ((1, 0), (0, 1)), (1, 1), 1),  # im2col again
    "kernel-covers-input": ((2, 2, 3, 3), (3, 2, 3, 3), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),
    "1d": ((2, 3, 11), (5, 3, 3), (2,), ((1, 2),), (2,), 1),
    "1d-depthwise": ((3, 4, 9), (4, 1, 4), (1,), ((2, 1),), (1,), 4),
}


def conv_nodes(cfg, dtype):
    """The Conv node and its two adjoints (placeholders with a free batch size and free spatial sizes)."""
    xs, ws, stride, padding, dilation, groups = cfg
    nsp = len(stride)
    x = ph((None, xs[1]) + (None,) * nsp, dtype)
    w = ph(ws, dtype)
    props = (stride, padding, dilation, groups)
    y = apply(Conv(*props), x, w)
    g = ph((None, ws[0]) + (None,) * nsp, dtype)
    return y, apply(ConvGradInput(*props), g, w, x), apply(ConvGradWeight(*props), x, g, w)


def conv_arrays(rng, cfg, dtype, batch=None):
    xs, ws = cfg[0], cfg[1]
    if batch is not None:
        xs = (batch,) + xs[1:]
    x, w = randn(rng, xs, dtype), randn(rng, ws, dtype)
    y = Conv(*cfg[2:]).perform(x, w)
    g = randn(rng, y.shape, dtype)
    return [x, w], [g, w, x], [x, g, w]


@pytest.mark.parametrize("algo", ["im2col", "direct", "simd"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONV_CONFIGS))
def test_conv_kernels(rng, name, dtype, algo):
    """Every algorithm in both dtypes; serial twins in float32 (each twin is one more compile). The SIMD kernels
    run stride-1 convolutions only."""
    cfg = CONV_CONFIGS[name]
    for node, arrays in zip(conv_nodes(cfg, dtype), conv_arrays(rng, cfg, dtype)):
        if algo == "simd" and any(s != 1 for s in node.op.stride):
            with pytest.raises(ValueError, match="simd"):
                L.conv_impl(node, algo)
            continue
        check(node, arrays, L.conv_impl(node, algo), serial=dtype is np.float32)


SIMD_CONFIGS = {  # stride 1: tiles with 1-8 channels per group, flat positions past one and several tiles
    "wide-asym-pad": ((2, 5, 9, 37), (11, 5, 3, 2), (1, 1), ((1, 2), (0, 3)), (1, 1), 1),
    "negative-grad-pad-dilated": ((3, 4, 7, 9), (10, 2, 2, 3), (1, 1), ((3, 0), (2, 1)), (2, 1), 2),
    "16-to-32-channels": ((2, 16, 10, 10), (32, 16, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "1d": ((2, 6, 40), (10, 6, 5), (1,), ((2, 2),), (1,), 1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(SIMD_CONFIGS))
def test_conv_simd_kernel(rng, name, dtype):
    """The register-tiled kernels against the reference, forward and both gradients, batch 1 (one sample split
    by channel blocks across the threads) and batch 3."""
    cfg = SIMD_CONFIGS[name]
    for batch in (3, 1):
        nodes = conv_nodes(cfg, dtype)
        for node, arrays in zip(nodes, conv_arrays(rng, cfg, dtype, batch=batch)):
            check(node, arrays, L.conv_impl(node, "simd"), serial=True)


def test_conv_simd_is_default_where_tiles_fill():
    """Stride 1 and most lanes useful: simd (a 3x3 forward pass with 8+ channels: Winograd); a 4-channel output
    wastes half of each 8-channel tile: im2col (the weight gradient's tiles are 4 channels: simd)."""
    cfg = SIMD_CONFIGS["16-to-32-channels"]
    fwd, gi, gw = conv_nodes(cfg, np.float32)
    assert [L.default_conv_algo(n) for n in (fwd, gi, gw)] == ["winograd", "simd", "simd"]
    fwd, gi, gw = conv_nodes(SIMD_CONFIGS["wide-asym-pad"], np.float32)
    assert [L.default_conv_algo(n) for n in (fwd, gi, gw)] == ["simd", "simd", "simd"]
    fwd, gi, gw = conv_nodes(CONV_CONFIGS["plain"], np.float32)
    assert [L.default_conv_algo(n) for n in (fwd, gi, gw)] == ["im2col", "im2col", "simd"]
    fwd, _, _ = conv_nodes(CONV_CONFIGS["stride-asym-pad-dilation"], np.float32)
    assert L.default_conv_algo(fwd) == "im2col"


@pytest.mark.parametrize(
    "name, algo",
    [
        ("stride-asym-pad-dilation", "im2col"),
        ("depthwise", "simd"),
        ("1d-depthwise", "simd"),
        ("depthwise-multiplier", "direct"),  # strided
    ],
)
def test_conv_registered_default(rng, name, algo):
    cfg = CONV_CONFIGS[name]
    for node, arrays in zip(conv_nodes(cfg, np.float32), conv_arrays(rng, cfg, np.float32)):
        impl = check(node, arrays)
        assert L.default_conv_algo(node) == algo
        kernels = L.CONV_ALGOS[(type(node.op), algo)][0].dispatchers
        assert impl.dispatchers[: len(kernels)] == kernels


@pytest.mark.parametrize("algo", ["im2col", "direct", "simd"])
def test_conv_new_batch_and_image_size_do_not_recompile(rng, algo):
    cfg = CONV_CONFIGS["stride-asym-pad-dilation"] if algo != "simd" else SIMD_CONFIGS["wide-asym-pad"]
    nodes = conv_nodes(cfg, np.float32)
    impls = [L.conv_impl(n, algo) for n in nodes]
    for node, impl, arrays in zip(nodes, impls, conv_arrays(rng, cfg, np.float32, batch=1)):
        check(node, arrays, impl)
    before = [len(d.signatures) for i in impls for d in i.dispatchers]
    bigger = (cfg[0][:2] + (12, 10),) + cfg[1:]
    for node, impl, arrays in zip(nodes, impls, conv_arrays(rng, bigger, np.float32, batch=5)):
        check(node, arrays, impl)
    assert [len(d.signatures) for i in impls for d in i.dispatchers] == before


def test_conv_workspace_reused_across_batch_sizes(rng):
    """The im2col workspace lives in the factory's closure: larger, smaller, larger batches all stay exact."""
    cfg = CONV_CONFIGS["groups"]
    nodes = conv_nodes(cfg, np.float32)
    impls = [L.conv_impl(n, "im2col") for n in nodes]
    for batch in (5, 2, 7, 1):
        for node, impl, arrays in zip(nodes, impls, conv_arrays(rng, cfg, np.float32, batch=batch)):
            check(node, arrays, impl, serial=True)


def test_blas_behind_numba_runs_single_threaded():
    """The CPU kernels set the BLAS Numba calls to one thread once (compiler.codegen.cpu.blas): its spinning
    threads would fight the runtime's own."""
    from compiler.codegen.cpu.blas import configure_blas, openblas_thread_controls

    assert "1 thread" in configure_blas() or "no OpenBLAS" in configure_blas()
    controls = openblas_thread_controls()
    if not controls:
        pytest.skip("no OpenBLAS loaded here")
    assert [get() for get, _ in controls] == [1] * len(controls)


@pytest.mark.parametrize("path", ["blas-threads", "row-blocks"])
@pytest.mark.parametrize("left", ["C", "F"])
def test_large_gemm_on_all_threads_matches_one_gemm(rng, left, path, monkeypatch):
    """GEMMs of >= PARALLEL_MIN_MACS run on all of BLAS's threads for that call (its count goes back to one
    afterwards), or, where BLAS cannot be controlled, as row blocks on the runtime's threads (an F-contiguous left
    operand, a transposed view, is sliced as it is); either way the result equals one single-threaded BLAS call."""
    from compiler.codegen.cpu import blas
    from compiler.codegen.cpu.parallel import get_num_threads, set_num_threads

    monkeypatch.setattr(L, "PARALLEL_MIN_MACS", 1 << 20)
    if path == "row-blocks":
        monkeypatch.setattr(L, "run_with_blas_threads", lambda *args: False)
    saved = get_num_threads()
    set_num_threads(2)
    try:
        a_t, b_t = ph((None, 96), np.float64), ph((96, 160), np.float64)
        impl = L.matmul_factory(a_t @ b_t)
        a = randn(rng, (200, 96), np.float64)
        if left == "F":
            a = np.asfortranarray(a)
        b = randn(rng, (96, 160), np.float64)
        out = np.empty((200, 160))
        impl.run(a, b, out)
    finally:
        set_num_threads(saved)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    if path == "row-blocks":
        assert L._matmul_rows_range.signatures  # the split path ran
    assert [get() for get, _ in blas.openblas_thread_controls()] == [1] * len(blas.openblas_thread_controls())


def test_conv_public_api_same_padding(rng):
    """``conv2d(padding="same")`` with an even kernel pads asymmetrically; bias stays outside the op."""
    x, w = ph((None, 2, 6, 5), np.float64), ph((3, 2, 2, 4), np.float64)
    y = sd.conv2d(x, w, padding="same", dilation=(2, 1))
    assert y.op.padding == ((1, 1), (1, 2))
    check(y, [randn(rng, (2, 2, 6, 5), np.float64), randn(rng, (3, 2, 2, 4), np.float64)])


# ----------------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------------

# (x shape, kernel, stride, padding, dilation, ceil_mode)
POOL_CONFIGS = {
    "2x2": ((2, 3, 8, 6), (2, 2), (2, 2), (0, 0), (1, 1), False),
    "3x3-s2-p1-ceil": ((2, 3, 7, 8), (3, 3), (2, 2), (1, 1), (1, 1), True),
    "non-dividing": ((1, 2, 9, 7), (3, 2), (2, 3), (1, 0), (1, 1), False),
    "non-dividing-ceil": ((1, 2, 9, 7), (3, 2), (2, 3), (1, 1), (1, 1), True),
    "dilated": ((2, 2, 9, 9), (2, 3), (1, 2), (1, 1), (2, 1), False),
    "1d-ceil": ((2, 3, 10), (3,), (2,), (1,), (1,), True),
    # no padding or dilation, every window inside: the max-pool fast path (windows overlap in the second)
    "2x2-odd-fast": ((2, 3, 9, 7), (2, 2), (2, 2), (0, 0), (1, 1), False),
    "3x2-s1-fast": ((2, 2, 6, 7), (3, 2), (1, 1), (0, 0), (1, 1), False),
    "1d-fast": ((2, 3, 11), (3,), (3,), (0,), (1,), False),
    # no padding, but ceil_mode makes the last window stick out: the general path
    "2x2-ceil-partial": ((2, 3, 7, 7), (2, 2), (2, 2), (0, 0), (1, 1), True),
}


def pool_props(cfg):
    return cfg[1:]


def max_pool_nodes(cfg, dtype):
    x = ph((None, cfg[0][1]) + (None,) * len(cfg[1]), dtype)
    props = pool_props(cfg)
    g = ph(x.shape, dtype)
    h = ph(x.shape, dtype)
    return x, {
        "max": apply(MaxPool(*props), x),
        "indices": apply(MaxPoolIndices(*props), x),
        "gather": apply(MaxPoolGather(*props), h, x),
        "grad": apply(MaxPoolGrad(*props), g, x),
    }


def max_pool_arrays(rng, cfg, dtype, x):
    y = MaxPool(*pool_props(cfg)).perform(x)
    h, g = randn(rng, x.shape, dtype), randn(rng, y.shape, dtype)
    return {"max": [x], "indices": [x], "gather": [h, x], "grad": [g, x]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(POOL_CONFIGS))
def test_max_pool_family(rng, name, dtype):
    cfg = POOL_CONFIGS[name]
    _, nodes = max_pool_nodes(cfg, dtype)
    x = randn(rng, cfg[0], dtype)
    for kind, arrays in max_pool_arrays(rng, cfg, dtype, x).items():
        check(nodes[kind], arrays, serial=dtype is np.float32)


@pytest.mark.parametrize(
    "name",
    ["3x3-s2-p1-ceil", "dilated", "1d-ceil", "2x2", "2x2-odd-fast", "3x2-s1-fast", "1d-fast", "2x2-ceil-partial"],
)
def test_max_pool_ties_go_to_the_first_max(rng, name):
    """Few distinct values: many tied maxima; the gradient goes to the first in row-major window order."""
    cfg = POOL_CONFIGS[name]
    _, nodes = max_pool_nodes(cfg, np.float64)
    x = rng.integers(0, 3, size=cfg[0]).astype(np.float64)
    for kind, arrays in max_pool_arrays(rng, cfg, np.float64, x).items():
        check(nodes[kind], arrays)


@pytest.mark.parametrize("name", ["3x3-s2-p1-ceil", "2x2", "2x2-odd-fast", "3x2-s1-fast"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_nan_and_all_minus_inf(rng, name, dtype):
    """A NaN wins its windows (as ``np.argmax``); a window of -inf points into its first tap, padding included."""
    cfg = POOL_CONFIGS[name]
    _, nodes = max_pool_nodes(cfg, dtype)
    x = randn(rng, cfg[0], dtype)
    x[0, 0, 3, 4] = np.nan
    x[0, 0, 1, 1] = np.nan  # two NaNs, some windows hold both: the first wins
    x[0, 0, 1, 2] = np.nan
    x[0, 1, :3, :3] = -np.inf
    x[1, 0, 2:4, 2:4] = [[-0.0, 0.0], [0.0, -0.0]]  # signed zeros tie: the first is kept
    x[1, 0, 0, :4] = [5.0, np.inf, np.inf, 5.0]
    for kind in ("max", "indices", "gather", "grad"):
        arrays = max_pool_arrays(rng, cfg, dtype, x)[kind]
        ref = nodes[kind].op.perform(*arrays)
        impl = lookup(nodes[kind])(nodes[kind])
        for run in (impl.run, impl.serial):
            out = np.empty(ref.shape, ref.dtype)
            run(*arrays, out)
            if kind == "grad":  # overlapping windows add up in another order than the reference's bincount
                np.testing.assert_allclose(out, ref, rtol=RTOL[np.dtype(dtype)], atol=RTOL[np.dtype(dtype)])
            else:
                np.testing.assert_array_equal(out, ref)


# (x shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CONFIGS = {
    "2x2": ((2, 3, 8, 6), (2, 2), (2, 2), (0, 0), False, True, None),
    "pad-include": ((2, 2, 7, 8), (3, 3), (2, 2), (1, 1), False, True, None),
    "pad-exclude-ceil": ((2, 2, 7, 8), (3, 3), (2, 2), (1, 1), True, False, None),
    "pad-include-ceil": ((1, 2, 8, 9), (3, 2), (2, 3), (1, 1), True, True, None),
    "divisor-override": ((2, 2, 7, 7), (3, 3), (2, 1), (1, 0), True, False, 5),
    "1d": ((2, 3, 11), (4,), (3,), (2,), True, False, None),
}


def avg_nodes(cfg, dtype):
    xs, k, s, p, ceil, include, override = cfg
    props = (k, s, p, (1,) * len(k), ceil, include, override)
    x = ph((None, xs[1]) + (None,) * len(k), dtype)
    g = ph(x.shape, dtype)
    return apply(AvgPool(*props), x), apply(AvgPoolGrad(*props), g, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(AVG_CONFIGS))
def test_avg_pool(rng, name, dtype):
    cfg = AVG_CONFIGS[name]
    fwd, bwd = avg_nodes(cfg, dtype)
    x = randn(rng, cfg[0], dtype)
    check(fwd, [x], serial=dtype is np.float32)
    g = randn(rng, fwd.op.perform(x).shape, dtype)
    check(bwd, [g, x], serial=dtype is np.float32)


def test_small_inputs_run_serially(rng, monkeypatch):
    monkeypatch.setattr(L, "PARALLEL_MIN_SIZE", 1 << 15)
    x = ph((None, 3, 9, 9), np.float32)
    for node in (sd.max_pool2d(x, 2), sd.avg_pool2d(x, 2)):
        check(node, [randn(rng, (2, 3, 9, 9), np.float32)], serial=True)
    cfg = CONV_CONFIGS["plain"]
    for node, arrays in zip(conv_nodes(cfg, np.float32), conv_arrays(rng, cfg, np.float32)):
        check(node, arrays, serial=True)


def test_pool_public_api(rng):
    x = ph((None, 3, 9, 9), np.float32)
    y, idx = sd.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    a = sd.avg_pool2d(x, 2, padding=1, count_include_pad=False, divisor_override=3)
    xa = randn(rng, (2, 3, 9, 9), np.float32)
    for node in (y, idx, a):
        check(node, [xa])


def test_pool_new_batch_and_image_size_do_not_recompile(rng):
    cfg = POOL_CONFIGS["3x3-s2-p1-ceil"]
    _, nodes = max_pool_nodes(cfg, np.float32)
    fwd, bwd = avg_nodes(AVG_CONFIGS["pad-exclude-ceil"], np.float32)
    nodes = {**nodes, "avg": fwd, "avg_grad": bwd}
    impls = {k: lookup(n)(n) for k, n in nodes.items()}

    def run_all(shape):
        x = randn(rng, shape, np.float32)
        arrays = max_pool_arrays(rng, cfg, np.float32, x)
        arrays["avg"] = [x]
        arrays["avg_grad"] = [randn(rng, AvgPool(*bwd.op._props()).perform(x).shape, np.float32), x]
        for k, node in nodes.items():
            check(node, arrays[k], impls[k])

    run_all((1, 3, 7, 8))
    before = [len(d.signatures) for i in impls.values() for d in i.dispatchers]
    run_all((6, 3, 11, 5))
    assert [len(d.signatures) for i in impls.values() for d in i.dispatchers] == before


@pytest.mark.parametrize("groups,k", [(1, 3), (2, 3), (1, 1)])
def test_conv_forward_small_batch_splits_output_channels(rng, groups, k, monkeypatch):
    """A batch smaller than the thread count (batch-1 inference) splits each sample's GEMMs by output-channel
    blocks across the threads; the result equals the serial kernel's and the reference's."""
    from compiler.codegen.cpu.parallel import get_num_threads, set_num_threads

    monkeypatch.setattr(L, "PARALLEL_MIN_MACS", 1 << 21)
    saved = get_num_threads()
    set_num_threads(2)
    try:
        x_t, w_t = ph((None, 32, 48, 48), np.float64), ph((64, 32 // groups, k, k), np.float64)
        node = sd.conv2d(x_t, w_t, padding=k // 2, groups=groups)
        impl = L.conv_impl(node, "im2col")
        x, w = randn(rng, (1, 32, 48, 48), np.float64), randn(rng, (64, 32 // groups, k, k), np.float64)
        assert 64 * (32 // groups) * k * k * 48 * 48 >= L.PARALLEL_MIN_MACS
        ref = node.op.perform(x, w)
        out, out_serial = np.empty_like(ref), np.empty_like(ref)
        impl.run(x, w, out)
        impl.serial(x, w, out_serial)
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(out, out_serial)
        assert L._conv_fwd_rows_range.signatures  # the split path ran
    finally:
        set_num_threads(saved)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_every_layout_and_accumulate(rng, dtype):
    """compiler.codegen.cpu.gemm: C/F operands, row slices and transposes, beta 0 and 1, empty dims, refusal."""
    from compiler.codegen.cpu.gemm import gemm

    tol = {"rtol": RTOL[np.dtype(dtype)], "atol": RTOL[np.dtype(dtype)]}
    for la in "CF":
        for lb in "CF":
            for m, k, n in [(6, 25, 31), (1, 5, 3), (7, 1, 4), (5, 3, 1), (0, 3, 4), (3, 0, 4)]:
                a = np.asarray(randn(rng, (m, k), dtype), order=la)
                b = np.asarray(randn(rng, (k, n), dtype), order=lb)
                out = randn(rng, (m, n), dtype)
                before = out.copy()
                gemm(a, b, out, 1.0)
                np.testing.assert_allclose(out, before + a @ b, **tol)
                gemm(a, b, out, 0.0)
                np.testing.assert_allclose(out, a @ b, **tol)
    big, b = randn(rng, (12, 9), dtype), randn(rng, (8, 6), dtype)
    out = np.zeros((9, 6), dtype)
    gemm(big[2:10].T, b, out, 0.0)  # a transposed row slice: columns contiguous, leading dim 9
    np.testing.assert_allclose(out, big[2:10].T @ b, **tol)
    with pytest.raises(ValueError, match="contiguous"):
        gemm(big[:, ::2], randn(rng, (5, 6), dtype), np.zeros((12, 6), dtype), 0.0)
