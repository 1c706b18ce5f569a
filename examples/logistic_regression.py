"""Multinomial logistic regression on scikit-learn's digits: one ``nn.Linear`` layer, softmax cross-entropy, SGD.

python examples/logistic_regression.py [--epochs 20] [--out-dir DIR]

The smallest complete symdl training script: a model, a loss, an optimiser that turns the loss into symbolic
parameter ``updates``, one compiled train step and one compiled evaluation function.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import symdl as sd
from symdl import data, nn, optim

try:
    from examples.common import digits_splits, out_dir_for, plot_digit_grid, plot_learning_curves, progress
except ImportError:  # run as a script
    from common import digits_splits, out_dir_for, plot_digit_grid, plot_learning_curves, progress


def train(
    epochs: int = 20,
    lr: float = 0.5,
    batch_size: int = 32,
    seed: int = 0,
    verbose: bool = True,
    target: str = "cpu",
) -> dict:
    """Train the classifier with plain minibatch SGD; returns ``test_accuracy``, ``final_loss`` (the last epoch's
    mean training loss), the per-epoch ``history``, the test predictions and the model."""
    sd.manual_seed(seed)  # the initial weights and the shuffling
    split = digits_splits(flatten=True)  # (N, 64) pixels in [0, 1]

    model = nn.Linear(64, 10)
    x = sd.placeholder((None, 64), name="x")
    y = sd.placeholder((None,), dtype="int64", name="y")
    logits = model(x)
    loss = sd.cross_entropy(logits, y)
    opt = optim.SGD(model.parameters(), lr=lr)

    train_step = sd.compile([x, y], [loss], updates=opt.minimize(loss), target=target)
    evaluate = sd.compile([x, y], [loss, sd.argmax(logits, axis=1)], mode="eval", target=target)
    loader = data.DataLoader(data.ArrayDataset(*split.train), batch_size=batch_size, shuffle=True)
    x_test, y_test = split.test

    history: dict[str, list[float]] = {"train_loss": [], "test_loss": [], "test_acc": []}
    bar = progress(range(epochs), desc="logistic regression", enabled=verbose)
    for _ in bar:
        losses, sizes = [], []
        for xb, yb in loader:
            losses.append(train_step(xb, yb)[0])
            sizes.append(len(yb))
        test_loss, predicted = evaluate(x_test, y_test)
        history["train_loss"].append(float(np.average(losses, weights=sizes)))
        history["test_loss"].append(float(test_loss))
        history["test_acc"].append(float(np.mean(predicted == y_test)))
        bar.set_postfix(loss=history["train_loss"][-1], test_acc=history["test_acc"][-1])
    bar.close()
    accuracy = history["test_acc"][-1]
    if verbose:
        print(f"test accuracy {accuracy:.4f}")
    return {
        "test_accuracy": accuracy,
        "final_loss": history["train_loss"][-1],
        "history": history,
        "predictions": predicted,
        "model": model,
    }


def main(
    epochs: int = 20,
    lr: float = 0.5,
    batch_size: int = 32,
    seed: int = 0,
    out_dir: str | Path | None = None,
    target: str = "cpu",
    verbose: bool = True,
) -> dict:
    """:func:`train`, then write the learning curves, a grid of test digits with their predicted labels, and the
    learned weights of each class as 8x8 images."""
    t0 = time.perf_counter()
    out = out_dir_for("logistic_regression", out_dir)
    result = train(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, verbose=verbose, target=target)
    split = digits_splits(flatten=True)
    files = [
        plot_learning_curves(result["history"], out / "learning_curves.png", "Logistic regression on digits", verbose),
        plot_digit_grid(
            *split.test, result["predictions"], out / "test_digits.png", title="Logistic regression", verbose=verbose
        ),
        _plot_weights(result["model"], out / "weights.png", verbose),
    ]
    result["files"] = [f for f in files if f is not None]
    result["seconds"] = time.perf_counter() - t0
    if verbose:
        print(f"files: {', '.join(str(f) for f in result['files'])}  ({result['seconds']:.1f} s)")
    return result


def _plot_weights(model: nn.Linear, path: Path, verbose: bool) -> Path | None:
    """Each class's weight vector as an 8x8 image (red: evidence for the class, blue: against)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        if verbose:
            print(f"matplotlib is not installed: {path} not written")
        return None
    w = model.weight.value.reshape(10, 8, 8)
    fig = Figure(figsize=(10, 1.6), layout="constrained")
    bound = float(np.abs(w).max())
    for k, ax in enumerate(fig.subplots(1, 10)):
        ax.imshow(w[k], cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_title(str(k))
        ax.set_axis_off()
    fig.savefig(path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--target", default="cpu", choices=["cpu", "reference"])
    args = parser.parse_args()
    main(epochs=args.epochs, out_dir=args.out_dir, target=args.target)
