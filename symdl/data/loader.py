"""The :class:`DataLoader`: batches of a dataset, reproducible shuffling and augmentation, a prefetch thread.

Reproducibility
    Every random draw of a loader is a pure function of ``(seed, epoch, batch index)``, never of hidden global
    state, so a run resumed from a checkpoint sees exactly the batches of the uninterrupted run:

    - the order of epoch ``e`` is ``epoch_rng(seed, e).permutation(len(dataset))`` (when ``shuffle=True``);
    - the ``transform`` of batch ``b`` of epoch ``e`` gets ``batch_rng(seed, e, b)`` as its ``rng``.

    ``seed=None`` draws the seed from :func:`symdl.ops.random.host_rng` when the loader is built, so
    ``symdl.manual_seed(s)`` before building the loaders fixes every order and augmentation of the run.

Epochs and resuming
    Each ``iter(loader)`` runs the next epoch (0, 1, 2, ...). ``loader.state_dict()`` is
    ``{"seed": int, "epoch": int, "batch": int}``: the epoch in progress and the next batch to deliver while a
    ``for`` loop over the loader is running (a checkpoint taken inside the loop), else the next epoch to start
    and ``batch == 0``. ``load_state_dict`` restores it: the next ``iter()`` continues from there.
"""

from __future__ import annotations

import math
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from symdl.data.dataset import fetch_batch
from symdl.ops.random import host_rng

__all__ = ["DataLoader", "batch_rng", "epoch_rng"]

_MASK32 = 0xFFFFFFFF
_SHUFFLE_TAG = 0x53485546  # "SHUF": domain separation between the shuffle and augmentation streams
_AUGMENT_TAG = 0x41554731  # "AUG1"
_POLL_S = 0.05  # how often a blocked producer/consumer checks whether the other side went away


def _check_uint64(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if not 0 <= value < 2**64:
        raise ValueError(f"{what} must lie in [0, 2**64), got {value}")
    return value


def _words(*values: int) -> list[int]:
    """Each value as two 32-bit words (low, high): a fixed-length, collision-free SeedSequence entropy."""
    out: list[int] = []
    for v in values:
        out += [v & _MASK32, (v >> 32) & _MASK32]
    return out


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator that shuffles epoch ``epoch`` of a loader seeded with ``seed``:
    ``Generator(PCG64(SeedSequence([seed_lo, seed_hi, epoch_lo, epoch_hi, 0x53485546])))`` (32-bit words)."""
    seed, epoch = _check_uint64(seed, "seed"), _check_uint64(epoch, "epoch")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([*_words(seed, epoch), _SHUFFLE_TAG])))


def batch_rng(seed: int, epoch: int, batch: int) -> np.random.Generator:
    """The generator given to the ``transform`` of batch ``batch`` of epoch ``epoch`` of a loader seeded with
    ``seed``: ``Generator(PCG64(SeedSequence([seed_lo, seed_hi, epoch_lo, epoch_hi, batch_lo, batch_hi,
    0x41554731])))`` (32-bit words); independent of the shuffle stream and of every other batch."""
    seed, epoch, batch = _check_uint64(seed, "seed"), _check_uint64(epoch, "epoch"), _check_uint64(batch, "batch")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([*_words(seed, epoch, batch), _AUGMENT_TAG])))


class DataLoader:
    """Iterate over a dataset in batches (PyTorch's ``DataLoader`` for map-style datasets).

    Args:
        dataset: anything with ``__len__`` and ``__getitem__`` (e.g. :class:`~symdl.data.ArrayDataset`,
            :class:`~symdl.data.Subset`); batches are fetched with :func:`~symdl.data.fetch_batch` (one fancy index
            per array for an ``ArrayDataset``).
        batch_size: samples per batch (> 0). The last batch is smaller when ``len(dataset)`` is not a multiple
            of it, unless ``drop_last``.
        shuffle: a new random order every epoch (``epoch_rng(seed, epoch)``); ``False``: the dataset's order.
        drop_last: drop the last, incomplete batch.
        seed: the seed of every order and augmentation draw (an int in ``[0, 2**64)``); ``None`` draws one from
            :func:`symdl.ops.random.host_rng` now (so ``symdl.manual_seed`` governs it).
        transform: ``transform(x, rng) -> x`` applied to the first array of every batch (the inputs; the other
            arrays, e.g. labels, pass through) with ``rng = batch_rng(seed, epoch, batch)``; e.g. a
            :class:`~symdl.data.Compose` of augmentations. Runs in the prefetch thread.
        prefetch: batches prepared ahead by a background (daemon) thread, in a queue of this size; ``0`` loads
            each batch in the caller's thread. The batches are the same either way.

    Batches are tuples of NumPy arrays (one per field of a sample) with the dataset's dtypes; a dataset whose
    samples are single arrays gives single arrays. ``len(loader)`` is the number of batches per epoch. Each
    ``iter(loader)`` starts the next epoch (see the module docstring for resuming with :meth:`state_dict`).
    An exception raised while loading a batch (in the dataset or the transform) is re-raised by the ``for``
    loop with its original type and traceback. Leaving the loop early (``break``) stops the prefetch thread.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        prefetch: int = 2,
    ) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"DataLoader: {name} must be True or False, got {type(flag).__name__} {flag!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable(x, rng) or None, got {type(transform).__name__}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be an integer >= 0, got {prefetch!r}")
        if seed is None:
            seed = int(host_rng().integers(0, 2**64, dtype=np.uint64))
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.prefetch = int(prefetch)
        self._seed = _check_uint64(seed, "DataLoader: seed")
        self._epoch = 0  # the epoch the next iter() starts
        self._start = 0  # the batch the next iter() starts at (set by load_state_dict)
        self._current: weakref.ref[_EpochIterator] | None = None

    # -- sizes -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch: ``ceil(len(dataset) / batch_size)``, or ``floor`` with ``drop_last``."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def seed(self) -> int:
        """The seed of every order and augmentation draw."""
        return self._seed

    @property
    def epoch(self) -> int:
        """The epoch in progress (while a loop over the loader runs) or the next one to start."""
        return self.state_dict()["epoch"]

    # -- state -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch", "batch"}`` (plain ints): where the stream of batches is.

        Inside a running ``for`` loop: the current epoch and the number of batches delivered so far; otherwise
        (no loop running, or the last one finished or was left) the next epoch to start and ``batch = 0``. A
        loader given this state by :meth:`load_state_dict` delivers exactly the batches this one would deliver
        next."""
        it = self._current() if self._current is not None else None
        if it is not None and not it.done:
            if it.position < it.num_batches:
                return {"seed": self._seed, "epoch": it.epoch, "batch": it.position}
            return {"seed": self._seed, "epoch": it.epoch + 1, "batch": 0}
        return {"seed": self._seed, "epoch": self._epoch, "batch": self._start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: the next ``iter()`` runs epoch ``state["epoch"]`` from batch
        ``state.get("batch", 0)``, with seed ``state["seed"]``."""
        if not isinstance(state, dict) or "seed" not in state or "epoch" not in state:
            raise ValueError(f"DataLoader.load_state_dict: expected a dict with 'seed' and 'epoch', got {state!r}")
        unknown = set(state) - {"seed", "epoch", "batch"}
        if unknown:
            raise ValueError(f"DataLoader.load_state_dict: unknown keys {sorted(unknown)}")
        seed = _check_uint64(state["seed"], "DataLoader.load_state_dict: seed")
        epoch = _check_uint64(state["epoch"], "DataLoader.load_state_dict: epoch")
        batch = _check_uint64(state.get("batch", 0), "DataLoader.load_state_dict: batch")
        self._seed, self._epoch, self._start = seed, epoch, batch
        self._current = None

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` run epoch ``epoch`` from its first batch (PyTorch's ``sampler.set_epoch``)."""
        self._epoch = _check_uint64(epoch, "DataLoader.set_epoch: epoch")
        self._start = 0
        self._current = None

    # -- iteration ---------------------------------------------------------------------------------------

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The sample indices of epoch ``epoch`` in delivery order (before ``drop_last``), as int64."""
        n = len(self.dataset)
        if self.shuffle:
            return epoch_rng(self._seed, epoch).permutation(n).astype(np.int64, copy=False)
        return np.arange(n, dtype=np.int64)

    def __iter__(self) -> _EpochIterator:
        """Start the next epoch."""
        epoch, start = self._epoch, self._start
        self._epoch, self._start = epoch + 1, 0
        it = _EpochIterator(self, epoch, start)
        self._current = weakref.ref(it)
        return it

    def _load(self, order: np.ndarray, epoch: int, b: int) -> Any:
        """Batch ``b`` of the epoch whose order is ``order``: fetch, then transform."""
        idx = order[b * self.batch_size : (b + 1) * self.batch_size]
        batch = fetch_batch(self.dataset, idx)
        if self.transform is None:
            return batch
        rng = batch_rng(self._seed, epoch, b)
        if isinstance(batch, tuple):
            return (self.transform(batch[0], rng), *batch[1:])
        return self.transform(batch, rng)

    def __repr__(self) -> str:
        return (
            f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, seed={self._seed}, prefetch={self.prefetch}, epoch={self.epoch})"
        )


_END = ("end", None)


class _EpochIterator:
    """One epoch of a :class:`DataLoader` (what ``iter(loader)`` returns)."""

    def __init__(self, loader: DataLoader, epoch: int, start: int) -> None:
        self._stop: threading.Event | None = None
        self.loader = loader
        self.epoch = epoch
        self.num_batches = len(loader)
        self.position = min(start, self.num_batches)  # the next batch to deliver
        self.done = False
        self._order = loader.epoch_order(epoch)
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if loader.prefetch > 0 and self.position < self.num_batches:
            self._queue = queue.Queue(maxsize=loader.prefetch)
            self._stop = threading.Event()
            # the thread must not reference this iterator, or leaving a loop early would never free (and stop) it
            self._thread = threading.Thread(
                target=_produce,
                args=(loader, self._order, epoch, self.position, self.num_batches, self._queue, self._stop),
                name=f"symdl-DataLoader-prefetch-epoch{epoch}",
                daemon=True,
            )
            self._thread.start()

    def __iter__(self) -> _EpochIterator:
        return self

    def __next__(self) -> Any:
        if self.done or self.position >= self.num_batches:
            self.close()
            raise StopIteration
        if self._queue is None:
            try:
                batch = self.loader._load(self._order, self.epoch, self.position)
            except BaseException:
                self.close()
                raise
        else:
            kind, payload = self._get()
            if kind == "error":
                self.close()
                raise payload
            if kind != "batch":  # the producer ended early: cannot happen unless it was stopped
                self.close()
                raise RuntimeError("DataLoader: the prefetch thread stopped before the end of the epoch")
            batch = payload
        self.position += 1
        return batch

    def _get(self) -> tuple[str, Any]:
        assert self._queue is not None and self._thread is not None
        while True:
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive():
                    try:
                        return self._queue.get_nowait()
                    except queue.Empty:
                        raise RuntimeError("DataLoader: the prefetch thread died without reporting") from None

    def close(self) -> None:
        """End the epoch early: stop the prefetch thread (it exits within a few milliseconds of its current
        batch) and drop its queue."""
        self.done = True
        if self._stop is not None:
            self._stop.set()
        self._queue = None

    def __del__(self) -> None:
        if self._stop is not None:
            self._stop.set()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer went away; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _produce(
    loader: DataLoader,
    order: np.ndarray,
    epoch: int,
    start: int,
    stop_at: int,
    q: queue.Queue,
    stop: threading.Event,
) -> None:
    """The prefetch thread: load batches ``start .. stop_at - 1`` into ``q``; an exception is handed over (with
    its traceback) instead of a batch, and ends the thread."""
    for b in range(start, stop_at):
        if stop.is_set():
            return
        try:
            batch = loader._load(order, epoch, b)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            if hasattr(e, "add_note"):
                e.add_note(f"(raised in the DataLoader prefetch thread while loading batch {b} of epoch {epoch})")
            _put(q, ("error", e), stop)
            return
        if not _put(q, ("batch", batch), stop):
            return
    _put(q, _END, stop)
