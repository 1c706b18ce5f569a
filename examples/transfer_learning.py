"""Transfer learning: a CNN feature extractor learned on digits 0-4, frozen, reused for digits 5-9 from 10 examples
per class.

python examples/transfer_learning.py [--shots 10] [--out-dir DIR]

1. **Pre-train** the LeNet-5-style CNN of ``cnn_digits.py`` on the digits 0-4 (all their training images) with
   ``symdl.training.fit``, and save it with ``symdl.checkpoint.save_checkpoint``.
2. **Transfer**: a new model loads the checkpoint, gets a freshly initialised classifier for the classes 5-9, and
   its ``features`` are frozen (``model.features.freeze()``: optimisers skip parameters with ``trainable=False``,
   so ``opt.minimize(loss)`` differentiates and updates the classifier only). It is trained on ``shots`` images
   per class of the digits 5-9. The train step is compiled with ``mode="eval"``: the frozen BatchNorm layers must
   use (and keep) their pre-trained running statistics. A train-mode step would normalise with the statistics of
   each tiny batch and *update* the running statistics, which are buffers, not trainable parameters, so freezing
   does not protect them (PyTorch has the same pitfall: call ``.eval()`` on frozen BatchNorm layers). With
   ``mode="eval"`` nothing of the extractor changes, which the example checks array by array.
3. **Baseline**: the same architecture trained from scratch (``fit``) on the same few images.

An honest result on this data: the frozen 0-4 features give about 95% on the digits 5-9 from 50 labelled images,
but the same small CNN trained from scratch on those 50 images does slightly better (about 97%): 8x8 digits are
easy, BatchNorm regularises the scratch model well, and filters tuned to tell 0-4 apart are not what 5-9 need most.
Transfer pays off when the pre-training task is broader than the target (many classes, much more data) and the
target model is expensive to train; the mechanics shown here (checkpoint, fresh head, ``freeze``, inference-mode
BatchNorm, verifying that nothing frozen moved) are the same.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import symdl as sd
from symdl import data, nn, optim
from symdl.checkpoint import load_checkpoint, save_checkpoint
from symdl.training import Trainer

try:
    from examples.cnn_digits import LeNet5
    from examples.common import EpochProgress, digits_splits, out_dir_for, plot_curve_grid, plot_digit_grid, progress
except ImportError:  # run as a script
    from cnn_digits import LeNet5
    from common import EpochProgress, digits_splits, out_dir_for, plot_curve_grid, plot_digit_grid, progress


def few_shot(x: np.ndarray, y: np.ndarray, shots: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``shots`` samples of every class (the split is already shuffled)."""
    keep = np.concatenate([np.flatnonzero(y == c)[:shots] for c in np.unique(y)])
    keep.sort()
    return x[keep], y[keep]


def main(
    pretrain_epochs: int = 10,
    finetune_epochs: int = 60,
    shots: int = 10,
    lr: float = 2e-3,
    seed: int = 0,
    out_dir: str | Path | None = None,
    target: str = "cpu",
    verbose: bool = True,
) -> dict:
    """Pre-train on 0-4, transfer to 5-9 with a frozen extractor, compare with training from scratch.

    Returns the accuracies (``pretrain_accuracy`` on 0-4, ``transfer_accuracy`` and ``scratch_accuracy`` on 5-9),
    ``frozen_unchanged`` (every array of the frozen extractor equal before and after fine-tuning), the
    ``trainable`` parameter names of the transfer step, the curves and the files written.
    """
    t0 = time.perf_counter()
    out = out_dir_for("transfer_learning", out_dir)
    split = digits_splits()
    (x_train, y_train), (x_test, y_test) = split.train, split.test
    src_train = (x_train[y_train < 5], y_train[y_train < 5])
    src_test = (x_test[y_test < 5], y_test[y_test < 5])
    tgt_few = few_shot(x_train[y_train >= 5], y_train[y_train >= 5] - 5, shots)  # labels 5-9 -> 0-4
    tgt_test = (x_test[y_test >= 5], y_test[y_test >= 5] - 5)

    # 1. pre-train on 0-4 -----------------------------------------------------------------------------------------
    sd.manual_seed(seed)
    source = LeNet5(num_classes=5)
    opt = optim.Adam(source.parameters(), lr=lr)
    trainer = Trainer(source, sd.cross_entropy, opt, target=target)
    loader = data.DataLoader(data.ArrayDataset(*src_train), batch_size=32, shuffle=True)
    bar = EpochProgress(pretrain_epochs, desc="pre-train on 0-4", enabled=verbose)
    trainer.fit(loader, epochs=pretrain_epochs, progress=False, callbacks=[bar])
    bar.close()
    pretrain_acc = float(np.mean(np.argmax(trainer.predict(src_test[0]), axis=1) == src_test[1]))
    checkpoint = save_checkpoint(out / "pretrained_0-4.npz", source, extra={"classes": "0-4", "accuracy": pretrain_acc})

    # 2. transfer: load, new head, freeze the features, train the head on a few 5-9 digits ----------------------
    sd.manual_seed(seed + 1)
    model = LeNet5(num_classes=5)
    load_checkpoint(checkpoint, model, restore_rng=False)  # the pre-trained weights, head included ...
    for layer in model.classifier:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()  # ... then a fresh classifier for the new classes
    model.features.freeze()
    frozen_before = model.features.state_dict()  # parameters and BatchNorm buffers

    x = sd.placeholder((None, 1, 8, 8), name="x")
    y = sd.placeholder((None,), dtype="int64", name="y")
    logits = model(x)
    loss = sd.cross_entropy(logits, y)
    opt = optim.Adam(model.parameters(), lr=lr)
    updates = opt.minimize(loss)  # frozen parameters are skipped: gradients of the classifier only
    trainable = [p.name for p in model.parameters() if p in updates]
    train_step = sd.compile([x, y], [loss], updates=updates, mode="eval", target=target)  # BN frozen too
    evaluate = sd.compile([x, y], [loss, sd.argmax(logits, axis=1)], mode="eval", target=target)
    loader = data.DataLoader(data.ArrayDataset(*tgt_few), batch_size=16, shuffle=True)

    transfer_curves: dict[str, list[float]] = {"train_loss": [], "test_loss": [], "test_acc": []}
    bar = progress(range(finetune_epochs), desc="transfer to 5-9 (frozen features)", enabled=verbose)
    for _ in bar:
        losses, sizes = [], []
        for xb, yb in loader:
            losses.append(train_step(xb, yb)[0])
            sizes.append(len(yb))
        test_loss, predicted = evaluate(*tgt_test)
        transfer_curves["train_loss"].append(float(np.average(losses, weights=sizes)))
        transfer_curves["test_loss"].append(float(test_loss))
        transfer_curves["test_acc"].append(float(np.mean(predicted == tgt_test[1])))
        bar.set_postfix(loss=transfer_curves["train_loss"][-1], test_acc=transfer_curves["test_acc"][-1])
    bar.close()
    transfer_acc = transfer_curves["test_acc"][-1]
    frozen_after = model.features.state_dict()
    frozen_unchanged = all(np.array_equal(frozen_before[k], frozen_after[k]) for k in frozen_before)

    # 3. baseline: the same network from scratch on the same few digits -----------------------------------------
    sd.manual_seed(seed + 1)
    scratch = LeNet5(num_classes=5)
    trainer = Trainer(scratch, sd.cross_entropy, optim.Adam(scratch.parameters(), lr=lr), target=target)
    few_loader = data.DataLoader(data.ArrayDataset(*tgt_few), batch_size=16, shuffle=True)
    test_loader = data.DataLoader(data.ArrayDataset(*tgt_test), batch_size=512)
    bar = EpochProgress(finetune_epochs, desc="from scratch on 5-9", enabled=verbose)
    h = trainer.fit(few_loader, test_loader, finetune_epochs, progress=False, callbacks=[bar])
    bar.close()
    scratch_acc = h.val_accuracy[-1]
    scratch_curves = {"train_loss": h.train_loss, "test_loss": h.val_loss, "test_acc": h.val_accuracy}

    n = len(tgt_few[1])
    files = [
        plot_curve_grid(
            {
                f"frozen pre-trained features ({n} labels)": transfer_curves,
                f"from scratch ({n} labels)": scratch_curves,
            },
            out / "learning_curves.png",
            "Digits 5-9: transfer from a 0-4 model vs training from scratch",
            metrics=("loss", "acc"),
            verbose=verbose,
        ),
        plot_digit_grid(
            tgt_test[0], tgt_test[1] + 5, predicted + 5, out / "test_digits.png", title="Transfer", verbose=verbose
        ),
    ]
    files = [f for f in files if f is not None]
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"pre-trained on 0-4: test accuracy {pretrain_acc:.4f} (checkpoint {checkpoint})")
        print(f"trained by the transfer step: {', '.join(trainable)}")
        print(f"frozen feature extractor unchanged after fine-tuning: {frozen_unchanged} ({len(frozen_before)} arrays)")
        print(
            f"digits 5-9 from {n} labelled images, test accuracy: {transfer_acc:.4f} with the frozen pre-trained "
            f"features, {scratch_acc:.4f} from scratch"
        )
        print(f"files: {', '.join(str(f) for f in files)}  ({seconds:.1f} s)")
    return {
        "pretrain_accuracy": pretrain_acc,
        "transfer_accuracy": transfer_acc,
        "scratch_accuracy": scratch_acc,
        "frozen_unchanged": frozen_unchanged,
        "frozen_arrays": len(frozen_before),
        "trainable": trainable,
        "curves": {"transfer": transfer_curves, "scratch": scratch_curves},
        "checkpoint": checkpoint,
        "files": files,
        "seconds": seconds,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=10, help="labelled images per class of the digits 5-9")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    main(shots=args.shots, out_dir=args.out_dir)
