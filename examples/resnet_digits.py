"""A small residual network (BatchNorm, identity and projection skip connections) on scikit-learn's 8x8 digits.

python examples/resnet_digits.py [--epochs 15] [--out-dir DIR]

The ResNet recipe of He et al. (2016) scaled down to 8x8 images: a 3x3 stem convolution, then three stages of
"basic blocks" (two 3x3 conv-BN layers whose output is *added* to the block's input before the last ReLU). The
first block of a stage that halves the resolution and doubles the channels adds a 1x1 strided conv-BN
*projection* of its input instead of the input itself. Global average pooling and one linear layer classify.

Skip connections are just ``+`` on symbolic tensors: symdl's autodiff sums the gradients arriving at a tensor
from all its consumers, so the identity path carries the gradient straight back, as in the paper. BatchNorm uses
batch statistics in the compiled train step and updates its running statistics there; the evaluation function
(``mode="eval"``) uses the running statistics. Both are compiled from the same graph.
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


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions; ``shortcut`` is the identity,
    or a 1x1 strided conv + BN when the block changes the resolution or the channel count."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: sd.Tensor) -> sd.Tensor:
        """The block's output (same spatial size as ``x`` divided by ``stride``)."""
        h = sd.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return sd.relu(h + self.shortcut(x))  # the skip connection


class ResNet(nn.Module):
    """Stem (3x3 conv-BN-ReLU) + stages of :class:`BasicBlock` + global average pooling + linear.

    With the defaults: 1x8x8 -> 16x8x8 -> [16x8x8] -> [32x4x4] -> [64x2x2] -> 64 -> 10.
    """

    def __init__(
        self, widths: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 1, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        channels = widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks_per_stage):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.GlobalAvgPool2d()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: sd.Tensor) -> sd.Tensor:
        """Logits of shape (N, num_classes)."""
        return self.fc(self.pool(self.stages(self.stem(x))))  # pool: (N, C, H, W) -> (N, C)


def main(
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = 2e-3,
    label_smoothing: float = 0.1,
    seed: int = 0,
    out_dir: str | Path | None = None,
    target: str = "cpu",
    verbose: bool = True,
) -> dict:
    """Train the ResNet with Adam, a cosine schedule and label smoothing; print the test accuracy; write the
    learning curves and a grid of test digits with their predicted labels."""
    t0 = time.perf_counter()
    out = out_dir_for("resnet_digits", out_dir)
    sd.manual_seed(seed)
    split = digits_splits()

    model = ResNet()
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
    bar = progress(range(epochs), desc="ResNet on digits", enabled=verbose)
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

    test_acc = history["test_acc"][-1]
    n_params = sum(p.value.size for p in model.parameters())
    files = [
        plot_learning_curves(history, out / "learning_curves.png", f"ResNet ({n_params:,} parameters)", verbose),
        plot_digit_grid(x_test, y_test, predicted, out / "test_digits.png", title="ResNet", verbose=verbose),
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
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--target", default="cpu", choices=["cpu", "reference"])
    args = parser.parse_args()
    main(epochs=args.epochs, out_dir=args.out_dir, target=args.target)
