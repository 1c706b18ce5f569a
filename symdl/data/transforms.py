"""Data augmentation on batches of images, with explicit random state.

A transform is a callable ``t(x, rng) -> new array``: ``x`` a batch ``(N, C, H, W)`` (flips and crops accept any
``(N, ..., H, W)``), ``rng`` an ``np.random.Generator``. Every sample gets its own random draw, vectorised over the
batch; the input is never modified. Given to a :class:`~symdl.data.DataLoader` (``transform=...``), ``rng`` is
``batch_rng(seed, epoch, batch)``, so augmentations are reproducible and resumable. The draws each transform makes
(their order and sizes) are documented, so results can be recomputed exactly.

Definitions follow torchvision's (``RandomHorizontalFlip``, ``RandomVerticalFlip``, ``RandomCrop``,
``ColorJitter``'s brightness and contrast), applied per sample instead of once per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["ColorJitter", "Compose", "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "Transform"]

_PAD_MODES = {"constant": "constant", "edge": "edge", "reflect": "reflect", "symmetric": "symmetric"}


def _check_rng(rng: Any, who: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{who}: rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


def _check_batch(x: Any, who: str, min_ndim: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim < min_ndim:
        layout = "(N, C, H, W)" if min_ndim == 4 else "(N, ..., H, W)"
        raise ValueError(f"{who}: expected a batch {layout}, got an array of shape {arr.shape}")
    return arr


def _check_p(p: Any, who: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{who}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


class Transform:
    """Base class of batch transforms: ``t(x, rng) -> new array`` (see the module docstring)."""

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transform batch ``x`` with random draws from ``rng``."""
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(x, rng)")


class Compose(Transform):
    """Apply transforms in order, all drawing from the same ``rng``: ``Compose([t1, t2])(x, rng) ==
    t2(t1(x, rng), rng)``. Any callable ``(x, rng) -> x`` fits, including the scalers of
    :mod:`symdl.data.preprocessing`."""

    def __init__(self, transforms: Sequence[Callable[[np.ndarray, np.random.Generator], np.ndarray]]) -> None:
        transforms = list(transforms)
        for k, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transform {k} is not callable: {t!r}")
        self.transforms = transforms

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Run every transform in turn."""
        _check_rng(rng, "Compose")
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class _RandomFlip(Transform):
    axis = -1

    def __init__(self, p: float = 0.5) -> None:
        self.p = _check_p(p, type(self).__name__)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Flip each sample with probability ``p``; draws ``rng.random(N)`` (sample ``k`` flips iff its draw
        ``< p``)."""
        who = type(self).__name__
        rng = _check_rng(rng, who)
        arr = _check_batch(x, who, 1 - self.axis)
        flip = rng.random(arr.shape[0]) < self.p
        out = arr.copy()
        out[flip] = np.flip(arr[flip], axis=self.axis)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(_RandomFlip):
    """Mirror each image left-right (the last axis) with probability ``p``, independently per sample.

    Draws ``rng.random(N)``; sample ``k`` is flipped iff ``draw[k] < p``."""

    axis = -1


class RandomVerticalFlip(_RandomFlip):
    """Mirror each image top-bottom (axis -2) with probability ``p``, independently per sample.

    Draws ``rng.random(N)``; sample ``k`` is flipped iff ``draw[k] < p``."""

    axis = -2


def _pair(value: Any, who: str, what: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) in (1, 2):
        vals = tuple(value) * (2 // len(value))
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
            return int(vals[0]), int(vals[1])
    raise TypeError(f"{who}: {what} must be an int or a (height, width) pair of ints, got {value!r}")


class RandomCrop(Transform):
    """Crop a random ``size`` window out of each (padded) image, at an independent offset per sample
    (torchvision's ``RandomCrop``).

    Args:
        size: ``(height, width)`` of the output, or one int for a square.
        padding: pixels added around each image first: an int (all sides), ``(left/right, top/bottom)``, or
            ``(left, top, right, bottom)``; ``None``: no padding.
        pad_if_needed: pad images smaller than ``size`` (torchvision's rule: by the missing amount on *both*
            sides of that axis).
        fill: the value of padded pixels when ``padding_mode == "constant"`` (default 0).
        padding_mode: ``"constant"``, ``"edge"``, ``"reflect"`` or ``"symmetric"`` (as in torchvision/NumPy).

    Works on ``(N, ..., H, W)`` batches. After padding to ``(H', W')``, draws ``top = rng.integers(0, H' - h + 1,
    size=N)`` then ``left = rng.integers(0, W' - w + 1, size=N)``; sample ``k`` becomes
    ``padded[k, ..., top[k]:top[k] + h, left[k]:left[k] + w]``.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        pad_if_needed: bool = False,
        fill: float = 0,
        padding_mode: str = "constant",
    ) -> None:
        self.size = _pair(size, "RandomCrop", "size")
        if min(self.size) <= 0:
            raise ValueError(f"RandomCrop: size must be positive, got {self.size}")
        if padding is None:
            pad = (0, 0, 0, 0)
        elif isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
            pad = (int(padding),) * 4
        elif isinstance(padding, (tuple, list)) and len(padding) in (2, 4):
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in padding):
                raise TypeError(f"RandomCrop: padding must contain ints, got {padding!r}")
            pad = tuple(int(v) for v in (padding * 2 if len(padding) == 2 else padding))
        else:
            raise TypeError(f"RandomCrop: padding must be None, an int, or a sequence of 2 or 4 ints, got {padding!r}")
        if min(pad) < 0:
            raise ValueError(f"RandomCrop: padding must be non-negative, got {padding!r}")
        self.padding = pad  # (left, top, right, bottom)
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"RandomCrop: padding_mode must be one of {sorted(_PAD_MODES)}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.pad_if_needed = bool(pad_if_needed)
        self.fill = fill

    def _pad(self, arr: np.ndarray, left: int, top: int, right: int, bottom: int) -> np.ndarray:
        if left == top == right == bottom == 0:
            return arr
        widths = [(0, 0)] * (arr.ndim - 2) + [(top, bottom), (left, right)]
        if self.padding_mode == "constant":
            return np.pad(arr, widths, mode="constant", constant_values=self.fill)
        return np.pad(arr, widths, mode=_PAD_MODES[self.padding_mode])

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Crop every sample at its own random offset (see the class docstring for the draws)."""
        rng = _check_rng(rng, "RandomCrop")
        arr = _check_batch(x, "RandomCrop", 3)
        th, tw = self.size
        arr = self._pad(arr, *self.padding)
        if self.pad_if_needed:
            h, w = arr.shape[-2:]
            dw, dh = max(tw - w, 0), max(th - h, 0)
            arr = self._pad(arr, dw, dh, dw, dh)
        h, w = arr.shape[-2:]
        if h < th or w < tw:
            raise ValueError(
                f"RandomCrop: required crop size {(th, tw)} is larger than the (padded) input image size {(h, w)}"
            )
        n = arr.shape[0]
        top = rng.integers(0, h - th + 1, size=n)
        left = rng.integers(0, w - tw + 1, size=n)
        windows = sliding_window_view(arr, (th, tw), axis=(-2, -1))  # (N, ..., h-th+1, w-tw+1, th, tw)
        return np.ascontiguousarray(windows[np.arange(n), ..., top, left, :, :])

    def __repr__(self) -> str:
        return (
            f"RandomCrop(size={self.size}, padding={self.padding}, pad_if_needed={self.pad_if_needed}, "
            f"fill={self.fill}, padding_mode={self.padding_mode!r})"
        )


def _factor_range(value: Any, name: str) -> tuple[float, float] | None:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"ColorJitter: if {name} is a single number, it must be non negative, got {value}")
        lo, hi = max(0.0, 1.0 - float(value)), 1.0 + float(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = (float(v) for v in value)
        if not 0.0 <= lo <= hi:
            raise ValueError(f"ColorJitter: {name} values should be between 0 and inf with min <= max, got {value}")
    else:
        raise TypeError(f"ColorJitter: {name} must be a number or a (min, max) pair, got {value!r}")
    return None if lo == hi == 1.0 else (lo, hi)


class ColorJitter(Transform):
    """Random brightness and contrast changes per image (torchvision's ``ColorJitter`` without saturation/hue).

    Args:
        brightness: ``b`` (factor drawn uniformly from ``[max(0, 1 - b), 1 + b]``) or ``(min, max)``;
            the image is multiplied by the factor.
        contrast: ``c`` (factor from ``[max(0, 1 - c), 1 + c]``) or ``(min, max)``; the image becomes
            ``f * x + (1 - f) * m`` with ``m`` the mean over the image of its grayscale
            (``0.2989 R + 0.587 G + 0.114 B`` for 3 channels, the channel itself for 1).
        clip: each step's result is clipped to this range, torchvision's ``[0, 1]`` for float images by default
            (apply it before normalising); ``None`` disables clipping.

    Batches are floating ``(N, C, H, W)``; contrast needs ``C`` in {1, 3}. Draws, in order: ``bf =
    rng.uniform(lo_b, hi_b, size=N)`` if brightness is on, ``cf = rng.uniform(lo_c, hi_c, size=N)`` if contrast is
    on, and, if both are, ``rng.random(N) < 0.5``: the samples whose contrast change comes first (like
    torchvision's random order). A factor range of exactly ``(1, 1)`` (e.g. ``brightness=0``) turns a step off.
    """

    def __init__(
        self,
        brightness: float | tuple[float, float] = 0,
        contrast: float | tuple[float, float] = 0,
        clip: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        self.brightness = _factor_range(brightness, "brightness")
        self.contrast = _factor_range(contrast, "contrast")
        if clip is not None:
            lo, hi = (float(v) for v in clip)
            if not lo < hi:
                raise ValueError(f"ColorJitter: clip must be (min, max) with min < max, got {clip!r}")
            clip = (lo, hi)
        self.clip = clip

    def _clip(self, v: np.ndarray) -> np.ndarray:
        return v if self.clip is None else np.clip(v, *self.clip)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Jitter every sample with its own factors (see the class docstring for the draws)."""
        rng = _check_rng(rng, "ColorJitter")
        arr = _check_batch(x, "ColorJitter", 4)
        if arr.ndim != 4:
            raise ValueError(f"ColorJitter: expected a batch (N, C, H, W), got an array of shape {arr.shape}")
        if arr.dtype.kind != "f":
            raise TypeError(f"ColorJitter: expected floating-point images, got {arr.dtype}")
        if self.contrast is not None and arr.shape[1] not in (1, 3):
            raise ValueError(f"ColorJitter: contrast needs 1 or 3 channels, got {arr.shape[1]} (shape {arr.shape})")
        n, dt = arr.shape[0], arr.dtype
        bf = rng.uniform(*self.brightness, size=n).astype(dt) if self.brightness is not None else None
        cf = rng.uniform(*self.contrast, size=n).astype(dt) if self.contrast is not None else None
        if bf is not None and cf is not None:
            contrast_first = rng.random(n) < 0.5
        else:
            contrast_first = np.full(n, cf is not None)
        out = arr.copy()

        def brightness(sel: np.ndarray) -> None:
            if bf is not None and sel.any():
                out[sel] = self._clip(out[sel] * bf[sel, None, None, None])

        def contrast(sel: np.ndarray) -> None:
            if cf is not None and sel.any():
                imgs = out[sel]
                if imgs.shape[1] == 3:
                    gray = dt.type(0.2989) * imgs[:, 0] + dt.type(0.587) * imgs[:, 1] + dt.type(0.114) * imgs[:, 2]
                else:
                    gray = imgs[:, 0]
                m = gray.mean(axis=(1, 2), dtype=np.float64).astype(dt)[:, None, None, None]
                f = cf[sel, None, None, None]
                out[sel] = self._clip(f * imgs + (dt.type(1) - f) * m)

        brightness(~contrast_first)
        contrast(np.ones(n, dtype=bool))
        brightness(contrast_first)
        return out

    def __repr__(self) -> str:
        return f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, clip={self.clip})"
