"""A LeNet-5-style convolutional network on scikit-learn's 8x8 digits, compiled for the CPU.

python examples/cnn_digits.py [--epochs 30] [--out-dir DIR]

LeNet-5 was made for 32x32 images (MNIST's 28x28 padded by 2). The digits here are 8x8, so the first 5x5
convolution is zero-padded by 2 (keeping 8x8) and the second one is a padded 3x3 (a 5x5 would overrun the 4x4
maps); the two pooling layers and the 120-84-10 classifier are LeNet's. Two modern touches: ReLU instead of tanh,
and BatchNorm after each convolution (it is folded into the convolution by ``fold_bn`` when the model is compiled
for inference, see :func:`export_inference`).

The training loop is written out: one compiled train step (``updates=opt.minimize(loss)``), one compiled
evaluation function (``mode="eval"``: BatchNorm uses its running statistics), a seeded ``DataLoader``, and a cosine
learning-rate schedule that writes the optimiser's learning-rate parameter (nothing is recompiled).
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


class LeNet5(nn.Module):
    """LeNet-5 adapted to 1x8x8 inputs: ``features`` (two conv-[BN]-ReLU-maxpool blocks, 1x8x8 -> 32x2x2) and
    ``classifier`` (flatten, 128-120-84-``num_classes`` with ReLU)."""

    def __init__(self, num_classes: int = 10, batch_norm: bool = True, channels: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        c1, c2 = channels
        bn = nn.BatchNorm2d if batch_norm else lambda c: nn.Identity()
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=5, padding=2),  # 1x8x8 -> c1x8x8 (the "padded" input)
            bn(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> c1x4x4
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),  # -> c2x4x4
            bn(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> c2x2x2
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 4, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: sd.Tensor) -> sd.Tensor:
        """Logits of shape (N, num_classes)."""
        return self.classifier(self.features(x))


def export_inference(model: nn.Module, target: str = "cpu") -> sd.Function:
    """An inference function ``f(images) -> [predicted labels]`` with BatchNorm folded into the convolutions and
    the weights frozen into constants (retraining the model does not change it)."""
    x = sd.placeholder((None, 1, 8, 8), name="images")
    return sd.compile([x], [sd.argmax(model(x), axis=1)], mode="eval", target=target, freeze_parameters=True)


def main(
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    label_smoothing: float = 0.1,
    seed: int = 0,
    out_dir: str | Path | None = None,
    target: str = "cpu",
    verbose: bool = True,
) -> dict:
    """Train the CNN with Adam, a cosine schedule and label smoothing; print the test accuracy; write the learning
    curves and a grid of test digits with their predicted labels. Returns the results (accuracy, history, files,
    seconds)."""
    t0 = time.perf_counter()
    out = out_dir_for("cnn_digits", out_dir)
    sd.manual_seed(seed)  # fixes the initial weights and the loader's shuffling
    split = digits_splits()  # (N, 1, 8, 8) images: 1,347 train, 450 test

    model = LeNet5()
    x = sd.placeholder((None, 1, 8, 8), name="x")
    y = sd.placeholder((None,), dtype="int64", name="y")
    logits = model(x)
    loss = sd.cross_entropy(logits, y, label_smoothing=label_smoothing)
    prediction = sd.argmax(logits, axis=1)
    opt = optim.Adam(model.parameters(), lr=lr)
    schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)

    train_step = sd.compile([x, y], [loss], updates=opt.minimize(loss), target=target)
    evaluate = sd.compile([x, y], [loss, prediction], mode="eval", target=target)
    loader = data.DataLoader(data.ArrayDataset(*split.train), batch_size=batch_size, shuffle=True)
    x_test, y_test = split.test

    history: dict[str, list[float]] = {"train_loss": [], "test_loss": [], "test_acc": []}
    bar = progress(range(epochs), desc="LeNet-5 on digits", enabled=verbose)
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

    predicted = export_inference(model, target)(x_test)[0]  # BatchNorm folded: the same predictions
    test_acc = float(np.mean(predicted == y_test))
    files = [
        plot_learning_curves(history, out / "learning_curves.png", "LeNet-5-style CNN on 8x8 digits", verbose),
        plot_digit_grid(x_test, y_test, predicted, out / "test_digits.png", title="LeNet-5", verbose=verbose),
    ]
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"test accuracy {test_acc:.4f} ({int(np.sum(predicted != y_test))} of {len(y_test)} wrong)")
        print(f"files: {', '.join(str(f) for f in files if f is not None)}  ({seconds:.1f} s)")
    return {
        "test_accuracy": test_acc,
        "history": history,
        "predictions": predicted,
        "files": [f for f in files if f is not None],
        "seconds": seconds,
        "model": model,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--target", default="cpu", choices=["cpu", "reference"])
    args = parser.parse_args()
    main(epochs=args.epochs, out_dir=args.out_dir, target=args.target)
