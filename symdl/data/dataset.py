"""Datasets: the :class:`Dataset` protocol, :class:`ArrayDataset` (in-memory arrays), :class:`Subset`, and
:func:`collate` (how samples are stacked into a batch).

A dataset is anything with ``__len__`` and ``__getitem__(i)`` returning one sample: a tuple of arrays/numbers
(``(image, label)``) or a single array/number. A :class:`~symdl.data.DataLoader` asks a dataset for a whole batch
at once through :meth:`Dataset.get_batch`; the default stacks the samples (:func:`collate`), and
:class:`ArrayDataset` overrides it with one vectorised fancy index ``a[indices]`` per array. Batches are NumPy
arrays whose dtypes are those of the samples (float32 images stay float32, int64 labels stay int64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ArrayDataset", "Dataset", "Subset", "collate", "fetch_batch"]


class Dataset:
    """Base class of map-style datasets (PyTorch's ``torch.utils.data.Dataset``).

    Subclasses implement ``__len__`` and ``__getitem__(i)`` (one sample: a tuple of arrays/numbers or a single
    array/number) and may override :meth:`get_batch` with a vectorised version.
    """

    def __len__(self) -> int:
        """The number of samples."""
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def __getitem__(self, index: int) -> Any:
        """Sample ``index`` (``0 <= index < len(self)``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def get_batch(self, indices: np.ndarray) -> Any:
        """The samples at ``indices`` (a 1-D integer array) stacked into a batch (see :func:`collate`)."""
        return collate([self[int(i)] for i in indices])


def _as_index_array(indices: Any, what: str) -> np.ndarray:
    arr = np.asarray(indices)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be a 1-D sequence of integers, got an array of shape {arr.shape} {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def collate(samples: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch (PyTorch's ``default_collate`` without the tensors).

    Samples that are tuples/lists of ``k`` fields give a tuple of ``k`` arrays (field ``j`` stacked along a new
    first axis); samples that are single arrays or numbers give one array. NumPy's dtypes are kept (Python ints
    become int64, Python floats float64). All samples must have the same structure and per-field shapes.
    """
    if len(samples) == 0:
        raise ValueError("collate: cannot build a batch from zero samples")
    first = samples[0]
    if isinstance(first, (tuple, list)):
        k = len(first)
        for n, s in enumerate(samples):
            if not isinstance(s, (tuple, list)) or len(s) != k:
                raise ValueError(
                    f"collate: sample 0 has {k} fields but sample {n} is {type(s).__name__}"
                    + (f" with {len(s)} fields" if isinstance(s, (tuple, list)) else "")
                )
        return tuple(_stack([s[j] for s in samples], f"field {j}") for j in range(k))
    if isinstance(first, dict):
        raise TypeError("collate: dict samples are not supported; return a tuple of arrays from __getitem__")
    return _stack(list(samples), "samples")


def _stack(values: list[Any], what: str) -> np.ndarray:
    arrays = [np.asarray(v) for v in values]
    shape = arrays[0].shape
    for n, a in enumerate(arrays):
        if a.shape != shape:
            raise ValueError(f"collate: {what} of sample 0 has shape {shape} but sample {n} has shape {a.shape}")
        if a.dtype == object:
            raise TypeError(f"collate: {what} of sample {n} is not numeric ({type(values[n]).__name__})")
    return np.stack(arrays)


def fetch_batch(dataset: Any, indices: np.ndarray) -> Any:
    """The batch of ``dataset`` at ``indices``: ``dataset.get_batch(indices)`` when the dataset has one (every
    :class:`Dataset`), else the stacked samples ``collate([dataset[i] for i in indices])``."""
    get_batch = getattr(dataset, "get_batch", None)
    if callable(get_batch):
        return get_batch(indices)
    return collate([dataset[int(i)] for i in indices])


class ArrayDataset(Dataset):
    """In-memory arrays indexed along their first axis (PyTorch's ``TensorDataset``).

    ``ArrayDataset(x, y)[i] == (x[i], y[i])``. All arrays must have the same length (first dimension). Arrays are
    kept as given (no copy; lists are converted with ``np.asarray``), and a batch is one fancy index per array,
    ``(x[indices], y[indices])``, which copies and keeps the dtypes.
    """

    def __init__(self, *arrays: Any) -> None:
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        converted = []
        for k, a in enumerate(arrays):
            arr = np.asarray(a)
            if arr.ndim == 0:
                raise ValueError(f"ArrayDataset: array {k} is a scalar; every array needs a first (sample) axis")
            if arr.dtype == object:
                raise TypeError(f"ArrayDataset: array {k} is not numeric (dtype object)")
            converted.append(arr)
        lengths = [len(a) for a in converted]
        if len(set(lengths)) > 1:
            detail = ", ".join(f"array {k} has {n}" for k, n in enumerate(lengths))
            raise ValueError(f"ArrayDataset: all arrays must have the same length (first dimension), but {detail}")
        self.arrays: tuple[np.ndarray, ...] = tuple(converted)

    def __len__(self) -> int:
        """The common first dimension of the arrays."""
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        """``(a[index] for each array)``."""
        return tuple(a[index] for a in self.arrays)

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(a[indices] for each array)``: one vectorised fancy index per array (new arrays, dtypes kept)."""
        idx = _as_index_array(indices, "ArrayDataset.get_batch: indices")
        return tuple(a[idx] for a in self.arrays)

    def __repr__(self) -> str:
        parts = ", ".join(f"{a.shape} {a.dtype}" for a in self.arrays)
        return f"ArrayDataset({parts})"


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order (PyTorch's ``Subset``).

    ``Subset(ds, idx)[i] == ds[idx[i]]``; batches are fetched from ``dataset`` in one call (vectorised for an
    :class:`ArrayDataset`). Indices must lie in ``[0, len(dataset))``.
    """

    def __init__(self, dataset: Any, indices: Sequence[int] | np.ndarray) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"Subset: dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        idx = _as_index_array(indices, "Subset: indices")
        n = len(dataset)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise IndexError(f"Subset: index {int(bad)} is out of range for a dataset of length {n}")
        self.dataset = dataset
        self.indices: np.ndarray = idx

    def __len__(self) -> int:
        """The number of indices."""
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        """``dataset[indices[index]]``."""
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices: np.ndarray) -> Any:
        """``fetch_batch(dataset, self.indices[indices])``: one batched call on the underlying dataset."""
        idx = _as_index_array(indices, "Subset.get_batch: indices")
        return fetch_batch(self.dataset, self.indices[idx])

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, {len(self.indices)} indices)"
