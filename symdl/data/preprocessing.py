"""Feature scaling fitted on training data: :class:`StandardScaler`, :class:`MinMaxScaler`, and per-channel
:class:`Normalize` for image batches.

Each has ``fit(x)`` (statistics from the training data only), ``transform(x)`` (any other data: validation, test,
new inputs), ``fit_transform``, ``inverse_transform``, and ``state_dict()`` / ``load_state_dict()`` of NumPy
arrays (to checkpoint or export the preprocessing with a model). Calling one, ``scaler(x, rng=None)``, is
``transform(x)``, so they compose with the augmentations of :mod:`symdl.data.transforms`.

Statistics are computed in float64. The output keeps a floating input's dtype (float32 stays float32); integer
inputs (e.g. ``uint8`` images) give float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MinMaxScaler", "Normalize", "StandardScaler"]


def _out_dtype(x: np.ndarray) -> np.dtype:
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)


def _as_data(x: Any, who: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{who}: expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{who}: expected an array with a sample axis, got a scalar")
    return arr


def _norm_axes(axis: int | Sequence[int], ndim: int, who: str) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise ValueError(f"{who}: axis {a!r} is out of range for {ndim}-D data")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{who}: repeated axis in {axis!r}")
    return tuple(sorted(out))


class _AxisScaler:
    """Shared fit/transform plumbing: statistics reduced over ``axis`` and kept with size-1 dims there."""

    _stat_names: tuple[str, ...] = ()

    def __init__(self, axis: int | Sequence[int]) -> None:
        if isinstance(axis, bool) or not (
            isinstance(axis, (int, np.integer))
            or (isinstance(axis, (tuple, list)) and all(isinstance(a, (int, np.integer)) for a in axis))
        ):
            raise TypeError(f"{type(self).__name__}: axis must be an int or a tuple of ints, got {axis!r}")
        self.axis = axis
        self._stats: dict[str, np.ndarray] | None = None

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load_state_dict`) has set the statistics."""
        return self._stats is not None

    def _require(self) -> dict[str, np.ndarray]:
        if self._stats is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(training_data) first")
        return self._stats

    def _check(self, x: np.ndarray, who: str) -> None:
        ref = next(iter(self._require().values()))
        if x.ndim != ref.ndim:
            raise ValueError(
                f"{type(self).__name__}.{who}: fitted on {ref.ndim}-D data, got an array of shape {x.shape}"
            )
        axes = _norm_axes(self.axis, ref.ndim, type(self).__name__)
        for d in range(x.ndim):
            if d not in axes and x.shape[d] != ref.shape[d]:
                want = tuple("*" if k in axes else n for k, n in enumerate(ref.shape))
                raise ValueError(
                    f"{type(self).__name__}.{who}: expected shape {want} (* = any), got {x.shape}: "
                    f"dimension {d} is {x.shape[d]}, fitted with {ref.shape[d]}"
                )

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the fitted statistics (float64 arrays shaped like the data with size 1 on ``axis``)."""
        return {k: v.copy() for k, v in self._require().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore statistics saved with :meth:`state_dict` (same ``axis``)."""
        missing = [k for k in self._stat_names if k not in state]
        if missing or set(state) - set(self._stat_names):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected keys {list(self._stat_names)}, got {sorted(state)}"
            )
        arrays = {k: np.array(state[k], dtype=np.float64) for k in self._stat_names}
        shapes = {v.shape for v in arrays.values()}
        if len(shapes) != 1:
            raise ValueError(f"{type(self).__name__}.load_state_dict: statistics have different shapes {shapes}")
        self._set(arrays)

    def _set(self, arrays: dict[str, np.ndarray]) -> None:
        self._stats = arrays

    def fit_transform(self, x: Any) -> np.ndarray:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)  # type: ignore[attr-defined]

    def __call__(self, x: Any, rng: np.random.Generator | None = None) -> np.ndarray:
        """``transform(x)`` (``rng`` is ignored: the signature of a loader transform)."""
        return self.transform(x)  # type: ignore[attr-defined]


class StandardScaler(_AxisScaler):
    """Standardise features: ``(x - mean) / std`` with the mean and the population standard deviation (ddof=0)
    of the training data (scikit-learn's ``StandardScaler``).

    Args:
        axis: the axes statistics are reduced over: ``0`` (default) gives one mean/std per feature (per element of
            a sample, e.g. per pixel of ``(N, C, H, W)`` images); ``(0, 2, 3)`` gives one per channel.
        with_mean: subtract the mean.
        with_std: divide by the standard deviation.

    Features that are constant in the training data (``max == min``) get ``std`` replaced by 1 and ``mean`` set
    to their exact value, so they transform to exactly 0, never NaN. Attributes after ``fit``: ``mean``, ``var``,
    ``scale`` (the divisor), float64, shaped like the data with size 1 on ``axis``.
    """

    _stat_names = ("mean", "var", "scale")

    def __init__(self, axis: int | Sequence[int] = 0, with_mean: bool = True, with_std: bool = True) -> None:
        super().__init__(axis)
        self.with_mean = bool(with_mean)
        self.with_std = bool(with_std)

    @property
    def mean(self) -> np.ndarray:
        """The per-feature mean of the training data."""
        return self._require()["mean"]

    @property
    def var(self) -> np.ndarray:
        """The per-feature population variance of the training data."""
        return self._require()["var"]

    @property
    def scale(self) -> np.ndarray:
        """The divisor: ``sqrt(var)``, with 1 for constant features."""
        return self._require()["scale"]

    def fit(self, x: Any) -> StandardScaler:
        """Compute the statistics of the training data ``x``; returns ``self``."""
        arr = _as_data(x, "StandardScaler.fit")
        axes = _norm_axes(self.axis, arr.ndim, "StandardScaler")
        if any(arr.shape[a] == 0 for a in axes):
            raise ValueError(f"StandardScaler.fit: no samples to fit on (shape {arr.shape})")
        data = arr.astype(np.float64, copy=False)
        lo, hi = data.min(axis=axes, keepdims=True), data.max(axis=axes, keepdims=True)
        constant = lo == hi
        mean = np.where(constant, lo, data.mean(axis=axes, keepdims=True))
        var = np.where(constant, 0.0, ((data - mean) ** 2).mean(axis=axes, keepdims=True))
        scale = np.where(constant, 1.0, np.sqrt(var))
        self._stats = {"mean": mean, "var": var, "scale": scale}
        return self

    def transform(self, x: Any) -> np.ndarray:
        """``(x - mean) / scale`` (each part only if enabled); a new array."""
        arr = _as_data(x, "StandardScaler.transform")
        self._check(arr, "transform")
        out = arr.astype(np.float64)
        if self.with_mean:
            out -= self.mean
        if self.with_std:
            out /= self.scale
        return out.astype(_out_dtype(arr), copy=False)

    def inverse_transform(self, x: Any) -> np.ndarray:
        """``x * scale + mean``: undo :meth:`transform`."""
        arr = _as_data(x, "StandardScaler.inverse_transform")
        self._check(arr, "inverse_transform")
        out = arr.astype(np.float64)
        if self.with_std:
            out *= self.scale
        if self.with_mean:
            out += self.mean
        return out.astype(_out_dtype(arr), copy=False)

    def __repr__(self) -> str:
        return f"StandardScaler(axis={self.axis!r}, with_mean={self.with_mean}, with_std={self.with_std})"


class MinMaxScaler(_AxisScaler):
    """Scale features to ``feature_range`` using the training data's minimum and maximum (scikit-learn's
    ``MinMaxScaler``): ``x * scale + min`` with ``scale = (hi - lo) / (data_max - data_min)`` and
    ``min = lo - data_min * scale``.

    Args:
        feature_range: ``(lo, hi)`` with ``lo < hi``.
        axis: the axes the minimum and maximum are taken over (default ``0``: per feature).
        clip: clip transformed values to ``feature_range`` (data outside the training range otherwise maps
            outside it).

    Constant features (``data_max == data_min``) get ``scale = hi - lo`` (a range of 1) and map to ``lo``.
    Attributes after ``fit``: ``data_min``, ``data_max``, ``scale``, ``min`` (float64, size 1 on ``axis``).
    """

    _stat_names = ("data_min", "data_max")

    def __init__(
        self, feature_range: tuple[float, float] = (0.0, 1.0), axis: int | Sequence[int] = 0, clip: bool = False
    ) -> None:
        super().__init__(axis)
        try:
            lo, hi = (float(v) for v in feature_range)
        except (TypeError, ValueError):
            raise TypeError(f"MinMaxScaler: feature_range must be (min, max), got {feature_range!r}") from None
        if not lo < hi:
            raise ValueError(f"MinMaxScaler: minimum of feature_range must be smaller than maximum, got {(lo, hi)}")
        self.feature_range = (lo, hi)
        self.clip = bool(clip)

    def _set(self, arrays: dict[str, np.ndarray]) -> None:
        lo, hi = self.feature_range
        data_range = arrays["data_max"] - arrays["data_min"]
        scale = (hi - lo) / np.where(data_range == 0, 1.0, data_range)
        self._stats = {**arrays}
        self._derived = {"scale": scale, "min": lo - arrays["data_min"] * scale}

    @property
    def data_min(self) -> np.ndarray:
        """The per-feature minimum of the training data."""
        return self._require()["data_min"]

    @property
    def data_max(self) -> np.ndarray:
        """The per-feature maximum of the training data."""
        return self._require()["data_max"]

    @property
    def scale(self) -> np.ndarray:
        """``(hi - lo) / (data_max - data_min)`` (a range of 1 for constant features)."""
        self._require()
        return self._derived["scale"]

    @property
    def min(self) -> np.ndarray:
        """``lo - data_min * scale``."""
        self._require()
        return self._derived["min"]

    def fit(self, x: Any) -> MinMaxScaler:
        """Compute the minimum and maximum of the training data ``x``; returns ``self``."""
        arr = _as_data(x, "MinMaxScaler.fit")
        axes = _norm_axes(self.axis, arr.ndim, "MinMaxScaler")
        if any(arr.shape[a] == 0 for a in axes):
            raise ValueError(f"MinMaxScaler.fit: no samples to fit on (shape {arr.shape})")
        data = arr.astype(np.float64, copy=False)
        self._set({"data_min": data.min(axis=axes, keepdims=True), "data_max": data.max(axis=axes, keepdims=True)})
        return self

    def transform(self, x: Any) -> np.ndarray:
        """``x * scale + min`` (clipped to ``feature_range`` when ``clip``); a new array."""
        arr = _as_data(x, "MinMaxScaler.transform")
        self._check(arr, "transform")
        out = arr.astype(np.float64) * self.scale + self.min
        if self.clip:
            np.clip(out, *self.feature_range, out=out)
        return out.astype(_out_dtype(arr), copy=False)

    def inverse_transform(self, x: Any) -> np.ndarray:
        """``(x - min) / scale``: undo :meth:`transform`."""
        arr = _as_data(x, "MinMaxScaler.inverse_transform")
        self._check(arr, "inverse_transform")
        return ((arr.astype(np.float64) - self.min) / self.scale).astype(_out_dtype(arr), copy=False)

    def __repr__(self) -> str:
        return f"MinMaxScaler(feature_range={self.feature_range}, axis={self.axis!r}, clip={self.clip})"


class Normalize:
    """Per-channel normalisation of ``(N, C, *spatial)`` batches: ``(x - mean[c]) / std[c]`` on channel axis 1
    (torchvision's ``Normalize``, computed in the data's floating dtype like it).

    Give ``mean`` and ``std`` (sequences of ``C`` numbers, or one number for every channel), or leave them
    ``None`` and call :meth:`fit` on training data to use its per-channel mean and population standard deviation
    (constant channels get a std of 1). A zero ``std`` is refused.
    """

    def __init__(self, mean: Sequence[float] | float | None = None, std: Sequence[float] | float | None = None) -> None:
        if (mean is None) != (std is None):
            raise ValueError("Normalize: give both mean and std, or neither (then call fit)")
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        if mean is not None:
            self._set(mean, std)

    def _set(self, mean: Any, std: Any) -> None:
        m = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        s = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if m.ndim != 1 or s.ndim != 1:
            raise ValueError(f"Normalize: mean and std must be numbers or 1-D sequences, got {m.shape}, {s.shape}")
        if len(m) != len(s) and 1 not in (len(m), len(s)):
            raise ValueError(f"Normalize: mean has {len(m)} channels but std has {len(s)}")
        if np.any(s == 0):
            raise ValueError(f"Normalize: std evaluated to zero, leading to division by zero (std={s.tolist()})")
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))):
            raise ValueError(f"Normalize: mean and std must be finite, got {m.tolist()}, {s.tolist()}")
        self._mean, self._std = np.broadcast_arrays(m, s)
        self._mean, self._std = self._mean.copy(), self._std.copy()

    @property
    def fitted(self) -> bool:
        """Whether mean and std are set (given or fitted)."""
        return self._mean is not None

    @property
    def mean(self) -> np.ndarray:
        """The per-channel means (float64, shape ``(C,)``)."""
        return self._require()[0]

    @property
    def std(self) -> np.ndarray:
        """The per-channel standard deviations (float64, shape ``(C,)``)."""
        return self._require()[1]

    def _require(self) -> tuple[np.ndarray, np.ndarray]:
        if self._mean is None or self._std is None:
            raise RuntimeError("Normalize has no mean/std: pass them to Normalize(mean, std) or call fit(x)")
        return self._mean, self._std

    def fit(self, x: Any) -> Normalize:
        """Set mean and std to the per-channel statistics of ``x`` (``(N, C, *spatial)``); returns ``self``."""
        arr = _as_data(x, "Normalize.fit")
        if arr.ndim < 2 or arr.size == 0:
            raise ValueError(f"Normalize.fit: expected a non-empty (N, C, ...) batch, got shape {arr.shape}")
        axes = tuple(a for a in range(arr.ndim) if a != 1)
        data = arr.astype(np.float64, copy=False)
        lo, hi = data.min(axis=axes), data.max(axis=axes)
        mean = np.where(lo == hi, lo, data.mean(axis=axes))
        std = np.where(lo == hi, 1.0, data.std(axis=axes))
        self._set(mean, std)
        return self

    def _broadcast(self, arr: np.ndarray, who: str) -> tuple[np.ndarray, np.ndarray, np.dtype]:
        mean, std = self._require()
        if arr.ndim < 2:
            raise ValueError(f"Normalize.{who}: expected an (N, C, ...) batch, got shape {arr.shape}")
        if len(mean) != 1 and arr.shape[1] != len(mean):
            raise ValueError(
                f"Normalize.{who}: the batch has {arr.shape[1]} channels (axis 1 of shape {arr.shape}) "
                f"but mean/std have {len(mean)}"
            )
        dt = _out_dtype(arr)
        shape = (1, len(mean)) + (1,) * (arr.ndim - 2)
        return mean.astype(dt).reshape(shape), std.astype(dt).reshape(shape), dt

    def transform(self, x: Any) -> np.ndarray:
        """``(x - mean[c]) / std[c]`` for every channel ``c`` of axis 1; a new array."""
        arr = _as_data(x, "Normalize.transform")
        mean, std, dt = self._broadcast(arr, "transform")
        return (arr.astype(dt, copy=False) - mean) / std

    def inverse_transform(self, x: Any) -> np.ndarray:
        """``x * std[c] + mean[c]``: undo :meth:`transform`."""
        arr = _as_data(x, "Normalize.inverse_transform")
        mean, std, dt = self._broadcast(arr, "inverse_transform")
        return arr.astype(dt, copy=False) * std + mean

    def fit_transform(self, x: Any) -> np.ndarray:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{"mean", "std"}``: copies of the per-channel statistics (float64)."""
        mean, std = self._require()
        return {"mean": mean.copy(), "std": std.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        if set(state) != {"mean", "std"}:
            raise ValueError(f"Normalize.load_state_dict: expected keys ['mean', 'std'], got {sorted(state)}")
        self._set(state["mean"], state["std"])

    def __call__(self, x: Any, rng: np.random.Generator | None = None) -> np.ndarray:
        """``transform(x)`` (``rng`` is ignored: the signature of a loader transform)."""
        return self.transform(x)

    def __repr__(self) -> str:
        if self._mean is None:
            return "Normalize(unfitted)"
        return f"Normalize(mean={self._mean.tolist()}, std={self._std.tolist()})"
