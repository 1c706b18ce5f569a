"""Universal approximation: one hidden layer of ReLU units fitted to a 1-D function, for several widths.

python examples/function_regression.py [--epochs 400] [--out-dir DIR]

A network ``x -> W2 relu(W1 x + b1) + b2`` with ``H`` hidden units is a piecewise-linear function with at most
``H`` kinks, so its error on a smooth curve shrinks as ``H`` grows (the universal approximation theorem says any
continuous function on an interval can be approximated this way). The example fits 200 noisy samples of
``f(x) = sin(3x) + 0.3 cos(9x)`` on ``[-2, 2]`` with 4, 16 and 128 hidden units and plots the three fits against the
true function, plus their learning curves (training loss and the loss on a noise-free validation grid).

Training uses ``symdl.training.fit`` (one compiled train step and one eval function per model; ``fit``
averages the loss over samples, runs the validation set every epoch and keeps a :class:`History`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import symdl as sd
from symdl import data, nn, optim
from symdl.training import Trainer

try:
    from examples.common import EpochProgress, have_matplotlib, out_dir_for, plot_curve_grid
except ImportError:  # run as a script
    from common import EpochProgress, have_matplotlib, out_dir_for, plot_curve_grid


def target_function(x: np.ndarray) -> np.ndarray:
    """The function to approximate: ``sin(3x) + 0.3 cos(9x)``."""
    return np.sin(3 * x) + 0.3 * np.cos(9 * x)


def make_data(n: int = 200, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform on [-2, 2] (shape (n, 1), float32) and their noisy function values."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 1))
    y = target_function(x) + rng.normal(scale=noise, size=x.shape)
    return x.astype(np.float32), y.astype(np.float32)


def mlp(hidden: int, low: float = -2.0, high: float = 2.0) -> nn.Sequential:
    """``Linear(1, hidden) -> ReLU -> Linear(hidden, 1)``, the hidden layer initialised so that every unit's kink
    lies in ``[low, high]`` (see :func:`spread_kinks`)."""
    model = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    spread_kinks(model[0], low, high)
    return model


def spread_kinks(layer: nn.Linear, low: float, high: float) -> None:
    """Unit ``k`` computes ``relu(w_k x + b_k)``, which bends at ``x = -b_k / w_k``. PyTorch's default
    initialisation puts many of these kinks outside the data (those units are then linear, or dead, on the whole
    interval); here ``w_k = ±1`` and ``b_k = -w_k c_k`` with ``c_k`` uniform in ``[low, high]``, so each unit
    starts with a kink inside the data. Draws from ``symdl.host_rng()`` (seeded by ``symdl.manual_seed``)."""
    rng = sd.host_rng()
    w = rng.choice([-1.0, 1.0], size=layer.weight.shape)
    centres = rng.uniform(low, high, size=layer.out_features)
    layer.weight.value = w.astype(np.float32)
    layer.bias.value = (-w[:, 0] * centres).astype(np.float32)


def main(
    widths: tuple[int, ...] = (4, 16, 128),
    epochs: int = 400,
    batch_size: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
    out_dir: str | Path | None = None,
    target: str = "cpu",
    verbose: bool = True,
) -> dict:
    """Fit one MLP per width; print each one's mean squared error against the true function; write the fits and
    the learning curves. Returns ``{"mse": {width: error}, "histories": ..., "files": [...]}``."""
    t0 = time.perf_counter()
    out = out_dir_for("function_regression", out_dir)
    sd.manual_seed(seed)
    x_train, y_train = make_data(seed=seed)
    x_grid = np.linspace(-2, 2, 400, dtype=np.float32)[:, None]  # noise-free validation set
    y_grid = target_function(x_grid).astype(np.float32)
    train_loader = data.DataLoader(data.ArrayDataset(x_train, y_train), batch_size=batch_size, shuffle=True)
    val_loader = data.DataLoader(data.ArrayDataset(x_grid, y_grid), batch_size=len(x_grid))

    histories, predictions, mse = {}, {}, {}
    for width in widths:
        model = mlp(width)
        opt = optim.Adam(model.parameters(), lr=lr)
        schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        trainer = Trainer(model, sd.mse_loss, opt, scheduler=schedule, metrics=("loss",), target=target)
        bar = EpochProgress(epochs, desc=f"{width:3d} hidden units", enabled=verbose)
        history = trainer.fit(train_loader, val_loader, epochs, progress=False, callbacks=[bar])
        bar.close()
        predictions[width] = trainer.predict(x_grid)[:, 0]
        mse[width] = float(np.mean((predictions[width] - y_grid[:, 0]) ** 2))
        histories[f"{width} hidden units"] = {"train_loss": history.train_loss, "val_loss": history.val_loss}
        if verbose:
            print(f"{width:3d} hidden ReLU units: mean squared error vs f on the grid {mse[width]:.5f}")

    files = []
    if have_matplotlib():
        files.append(_plot_fits(x_train, y_train, x_grid, y_grid, predictions, out / "fits.png"))
    curves = plot_curve_grid(
        histories, out / "learning_curves.png", "MSE loss (val: noise-free grid)", ("loss",), verbose=verbose
    )
    files += [curves] if curves is not None else []
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"files: {', '.join(str(f) for f in files)}  ({seconds:.1f} s)")
    return {"mse": mse, "histories": histories, "predictions": predictions, "files": files, "seconds": seconds}


def _plot_fits(
    x: np.ndarray,
    y: np.ndarray,
    x_grid: np.ndarray,
    y_grid: np.ndarray,
    predictions: dict[int, np.ndarray],
    path: Path,
) -> Path:
    """The noisy samples, the true function and each width's fit, in one panel."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(x[:, 0], y[:, 0], s=8, color="lightgray", label="noisy training samples")
    ax.plot(x_grid[:, 0], y_grid[:, 0], color="black", linewidth=2, label="f(x) = sin(3x) + 0.3 cos(9x)")
    for width, pred in predictions.items():
        ax.plot(x_grid[:, 0], pred, linewidth=1.5, label=f"{width} ReLU units")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("One hidden layer of ReLU units: more units, more linear pieces, a closer fit")
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    main(epochs=args.epochs, out_dir=args.out_dir)
