"""Benchmark the CPU convolution kernels: im2col + GEMM, the direct loop nest, the register-tiled SIMD kernel
(stride 1 only) and Winograd F(2x2, 3x3) (3x3 stride-1 forward passes only), on LeNet's layers and a few
others.

Run: ``python benchmarks/bench_conv_kernels.py [--batch 64] [--repeat 30] [--dtype float32]``. Prints, per layer
and op, the median time of each algorithm's parallel ``run`` (and the NumPy reference ``perform``) and the
fastest one's GFLOP/s, then the
per-call Python overhead of ``run`` (the wrapper around the compiled kernel) on a tiny input. Not run by tests.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import symdl as sd
from compiler.codegen.cpu import library_linalg as L
from compiler.codegen.cpu.conv_winograd import winograd_applies
from symdl.graph import apply
from symdl.ops.conv import Conv, ConvGradInput, ConvGradWeight

# name: (input shape without batch, weight shape, stride, padding, dilation, groups)
LAYERS = {
    "lenet-conv1 1->6 5x5 28x28 p2": ((1, 28, 28), (6, 1, 5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 1),
    "lenet-conv2 6->16 5x5 14x14": ((6, 14, 14), (16, 6, 5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    "convnet 16->32 3x3 32x32 p1": ((16, 32, 32), (32, 16, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "convnet 32->32 3x3 16x16 p1": ((32, 16, 16), (32, 32, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "convnet 3->16 3x3 32x32 p1": ((3, 32, 32), (16, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    "depthwise 32ch 3x3 16x16 p1": ((32, 16, 16), (32, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 32),
    "conv 32->64 3x3 16x16 s2 p1": ((32, 16, 16), (64, 32, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
}


def median_time(fn, repeat: int, *args) -> float:
    fn(*args)  # compile / warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def layer_cases(cfg, batch: int, dtype: str, rng):
    xs, ws, *props = cfg
    x_t = sd.placeholder((None, *xs), dtype=dtype)
    w_t = sd.placeholder(ws, dtype=dtype)
    g_t = sd.placeholder((None, ws[0], None, None), dtype=dtype)
    x = rng.standard_normal((batch, *xs)).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    y = Conv(*props).perform(x, w)
    g = rng.standard_normal(y.shape).astype(dtype)
    return [
        ("forward", apply(Conv(*props), x_t, w_t), [x, w], y.shape),
        ("grad_input", apply(ConvGradInput(*props), g_t, w_t, x_t), [g, w, x], x.shape),
        ("grad_weight", apply(ConvGradWeight(*props), x_t, g_t, w_t), [x, g, w], w.shape),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    import numba

    print(f"batch {args.batch}, {args.dtype}, numba threads {numba.get_num_threads()}, median of {args.repeat}")
    algos = ("im2col", "direct", "simd", "winograd")
    print(
        f"{'layer':30s} {'op':12s} "
        + " ".join(f"{a + ' ms':>10s}" for a in algos)
        + f" {'numpy ms':>10s} {'GFLOP/s':>8s}  faster / default"
    )
    for name, cfg in LAYERS.items():
        for op, node, arrays, out_shape in layer_cases(cfg, args.batch, args.dtype, rng):
            out = np.empty(out_shape, args.dtype)
            ms = {}
            for algo in algos:
                if (algo == "simd" and any(s != 1 for s in node.op.stride)) or (
                    algo == "winograd"
                    and not (isinstance(node.op, Conv) and winograd_applies(cfg[1], *cfg[2:3], *cfg[4:]))
                ):
                    ms[algo] = float("nan")
                    continue
                run = L.conv_impl(node, algo).run
                ms[algo] = 1e3 * median_time(run, args.repeat, *arrays, out)
            ms["numpy"] = 1e3 * median_time(node.op.perform, max(3, args.repeat // 5), *arrays)
            best = min((a for a in algos if ms[a] == ms[a]), key=ms.get)
            cells = " ".join(f"{ms[a]:10.3f}" for a in algos)
            gflops = 2 * L._CONV_MACS[type(node.op)](arrays[0], arrays[1], out) / ms[best] / 1e6  # the fastest's
            default = L.default_conv_algo(node)
            print(f"{name:30s} {op:12s} {cells} {ms['numpy']:10.3f} {gflops:8.1f}  {best} / {default}")

    # Python overhead of run: the same tiny call through run and straight into the compiled kernel
    _, node, arrays, out_shape = layer_cases(LAYERS["lenet-conv2 6->16 5x5 14x14"], 1, args.dtype, rng)[0]
    small = [np.ascontiguousarray(a[..., :6, :6]) for a in arrays[:1]] + arrays[1:]
    out = np.empty((1, 16, 2, 2), args.dtype)
    impl = L.conv_impl(node, "direct")
    kernel, geom = impl.dispatchers[0], L._conv_geom(node.op)
    n = 20000
    t_run = median_time(lambda: [impl.run(*small, out) for _ in range(n)], 5) / n
    t_ker = median_time(lambda: [kernel(*small, out, geom, 1, 0, 1) for _ in range(n)], 5) / n
    print(f"\nrun() Python overhead on a tiny conv: {1e6 * (t_run - t_ker):.2f} us (run {1e6 * t_run:.2f} us)")


if __name__ == "__main__":
    main()
