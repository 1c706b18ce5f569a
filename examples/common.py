"""Shared helpers of the examples: the digits splits, a progress bar, evaluation, and the plots they write.

Every example is a script with a ``main(...)`` function (``python examples/<name>.py``). The plots need matplotlib
and the progress bars use tqdm when they are installed (``pip install -e ".[examples]"``); without matplotlib the
examples still train and print their results and say that the plots were skipped, and without tqdm a plain
one-line-per-epoch progress report is printed instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from symdl import data

DEFAULT_OUT_ROOT = Path("symdl-examples")
"""Where the examples write their files by default: ``./symdl-examples/<example name>/``."""

SPLIT_SEED = 0
"""The seed of the train/validation/test splits, the same for every example (so test sets are comparable)."""


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


class Split(NamedTuple):
    """Train, validation and test sets, each an ``(x, y)`` pair of arrays (validation may be empty)."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def digits_splits(
    test: float | int = 0.25, val: float | int = 0.0, flatten: bool = False, seed: int = SPLIT_SEED
) -> Split:
    """scikit-learn's 1,797 real 8x8 digits (``symdl.data.load_digits``: float32 in [0, 1], int64 labels) split
    into train / validation / test sets, stratified by class, with a fixed seed.

    Images are ``(N, 1, 8, 8)``, or ``(N, 64)`` with ``flatten=True``. The default test set is 25% of the data
    (450 digits); ``val`` takes a validation set out of the rest.
    """
    x, y = data.load_digits(flatten=flatten)
    train, valid, tst = data.train_val_test_split(x, y, val=val, test=test, stratify=y, seed=seed)
    return Split((train[0], train[1]), (valid[0], valid[1]), (tst[0], tst[1]))


def digits_split(
    seed: int = SPLIT_SEED, test_fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flattened digits as ``x_train, y_train, x_test, y_test`` (see :func:`digits_splits`)."""
    s = digits_splits(test=test_fraction, flatten=True, seed=seed)
    return s.train[0], s.train[1], s.test[0], s.test[1]


def predict_in_batches(fn: Callable[..., list[np.ndarray]], x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """``fn(x_batch)[0]`` over ``x`` in batches, concatenated (compiled functions take any batch size)."""
    return np.concatenate([fn(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)])


def accuracy(predict: Callable[..., list[np.ndarray]], x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of ``x`` whose predicted class (``predict(x)[0]``, an int array) equals ``y``."""
    return float(np.mean(predict_in_batches(predict, x) == y))


def out_dir_for(name: str, out_dir: str | Path | None) -> Path:
    """``out_dir`` (or ``./symdl-examples/<name>``), created if needed."""
    path = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------------


class _TextProgress:
    """The fallback progress report without tqdm: one line per item with the latest postfix values."""

    def __init__(self, iterable: Iterable[Any], total: int | None, desc: str) -> None:
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.postfix: dict[str, Any] = {}
        self.count = 0
        self.t0 = time.perf_counter()

    def set_postfix(self, **values: Any) -> None:
        """Remember the values shown on the next line."""
        self.postfix = values

    def _line(self) -> str:
        items = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.postfix.items())
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.desc} {self.count}{of}  {items}  ({time.perf_counter() - self.t0:.1f} s)"

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            if self.count:
                print(self._line(), file=sys.stderr)
            yield item
            self.count += 1
        print(self._line(), file=sys.stderr)

    def close(self) -> None:
        """Nothing to do (lines are printed as items are consumed)."""


class _Silent:
    """No progress report (``verbose=False``): iterates and ignores postfix values."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable)

    def set_postfix(self, **values: Any) -> None:
        """Ignored."""

    def close(self) -> None:
        """Nothing to close."""


def progress(iterable: Iterable[Any], desc: str = "", total: int | None = None, enabled: bool = True) -> Any:
    """A progress bar over ``iterable`` (tqdm's when installed, else one printed line per item) with a
    ``set_postfix(**values)`` method for the latest loss/accuracy; nothing at all when ``enabled`` is false."""
    if not enabled:
        return _Silent(iterable)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextProgress(iterable, total, desc)
    return tqdm(iterable, desc=desc, total=total, unit="epoch", dynamic_ncols=True)


class EpochProgress:
    """A progress bar over the epochs of ``symdl.training.fit``, as a callback: ``fit(..., progress=False,
    callbacks=[bar])`` (``fit``'s own progress output is one bar per epoch, too much for hundreds of short
    epochs). Shows the latest training and validation loss; call :meth:`close` after ``fit``. tqdm's bar when
    installed, else one printed line every ``max(1, epochs // 10)`` epochs; nothing when ``enabled`` is false."""

    def __init__(self, epochs: int, desc: str = "", enabled: bool = True) -> None:
        self.epochs, self.desc, self.enabled = epochs, desc, enabled
        self._bar: Any = None
        self._t0 = time.perf_counter()
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=epochs, desc=desc, unit="epoch", dynamic_ncols=True)

    def __call__(self, epoch: int, history: Any) -> None:
        """``fit``'s callback signature; returns None (never stops training)."""
        if not self.enabled:
            return
        logs = {"loss": history.train_loss[-1]}
        if history.val_loss:
            logs["val_loss"] = history.val_loss[-1]
        if self._bar is not None:
            self._bar.set_postfix(logs, refresh=False)
            self._bar.update(1)
        elif (epoch + 1) % max(1, self.epochs // 10) == 0 or epoch + 1 == self.epochs:
            items = "  ".join(f"{k} {v:.4g}" for k, v in logs.items())
            print(f"{self.desc} {epoch + 1}/{self.epochs}  {items}  ({time.perf_counter() - self._t0:.1f} s)")

    def close(self) -> None:
        """Finish the bar (also when early stopping ended ``fit`` before the last epoch)."""
        if self._bar is not None:
            self._bar.close()


# ----------------------------------------------------------------------------------------------------
# Plots (matplotlib's object API: no pyplot, no global backend state)
# ----------------------------------------------------------------------------------------------------


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the plots are skipped otherwise)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _skip_note(what: str, verbose: bool) -> None:
    if verbose:
        print(f"matplotlib is not installed: {what} not written (pip install matplotlib)")


def _curve_panels(history: Mapping[str, Sequence[float]]) -> list[tuple[str, list[str]]]:
    """Group a history's series into a "loss" panel and an "accuracy" panel (others get their own)."""
    losses = [k for k in history if "loss" in k]
    accs = [k for k in history if "acc" in k]
    other = [k for k in history if k not in losses and k not in accs]
    panels = [("loss", losses), ("accuracy", accs)] + [(k, [k]) for k in other]
    return [(name, keys) for name, keys in panels if keys]


def _draw_curves(ax: Any, history: Mapping[str, Sequence[float]], keys: list[str], ylabel: str) -> None:
    for key in keys:
        values = np.asarray(history[key], dtype=float)
        if len(values):
            ax.plot(np.arange(1, len(values) + 1), values, label=key.replace("_", " "), marker="." * (len(values) < 40))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if ylabel == "loss" and all(min(history[k], default=1.0) > 0 for k in keys):
        ax.set_yscale("log")


def plot_learning_curves(
    history: Mapping[str, Sequence[float]], path: str | Path, title: str = "", verbose: bool = True
) -> Path | None:
    """Write the learning curves of ``history`` (``{"train_loss": [...], "test_acc": [...], ...}``, one value per
    epoch) as a PNG: a loss panel (log scale) and an accuracy panel. Returns the path, or None without
    matplotlib."""
    if not have_matplotlib():
        _skip_note(f"learning curves {path}", verbose)
        return None
    panels = _curve_panels(history)
    fig = _figure(5.0 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, keys) in zip(axes, panels):
        _draw_curves(ax, history, keys, name)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path)
    return path


def plot_curve_grid(
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    title: str = "",
    metrics: Sequence[str] = ("loss",),
    markers: Mapping[str, int] | None = None,
    verbose: bool = True,
) -> Path | None:
    """Several runs' learning curves side by side: one column per run, one row per metric (the series of each
    run whose name contains it, e.g. ``"loss"``: ``train_loss`` and ``val_loss``), rows sharing their y axis.
    ``markers`` ``{run: epoch index}`` draws a dashed vertical line (e.g. the epoch early stopping kept).
    Returns the path, or None without matplotlib."""
    if not have_matplotlib():
        _skip_note(f"learning curves {path}", verbose)
        return None
    fig = _figure(3.6 * len(histories), 3.0 * len(metrics) + 0.5)
    axes = fig.subplots(len(metrics), len(histories), squeeze=False, sharey="row")
    for col, (name, history) in enumerate(histories.items()):
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            _draw_curves(ax, history, [k for k in history if metric in k], metric)
            if markers and name in markers:
                ax.axvline(markers[name] + 1, color="gray", linestyle="--", linewidth=1)
            if row == 0:
                ax.set_title(name)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path)
    return path


def plot_digit_grid(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    path: str | Path,
    count: int = 60,
    columns: int = 12,
    title: str = "",
    verbose: bool = True,
) -> Path | None:
    """A PNG grid of test digits titled with their predicted labels; misclassified ones are framed in red and
    titled ``"predicted (true)"``. All misclassified digits are shown (up to half the grid), the rest of the grid
    is the first correctly classified digits, in test-set order. Returns the path, or None without matplotlib."""
    if not have_matplotlib():
        _skip_note(f"digit grid {path}", verbose)
        return None
    images = np.asarray(images).reshape(len(images), 8, 8)
    wrong = np.flatnonzero(predictions != labels)
    right = np.flatnonzero(predictions == labels)
    shown_wrong = wrong[: count // 2]
    chosen = np.sort(np.concatenate([shown_wrong, right[: count - len(shown_wrong)]]))
    rows = -(-len(chosen) // columns)
    fig = _figure(columns * 0.75, rows * 0.85 + 0.4)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, i in zip(axes.ravel(), chosen):
        ax.set_axis_on()
        ax.imshow(images[i], cmap="gray_r", vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        ok = predictions[i] == labels[i]
        color = "black" if ok else "red"
        ax.set_title(f"{predictions[i]}" if ok else f"{predictions[i]} ({labels[i]})", color=color, fontsize=9)
        for spine in ax.spines.values():
            spine.set_color(color)
            spine.set_linewidth(0.5 if ok else 2.5)
    summary = f"{len(wrong)} of {len(labels)} test digits misclassified (red: predicted (true))"
    fig.suptitle(f"{title}: {summary}" if title else summary, fontsize=10)
    path = Path(path)
    fig.savefig(path)
    return path


def is_png(path: str | Path) -> bool:
    """Whether ``path`` is a file starting with the PNG signature."""
    p = Path(path)
    return p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
