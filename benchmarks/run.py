"""symdl benchmarks: each workload against baselines measured in the same process (medians and ratios).

    python benchmarks/run.py [--target cpu] [--quick]

PyTorch eager (``pip install torch==2.13.0``, CPU build) is the baseline when installed (skipped otherwise);
ONNX Runtime (``pip install onnx onnxruntime``) too, for the conv-BN-ReLU inference net; NumPy baselines always
run. Every library gets the same thread count (``SYMDL_BENCH_THREADS``, default 2).
Prints a Markdown table: per workload, symdl and its baselines take turns for five passes of ``repeat`` calls
each (:func:`common.interleaved_times`); the medians, and symdl / baseline ratios.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NUMBA_NUM_THREADS", os.environ.get("SYMDL_BENCH_THREADS", "2"))
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SYMDL_BENCH_THREADS", "2"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:  # PyTorch first: its baselines run with its own thread defaults
    import torch  # noqa: F401
except ImportError:
    pass

import numpy as np  # noqa: E402
from common import (  # noqa: E402
    conv_bn_relu_net,
    elementwise_chain,
    interleaved_times,
    lenet_step,
    mlp_step,
    torch_or_none,
)
from ort_baseline import conv_bn_relu_net_ort  # noqa: E402

import symdl as sd  # noqa: E402


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def row(name: str, target: str, ours: float, base: dict[str, float]) -> str:
    ratios = ", ".join(f"{ours / v:.2f}× {k}" for k, v in base.items()) or "n/a"
    bases = ", ".join(f"{k} {fmt(v)}" for k, v in base.items()) or "n/a"
    return f"| {name} | {fmt(ours)} | {bases} | {ratios} | {target} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    rep = 5 if args.quick else 20
    torch = torch_or_none()
    import torch_baselines as tb

    print("| workload | symdl | baselines | ratio (symdl / baseline) | issue target |")
    print("| --- | --- | --- | --- | --- |")
    for name, sizes, batch, goal in (
        ("MLP 784-512-512-10, batch 128, Adam step", (784, 512, 512, 10), 128, "≤ 0.7× torch"),
        ("MLP 64-128-128-10, batch 32, Adam step", (64, 128, 128, 10), 32, "≤ 0.25× torch"),
    ):
        f, data = mlp_step(sizes, batch, args.target)
        fns = {"symdl": lambda f=f, data=data: f(*data)}
        if torch:
            fns["torch"] = tb.mlp_step(torch, sizes, batch)
        base = interleaved_times(fns, rep)
        ours = base.pop("symdl")
        print(row(name, goal, ours, base))
        if batch == 128 and f.lowered is not None:
            mem = f.memory_report()
            peak_note = (
                f"planned peak {mem.planned_peak_bytes / 2**20:.2f} MiB vs "
                f"{mem.unplanned_bytes / 2**20:.2f} MiB unplanned"
            )

    f, data = lenet_step(64, args.target)
    fns = {"symdl": lambda: f(*data)}
    if torch:
        fns["torch"] = tb.lenet_step(torch, 64)
    base = interleaved_times(fns, rep)
    ours = base.pop("symdl")
    print(row("LeNet-5, batch 64, SGD-momentum step", "≤ 1.0× torch", ours, base))

    x = np.random.default_rng(0).normal(size=(4 * 1024 * 1024,)).astype(np.float32)
    xs = sd.placeholder((None,), name="x")
    f = sd.compile([xs], [elementwise_chain(xs)], target=args.target)
    few = max(rep // 4, 3)
    fns = {"symdl": lambda: f(x), "numpy": lambda: np.tanh(x * 1.5 + 0.5) * np.exp(-(x * x)) + x}
    if torch:
        fns["torch"] = tb.elementwise_chain(torch, x)
    base = interleaved_times(fns, few)
    ours = base.pop("symdl")
    print(row("8-op elementwise chain (exp, tanh), 4M float32", "≤ 1.5× JAX; ≥ 5× faster than NumPy", ours, base))

    for batch, goal in ((1, "≤ 1.0× torch"), (64, "≤ 1.0× ONNX Runtime")):
        f, data = conv_bn_relu_net(args.target, batch)
        fns = {"symdl": lambda f=f, data=data: f(*data)}
        if torch:
            fns["torch"] = tb.conv_bn_relu_net(torch, batch)
        ort_run = conv_bn_relu_net_ort(batch)
        if ort_run is not None:
            fns["ort"] = ort_run
        base = interleaved_times(fns, rep)
        ours = base.pop("symdl")
        print(row(f"conv-BN-ReLU net inference (BN folded), batch {batch}", goal, ours, base))
    if args.target != "reference":
        print(f"\nMLP 784-512-512-10 train step memory: {peak_note}")


if __name__ == "__main__":
    main()
