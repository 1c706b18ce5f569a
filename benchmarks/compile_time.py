"""Cold and warm compile time of the LeNet-5 train step (``target="cpu"``), each in a fresh process.

    python benchmarks/compile_time.py

Cold: empty symdl and Numba disk caches. Warm: a new process reusing the caches the cold run filled. Prints
the per-phase split (graph passes, fusion, code generation, Numba JIT incl. loading from the disk cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
import symdl as sd
from common import lenet_step
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
f, data = lenet_step(64, "cpu", warmup=json.loads(sys.argv[1]))
total = time.perf_counter() - t1
r = f.compile_report
print(json.dumps({"import": t_import, "total": total, "phases": r.timings, "compiled": r.numba_compiled,
                  "hits": r.numba_cache_hits, "kernels": r.kernels}))
"""


def run_child(env: dict, warmup: bool | str = True) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(warmup)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SYMDL_CACHE_DIR=os.path.join(tmp, "symdl"), NUMBA_CACHE_DIR=os.path.join(tmp, "nb"))
        cold = run_child(env)
        warm = run_child(env)
    print(
        "| LeNet-5 train step compile | total (s) | graph building + grad + passes + fusion + codegen + JIT | "
        "Numba compiled / loaded |"
    )
    print("| --- | --- | --- | --- |")
    rows = (("cold (empty caches)", cold), ("warm (new process, disk cache)", warm))
    for name, r in rows:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())
        print(f"| {name} | {r['total']:.2f} | {phases} | {r['compiled']} / {r['hits']} |")


if __name__ == "__main__":
    main()
