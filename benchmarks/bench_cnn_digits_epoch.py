"""Epoch time of the digits CNN of ``examples/cnn_digits.py``: symdl ``target="cpu"`` vs the same model in PyTorch
eager (optional: skipped cleanly without torch).

    python benchmarks/bench_cnn_digits_epoch.py [--epochs 3] [--batch-size 16]

The workload is one training epoch of the example: the LeNet-5-style CNN with BatchNorm (1x8x8 -> 16 -> 32
channels, 128-120-84-10 classifier), cross-entropy with label smoothing 0.1, Adam (lr 1e-3), over the 1,347
training digits in batches of 16 (the last batch has 3), in the order of one shuffled epoch. Both libraries get
the same batches (prepared beforehand, so data loading is not timed), the same initial weights (PyTorch's model
loads symdl's ``state_dict``; the first step's losses are compared as a sanity check) and the same thread count
(``SYMDL_BENCH_THREADS``, default 2). One warm-up epoch each (symdl's compile happens before it and is reported
separately), then the median of ``--epochs`` timed epochs. Prints a Markdown table row with the ratio
symdl / PyTorch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("NUMBA_NUM_THREADS", os.environ.get("SYMDL_BENCH_THREADS", "2"))
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SYMDL_BENCH_THREADS", "2"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

try:  # PyTorch first, so that its OpenMP runtime starts with its own defaults (as benchmarks/run.py)
    import torch  # noqa: F401
except ImportError:
    pass

import numpy as np  # noqa: E402
from common import THREADS, torch_or_none  # noqa: E402

import symdl as sd  # noqa: E402
from examples.cnn_digits import LeNet5  # noqa: E402
from examples.common import digits_splits  # noqa: E402
from symdl import optim  # noqa: E402

LR = 1e-3
LABEL_SMOOTHING = 0.1


def epoch_batches(batch_size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The training split in the order of one shuffled epoch, cut into batches (the last one smaller)."""
    x, y = digits_splits().train
    order = np.random.default_rng(seed).permutation(len(x))
    return [
        (np.ascontiguousarray(x[order[i : i + batch_size]]), y[order[i : i + batch_size]])
        for i in range(0, len(x), batch_size)
    ]


def time_epochs(run_epoch: Callable[[], object], epochs: int) -> list[float]:
    """One warm-up epoch, then the wall time of each of ``epochs`` epochs (seconds)."""
    run_epoch()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - t0)
    return times


def symdl_epoch(batches: list, seed: int = 0) -> tuple[Callable[[], object], dict, float, float]:
    """symdl's compiled train step over ``batches``; returns (run_epoch, initial state_dict, compile seconds,
    first-step loss)."""
    sd.manual_seed(seed)
    model = LeNet5()
    state = model.state_dict()
    x = sd.placeholder((None, 1, 8, 8), name="x")
    y = sd.placeholder((None,), dtype="int64", name="y")
    loss = sd.cross_entropy(model(x), y, label_smoothing=LABEL_SMOOTHING)
    opt = optim.Adam(model.parameters(), lr=LR)
    t0 = time.perf_counter()
    step = sd.compile([x, y], [loss], updates=opt.minimize(loss), target="cpu")
    compile_s = time.perf_counter() - t0
    saved_opt = opt.state_dict()
    first = float(step(*batches[0])[0])
    model.load_state_dict(state)  # undo the sanity-check step (weights, BatchNorm buffers, optimiser state)
    opt.load_state_dict(saved_opt)

    def run_epoch() -> object:
        """All the batches once; returns the last loss."""
        out = None
        for xb, yb in batches:
            out = step(xb, yb)
        return out

    return run_epoch, state, compile_s, first


def torch_epoch(torch: Any, batches: list, state: dict) -> tuple[Callable[[], object], float]:
    """The same model, loss and optimiser in PyTorch eager, from symdl's initial weights; returns (run_epoch,
    first-step loss)."""
    nn = torch.nn
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip
    model.classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(128, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)
    )
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    tbatches = [(torch.from_numpy(xb), torch.from_numpy(yb)) for xb, yb in batches]

    def step(xb: Any, yb: Any) -> object:
        """One eager step: zero grads, loss, backward, Adam."""
        opt.zero_grad(set_to_none=True)
        out = torch.nn.functional.cross_entropy(
            model.classifier(model.features(xb)), yb, label_smoothing=LABEL_SMOOTHING
        )
        out.backward()
        opt.step()
        return out

    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    first = float(step(*tbatches[0]).item())
    model.load_state_dict(saved_model)  # undo the sanity-check step
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def run_epoch() -> object:
        """All the batches once; returns the last loss."""
        out = None
        for xb, yb in tbatches:
            out = step(xb, yb)
        return out

    return run_epoch, first


def fmt(seconds: float) -> str:
    """Milliseconds with one decimal."""
    return f"{seconds * 1e3:.1f} ms"


def main() -> None:
    """Time both libraries and print the table row."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (the median is reported)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    batches = epoch_batches(args.batch_size)
    n = sum(len(yb) for _, yb in batches)

    run_sd, state, compile_s, first_sd = symdl_epoch(batches)
    sd_times = time_epochs(run_sd, args.epochs)
    ours = statistics.median(sd_times)

    torch = torch_or_none()
    base = None
    if torch is not None:
        run_torch, first_torch = torch_epoch(torch, batches, state)
        torch_times = time_epochs(run_torch, args.epochs)
        base = statistics.median(torch_times)
        agree = abs(first_sd - first_torch) <= 1e-4 * abs(first_torch)
        print(
            f"first-step loss: symdl {first_sd:.6f}, torch {first_torch:.6f} ({'agree' if agree else 'DIFFER'}); "
            f"threads: {THREADS}; symdl compile {compile_s:.2f} s"
        )
    else:
        print(f"PyTorch is not installed: symdl only; threads: {THREADS}; symdl compile {compile_s:.2f} s")
    per_step = f"{ours / len(batches) * 1e3:.2f} ms/step"
    print()
    print('| workload | symdl `target="cpu"` | PyTorch eager | ratio (symdl / torch) |')
    print("| --- | --- | --- | --- |")
    name = f"digits CNN epoch ({n} images, batch {args.batch_size}, {len(batches)} Adam steps)"
    if base is None:
        print(f"| {name} | {fmt(ours)} ({per_step}) | n/a (torch not installed) | n/a |")
    else:
        print(f"| {name} | {fmt(ours)} ({per_step}) | {fmt(base)} | {ours / base:.2f}× |")


if __name__ == "__main__":
    main()
