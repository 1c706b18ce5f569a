"""symdl benchmarks: each workload against baselines measured in the same process (medians, ratios).

    python benchmarks/run.py [--target cpu] [--quick]

PyTorch eager (``pip install torch==2.13.0``, CPU build) is the reference baseline when installed; NumPy
baselines run always. All libraries use the same thread count (``SYMDL_BENCH_THREADS``, default 2).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NUMBA_NUM_THREADS", os.environ.get("SYMDL_BENCH_THREADS", "2"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from common import (  # noqa: E402
    conv_bn_relu_net,
    elementwise_chain,
    lenet_step,
    median_time,
    mlp_step,
    torch_or_none,
)

import symdl as sd  # noqa: E402


def row(name: str, ours: float, base: dict[str, float]) -> str:
    cells = [f"{ours * 1e3:.3f} ms"]
    for k, v in base.items():
        cells.append(f"{k} {v * 1e3:.3f} ms ({ours / v:.2f}x)")
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    rep = 5 if args.quick else 20
    torch = torch_or_none()
    from torch_baselines import conv_bn_relu_net as t_conv
    from torch_baselines import elementwise_chain as t_chain
    from torch_baselines import lenet_step as t_lenet
    from torch_baselines import mlp_step as t_mlp

    print(f"| workload ({args.target}) | symdl | baselines (ratio = symdl / baseline) |")
    print("| --- | --- | --- |")
    for name, sizes, batch in (
        ("MLP 784-512-512-10 b128 Adam step", (784, 512, 512, 10), 128),
        ("MLP 64-128-128-10 b32 Adam step", (64, 128, 128, 10), 32),
    ):
        f, data = mlp_step(sizes, batch, args.target)
        ours = median_time(lambda f=f, data=data: f(*data), rep)
        base = {"torch": median_time(t_mlp(torch, sizes, batch), rep)} if torch else {}
        print(row(name, ours, base))

    f, data = lenet_step(64, args.target)
    ours = median_time(lambda f=f, data=data: f(*data), rep)
    base = {"torch": median_time(t_lenet(torch, 64), rep)} if torch else {}
    print(row("LeNet-5 b64 SGD-momentum step", ours, base))

    x = np.random.default_rng(0).normal(size=(4 * 1024 * 1024,)).astype(np.float32)
    xs = sd.placeholder((None,), name="x")
    f = sd.compile([xs], [elementwise_chain(xs)], target=args.target)
    ours = median_time(lambda: f(x), max(rep // 4, 3))
    base = {"numpy": median_time(lambda: np.tanh(x * 1.5 + 0.5) * np.exp(-(x * x)) + x, max(rep // 4, 3))}
    if torch:
        base["torch"] = median_time(t_chain(torch, x), max(rep // 4, 3))
    print(row("8-op elementwise chain, 4M float32", ours, base))

    for batch in (1, 64):
        f, data = conv_bn_relu_net(args.target, batch)
        ours = median_time(lambda f=f, data=data: f(*data), rep)
        base = {"torch": median_time(t_conv(torch, batch), rep)} if torch else {}
        print(row(f"conv-BN-ReLU inference b{batch}", ours, base))


if __name__ == "__main__":
    main()
