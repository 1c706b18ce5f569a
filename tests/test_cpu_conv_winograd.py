"""Winograd F(2x2, 3x3) forward convolutions (compiler/codegen/cpu/conv_winograd.py): against a float64 reference
with every epilogue, both dtypes, parallel and serial, odd sizes, and where the compiler picks them."""

from __future__ import annotations

import numpy as np
import pytest

import symdl as sd
from compiler.codegen.cpu import library_linalg as L
from compiler.codegen.cpu.conv_winograd import _tile_size, _transform_weights, winograd_applies, winograd_conv_runners
from symdl.graph import apply
from symdl.ops.conv import Conv

# (x shape, O, padding ((top, bottom), (left, right))): tile rows longer and shorter than a vector, odd output
# sizes (half tiles), asymmetric and no padding, a 1x1 output, channel counts that do not fill a tile
CONFIGS = {
    "16-to-32": ((2, 16, 10, 10), 32, ((1, 1), (1, 1))),
    "odd-asym": ((3, 9, 7, 11), 11, ((2, 0), (1, 2))),
    "no-pad": ((2, 8, 5, 6), 8, ((0, 0), (0, 0))),
    "one-pixel": ((2, 8, 1, 1), 9, ((1, 1), (1, 1))),
    "wide-row": ((1, 8, 3, 41), 16, ((1, 1), (1, 1))),
    "one-column": ((2, 8, 5, 3), 8, ((0, 1), (0, 0))),
    "f4-odd-tiles": ((2, 8, 10, 11), 8, ((1, 1), (1, 1))),  # 4x4 tiles: outputs 10x11, 2-3 of 4 rows/columns
    "f4-pool-edge": ((1, 8, 18, 17), 9, ((0, 2), (1, 0))),
    # rows of 9 tiles (2x2): a vector of tiles spans three runs of plane positions, samples start mid-vector
    "three-runs": ((3, 8, 9, 17), 8, ((1, 1), (1, 1))),
    # rows of 8 tiles (4x4), samples of 3 tile rows: sample boundaries mid-vector
    "f4-short-samples": ((3, 8, 12, 32), 8, ((1, 1), (1, 1))),
    # the planes of more than one group of samples (each within _GROUP_BYTES), split across threads
    "groups": ((5, 16, 32, 32), 16, ((1, 1), (1, 1))),
}
RTOL = {np.float32: 2e-5, np.float64: 1e-12}  # of the largest |output|: F(4x4)'s float32 error is ~3e-6 here


def reference(x, w, padding, bias=None):
    """The convolution in float64 (the op's own NumPy definition), plus a per-channel bias."""
    y = Conv((1, 1), padding, (1, 1), 1).perform(x.astype(np.float64), w.astype(np.float64))
    return y if bias is None else y + bias.astype(np.float64).reshape(1, -1, 1, 1)


def pool2(y):
    """2x2 / stride-2 max pool, floor mode."""
    n, c, h, w = y.shape
    return y[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def close(out, ref, dtype):
    scale = max(1.0, float(np.abs(ref).max(initial=0)))
    np.testing.assert_allclose(out, ref, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def arrays(rng, xs, o, dtype):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((o, xs[1], 3, 3)).astype(dtype)
    return x, w, rng.standard_normal(o).astype(dtype)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_winograd_matches_reference_with_every_epilogue(rng, name, dtype, tile):
    """F(2x2, 3x3) and F(4x4, 3x3): plain, bias + ReLU + the boolean ReLU mask, and the fused 2x2 max pool;
    batch 1 and the config's; the parallel runner with no threshold (so batch 1 splits one sample's tiles) and
    its serial twin."""
    xs, o, padding = CONFIGS[name]
    top_left, bottom_right = (padding[0][0], padding[1][0]), (padding[0][1], padding[1][1])
    run, serial, _ = winograd_conv_runners(top_left, 0, tile=tile)
    run_pool, serial_pool, _ = winograd_conv_runners(top_left, 0, bottom_right, tile=tile)
    for batch in (xs[0], 1):
        x, w, b = arrays(rng, (batch, *xs[1:]), o, dtype)
        ref = reference(x, w, padding)
        for fn in (run, serial):
            out = np.full(ref.shape, 7, dtype)  # garbage: every element must be written
            fn(x, w, out)
            close(out, ref, dtype)
            out = np.full(ref.shape, 7, dtype)
            mask = np.zeros(ref.shape, np.bool_)
            fn(x, w, out, b, True, mask)
            biased = reference(x, w, padding, b)
            close(out, np.maximum(biased, 0), dtype)
            clear = np.abs(biased) > 1e-4 * np.abs(biased).max()  # the sign of a near-zero sum is rounding's
            np.testing.assert_array_equal(mask[clear], (biased > 0)[clear])
        if ref.shape[2] >= 2 and ref.shape[3] >= 2:
            want = np.maximum(pool2(reference(x, w, padding, b)), 0)
            for fn in (run_pool, serial_pool):
                out = np.full(want.shape, 7, dtype)
                fn(x, w, out, b, True)
                close(out, want, dtype)


def test_winograd_pool_propagates_nan(rng):
    """A NaN input makes the pooled outputs over it NaN (max_pool's rule: NaN wins) and no others. (Here, with
    2x2 tiles, the windows over it are whole tiles; in general a non-finite input spreads to the whole tiles
    whose patch holds it, as in any Winograd convolution.)"""
    x, w, b = arrays(rng, (1, 8, 8, 8), 8, np.float32)
    x[0, 3, 4, 4] = np.nan
    _, serial, _ = winograd_conv_runners((1, 1), 0, (1, 1), tile=2)
    out = np.zeros((1, 8, 4, 4), np.float32)
    serial(x, w, out, b, False)
    want = np.isnan(pool2(reference(x, w, ((1, 1), (1, 1)))))
    assert want[0, 0, 1:3, 1:3].all() and want.sum() == 4 * 8
    np.testing.assert_array_equal(np.isnan(out), want)


def test_winograd_runner_rejects_a_wrong_pool_shape(rng):
    x, w, b = arrays(rng, (1, 8, 8, 8), 8, np.float32)
    _, serial, _ = winograd_conv_runners((1, 1), 0, (1, 1))
    with pytest.raises(ValueError, match=r"conv\+max_pool"):
        serial(x, w, np.zeros((1, 8, 8, 8), np.float32))


def conv_node(x_shape, w_shape, stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1):
    x = sd.placeholder(x_shape, name="x")
    w = sd.placeholder(w_shape, name="w")
    return apply(Conv(stride, padding, dilation, groups), x, w)


def test_winograd_is_the_default_for_3x3_stride_1_with_enough_channels():
    assert L.default_conv_algo(conv_node((None, 16, None, None), (32, 16, 3, 3))) == "winograd"
    assert L.default_conv_algo(conv_node((None, 8, 10, 12), (8, 8, 3, 3))) == "winograd"
    # small images: the dropped border tiles weigh more than the saved multiplications
    assert L.default_conv_algo(conv_node((None, 8, 9, 9), (8, 8, 3, 3))) != "winograd"
    # too few channels for the transforms to pay, or too many (transformed weights per call, working set)
    assert L.default_conv_algo(conv_node((None, 3, 32, 32), (16, 3, 3, 3))) != "winograd"
    assert L.default_conv_algo(conv_node((None, 16, 32, 32), (4, 16, 3, 3))) != "winograd"
    assert L.default_conv_algo(conv_node((None, 256, 16, 16), (256, 256, 3, 3))) == "winograd"
    assert L.default_conv_algo(conv_node((None, 512, 14, 14), (512, 512, 3, 3))) != "winograd"
    assert L.default_conv_algo(conv_node((None, 64, 14, 14), (512, 64, 3, 3))) != "winograd"
    # not F(2x2, 3x3)
    assert L.default_conv_algo(conv_node((None, 16, 9, 9), (16, 16, 3, 3), stride=(2, 2))) != "winograd"
    assert L.default_conv_algo(conv_node((None, 16, 9, 9), (16, 16, 3, 3), dilation=(2, 2))) != "winograd"
    assert L.default_conv_algo(conv_node((None, 16, 9, 9), (16, 8, 3, 3), groups=2)) != "winograd"
    assert L.default_conv_algo(conv_node((None, 16, 9, 9), (16, 16, 5, 5))) != "winograd"
    assert winograd_applies((16, 16, 3, 3), (1, 1), (1, 1), 1)
    assert not winograd_applies((16, 16, 3), (1,), (1,), 1)


def test_winograd_algo_refuses_other_convolutions():
    node = conv_node((None, 16, 9, 9), (16, 16, 3, 3), stride=(2, 2))
    with pytest.raises(ValueError, match=r"winograd.*stride \(2, 2\)"):
        L.conv_impl(node, "winograd")


def test_winograd_library_kernel_matches_and_compiles_nothing_new_for_new_sizes(rng):
    node = conv_node((None, 8, None, None), (12, 8, 3, 3), padding=((1, 2), (0, 1)))
    impl = L.conv_impl(node, "winograd")
    before = None
    for batch, h, w_ in ((2, 9, 7), (5, 12, 10), (1, 3, 3)):
        x, w, _ = arrays(rng, (batch, 8, h, w_), 12, np.float32)
        ref = reference(x, w, ((1, 2), (0, 1)))
        for fn in (impl.run, impl.serial):
            out = np.full(ref.shape, 7, np.float32)
            fn(x, w, out)
            close(out, ref, np.float32)
        counts = [len(d.signatures) for d in impl.dispatchers]
        assert before is None or counts == before
        before = counts


def test_compiled_eval_net_runs_winograd_with_its_epilogue(rng):
    """conv-BN-ReLU-pool at inference compiles to one Winograd kernel with the bias, ReLU and pool in its
    store, and matches the reference executor."""
    x = sd.placeholder((None, 8, 12, 12), name="x")
    w = sd.parameter(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.3, name="w")
    g = sd.parameter(rng.uniform(0.5, 1.5, 16).astype(np.float32), name="g")
    beta = sd.parameter(rng.standard_normal(16).astype(np.float32) * 0.1, name="beta")
    mean = sd.parameter(rng.standard_normal(16).astype(np.float32) * 0.1, name="mean", trainable=False)
    var = sd.parameter(rng.uniform(0.5, 1.5, 16).astype(np.float32), name="var", trainable=False)
    y = sd.max_pool2d(sd.relu(sd.batch_norm(sd.conv2d(x, w, padding=1), mean, var, g, beta)), 2)
    f = sd.compile([x], [y], mode="eval", target="cpu", freeze_parameters=True)
    ref = sd.compile([x], [y], mode="eval", target="reference", freeze_parameters=True)
    data = rng.standard_normal((3, 8, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(f(data), ref(data), rtol=1e-4, atol=1e-5)
    conv_kernels = [ck for ck in f.lowered.compiled if "conv" in ck.kernel.name]
    assert [ck.kernel.name.split("_", 1)[1] for ck in conv_kernels] == ["conv+add+relu+max_pool"]
    assert conv_kernels[0].source is None  # no generated epilogue loop: all of it in the kernel's store
    names = {getattr(d, "__name__", "") for d in conv_kernels[0].dispatchers}
    assert "_winograd_range" in names


def test_winograd_with_no_input_channels_or_samples_gives_the_bias_alone():
    b = np.array([0.5, -1.0, 2.0], np.float32)
    run, _, _ = winograd_conv_runners((1, 1), 0)
    out = np.full((2, 3, 4, 5), 7, np.float32)
    mask = np.zeros(out.shape, np.bool_)
    run(np.zeros((2, 0, 4, 5), np.float32), np.zeros((3, 0, 3, 3), np.float32), out, b, True, mask)
    np.testing.assert_array_equal(out, np.broadcast_to(np.maximum(b, 0).reshape(1, 3, 1, 1), out.shape))
    np.testing.assert_array_equal(mask, np.broadcast_to((b > 0).reshape(1, 3, 1, 1), out.shape))
    empty = np.zeros((0, 3, 4, 5), np.float32)
    run(np.zeros((0, 8, 4, 5), np.float32), np.zeros((3, 8, 3, 3), np.float32), empty, b)  # nothing to do


def test_first_call_compiles_both_tile_sizes_so_no_image_size_compiles_later(rng):
    """The tile size follows the image size at run time and each is its own compiled specialisation: after the
    first call (compile's warm-up) neither a large image (F(4x4)) nor a small one (F(2x2)) compiles anything.
    A fresh kernel module would show it best; here the count of compiled signatures must hold steady."""
    from compiler.codegen.cpu.conv_winograd import _winograd_range

    run, _, _ = winograd_conv_runners((1, 1), 0)
    x, w, b = arrays(rng, (1, 8, 12, 12), 8, np.float32)
    run(x, w, np.empty((1, 8, 12, 12), np.float32), b, True)
    after_first = len(_winograd_range.signatures)
    assert after_first >= 2  # both tile sizes' specialisations exist
    for size in (30, 11):
        x, w, b = arrays(rng, (2, 8, size, size), 8, np.float32)
        out = np.empty((2, 8, size, size), np.float32)
        run(x, w, out, b, True)
        close(out, np.maximum(reference(x, w, ((1, 1), (1, 1)), b), 0), np.float32)
    assert len(_winograd_range.signatures) == after_first


def test_tile_size_follows_image_size_and_channels():
    """F(4x4) from 16x16 outputs with few channels, from 32x32 with many; F(2x2) below."""
    assert _tile_size(16, 40, 48) == 4 and _tile_size(15, 40, 48) == 2
    assert _tile_size(16, 16, 256) == 2 and _tile_size(32, 33, 256) == 4


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_transform_is_g_g_gt_per_filter_in_tile_order(rng, tile, dtype):
    """``ut[k, o // 8, c, o % 8] = (G g G^T).flat[k]`` for each filter ``g = w[o, c]``, zero past the last
    output channel (11 here: the second block half empty), against the textbook matrices."""
    g_mat = {
        2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
        4: np.array(
            [
                [1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1],
            ]
        ),
    }[tile]
    w = rng.standard_normal((11, 5, 3, 3)).astype(dtype)
    nk = (tile + 2) ** 2
    ut = np.full((nk, 2, 5, 8), np.nan, dtype)
    _transform_weights(w, ut, tile)
    want = np.einsum("aq,ocqs,bs->abco", g_mat, w.astype(np.float64), g_mat).reshape(nk, 5, 11)
    got = ut.transpose(0, 2, 1, 3).reshape(nk, 5, 16)
    np.testing.assert_allclose(
        got[:, :, :11], want, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-6 if dtype == np.float32 else 1e-13
    )
    assert (got[:, :, 11:] == 0).all()
