"""Small real datasets that ship offline with scikit-learn, as float32 features and int64 labels.

- :func:`load_digits`: 8x8 handwritten digits, ``(1797, 1, 8, 8)`` in ``[0, 1]``, 10 classes;
- :func:`load_iris`: Fisher's iris measurements (cm), ``(150, 4)``, 3 classes;
- :func:`load_breast_cancer`: Wisconsin diagnostic breast cancer, ``(569, 30)``, 2 classes;
- :func:`load_wine`: chemical analysis of Italian wines, ``(178, 13)``, 3 classes.

Each returns a :class:`LabeledData` that unpacks as ``x, y = load_iris()``. Features are returned as stored
(not standardised: fit a :class:`~symdl.data.StandardScaler` on the training split). scikit-learn is an optional
dependency (``pip install scikit-learn``, or the ``examples`` / ``dev`` extras); it is imported on first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from symdl.data.dataset import ArrayDataset

__all__ = ["LabeledData", "load_breast_cancer", "load_digits", "load_iris", "load_wine"]


@dataclass(frozen=True, repr=False)
class LabeledData:
    """Features and labels of a real dataset, with their names.

    Unpacks as ``data, target = load_xxx()``.
    """

    data: np.ndarray
    """The features (float32), one sample per row (first axis)."""
    target: np.ndarray
    """The class labels (int64), in ``range(len(classes))``."""
    classes: tuple[str, ...]
    """The class names: ``classes[k]`` names label ``k``."""
    feature_names: tuple[str, ...]
    """One name per feature (per pixel for digits)."""
    name: str
    """The dataset's name."""

    def __iter__(self) -> Iterator[np.ndarray]:
        """``iter((data, target))``: lets ``x, y = load_iris()`` unpack."""
        return iter((self.data, self.target))

    @property
    def num_classes(self) -> int:
        """``len(classes)``."""
        return len(self.classes)

    def dataset(self) -> ArrayDataset:
        """``ArrayDataset(data, target)`` (no copy)."""
        return ArrayDataset(self.data, self.target)

    def __repr__(self) -> str:
        return (
            f"LabeledData({self.name!r}: data {self.data.shape} {self.data.dtype}, target {self.target.shape} "
            f"{self.target.dtype}, {self.num_classes} classes)"
        )


def _sklearn_datasets(who: str) -> ModuleType:
    try:
        import sklearn.datasets as datasets
    except ImportError as e:
        raise ImportError(
            f"symdl.data.{who} needs scikit-learn, which ships this dataset offline: pip install scikit-learn "
            "(or install symdl with its 'examples' extra: pip install 'symdl[examples]')"
        ) from e
    return datasets


def _bundle(raw: Any, name: str, data: np.ndarray) -> LabeledData:
    target = np.ascontiguousarray(raw.target, dtype=np.int64)
    classes = tuple(str(c) for c in raw.target_names)
    features = tuple(str(f) for f in getattr(raw, "feature_names", ()))
    return LabeledData(np.ascontiguousarray(data), target, classes, features, name)


def load_digits(scale: bool = True, flatten: bool = False) -> LabeledData:
    """The 1,797 8x8 handwritten digits of scikit-learn (UCI optical recognition), labels 0-9.

    ``data`` is float32 of shape ``(1797, 1, 8, 8)`` (one-channel images), or ``(1797, 64)`` with
    ``flatten=True``; pixel values are grey levels 0-16 divided by 16 (in ``[0, 1]``), or the raw ``0..16`` with
    ``scale=False``. ``target`` is int64, ``classes`` are ``"0"`` .. ``"9"``.
    """
    raw = _sklearn_datasets("load_digits").load_digits()
    data = np.asarray(raw.data, dtype=np.float64)
    if scale:
        data = data / 16.0
    data = data.astype(np.float32)
    if not flatten:
        data = data.reshape(-1, 1, 8, 8)
    return _bundle(raw, "digits", data)


def load_iris() -> LabeledData:
    """Fisher's iris: 150 flowers, 4 measurements in cm (float32 ``(150, 4)``), 3 species (50 each)."""
    raw = _sklearn_datasets("load_iris").load_iris()
    return _bundle(raw, "iris", np.asarray(raw.data, dtype=np.float32))


def load_breast_cancer() -> LabeledData:
    """Wisconsin diagnostic breast cancer: 569 tumours, 30 features (float32 ``(569, 30)``), classes
    ``("malignant", "benign")`` (212 and 357)."""
    raw = _sklearn_datasets("load_breast_cancer").load_breast_cancer()
    return _bundle(raw, "breast_cancer", np.asarray(raw.data, dtype=np.float32))


def load_wine() -> LabeledData:
    """UCI wine recognition: 178 wines, 13 chemical features (float32 ``(178, 13)``), 3 cultivars
    (59, 71, 48)."""
    raw = _sklearn_datasets("load_wine").load_wine()
    return _bundle(raw, "wine", np.asarray(raw.data, dtype=np.float32))
