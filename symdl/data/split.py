"""Splitting data into training, validation and test sets, reproducibly.

- :func:`random_split` (PyTorch's): a dataset into :class:`~symdl.data.Subset` s of given lengths or fractions.
- :func:`train_val_test_split`: arrays into ``(train, val, test)`` tuples of arrays, optionally stratified by
  class labels; :func:`train_val_test_indices` gives the index arrays behind it.

Every split is a pure function of its ``seed`` (``np.random.Generator(np.random.PCG64(seed))``); ``seed=None``
draws one from :func:`symdl.ops.random.host_rng`, so ``symdl.manual_seed`` fixes it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from symdl.data.dataset import Subset
from symdl.ops.random import host_rng

__all__ = ["random_split", "train_val_test_indices", "train_val_test_split"]


def _rng(seed: int | None, what: str) -> np.random.Generator:
    if seed is None:
        seed = int(host_rng().integers(0, 2**64, dtype=np.uint64))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise TypeError(f"{what}: seed must be None or an int in [0, 2**64), got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


def _is_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))


def random_split(dataset: Any, lengths: Sequence[int | float], seed: int | None = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random :class:`~symdl.data.Subset` s (PyTorch's ``random_split``).

    ``lengths`` are either sample counts summing to ``len(dataset)`` or fractions summing to 1: fraction ``f``
    gives ``floor(f * len(dataset))`` samples and the remainder is dealt one by one to the subsets in turn
    (PyTorch's rule). The subsets cut ``np.random.Generator(np.random.PCG64(seed)).permutation(len(dataset))`` in
    order.
    """
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(f"random_split: dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
    lengths = list(lengths)
    if not lengths or not all(_is_number(v) for v in lengths):
        raise TypeError(f"random_split: lengths must be a non-empty sequence of numbers, got {lengths!r}")
    n = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        counts = []
        for i, frac in enumerate(lengths):
            if not 0 <= frac <= 1:
                raise ValueError(f"random_split: fraction at index {i} is not between 0 and 1: {frac}")
            counts.append(int(math.floor(n * frac)))
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        for i, c in enumerate(counts):
            if c == 0:
                warnings.warn(f"random_split: length of split at index {i} is 0", UserWarning, stacklevel=2)
    else:
        if not all(float(v).is_integer() and v >= 0 for v in lengths):
            raise ValueError(
                f"random_split: lengths must be non-negative integers summing to {n} or fractions summing to 1, "
                f"got {lengths}"
            )
        counts = [int(v) for v in lengths]
    if sum(counts) != n:
        raise ValueError(f"random_split: the lengths {counts} sum to {sum(counts)}, not to len(dataset) = {n}")
    order = _rng(seed, "random_split").permutation(n)
    bounds = np.cumsum([0, *counts])
    return [Subset(dataset, order[bounds[k] : bounds[k + 1]]) for k in range(len(counts))]


def _split_size(value: int | float, n: int, name: str) -> int:
    if not _is_number(value):
        raise TypeError(f"train_val_test_split: {name} must be a fraction or a count, got {value!r}")
    if isinstance(value, (float, np.floating)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"train_val_test_split: {name} as a fraction must lie in [0, 1), got {value}")
        return int(math.ceil(value * n))
    if not 0 <= value <= n:
        raise ValueError(f"train_val_test_split: {name} as a count must lie in [0, {n}], got {value}")
    return int(value)


def _allocate(k: int, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-class sizes summing to ``k``, each ``floor`` or ``ceil`` of ``k * counts / counts.sum()`` (largest
    remainders first, ties broken at random)."""
    total = int(counts.sum())
    if total == 0 or k == 0:
        return np.zeros_like(counts)
    ideal = k * counts / total
    base = np.floor(ideal).astype(np.int64)
    left = k - int(base.sum())
    order = np.lexsort((rng.random(len(counts)), -(ideal - base)))
    base[order[:left]] += 1
    return base


def train_val_test_indices(
    n: int,
    val: int | float = 0.15,
    test: int | float = 0.15,
    seed: int | None = None,
    stratify: Any = None,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The index arrays ``(train, val, test)`` (int64, disjoint, covering ``range(n)``) behind
    :func:`train_val_test_split`; see there for the arguments."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise TypeError(f"train_val_test_indices: n must be a non-negative int, got {n!r}")
    n = int(n)
    n_val, n_test = _split_size(val, n, "val"), _split_size(test, n, "test")
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(
            f"train_val_test_split: val={val!r} and test={test!r} leave no training samples out of {n} "
            f"({n_val} validation + {n_test} test)"
        )
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"train_val_test_split: shuffle must be True or False, got {shuffle!r}")
    if not shuffle:
        if stratify is not None:
            raise ValueError("train_val_test_split: stratify needs shuffle=True")
        idx = np.arange(n, dtype=np.int64)
        return idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :]
    rng = _rng(seed, "train_val_test_split")
    if stratify is None:
        perm = rng.permutation(n).astype(np.int64)
        return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    labels = np.asarray(stratify)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"train_val_test_split: stratify must be a 1-D array of {n} labels, got shape {labels.shape}")
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    members = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(int(inverse.max()) + 1)]
    counts = np.array([len(m) for m in members], dtype=np.int64)
    test_c = _allocate(n_test, counts, rng)
    val_c = _allocate(n_val, counts - test_c, rng)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for m, t, v in zip(members, test_c, val_c):
        parts[2].append(m[:t])
        parts[1].append(m[t : t + v])
        parts[0].append(m[t + v :])
    out = [rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts]
    return out[0], out[1], out[2]


def train_val_test_split(
    *arrays: Any,
    val: int | float = 0.15,
    test: int | float = 0.15,
    seed: int | None = None,
    stratify: Any = None,
    shuffle: bool = True,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Split arrays (indexed along their first axis) into training, validation and test sets.

    ``(x_tr, y_tr), (x_va, y_va), (x_te, y_te) = train_val_test_split(x, y, val=0.15, test=0.15, seed=0)``

    Args:
        arrays: arrays of the same length ``n`` (a clear error names each length otherwise).
        val, test: a fraction in ``[0, 1)`` (``ceil(fraction * n)`` samples, like scikit-learn's ``test_size``)
            or a count; the training set gets the rest (at least one sample).
        seed: the permutation's seed (``np.random.Generator(np.random.PCG64(seed))``); ``None`` draws one from
            :func:`symdl.ops.random.host_rng`.
        stratify: class labels (length ``n``): every class is split in the proportions of the whole, each class's
            count in a split being the floor or ceiling of its exact share (test first, then validation from the
            rest); the splits are shuffled.
        shuffle: ``False`` keeps the order: the first samples train, then validation, then test (no stratify).

    Returns ``(train, val, test)``, each a tuple with one new array per input array (fancy-indexed copies, dtypes
    kept).
    """
    if not arrays:
        raise ValueError("train_val_test_split needs at least one array")
    converted = [np.asarray(a) for a in arrays]
    for k, a in enumerate(converted):
        if a.ndim == 0:
            raise ValueError(f"train_val_test_split: array {k} is a scalar; every array needs a first (sample) axis")
    lengths = [len(a) for a in converted]
    if len(set(lengths)) > 1:
        detail = ", ".join(f"array {k} has {m}" for k, m in enumerate(lengths))
        raise ValueError(f"train_val_test_split: all arrays must have the same length, but {detail}")
    splits = train_val_test_indices(lengths[0], val=val, test=test, seed=seed, stratify=stratify, shuffle=shuffle)
    train, valid, tst = (tuple(a[idx] for a in converted) for idx in splits)
    return train, valid, tst
