"""Exported-model figures: latency of the loaded model vs the in-process compiled eval function (they should be
equal: same kernels) and vs PyTorch eager with BatchNorm folded (optional), at batch 1 and 64; load time of the
model file cold (empty kernel caches, a fresh process) and warm (a fresh process, caches filled). The three
timings take turns (``common.interleaved_times``).

    python benchmarks/bench_export.py

The model is the conv-BN-ReLU inference net of ``benchmarks/common.py`` (3 blocks on 3x32x32, BN folded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import THREADS, conv_bn_relu_net, interleaved_times, torch_or_none  # noqa: E402

LOAD_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import symdl
t1 = time.perf_counter()
g = symdl.load(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "compiled": g.compile_report.numba_compiled}))
"""


def load_in_fresh_process(path: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", LOAD_CHILD, path], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import symdl

    torch = torch_or_none()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "convnet.symdl")
        rows = []
        for batch in (1, 64):
            f, (x,) = conv_bn_relu_net("cpu", batch)
            if batch == 1:
                f.export(path)
            g = symdl.load(path)
            fns = {"in-process": lambda f=f, x=x: f(x), "loaded": lambda g=g, x=x: g(x)}
            if torch is not None:
                from torch_baselines import conv_bn_relu_net as torch_net

                fns["torch"] = torch_net(torch, batch)
            times = interleaved_times(fns, repeat=50 if batch == 1 else 10)
            t_f, t_g = times["in-process"], times["loaded"]
            cells = [f"batch {batch}", f"{t_g * 1e3:.3f} ms", f"{t_f * 1e3:.3f} ms", f"{t_g / t_f:.2f}×"]
            if torch is not None:
                cells += [f"{times['torch'] * 1e3:.3f} ms", f"{t_g / times['torch']:.2f}×"]
            else:
                cells += ["(torch not installed)", "-"]
            rows.append("| " + " | ".join(cells) + " |")
        cold_env = dict(os.environ, SYMDL_CACHE_DIR=os.path.join(tmp, "symdl"), NUMBA_CACHE_DIR=os.path.join(tmp, "nb"))
        cold = load_in_fresh_process(path, cold_env)
        warm = load_in_fresh_process(path, cold_env)
    print(f"conv-BN-ReLU net (3x32x32, BN folded), {THREADS} threads")
    print()
    head = [
        "batch",
        "loaded model",
        "in-process eval function",
        "loaded / in-process",
        "torch (BN folded)",
        "loaded / torch",
    ]
    print("| " + " | ".join(head) + " |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print()
    print("| load in a fresh process | `symdl.load` | kernels compiled |")
    print("| --- | --- | --- |")
    print(f"| cold (empty caches) | {cold['load']:.2f} s | {cold['compiled']} |")
    print(f"| warm (caches filled) | {warm['load']:.2f} s | {warm['compiled']} |")


if __name__ == "__main__":
    main()
