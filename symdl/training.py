"""An optional training helper: :func:`fit` / :class:`Trainer`, :class:`History`, :func:`plot_history`.

::

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = symdl.optim.Adam(list(model.parameters()), lr=1e-3)
    history = symdl.fit(model, symdl.cross_entropy, opt, train_loader, val_loader, epochs=20,
                        early_stopping_patience=3)
    print(history)                                 # one row per epoch, the best one starred
    symdl.plot_history(history, "curves.png")      # learning curves (needs matplotlib)

What it does, so that a plain loop stays the obvious alternative
    On the first batch it builds one placeholder per array of the batch (the batch dimension ``None``, the
    other dims and the dtype of that batch; the last array is the target, the others are the model's inputs),
    calls ``model(*inputs)`` **once** and ``loss_fn(outputs, target)``, and compiles once:

    - a train step: ``symdl.compile(inputs + [target], [loss, outputs], updates=optimizer.minimize(loss),
      mode="train")``;
    - an eval function: the same graph with ``mode="eval"`` (BatchNorm running statistics, no dropout).

    Then each epoch runs the train step over ``train_loader``, evaluates ``val_loader``, steps the scheduler
    (once per epoch; :class:`~symdl.optim.lr_scheduler.ReduceLROnPlateau` gets the validation loss, or the
    training loss without validation), applies early stopping and calls the callbacks.

Metrics
    Epoch values are averages over samples (each batch weighted by its size): the loss (always), ``"accuracy"``
    (see :func:`accuracy`) and custom ``(name, fn)`` metrics, ``fn(outputs, targets) -> float`` on NumPy
    arrays. Training metrics are those of the train-mode forward passes during the epoch (as Keras reports
    them), validation metrics those of the eval function.

Early stopping
    With ``early_stopping_patience=p`` (a validation loader is required), training stops once the validation
    loss has not improved by more than ``min_delta`` for ``p`` epochs in a row; with ``restore_best`` (default)
    the model's weights and buffers are then reset to those of the best epoch (an in-memory
    ``state_dict()`` snapshot), also when the epochs run out first.

Epochs are numbered from 0 in :class:`History`; the progress output shows ``epoch 1/N`` as Keras. tqdm and
matplotlib are optional: without tqdm the progress is one text line per epoch; without matplotlib
:func:`plot_history` raises an ``ImportError`` saying what to install.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from symdl.graph import Tensor, placeholder

__all__ = ["History", "Trainer", "accuracy", "evaluate", "fit", "plot_history", "predict"]

MetricFn = Callable[[np.ndarray, np.ndarray], float]
Metric = str | tuple[str, MetricFn]
Callback = Callable[[int, "History"], Any]


# ----------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------


def accuracy(outputs: np.ndarray, targets: np.ndarray, binary_threshold: float = 0.0) -> float:
    """The fraction of correct predictions (NumPy arrays, as the train step returns them).

    - class indices: ``outputs`` of shape ``(N, C, ...)`` with ``C > 1`` and integer ``targets`` of shape
      ``(N, ...)``: ``argmax(outputs, axis=1) == targets``;
    - class probabilities: float ``targets`` of the same shape ``(N, C, ...)``, ``C > 1``: the argmaxes agree;
    - binary: ``outputs`` of shape ``(N,)`` or ``(N, 1)`` and 0/1 ``targets`` with ``N`` elements: the
      prediction is ``outputs > binary_threshold`` (outputs are logits by default; pass ``0.5`` for
      probabilities, e.g. as the metric ``("accuracy", functools.partial(accuracy, binary_threshold=0.5))``).

    Anything else raises ``ValueError``.
    """
    o, t = np.asarray(outputs), np.asarray(targets)
    if o.ndim >= 2 and o.shape[1] > 1:
        if t.dtype.kind in "iu" and t.shape == o.shape[:1] + o.shape[2:]:
            return float(np.mean(np.argmax(o, axis=1) == t))
        if t.dtype.kind == "f" and t.shape == o.shape:
            return float(np.mean(np.argmax(o, axis=1) == np.argmax(t, axis=1)))
    elif o.ndim in (1, 2) and o.size == t.size and o.shape[0] == (t.shape[0] if t.ndim else -1):
        truth = t.reshape(-1)
        if not np.all((truth == 0) | (truth == 1)):
            raise ValueError("accuracy: binary outputs need targets that are 0 or 1")
        return float(np.mean((o.reshape(-1) > binary_threshold) == (truth == 1)))
    raise ValueError(
        f"accuracy: cannot compare outputs of shape {o.shape} with targets of shape {t.shape} {t.dtype}; "
        "expected class scores (N, C, ...) with integer targets (N, ...) or class probabilities (N, C, ...), or "
        "binary outputs (N,)/(N, 1) with 0/1 targets. Drop 'accuracy' from metrics or pass (name, fn)"
    )


def _normalise_metrics(metrics: Iterable[Metric]) -> list[tuple[str, MetricFn]]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    out: list[tuple[str, MetricFn]] = []
    for m in metrics:
        if m == "loss":
            continue  # always computed
        if m == "accuracy":
            out.append(("accuracy", accuracy))
        elif isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) and callable(m[1]):
            if m[0] == "loss":
                raise ValueError("metrics: the name 'loss' is reserved for the loss")
            out.append((m[0], m[1]))
        else:
            raise ValueError(f"metrics: expected 'loss', 'accuracy' or a (name, fn) pair, got {m!r}")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"metrics: duplicate names in {names}")
    return out


# ----------------------------------------------------------------------------------------------------
# History
# ----------------------------------------------------------------------------------------------------


class History:
    """Per-epoch records of a :func:`fit` run.

    Lists (one entry per epoch, in order; ``val_*`` lists stay empty without validation): :attr:`epoch`
    (0-based indices), :attr:`train_loss`, :attr:`train_accuracy`, :attr:`val_loss`, :attr:`val_accuracy`,
    :attr:`lr` (the first parameter group's learning rate during the epoch), :attr:`epoch_time` (seconds,
    training and validation). Custom metrics are under ``history["train_<name>"]`` / ``history["val_<name>"]``.
    Also :attr:`step_loss` (the loss of every train step), :attr:`best_epoch` / :attr:`best_val_loss` (lowest
    validation loss), :attr:`stopped_early` and :attr:`stopped_epoch`.

    ``print(history)`` shows a table; :meth:`as_dict` / :meth:`from_dict` convert to and from plain JSON-able
    data (e.g. to keep it in a checkpoint's ``extra``).
    """

    STANDARD = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time")

    def __init__(self) -> None:
        self.data: dict[str, list[Any]] = {k: [] for k in self.STANDARD}
        self.step_loss: list[float] = []
        self.best_epoch: int | None = None
        self.best_val_loss: float | None = None
        self.stopped_early = False
        self.stopped_epoch: int | None = None

    # --- the standard columns ---------------------------------------------------------------------------
    @property
    def epoch(self) -> list[int]:
        """The epoch indices (0-based)."""
        return self.data["epoch"]

    @property
    def train_loss(self) -> list[float]:
        """Mean training loss of each epoch (train-mode forward passes)."""
        return self.data["train_loss"]

    @property
    def train_accuracy(self) -> list[float]:
        """Training accuracy of each epoch (empty unless ``"accuracy"`` is a metric)."""
        return self.data["train_accuracy"]

    @property
    def val_loss(self) -> list[float]:
        """Validation loss of each epoch (empty without a validation loader)."""
        return self.data["val_loss"]

    @property
    def val_accuracy(self) -> list[float]:
        """Validation accuracy of each epoch."""
        return self.data["val_accuracy"]

    @property
    def lr(self) -> list[float]:
        """The learning rate used during each epoch (first parameter group)."""
        return self.data["lr"]

    @property
    def epoch_time(self) -> list[float]:
        """Seconds taken by each epoch (training and validation; the first includes compiling)."""
        return self.data["epoch_time"]

    # --- access -----------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> list[Any]:
        """The list of ``key`` (``"val_loss"``, ``"train_<custom metric>"`` ...)."""
        return self.data[key]

    def keys(self) -> list[str]:
        """The names of the non-empty per-epoch lists: ``epoch``, the ``train_*`` then the ``val_*`` metrics,
        ``lr``, ``epoch_time``, then any other column."""

        def group(k: str) -> int:
            if k == "epoch":
                return 0
            if k.startswith(("train_", "val_")):
                return 1 if k.startswith("train_") else 2
            return 3 if k in ("lr", "epoch_time") else 4

        return sorted((k for k, v in self.data.items() if v), key=group)

    def __len__(self) -> int:
        """The number of epochs recorded."""
        return len(self.data["epoch"])

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one epoch: ``record`` maps column names to values (new names become new columns)."""
        for k, v in record.items():
            self.data.setdefault(k, []).append(v)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, bools): the columns, ``step_loss`` and the best/stop fields."""
        out: dict[str, Any] = {k: list(v) for k, v in self.data.items()}
        out.update(
            step_loss=list(self.step_loss),
            best_epoch=self.best_epoch,
            best_val_loss=self.best_val_loss,
            stopped_early=self.stopped_early,
            stopped_epoch=self.stopped_epoch,
        )
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        """The inverse of :meth:`as_dict` (e.g. to continue a history with ``fit(..., history=...)``)."""
        h = cls()
        scalars = ("step_loss", "best_epoch", "best_val_loss", "stopped_early", "stopped_epoch")
        for k, v in d.items():
            if k not in scalars:
                h.data[k] = [float(x) if k != "epoch" else int(x) for x in v]
        h.step_loss = [float(x) for x in d.get("step_loss", [])]
        h.best_epoch = None if d.get("best_epoch") is None else int(d["best_epoch"])
        h.best_val_loss = None if d.get("best_val_loss") is None else float(d["best_val_loss"])
        h.stopped_early = bool(d.get("stopped_early", False))
        h.stopped_epoch = None if d.get("stopped_epoch") is None else int(d["stopped_epoch"])
        return h

    # --- printing ---------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        best = "" if self.best_epoch is None else f", best_epoch={self.best_epoch}, best_val_loss={self.best_val_loss}"
        stop = f", stopped_early at epoch {self.stopped_epoch}" if self.stopped_early else ""
        return f"<History {len(self)} epochs{best}{stop}>"

    def __str__(self) -> str:
        cols = [k for k in self.keys() if k != "epoch"]
        header = ["epoch", *cols]
        rows = []
        for i, e in enumerate(self.epoch):
            mark = "*" if self.best_epoch is not None and e == self.best_epoch else ""
            cells = [f"{int(e)}{mark}"]
            for k in cols:
                v = self.data[k][i] if i < len(self.data[k]) else float("nan")
                cells.append(f"{v:.3g}" if k == "lr" else f"{v:.2f}" if k == "epoch_time" else f"{v:.4f}")
            rows.append(cells)
        widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h) for j, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        notes = []
        if self.best_epoch is not None:
            notes.append(f"* best epoch {self.best_epoch} (val_loss {self.best_val_loss:.4f})")
        if self.stopped_early:
            notes.append(f"stopped early after epoch {self.stopped_epoch}")
        return "\n".join(lines + notes)


# ----------------------------------------------------------------------------------------------------
# Progress output
# ----------------------------------------------------------------------------------------------------


def _format_logs(logs: Mapping[str, float]) -> str:
    parts = []
    for k, v in logs.items():
        if k == "lr":
            parts.append(f"lr: {v:.3g}")
        else:
            parts.append(f"{k.removeprefix('train_')}: {v:.4f}")
    return " - ".join(parts)


class _Progress:
    """A tqdm bar over one epoch's batches, or (without tqdm) one text line at the end of the epoch."""

    def __init__(self, enabled: bool, total: int | None, desc: str) -> None:
        self.desc = desc
        self.enabled = enabled
        self.bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)

    def update(self, running_loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss: {running_loss:.4f}", refresh=False)
            self.bar.update(1)

    def close(self, seconds: float, logs: Mapping[str, float]) -> None:
        summary = f"{seconds:.2f}s - {_format_logs(logs)}"
        if self.bar is not None:
            self.bar.set_postfix_str(summary, refresh=False)
            self.bar.close()
        elif self.enabled:
            print(f"{self.desc} - {summary}", flush=True)


# ----------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------


def _as_arrays(batch: Any, where: str) -> tuple[np.ndarray, ...]:
    arrays = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.ndim == 0:
            raise ValueError(f"{where}: array {i} of the batch is a scalar; batches need a leading batch dimension")
        out.append(a)
    return tuple(out)


class Trainer:
    """Compiles a model's train step and eval function once and runs them (see the module docstring).

    Args:
        model: a :class:`~symdl.nn.Module` (or any callable building the outputs from input tensors; then
            ``restore_best`` snapshots the optimiser's parameters instead of the ``state_dict``).
        loss_fn: ``loss_fn(outputs, target) -> 0-d tensor``, e.g. :func:`symdl.cross_entropy`.
        optimizer: a :mod:`symdl.optim` optimiser over the model's parameters (needed by :meth:`fit` only).
        scheduler: an :mod:`symdl.optim.lr_scheduler` scheduler, stepped once per epoch by :meth:`fit`.
        metrics: ``"loss"`` (always computed), ``"accuracy"`` (:func:`accuracy`) and ``(name, fn)`` pairs with
            ``fn(outputs, targets) -> float`` (NumPy arrays; batch means, averaged over samples).
        target: ``"cpu"`` (compiled Numba kernels) or ``"reference"`` (the NumPy interpreter).

    The graph is built from the first batch seen (by :meth:`fit`, :meth:`evaluate` or :meth:`predict`); later
    batches must have the same dtypes and non-batch dims. :attr:`train_step`, :attr:`eval_step` and
    :attr:`predict_step` are the compiled functions (``None`` until first needed).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        optimizer: Any = None,
        *,
        scheduler: Any = None,
        metrics: Iterable[Metric] = ("loss", "accuracy"),
        target: str = "cpu",
    ) -> None:
        if not callable(model):
            raise TypeError(f"Trainer: model must be callable (a symdl.nn.Module), got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"Trainer: loss_fn must be callable(outputs, target), got {type(loss_fn).__name__}")
        if optimizer is not None and not callable(getattr(optimizer, "minimize", None)):
            raise TypeError(f"Trainer: optimizer must be a symdl.optim optimizer, got {type(optimizer).__name__}")
        if scheduler is not None and not callable(getattr(scheduler, "step", None)):
            raise TypeError(f"Trainer: scheduler must have a step() method, got {type(scheduler).__name__}")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.metrics = _normalise_metrics(metrics)
        self.target = target
        self.inputs: list[Tensor] | None = None
        self.outputs: Tensor | None = None
        self.label: Tensor | None = None
        self.loss: Tensor | None = None
        self.train_step: Any = None
        self.eval_step: Any = None
        self.predict_step: Any = None

    # --- graph building and compiling -------------------------------------------------------------------
    def _build_model(self, inputs: Sequence[np.ndarray]) -> None:
        if self.inputs is not None:
            if len(inputs) != len(self.inputs):
                raise ValueError(
                    f"Trainer: the model was built for {len(self.inputs)} input array(s) per batch, got {len(inputs)}"
                )
            return
        names = ["x"] if len(inputs) == 1 else [f"x{i}" for i in range(len(inputs))]
        phs = [placeholder((None, *a.shape[1:]), dtype=a.dtype, name=n) for a, n in zip(inputs, names)]
        out = self.model(*phs)
        if not isinstance(out, Tensor):
            raise TypeError(f"Trainer: the model must return one symbolic tensor, got {type(out).__name__}")
        self.inputs, self.outputs = phs, out

    def _build_loss(self, label: np.ndarray) -> None:
        if self.label is not None:
            return
        y = placeholder((None, *label.shape[1:]), dtype=label.dtype, name="y")
        loss = self.loss_fn(self.outputs, y)
        if not isinstance(loss, Tensor) or loss.shape != ():
            got = f"shape {loss.shape}" if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"Trainer: loss_fn must return a 0-d tensor (a reduced loss), got {got}")
        self.label, self.loss = y, loss

    def _split(self, batch: Any, where: str) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        arrays = _as_arrays(batch, where)
        if len(arrays) < 2:
            raise ValueError(f"{where}: batches must be tuples (inputs..., targets); got a single array")
        self._build_model(arrays[:-1])
        self._build_loss(arrays[-1])
        return arrays[:-1], arrays[-1]

    def _compile(self, mode: str) -> Any:
        from symdl.function import compile as sd_compile

        assert self.inputs is not None and self.label is not None and self.loss is not None
        outputs = [self.loss, self.outputs] if self.metrics else [self.loss]
        if mode == "train":
            if self.optimizer is None:
                raise ValueError("Trainer.fit needs an optimizer")
            updates = self.optimizer.minimize(self.loss)
            return sd_compile([*self.inputs, self.label], outputs, updates=updates, target=self.target, mode="train")
        return sd_compile([*self.inputs, self.label], outputs, target=self.target, mode="eval")

    # --- running ----------------------------------------------------------------------------------------
    def _run_epoch(
        self, loader: Iterable[Any], train: bool, progress: _Progress | None, step_loss: list[float] | None = None
    ) -> dict[str, float]:
        where = "Trainer.fit (train_loader)" if train else "Trainer.evaluate"
        totals: dict[str, float] = {"loss": 0.0, **{n: 0.0 for n, _ in self.metrics}}
        count = 0
        for batch in loader:
            xs, y = self._split(batch, where)
            if train:
                if self.train_step is None:
                    self.train_step = self._compile("train")
                results = self.train_step(*xs, y)
            else:
                if self.eval_step is None:
                    self.eval_step = self._compile("eval")
                results = self.eval_step(*xs, y)
            n = len(y)
            loss = float(results[0])
            if step_loss is not None:
                step_loss.append(loss)
            totals["loss"] += loss * n
            for name, fn in self.metrics:
                totals[name] += float(fn(results[1], y)) * n
            count += n
            if progress is not None:
                progress.update(totals["loss"] / count)
        if count == 0:
            raise ValueError(f"{where}: the loader yielded no batches")
        return {k: v / count for k, v in totals.items()}

    def evaluate(self, loader: Iterable[Any]) -> dict[str, float]:
        """Eval-mode loss and metrics over ``loader`` (sample-weighted means): ``{"loss": ..., "accuracy": ...}``."""
        return self._run_epoch(loader, train=False, progress=None)

    def predict(self, x: np.ndarray | Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """The model's eval-mode outputs for ``x`` (an array, or a list of arrays for a multi-input model),
        computed ``batch_size`` samples at a time and concatenated."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"Trainer.predict: batch_size must be a positive integer, got {batch_size!r}")
        arrays = _as_arrays(x, "Trainer.predict")
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise ValueError(f"Trainer.predict: the input arrays have different lengths {[len(a) for a in arrays]}")
        self._build_model(arrays)
        if self.predict_step is None:
            from symdl.function import compile as sd_compile

            self.predict_step = sd_compile(self.inputs, [self.outputs], target=self.target, mode="eval")
        parts = [self.predict_step(*(a[i : i + batch_size] for a in arrays))[0] for i in range(0, n, batch_size)]
        if not parts:
            raise ValueError("Trainer.predict: no samples")
        return np.concatenate(parts, axis=0)

    def _snapshot(self) -> Any:
        if callable(getattr(self.model, "state_dict", None)):
            return self.model.state_dict()
        return [(p, p.value.copy()) for p in self.optimizer.parameters]

    def _restore(self, snapshot: Any) -> None:
        if callable(getattr(self.model, "load_state_dict", None)):
            self.model.load_state_dict(snapshot)
        else:
            for p, v in snapshot:
                p.value = v

    def _current_lr(self) -> float:
        groups = getattr(self.optimizer, "param_groups", None)
        if groups:
            return float(groups[0]["lr"])
        return float(getattr(self.optimizer, "lr", float("nan")))

    def fit(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        epochs: int = 1,
        *,
        early_stopping_patience: int | None = None,
        min_delta: float = 0.0,
        restore_best: bool = True,
        progress: bool = True,
        callbacks: Sequence[Callback] | None = None,
        initial_epoch: int = 0,
        history: History | None = None,
    ) -> History:
        """Train for epochs ``initial_epoch .. epochs - 1``; returns the :class:`History`.

        Args:
            train_loader: an iterable of ``(inputs..., targets)`` batches, iterated once per epoch (e.g. a
                :class:`~symdl.data.DataLoader`; each ``iter()`` is the next epoch).
            val_loader: batches evaluated in eval mode after each epoch, or ``None``.
            epochs: the index of the last epoch + 1 (as Keras: with ``initial_epoch`` it is not a count).
            early_stopping_patience: stop after this many epochs without a validation-loss improvement larger
                than ``min_delta`` (needs ``val_loader``); ``None``: never stop early.
            restore_best: with early stopping, reset the weights and buffers to the best epoch's at the end.
            progress: show a tqdm bar per epoch (a text line per epoch without tqdm); ``False``: silent.
            callbacks: ``cb(epoch, history)`` called after each epoch (after the scheduler step: the right
                place to save a checkpoint); a truthy return value stops training.
            initial_epoch: the first epoch to run (resuming); with ``history`` (e.g.
                ``History.from_dict(checkpoint.extra["history"])``) the records and the early-stopping state
                continue. Best weights from before this call are not in memory: ``restore_best`` can only
                restore an epoch of this call.
        """
        for name, value, low in (("epochs", epochs, 0), ("initial_epoch", initial_epoch, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"Trainer.fit: {name} must be an integer >= {low}, got {value!r}")
        if early_stopping_patience is not None:
            p = early_stopping_patience
            if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
                raise ValueError(f"Trainer.fit: early_stopping_patience must be an integer >= 1 or None, got {p!r}")
            if val_loader is None:
                raise ValueError("Trainer.fit: early_stopping_patience needs a val_loader (it monitors val_loss)")
        if self.optimizer is None:
            raise ValueError("Trainer.fit needs an optimizer (Trainer(model, loss_fn, optimizer))")
        if min_delta < 0 or not math.isfinite(min_delta):
            raise ValueError(f"Trainer.fit: min_delta must be a finite number >= 0, got {min_delta!r}")
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"Trainer.fit: callbacks must be callables cb(epoch, history), got {cb!r}")
        from symdl.optim.lr_scheduler import ReduceLROnPlateau

        h = history if history is not None else History()
        best_snapshot = None
        wait = 0
        if h.best_epoch is not None and h.best_epoch in h.epoch:
            wait = len(h.epoch) - 1 - h.epoch.index(h.best_epoch)
        for epoch in range(int(initial_epoch), int(epochs)):
            t0 = time.perf_counter()
            lr = self._current_lr()
            total = len(train_loader) if hasattr(train_loader, "__len__") else None
            bar = _Progress(progress, total, f"epoch {epoch + 1}/{epochs}")
            try:
                train_logs = self._run_epoch(train_loader, train=True, progress=bar, step_loss=h.step_loss)
                val_logs = self.evaluate(val_loader) if val_loader is not None else {}
            except BaseException:
                if bar.bar is not None:
                    bar.bar.close()
                raise
            seconds = time.perf_counter() - t0
            record: dict[str, float] = {"epoch": epoch}
            record.update({f"train_{k}": v for k, v in train_logs.items()})
            record.update({f"val_{k}": v for k, v in val_logs.items()})
            record.update(lr=lr, epoch_time=seconds)
            h.append(record)

            if self.scheduler is not None:
                if isinstance(self.scheduler, ReduceLROnPlateau):
                    self.scheduler.step(val_logs.get("loss", train_logs["loss"]))
                else:
                    self.scheduler.step()

            stop = False
            if val_loader is not None:
                v = val_logs["loss"]
                if math.isfinite(v) and (h.best_val_loss is None or v < h.best_val_loss - min_delta):
                    h.best_epoch, h.best_val_loss, wait = epoch, v, 0
                    if early_stopping_patience is not None and restore_best:
                        best_snapshot = (epoch, self._snapshot())
                else:
                    wait += 1
                    if early_stopping_patience is not None and wait >= early_stopping_patience:
                        stop = True
                        h.stopped_early, h.stopped_epoch = True, epoch
            for cb in callbacks:
                if cb(epoch, h):
                    stop = True
            bar.close(seconds, {k: v for k, v in record.items() if k not in ("epoch", "epoch_time")})
            if stop:
                break

        if early_stopping_patience is not None and restore_best and h.best_epoch is not None and h.epoch:
            if best_snapshot is not None and best_snapshot[0] == h.best_epoch:
                if h.epoch[-1] != h.best_epoch:
                    self._restore(best_snapshot[1])
            elif h.epoch[-1] != h.best_epoch:
                warnings.warn(
                    f"fit: restore_best: the best epoch ({h.best_epoch}) ran before this call and its weights are "
                    "not in memory; keeping the last epoch's weights",
                    stacklevel=2,
                )
        return h


# ----------------------------------------------------------------------------------------------------
# Functions
# ----------------------------------------------------------------------------------------------------


def fit(
    model: Callable[..., Any],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: Any,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    epochs: int = 1,
    *,
    metrics: Iterable[Metric] = ("loss", "accuracy"),
    early_stopping_patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool = True,
    progress: bool = True,
    scheduler: Any = None,
    target: str = "cpu",
    callbacks: Sequence[Callback] | None = None,
    initial_epoch: int = 0,
    history: History | None = None,
) -> History:
    """Train ``model`` (see the module docstring); ``Trainer(model, loss_fn, optimizer, scheduler=...,
    metrics=..., target=...).fit(train_loader, val_loader, epochs, ...)``. Returns the :class:`History`."""
    trainer = Trainer(model, loss_fn, optimizer, scheduler=scheduler, metrics=metrics, target=target)
    return trainer.fit(
        train_loader,
        val_loader,
        epochs,
        early_stopping_patience=early_stopping_patience,
        min_delta=min_delta,
        restore_best=restore_best,
        progress=progress,
        callbacks=callbacks,
        initial_epoch=initial_epoch,
        history=history,
    )


def evaluate(
    model: Callable[..., Any],
    loader: Iterable[Any],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    metrics: Iterable[Metric] = ("loss", "accuracy"),
    target: str = "cpu",
) -> dict[str, float]:
    """Eval-mode loss and metrics of ``model`` over ``loader``'s ``(inputs..., targets)`` batches (sample-weighted
    means), e.g. ``{"loss": 0.31, "accuracy": 0.92}``. Compiles an eval function each call: keep a
    :class:`Trainer` to evaluate repeatedly."""
    return Trainer(model, loss_fn, metrics=metrics, target=target).evaluate(loader)


def predict(
    model: Callable[..., Any], x: np.ndarray | Sequence[np.ndarray], batch_size: int = 256, *, target: str = "cpu"
) -> np.ndarray:
    """The eval-mode outputs of ``model`` for the array ``x`` (a list of arrays for several inputs), computed in
    batches of ``batch_size`` and concatenated."""
    return Trainer(model, lambda o, y: o, metrics=(), target=target).predict(x, batch_size)


def plot_history(
    history: History,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write the learning curves of ``history`` to ``path`` (PNG unless the suffix names another format
    matplotlib knows; no suffix: ``.png`` is added); returns the path written.

    One panel per metric (loss, accuracy, custom metrics) with the training and validation curves against the
    epoch (numbered from 1), the best epoch marked by a dashed line. Uses matplotlib's Agg canvas directly
    (no pyplot, no change to the interactive backend); raises ``ImportError`` if matplotlib is missing.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "plot_history needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'symdl[examples]')"
        ) from e
    if not isinstance(history, History):
        raise TypeError(f"plot_history: expected a History, got {type(history).__name__}")
    if len(history) == 0:
        raise ValueError("plot_history: the history has no epochs")
    path = Path(os.fspath(path))
    if not path.suffix:
        path = path.with_suffix(".png")
    names: list[str] = []
    for k in history.keys():
        for prefix in ("train_", "val_"):
            if k.startswith(prefix) and k[len(prefix) :] not in names:
                names.append(k[len(prefix) :])
    x = [int(e) + 1 for e in history.epoch]
    fig = Figure(figsize=(5.0 * len(names), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        for prefix, label, style in (("train_", "train", "-o"), ("val_", "validation", "-s")):
            values = history.data.get(prefix + name, [])
            if values:
                ax.plot(x[: len(values)], values, style, markersize=3, label=label)
        if history.best_epoch is not None:
            ax.axvline(history.best_epoch + 1, color="gray", linestyle="--", linewidth=1, label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=dpi)
    return path
