"""symdl.data.transforms: flips, random crops, brightness/contrast jitter and Compose, against per-sample NumPy
re-implementations that replay the documented random draws."""

from __future__ import annotations

import numpy as np
import pytest

from symdl import data


def _batch(n=6, c=3, h=5, w=7, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, c, h, w)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# flips
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,axis", [(data.RandomHorizontalFlip, -1), (data.RandomVerticalFlip, -2)])
def test_flip_follows_the_documented_draws(cls, axis):
    x = _batch(n=32)
    before = x.copy()
    out = cls(p=0.3)(x, np.random.default_rng(5))
    flip = np.random.default_rng(5).random(32) < 0.3
    assert 0 < flip.sum() < 32
    for k in range(32):
        want = np.flip(x[k], axis=axis) if flip[k] else x[k]
        np.testing.assert_array_equal(out[k], want)
    np.testing.assert_array_equal(x, before)  # the input is not modified
    assert out.dtype == x.dtype


def test_flip_indices_explicitly():
    x = np.arange(2 * 1 * 1 * 4, dtype=np.float32).reshape(2, 1, 1, 4)
    np.testing.assert_array_equal(
        data.RandomHorizontalFlip(p=1.0)(x, np.random.default_rng(0))[:, 0, 0], [[3, 2, 1, 0], [7, 6, 5, 4]]
    )
    np.testing.assert_array_equal(data.RandomHorizontalFlip(p=0.0)(x, np.random.default_rng(0)), x)
    labels = np.arange(6).reshape(2, 3)  # (N, W) works too; integer dtype kept
    np.testing.assert_array_equal(
        data.RandomHorizontalFlip(p=1)(labels, np.random.default_rng(0)), [[2, 1, 0], [5, 4, 3]]
    )


def test_flip_argument_errors():
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got 1.5"):
        data.RandomHorizontalFlip(p=1.5)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        data.RandomHorizontalFlip()(np.zeros((2, 3)), 0)
    with pytest.raises(ValueError, match=r"expected a batch \(N, \.\.\., H, W\), got an array of shape \(4,\)"):
        data.RandomVerticalFlip()(np.zeros(4), np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------------
# crops
# ----------------------------------------------------------------------------------------------------


def test_random_crop_with_padding_uses_per_sample_offsets():
    x = _batch(n=16, c=2, h=6, w=6)
    out = data.RandomCrop(6, padding=2)(x, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    top = rng.integers(0, 10 - 6 + 1, size=16)
    left = rng.integers(0, 10 - 6 + 1, size=16)
    padded = np.zeros((16, 2, 10, 10), np.float32)  # zero padding written out by hand
    padded[:, :, 2:8, 2:8] = x
    assert out.shape == (16, 2, 6, 6) and out.dtype == np.float32
    for k in range(16):
        np.testing.assert_array_equal(out[k], padded[k, :, top[k] : top[k] + 6, left[k] : left[k] + 6])
    assert len(set(zip(top.tolist(), left.tolist()))) > 1  # offsets differ between samples


def test_random_crop_known_offsets():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    rng = np.random.default_rng(0)
    crop = data.RandomCrop((2, 3))
    draws = np.random.default_rng(0)
    t = int(draws.integers(0, 3, size=1)[0])
    left = int(draws.integers(0, 2, size=1)[0])
    np.testing.assert_array_equal(crop(x, rng)[0, 0], x[0, 0, t : t + 2, left : left + 3])


def test_random_crop_padding_forms_and_modes():
    x = _batch(n=3, c=1, h=4, w=5, seed=1)
    for padding, widths in [((1, 2), ((2, 2), (1, 1))), ((1, 2, 3, 0), ((2, 0), (1, 3)))]:  # torchvision order
        for mode in ("constant", "edge", "reflect", "symmetric"):
            crop = data.RandomCrop((3, 4), padding=padding, padding_mode=mode, fill=0.5)
            out = crop(x, np.random.default_rng(7))
            kw = {"constant_values": 0.5} if mode == "constant" else {}
            padded = np.pad(x, ((0, 0), (0, 0), *widths), mode=mode, **kw)
            rng = np.random.default_rng(7)
            top = rng.integers(0, padded.shape[2] - 3 + 1, size=3)
            left = rng.integers(0, padded.shape[3] - 4 + 1, size=3)
            for k in range(3):
                np.testing.assert_array_equal(out[k], padded[k, :, top[k] : top[k] + 3, left[k] : left[k] + 4])


def test_random_crop_pad_if_needed_and_errors():
    x = _batch(n=2, c=1, h=3, w=3)
    out = data.RandomCrop(5, pad_if_needed=True)(x, np.random.default_rng(0))
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))  # torchvision: the missing 2 pixels on both sides
    rng = np.random.default_rng(0)
    top, left = rng.integers(0, 3, size=2), rng.integers(0, 3, size=2)
    assert out.shape == (2, 1, 5, 5)
    for k in range(2):
        np.testing.assert_array_equal(out[k], padded[k, :, top[k] : top[k] + 5, left[k] : left[k] + 5])
    with pytest.raises(
        ValueError, match=r"required crop size \(5, 5\) is larger than the \(padded\) input image size \(3, 3\)"
    ):
        data.RandomCrop(5)(x, np.random.default_rng(0))
    with pytest.raises(TypeError, match="padding must be None, an int, or a sequence of 2 or 4 ints"):
        data.RandomCrop(2, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        data.RandomCrop(2, padding_mode="wrap")
    with pytest.raises(ValueError, match="size must be positive"):
        data.RandomCrop(0)


# ----------------------------------------------------------------------------------------------------
# brightness / contrast
# ----------------------------------------------------------------------------------------------------


def _gray_mean(img):
    if img.shape[0] == 3:
        gray = np.float32(0.2989) * img[0] + np.float32(0.587) * img[1] + np.float32(0.114) * img[2]
    else:
        gray = img[0]
    return np.float32(gray.astype(np.float64).mean())


def _bright(img, f):
    return np.clip(img * f, 0, 1)


def _contrast(img, f):
    return np.clip(f * img + (np.float32(1) - f) * _gray_mean(img), 0, 1)


def test_brightness_formula():
    x = _batch(n=20)
    out = data.ColorJitter(brightness=0.5)(x, np.random.default_rng(2))
    bf = np.random.default_rng(2).uniform(0.5, 1.5, size=20).astype(np.float32)
    for k in range(20):
        np.testing.assert_array_equal(out[k], _bright(x[k], bf[k]))
    assert out.dtype == np.float32 and out.max() <= 1.0 and out.min() >= 0.0
    assert np.any(out == 1.0)  # factors above 1 saturate like torchvision's float clamp


@pytest.mark.parametrize("channels", [1, 3])
def test_contrast_formula(channels):
    x = _batch(n=10, c=channels)
    out = data.ColorJitter(contrast=(0.2, 1.8))(x, np.random.default_rng(4))
    cf = np.random.default_rng(4).uniform(0.2, 1.8, size=10).astype(np.float32)
    for k in range(10):
        np.testing.assert_allclose(out[k], _contrast(x[k], cf[k]), rtol=1e-6, atol=1e-7)


def test_brightness_and_contrast_in_random_order():
    x = _batch(n=40)
    jitter = data.ColorJitter(brightness=0.4, contrast=0.4, clip=None)
    out = jitter(x, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    bf = rng.uniform(0.6, 1.4, size=40).astype(np.float32)
    cf = rng.uniform(0.6, 1.4, size=40).astype(np.float32)
    contrast_first = rng.random(40) < 0.5
    assert 0 < contrast_first.sum() < 40
    for k in range(40):
        img = x[k]
        if contrast_first[k]:
            m = _gray_mean(img)
            want = (cf[k] * img + (1 - cf[k]) * m) * bf[k]
        else:
            b = img * bf[k]
            want = cf[k] * b + (1 - cf[k]) * _gray_mean(b)
        np.testing.assert_allclose(out[k], want, rtol=1e-6, atol=1e-6)
    assert out.max() > 1.0 or out.min() < 0.0  # clip=None does not clip


def test_contrast_matches_torch_blend():
    torch = pytest.importorskip("torch")
    x = _batch(n=4)
    out = data.ColorJitter(contrast=0.5)(x, np.random.default_rng(1))
    cf = np.random.default_rng(1).uniform(0.5, 1.5, size=4).astype(np.float32)
    for k in range(4):  # torchvision's adjust_contrast for float tensors, written with torch ops
        img = torch.from_numpy(x[k])
        gray = (0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]).unsqueeze(0)
        mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
        want = (float(cf[k]) * img + (1.0 - float(cf[k])) * mean).clamp(0, 1.0)
        np.testing.assert_allclose(out[k], want.numpy(), rtol=1e-6, atol=1e-6)


def test_jitter_ranges_and_errors():
    assert data.ColorJitter(brightness=2).brightness == (0.0, 3.0)
    assert data.ColorJitter(contrast=(0.5, 0.9)).contrast == (0.5, 0.9)
    x = _batch(n=3)
    off = data.ColorJitter()(x, np.random.default_rng(0))
    np.testing.assert_array_equal(off, x)
    assert off is not x
    with pytest.raises(ValueError, match="if brightness is a single number, it must be non negative"):
        data.ColorJitter(brightness=-0.1)
    with pytest.raises(ValueError, match="contrast values should be between 0 and inf"):
        data.ColorJitter(contrast=(1.2, 0.8))
    with pytest.raises(ValueError, match=r"contrast needs 1 or 3 channels, got 2 \(shape \(3, 2, 5, 7\)\)"):
        data.ColorJitter(contrast=0.3)(_batch(n=3, c=2), np.random.default_rng(0))
    with pytest.raises(TypeError, match="expected floating-point images, got uint8"):
        data.ColorJitter(brightness=0.3)(np.zeros((1, 1, 2, 2), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"expected a batch \(N, C, H, W\), got an array of shape \(1, 2, 2\)"):
        data.ColorJitter(brightness=0.3)(np.zeros((1, 2, 2), np.float32), np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------------
# Compose and the loader
# ----------------------------------------------------------------------------------------------------


def test_compose_runs_in_order_on_one_rng():
    x = _batch(n=8)
    flip, crop = data.RandomHorizontalFlip(), data.RandomCrop((4, 4), padding=1)
    norm = data.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    out = data.Compose([flip, crop, norm])(x, np.random.default_rng(6))
    rng = np.random.default_rng(6)
    want = norm.transform(crop(flip(x, rng), rng))
    np.testing.assert_array_equal(out, want)
    with pytest.raises(TypeError, match="transform 1 is not callable"):
        data.Compose([flip, 3])


def test_loader_transform_is_reproducible_and_uses_batch_rng():
    x = _batch(n=10, c=1, h=6, w=6)
    y = np.arange(10, dtype=np.int64)
    aug = data.Compose([data.RandomCrop(6, padding=1), data.RandomHorizontalFlip(), data.ColorJitter(0.3, 0.3)])
    loader = data.DataLoader(data.ArrayDataset(x, y), batch_size=4, shuffle=True, seed=17, transform=aug)
    for epoch in range(2):
        order = data.epoch_rng(17, epoch).permutation(10)
        for b, (xb, yb) in enumerate(loader):
            idx = order[4 * b : 4 * b + 4]
            np.testing.assert_array_equal(yb, y[idx])
            np.testing.assert_array_equal(xb, aug(x[idx], data.batch_rng(17, epoch, b)))
