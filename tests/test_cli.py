"""The ``symdl`` command line, through subprocesses: the demo end to end (reduced epochs), then inspect, run,
bench and render on the model it exported, and clear errors with non-zero exits on bad arguments or files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]


def symdl_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "symdl", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    r = symdl_cli("demo", "-o", str(out), "--epochs", "3", "--no-progress")
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_demo_writes_everything_and_the_reloaded_export_agrees(demo):
    out, stdout = demo
    for name in ("learning_curve.png", "digits_cnn.symdl"):
        assert (out / name).stat().st_size > 1000
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("forward", "backward", "plan"):  # SVG with graphviz's dot, else the .dot source
        assert (out / f"{name}.svg").exists() or (out / f"{name}.dot").exists()
    acc = [line for line in stdout.splitlines() if line.startswith("test accuracy") and "reloaded" in line]
    assert acc, stdout
    trained, reloaded = (float(w) for w in acc[0].replace(",", " ").split() if w.replace(".", "").isdigit())
    assert trained == reloaded and trained > 0.9


@pytest.mark.parametrize("command", ["demo", "inspect", "render", "run", "bench"])
def test_every_command_has_help(command):
    r = symdl_cli(command, "--help")
    assert r.returncode == 0 and "usage: symdl" in r.stdout


def test_inspect_reports_signature_kernels_parameters_and_memory(demo):
    out, _ = demo
    r = symdl_cli("inspect", str(out / "digits_cnn.symdl"), "--batch", "4")
    assert r.returncode == 0, r.stderr
    assert "x: (None, 1, 8, 8) float32" in r.stdout
    assert "conv+add+relu" in r.stdout  # BatchNorm folded into the conv epilogues
    assert "batch_norm" not in r.stdout and "dropout" not in r.stdout
    assert "parameters:" in r.stdout and "planned peak" in r.stdout


def test_run_matches_the_in_process_model(demo, tmp_path):
    import symdl
    from symdl import data

    out, _ = demo
    x, _ = data.load_digits()
    np.save(tmp_path / "x.npy", x[:7])
    r = symdl_cli(
        "run", str(out / "digits_cnn.symdl"), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")
    )
    assert r.returncode == 0, r.stderr
    expected = symdl.load(out / "digits_cnn.symdl")(x[:7])[0]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_bench_and_render(demo, tmp_path):
    out, _ = demo
    r = symdl_cli("bench", str(out / "digits_cnn.symdl"), "--batch", "8", "--repeat", "5")
    assert r.returncode == 0 and "p50" in r.stdout and "samples/s" in r.stdout, r.stderr
    r = symdl_cli("render", str(out / "digits_cnn.symdl"), "-o", str(tmp_path / "plan.dot"))
    assert r.returncode == 0, r.stderr
    assert "cluster" in (tmp_path / "plan.dot").read_text()


def test_bad_arguments_and_files_fail_clearly(demo, tmp_path):
    out, _ = demo
    model = out / "digits_cnn.symdl"
    r = symdl_cli("inspect", str(tmp_path / "missing.symdl"))
    assert r.returncode == 1 and "no such file" in r.stderr
    (tmp_path / "trunc.symdl").write_bytes(model.read_bytes()[:200])
    r = symdl_cli("inspect", str(tmp_path / "trunc.symdl"))
    assert r.returncode == 1 and "symdl: error:" in r.stderr and "Traceback" not in r.stderr
    np.save(tmp_path / "bad.npy", np.zeros((3, 8, 8), np.float32))
    r = symdl_cli("run", str(model), "--input", str(tmp_path / "bad.npy"))
    assert r.returncode == 1 and "rank 4" in r.stderr
    r = symdl_cli("bench", str(model), "--batch", "0")
    assert r.returncode == 1 and "--batch" in r.stderr
    r = symdl_cli("bench")
    assert r.returncode == 2 and "required" in r.stderr
    r = symdl_cli("frobnicate")
    assert r.returncode == 2
