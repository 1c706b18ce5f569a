"""A multi-layer perceptron on scikit-learn's 8x8 digits, compiled for the CPU.

python examples/mlp_digits.py [--epochs 60] [--out-dir DIR] [--render graph.svg] [--target cpu|reference]

64 pixels -> 128 ReLU units -> 128 ReLU units -> 10 logits, with dropout after each hidden layer, trained by Adam
with a cosine learning-rate schedule and label smoothing. The loop is written out: one compiled train step
(``updates=opt.minimize(loss)``), one compiled evaluation function (``mode="eval"``: dropout off), a seeded
``DataLoader``, and a scheduler that writes the optimiser's learning-rate parameter (nothing is recompiled).
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


def build(
    seed: int = 0, hidden: int = 128, dropout: float = 0.2, lr: float = 2e-3, label_smoothing: float = 0.1
) -> dict:
    """The model, its graph (placeholders ``x``/``y``, ``logits``, ``loss``, ``prediction``) and its optimiser.

    ``symdl.manual_seed(seed)`` first, so the initial weights and the dropout masks are the same in every run.
    """
    sd.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, 10),
    )
    x = sd.placeholder((None, 64), name="x")
    y = sd.placeholder((None,), dtype="int64", name="y")
    logits = model(x)
    loss = sd.cross_entropy(logits, y, label_smoothing=label_smoothing)
    return {
        "model": model,
        "x": x,
        "y": y,
        "logits": logits,
        "loss": loss,
        "prediction": sd.argmax(logits, axis=1),
        "optimizer": optim.Adam(model.parameters(), lr=lr),
    }


def train(
    epochs: int = 60,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    verbose: bool = True,
    render: str | None = None,
    target: str = "cpu",
) -> dict:
    """Train the MLP; returns ``test_accuracy``, ``loss_history`` (mean training loss per epoch), the full
    per-epoch ``history``, the test ``predictions`` and the ``model``. ``render`` writes the forward and backward
    graph of the loss to that file (.svg/.png/.dot)."""
    split = digits_splits(flatten=True)  # (N, 64) pixels in [0, 1]; 1,347 train, 450 test
    g = build(seed, lr=lr)
    x, y, loss, opt = g["x"], g["y"], g["loss"], g["optimizer"]
    schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    updates = opt.minimize(loss)

    train_step = sd.compile([x, y], [loss], updates=updates, target=target)
    evaluate = sd.compile([x, y], [loss, g["prediction"]], mode="eval", target=target)
    loader = data.DataLoader(data.ArrayDataset(*split.train), batch_size=batch_size, shuffle=True)
    x_test, y_test = split.test

    history: dict[str, list[float]] = {"train_loss": [], "test_loss": [], "test_acc": []}
    bar = progress(range(epochs), desc="MLP on digits", enabled=verbose)
    for _ in bar:
        losses, sizes = [], []
        for xb, yb in loader:
            losses.append(train_step(xb, yb)[0])
            sizes.append(len(yb))
        schedule.step()
        test_loss, predicted = evaluate(x_test, y_test)
        history["train_loss"].append(float(np.average(losses, weights=sizes)))
        history["test_loss"].append(float(test_loss))
        history["test_acc"].append(float(np.mean(predicted == y_test)))
        bar.set_postfix(loss=history["train_loss"][-1], test_acc=history["test_acc"][-1])
    bar.close()
    accuracy = history["test_acc"][-1]
    if verbose:
        print(f"test accuracy {accuracy:.4f} ({int(np.sum(predicted != y_test))} of {len(y_test)} wrong)")
    if render:
        grads = sd.grad(loss, list(g["model"].parameters()))  # the same nodes as minimize's (hash-consing)
        written = sd.render([loss, *grads], render)
        if verbose:
            print(f"graph written to {written}")
    return {
        "test_accuracy": accuracy,
        "loss_history": history["train_loss"],
        "history": history,
        "predictions": predicted,
        "model": g["model"],
    }


def main(
    epochs: int = 60,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    out_dir: str | Path | None = None,
    target: str = "cpu",
    render: str | None = None,
    verbose: bool = True,
) -> dict:
    """:func:`train`, then write the learning curves and a grid of test digits with their predicted labels."""
    t0 = time.perf_counter()
    out = out_dir_for("mlp_digits", out_dir)
    result = train(epochs, batch_size, lr, seed, verbose, render, target)
    split = digits_splits(flatten=True)
    files = [
        plot_learning_curves(result["history"], out / "learning_curves.png", "MLP 64-128-128-10 on digits", verbose),
        plot_digit_grid(*split.test, result["predictions"], out / "test_digits.png", title="MLP", verbose=verbose),
    ]
    result["files"] = [f for f in files if f is not None]
    result["seconds"] = time.perf_counter() - t0
    if verbose:
        print(f"files: {', '.join(str(f) for f in result['files'])}  ({result['seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--render", help="write the forward+backward graph of the loss here (.svg/.png/.dot)")
    parser.add_argument("--target", default="cpu", choices=["cpu", "reference"])
    args = parser.parse_args()
    main(epochs=args.epochs, out_dir=args.out_dir, target=args.target, render=args.render)
