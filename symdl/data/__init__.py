"""symdl.data: datasets, loaders, splitting, feature scaling and augmentation (pure NumPy; builds no graphs).

::

    import symdl
    from symdl import data

    symdl.manual_seed(0)  # fixes every split, shuffle order and augmentation below
    x, y = data.load_digits()  # (1797, 1, 8, 8) float32 in [0, 1], int64 labels
    train, val, test = data.train_val_test_split(x, y, val=0.1, test=0.2, stratify=y)
    norm = data.Normalize().fit(train[0])  # per-channel statistics of the training images only
    augment = data.Compose([data.RandomCrop(8, padding=1), data.RandomHorizontalFlip(), norm])
    loader = data.DataLoader(data.ArrayDataset(*train), batch_size=64, shuffle=True, transform=augment)
    for epoch in range(10):
        for xb, yb in loader:  # each iter() is the next epoch; a background thread prefetches
            ...
    checkpoint = {"loader": loader.state_dict()}  # {"seed", "epoch", "batch"}: resumes the same batches

- :mod:`~symdl.data.dataset`: :class:`Dataset`, :class:`ArrayDataset`, :class:`Subset`, :func:`collate`.
- :mod:`~symdl.data.loader`: :class:`DataLoader`, :func:`epoch_rng`, :func:`batch_rng`.
- :mod:`~symdl.data.split`: :func:`random_split`, :func:`train_val_test_split`, :func:`train_val_test_indices`.
- :mod:`~symdl.data.preprocessing`: :class:`StandardScaler`, :class:`MinMaxScaler`, :class:`Normalize`.
- :mod:`~symdl.data.transforms`: :class:`Compose`, :class:`RandomHorizontalFlip`, :class:`RandomVerticalFlip`,
  :class:`RandomCrop`, :class:`ColorJitter`.
- :mod:`~symdl.data.datasets`: :func:`load_digits`, :func:`load_iris`, :func:`load_breast_cancer`,
  :func:`load_wine` (scikit-learn's offline copies).
"""

from symdl.data.dataset import ArrayDataset, Dataset, Subset, collate, fetch_batch
from symdl.data.datasets import LabeledData, load_breast_cancer, load_digits, load_iris, load_wine
from symdl.data.loader import DataLoader, batch_rng, epoch_rng
from symdl.data.preprocessing import MinMaxScaler, Normalize, StandardScaler
from symdl.data.split import random_split, train_val_test_indices, train_val_test_split
from symdl.data.transforms import (
    ColorJitter,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomVerticalFlip,
    Transform,
)

__all__ = [
    "ArrayDataset",
    "ColorJitter",
    "Compose",
    "DataLoader",
    "Dataset",
    "LabeledData",
    "MinMaxScaler",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "StandardScaler",
    "Subset",
    "Transform",
    "batch_rng",
    "collate",
    "epoch_rng",
    "fetch_batch",
    "load_breast_cancer",
    "load_digits",
    "load_iris",
    "load_wine",
    "random_split",
    "train_val_test_indices",
    "train_val_test_split",
]
