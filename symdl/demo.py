"""The main job, ``symdl demo`` (also ``python -m symdl``): train a small CNN on scikit-learn's digits with
compiled CPU kernels and show everything symdl does with it.

1. trains ``Conv-BN-ReLU, Conv-BN-ReLU, MaxPool, Dropout, Linear`` on the 8x8 digits (Adam, cosine schedule,
   a progress bar) with :func:`symdl.fit`; one compiled plan runs forward, backward and the update;
2. prints the test accuracy of the eval-mode model;
3. writes into the output folder: the learning curves (``learning_curve.png``), the forward graph, the backward
   (gradient) graph and the fused inference plan (``forward.svg``, ``backward.svg``, ``plan.svg``; ``.dot``
   sources where graphviz's ``dot`` is missing), and the exported inference model (``digits_cnn.symdl``:
   BatchNorm folded, dropout gone, weights frozen);
4. reloads the export with :func:`symdl.load` (as another program would, without the training graph) and
   checks that its test accuracy equals the trained model's.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DemoResult", "digits_cnn", "run_demo"]


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: accuracies, files written and seconds taken."""

    test_accuracy: float
    reloaded_accuracy: float
    epochs: int
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [
            f"test accuracy {self.test_accuracy:.4f} (trained), {self.reloaded_accuracy:.4f} (reloaded export)",
            f"{self.epochs} epochs in {self.seconds:.1f} s",
        ]
        lines += [f"  {what:<15} {path}" for what, path in self.files.items()]
        return "\n".join(lines)


def digits_cnn() -> Any:
    """The demo's model for ``(N, 1, 8, 8)`` digits: two 3x3 conv-BN-ReLU blocks, 2x2 max-pooling, dropout and
    a linear classifier (10 classes)."""
    from symdl import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(32 * 4 * 4, 10),
    )


def _render(what: Any, path: Path, title: str) -> Path:
    """Render with graphviz; where ``dot`` is missing the ``.dot`` source is written instead (no failure)."""
    from symdl.render import GraphvizMissingWarning, render

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GraphvizMissingWarning)
        return Path(render(what, path, title=title, max_nodes=None))


def run_demo(
    out_dir: str | os.PathLike = "symdl-demo",
    epochs: int = 12,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    log: Any = print,
) -> DemoResult:
    """Run the demo (see the module docstring), writing into ``out_dir``; returns a :class:`DemoResult`.
    Raises ``RuntimeError`` if the reloaded export's accuracy differs from the trained model's."""
    import symdl
    from symdl import data, optim

    t0 = time.perf_counter()
    out = Path(os.fspath(out_dir))
    out.mkdir(parents=True, exist_ok=True)
    symdl.manual_seed(seed)
    x_all, y_all = data.load_digits()
    train, val, test = data.train_val_test_split(x_all, y_all, val=0.1, test=0.2, stratify=y_all)
    log(f"digits: {len(train[1])} training, {len(val[1])} validation, {len(test[1])} test images (1x8x8)")

    model = digits_cnn()
    opt = optim.Adam(model.parameters(), lr=3e-3)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    train_loader = data.DataLoader(data.ArrayDataset(*train), batch_size=batch_size, shuffle=True)
    val_loader = data.DataLoader(data.ArrayDataset(*val), batch_size=256)
    history = symdl.fit(
        model, symdl.cross_entropy, opt, train_loader, val_loader, epochs, scheduler=sched, progress=progress
    )

    files: dict[str, Path] = {}
    files["learning curve"] = symdl.plot_history(history, out / "learning_curve.png", title="symdl demo: digits CNN")

    x = symdl.placeholder((None, 1, 8, 8), name="x")
    y = symdl.placeholder((None,), "int64", name="y")
    logits = model(x)
    loss = symdl.cross_entropy(logits, y)
    grads = symdl.grad(loss, list(model.trainable_parameters()))
    files["forward graph"] = _render({"logits": logits}, out / "forward.svg", "forward: digits CNN")
    files["backward graph"] = _render(
        {"loss": loss, **{f"d/d{p.name}": g for p, g in zip(model.trainable_parameters(), grads)}},
        out / "backward.svg",
        "forward + backward (gradient nodes in orange)",
    )
    infer = symdl.compile([x], [logits], mode="eval", target="cpu", freeze_parameters=True)
    files["fused plan"] = _render(infer, out / "plan.svg", "inference plan: BatchNorm folded, fused kernels")

    x_test, y_test = test
    acc = float((np.argmax(infer(x_test)[0], axis=1) == y_test).mean())
    log(f"test accuracy: {acc:.4f}")
    files["exported model"] = Path(infer.export(out / "digits_cnn.symdl"))
    loaded = symdl.load(files["exported model"])
    acc_loaded = float((np.argmax(loaded(x_test)[0], axis=1) == y_test).mean())
    if acc_loaded != acc:
        raise RuntimeError(f"the reloaded export scores {acc_loaded:.4f}, the trained model {acc:.4f}")
    log(f"reloaded {files['exported model']}: test accuracy {acc_loaded:.4f} (equal)")
    result = DemoResult(acc, acc_loaded, len(history), files, time.perf_counter() - t0)
    log(str(result))
    return result
