"""The ``symdl`` command line (installed entry point; also ``python -m symdl``).

::

    symdl demo [-o DIR] [--epochs N]          train the digits CNN, write curves, graphs and the exported model
    symdl inspect MODEL                       signature, kernels and fused groups, parameters, peak memory
    symdl render MODEL -o plan.svg            the compiled plan, fused kernels as clusters
    symdl run MODEL --input x.npy [--output y.npy]
    symdl bench MODEL --batch N [--repeat R]  latency percentiles and throughput

Every command has ``--help``. Bad arguments or files print one clear ``symdl: error: ...`` line to stderr and
exit with status 2 (usage) or 1 (a file or model that cannot be used); nothing is loaded from a model file but
data (see :mod:`runtime.artifact`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


class CliError(Exception):
    """A user-facing failure: printed as ``symdl: error: <message>``, exit status 1."""


def _existing_file(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CliError(f"{path}: no such file")
    if not p.is_file():
        raise CliError(f"{path}: not a file")
    return p


def _load(path: str, warmup: bool | str = True) -> Any:
    from runtime.export import load
    from symdl.errors import SymdlError

    p = _existing_file(path)
    try:
        return load(p, warmup=warmup)
    except SymdlError as e:
        raise CliError(str(e)) from None


def _artifact(path: str) -> Any:
    from runtime.artifact import load_artifact
    from symdl.errors import SymdlError

    p = _existing_file(path)
    try:
        return load_artifact(p)
    except SymdlError as e:
        raise CliError(str(e)) from None


# ----------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    """Signature, kernels (kind, fused ops), parameter count and the peak memory at a batch size."""
    art = _artifact(args.model)
    print(art.summary())
    g = _load(args.model, warmup="small")
    print("\nplan:")
    print(g.plan)
    from runtime.export import synthetic_inputs

    g(*synthetic_inputs(g.input_signature, args.batch))  # buffers are planned per input shape
    print(f"\nmemory at batch {args.batch}:")
    print(g.memory_report())
    print(f"\nparameters: {art.param_count} values in {len(art.weights)} arrays ({art.weight_bytes / 2**20:.2f} MiB)")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Draw the compiled plan (fused kernels as clusters) with graphviz."""
    from symdl.render import render

    g = _load(args.model, warmup=False)
    path = render(g, args.output, title=args.title or f"{Path(args.model).name}: compiled plan", max_nodes=None)
    print(f"wrote {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the model on ``.npy`` inputs (one per model input, in order); print or save the outputs."""
    g = _load(args.model)
    specs = g.input_signature
    if len(args.input) != len(specs):
        raise CliError(
            f"the model takes {len(specs)} input(s) ({'; '.join(str(s) for s in specs)}), got {len(args.input)} --input"
        )
    arrays = []
    for path, spec in zip(args.input, specs):
        try:
            a = np.load(_existing_file(path), allow_pickle=False)
        except (ValueError, OSError) as e:
            raise CliError(f"{path}: not a readable .npy array ({e})") from None
        if a.dtype != spec.dtype and np.can_cast(a.dtype, spec.dtype, casting="same_kind"):
            a = a.astype(spec.dtype)
        arrays.append(a)
    try:
        outs = g(*arrays)
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    if args.output:
        if len(outs) == 1:
            np.save(args.output, outs[0])
            print(f"wrote {args.output}: {outs[0].shape} {outs[0].dtype}")
        else:
            stem = Path(args.output)
            for i, o in enumerate(outs):
                p = stem.with_name(f"{stem.stem}_{i}{stem.suffix or '.npy'}")
                np.save(p, o)
                print(f"wrote {p}: {o.shape} {o.dtype}")
    else:
        with np.printoptions(threshold=200, precision=5):
            for spec, o in zip(g.output_signature, outs):
                print(f"{spec.name or 'output'} {o.shape} {o.dtype}:\n{o}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Latency percentiles and throughput on synthetic inputs of the given batch size."""
    from runtime.export import synthetic_inputs

    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    t0 = time.perf_counter()
    g = _load(args.model)
    t_load = time.perf_counter() - t0
    inputs = synthetic_inputs(g.input_signature, args.batch)
    for _ in range(args.warmup):
        g(*inputs)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        g(*inputs)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    print(f"{Path(args.model).name}: batch {args.batch}, {args.repeat} runs (load {t_load:.2f} s)")
    print(f"  latency ms: p50 {p50:.3f}  p90 {p90:.3f}  p99 {p99:.3f}  min {ms.min():.3f}  max {ms.max():.3f}")
    print(f"  throughput: {args.batch / (p50 / 1e3):,.0f} samples/s (at p50)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the digits CNN and write curves, graphs and the exported model into the output folder."""
    from symdl.demo import run_demo

    if args.epochs < 1:
        raise CliError(f"--epochs must be >= 1, got {args.epochs}")
    try:
        run_demo(args.output, epochs=args.epochs, progress=not args.no_progress)
    except ImportError as e:
        raise CliError(f"{e} (the demo needs the examples extra: pip install 'symdl[examples]')") from None
    return 0


# ----------------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``symdl`` argument parser (one sub-command per verb)."""
    parser = argparse.ArgumentParser(
        prog="symdl", description="symdl: a graph-compiling symbolic deep-learning engine."
    )
    parser.add_argument("--version", action="version", version=f"symdl {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="train the digits CNN and write curves, graphs and an exported model")
    p.add_argument("-o", "--output", default="symdl-demo", help="output folder (default: ./symdl-demo)")
    p.add_argument("--epochs", type=int, default=12, help="training epochs (default: 12)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("inspect", help="signature, kernels, fused groups, parameter count, peak memory")
    p.add_argument("model", help="a model file written by Function.export")
    p.add_argument("--batch", type=int, default=1, help="batch size for the memory report (default: 1)")
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("render", help="draw the compiled plan with fused kernels as clusters")
    p.add_argument("model", help="a model file written by Function.export")
    p.add_argument("-o", "--output", default="plan.svg", help="output path: .svg, .png, .pdf or .dot")
    p.add_argument("--title", default=None, help="caption")
    p.set_defaults(fn=cmd_render)

    p = sub.add_parser("run", help="run the model on .npy inputs")
    p.add_argument("model", help="a model file written by Function.export")
    p.add_argument("--input", action="append", required=True, metavar="X.npy", help="an input array (repeat)")
    p.add_argument("--output", default=None, metavar="Y.npy", help="save the output(s) instead of printing")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("bench", help="latency percentiles and throughput")
    p.add_argument("model", help="a model file written by Function.export")
    p.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    p.add_argument("--repeat", type=int, default=100, help="timed runs (default: 100)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default: 5)")
    p.set_defaults(fn=cmd_bench)
    return parser


def _version() -> str:
    try:
        from symdl import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 failure, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "fn", None) is None:  # no sub-command: the main job
        args = parser.parse_args(["demo", *(argv or [])])
    try:
        return int(args.fn(args))
    except CliError as e:
        print(f"symdl: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("symdl: interrupted", file=sys.stderr)
        return 130


def entry_point() -> None:
    """The console-script entry point."""
    sys.exit(main())
