"""Compiled inference export (``Function.export``) and safe loading (``runtime.export.load``).

Round trips (MLP, CNN with BatchNorm, small ResNet) are loaded in a separate Python process and must give the
exporting process's outputs bit for bit, and the unfolded eval-mode reference's to 1e-5 relative; corrupted,
tampered, future-version and schema-violating files must be refused with a message naming the problem.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import os
import pickle
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import runtime.export as export_mod
import symdl as sd
from runtime.artifact import (
    FORMAT,
    FORMAT_VERSION,
    ArtifactError,
    ExportError,
    PropSpec,
    axis_problem,
    decode_prop,
    encode_op,
    encode_prop,
    load_artifact,
    vocabulary,
)
from runtime.export import ExportReport, LoadedFunction, export, load
from symdl import nn
from symdl.ops.nn import Softmax
from symdl.ops.reduce import Sum
from symdl.ops.shape import ConcatPart, Transpose

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 7, 64)


# ----------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------


def _randomize_bn(model: nn.Module, rng: np.random.Generator) -> None:
    """Non-trivial running statistics and affine parameters, so that folding BatchNorm really changes weights."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.running_mean.shape[0]
            m.running_mean.value = rng.normal(0.0, 0.5, c).astype(np.float32)
            m.running_var.value = rng.uniform(0.5, 2.0, c).astype(np.float32)
            m.weight.value = rng.uniform(0.5, 1.5, c).astype(np.float32)
            m.bias.value = rng.normal(0.0, 0.2, c).astype(np.float32)


class Block(nn.Module):
    """A ResNet basic block with a projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: sd.Tensor) -> sd.Tensor:
        h = sd.relu(self.bn1(self.conv1(x)))
        return sd.relu(self.bn2(self.conv2(h)) + self.short(x))


class TinyResNet(nn.Module):
    """Stem conv-BN-ReLU, one identity block, one projection block, global average pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.c1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(4)
        self.block = Block(4, 8, 2)
        self.pool = nn.GlobalAvgPool2d()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: sd.Tensor) -> sd.Tensor:
        h = self.stem(x)
        h = sd.relu(self.b1(self.c1(h)) + h)  # identity shortcut
        return self.fc(self.pool(self.block(h)))


def _build(kind: str) -> tuple[sd.Function, sd.Function, nn.Module]:
    """(eval-mode cpu function, unfolded eval-mode reference function, model)."""
    sd.manual_seed(1)
    rng = np.random.default_rng(2)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 5))
        x = sd.placeholder((None, 20), name="x")
        logits = model(x)
        outs = [logits, sd.softmax(logits, axis=1)]
        freeze = False
    elif kind == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(4 * 4 * 4, 10),
        )
        _randomize_bn(model, rng)
        x = sd.placeholder((None, 1, 8, 8), name="x")
        outs = [model(x)]
        freeze = True
    else:
        model = TinyResNet()
        _randomize_bn(model, rng)
        x = sd.placeholder((None, 1, 8, 8), name="x")
        outs = [model(x)]
        freeze = False
    f = sd.compile([x], outs, mode="eval", target="cpu", freeze_parameters=freeze)
    ref = sd.compile([x], outs, mode="eval")  # the reference executor: no passes, BatchNorm unfolded
    return f, ref, model


def _input(f: sd.Function, batch: int, seed: int) -> np.ndarray:
    shape = tuple(batch if d is None else d for d in f.inputs[0].shape)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("mlp", "cnn", "resnet"):
        f, ref, model = _build(kind)
        path = d / f"{kind}.symdl"
        report = f.export(path)
        out[kind] = {"f": f, "ref": ref, "model": model, "path": path, "report": report}
    return out


SCRIPT = r"""
import json, sys
import numpy as np
import symdl
from runtime.export import load
for job in json.loads(sys.argv[1]):
    g = load(job["model"])
    assert g.inputs[0].shape[0] is None, g.inputs[0].shape
    for inp, out in job["runs"]:
        for k, y in enumerate(g(np.load(inp, allow_pickle=False))):
            np.save(f"{out}_{k}.npy", y, allow_pickle=False)
"""


@pytest.fixture(scope="module")
def other_process(exported: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Outputs of every model for every batch size, computed by a fresh Python process that only loads files."""
    d = tmp_path_factory.mktemp("io")
    jobs, inputs = [], {}
    for kind, e in exported.items():
        runs = []
        for b in BATCHES:
            x = _input(e["f"], b, seed=b)
            np.save(d / f"{kind}_{b}_in.npy", x)
            inputs[kind, b] = x
            runs.append([str(d / f"{kind}_{b}_in.npy"), str(d / f"{kind}_{b}_out")])
        jobs.append({"model": str(e["path"]), "runs": runs})
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(jobs)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = {}
    for kind, e in exported.items():
        for b in BATCHES:
            n = len(e["f"].outputs)
            outputs[kind, b] = [np.load(d / f"{kind}_{b}_out_{k}.npy", allow_pickle=False) for k in range(n)]
    return {"inputs": inputs, "outputs": outputs}


# ----------------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn", "resnet"])
def test_round_trip_in_another_process_is_bit_identical(kind: str, exported: dict, other_process: dict) -> None:
    e = exported[kind]
    for b in BATCHES:
        x = other_process["inputs"][kind, b]
        got = other_process["outputs"][kind, b]
        want = e["f"](x)
        ref = e["ref"](x)
        assert len(got) == len(want) == len(ref)
        for g, w, r in zip(got, want, ref):
            assert g.shape == w.shape and g.shape[0] == b and g.dtype == w.dtype == np.float32
            np.testing.assert_array_equal(g, w)  # bit for bit: same kernels, same weights
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()))


def test_frozen_and_folded_graphs_really_differ_from_the_reference(exported: dict) -> None:
    """The CNN's file holds folded BatchNorm constants (no batch_norm op, no parameters); the ResNet's holds
    parameters, including the running statistics, folded by kernels at run time."""
    cnn = load_artifact(exported["cnn"]["path"])
    assert "BatchNormEval" not in cnn.op_counts() and "Conv" in cnn.op_counts()
    assert all(t.op.name != "parameter" for t in cnn.program.order)
    res = load_artifact(exported["resnet"]["path"])
    names = {t.name for t in res.program.order if isinstance(t, sd.Parameter)}
    assert {"stem.1.running_mean", "block.bn2.running_var", "fc.weight"} <= names


def test_export_report_and_no_leftovers(exported: dict) -> None:
    e = exported["mlp"]
    r = e["report"]
    assert isinstance(r, ExportReport)
    assert os.fspath(r) == str(e["path"]) and r.path == e["path"]
    assert r.validated_batches == (1, 2, 7)
    assert r.format_version == FORMAT_VERSION == 1
    assert r.kernels == len(e["f"].lowered.kernels)
    assert r.nodes == len(e["f"].program.order)
    assert r.size_bytes == e["path"].stat().st_size
    # no BatchNorm and no constants in this MLP: the stored values are exactly the parameters
    assert (
        r.param_count == sum(p.value.size for p in e["model"].parameters()) == 20 * 32 + 32 + 32 * 16 + 16 + 16 * 5 + 5
    )
    assert "1, 2, 7" in str(r)
    leftovers = [p.name for p in e["path"].parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_manifest_checksums_and_metadata(exported: dict) -> None:
    path = exported["resnet"]["path"]
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["graph.json", "manifest.json", "weights.npz"]
        manifest = json.loads(zf.read("manifest.json"))
        for m in manifest["members"]:
            data = zf.read(m["name"])
            assert m["size"] == len(data) and m["sha256"] == hashlib.sha256(data).hexdigest()
        with np.load(io.BytesIO(zf.read("weights.npz")), allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
    assert manifest["format"] == FORMAT == "symdl-model" and manifest["symdl_version"] == sd.__version__
    art = load_artifact(path)
    assert art.format_version == 1 and art.symdl_version == sd.__version__
    assert [(s.name, s.shape, s.dtype) for s in art.inputs] == [("x", (None, 1, 8, 8), np.dtype("float32"))]
    assert [(s.shape, s.dtype) for s in art.outputs] == [((None, 3), np.dtype("float32"))]
    f = exported["resnet"]["f"]
    assert [k.kind for k in art.kernels] == [k.kind for k in f.lowered.kernels]
    assert [k.name for k in art.kernels] == [k.name for k in f.lowered.kernels]
    assert art.param_count == sum(a.size for a in stored.values())
    model = exported["resnet"]["model"]
    n_params = sum(p.value.size for p in model.parameters()) + sum(
        b.value.size for name, b in model.named_buffers() if "running" in name
    )
    assert art.param_count >= n_params  # every parameter and running statistic, plus scalar constants (eps)
    assert "symdl-model v1" in art.summary() and "(None, 1, 8, 8)" in art.summary()


def test_export_is_deterministic(exported: dict, tmp_path: Path) -> None:
    f = exported["cnn"]["f"]
    f.export(tmp_path / "again.symdl", validate=False)
    assert (tmp_path / "again.symdl").read_bytes() == exported["cnn"]["path"].read_bytes()


def test_loaded_function_is_a_function(exported: dict, tmp_path: Path) -> None:
    e = exported["cnn"]
    g = load(e["path"])
    assert isinstance(g, LoadedFunction) and isinstance(g, sd.Function)
    assert g.target == "cpu" and g.path == e["path"]
    assert g.inputs[0].shape == (None, 1, 8, 8) and g.inputs[0].name == "x"
    assert [(s.shape, s.dtype) for s in g.output_signature] == [((None, 10), np.dtype("float32"))]
    assert g.input_signature[0].shape == (None, 1, 8, 8)
    x = _input(e["f"], 3, seed=5)
    np.testing.assert_array_equal(g(x)[0], e["f"](x)[0])
    plan = str(g.plan)
    assert "conv+add+relu" in plan and "max_pool" in plan
    prof = g.profile(x, repeat=2)
    assert prof.calls == 2 and {k.name for k in prof.kernels} == {s.name for s in g.plan.steps if not s.is_view}
    assert g.memory_report().signature == ((3, 1, 8, 8),)
    assert "read" in g.compile_report.timings and g.compile_report.kernels == len(g.artifact.kernels)
    assert "LoadedFunction" in repr(g)
    # a loaded model is a compiled eval-mode function itself: it exports again, to the same bytes
    g.export(tmp_path / "re.symdl")
    assert (tmp_path / "re.symdl").read_bytes() == e["path"].read_bytes()


def test_int_inputs_unused_inputs_and_several_outputs(tmp_path: Path) -> None:
    sd.manual_seed(3)
    emb = nn.Embedding(10, 4)
    lin = nn.Linear(4, 3)
    idx = sd.placeholder((None, 5), "int64", name="idx")
    unused = sd.placeholder((2,), name="unused")
    scale = sd.placeholder((None, 1), name="scale")
    h = emb(idx).mean(axis=1) * scale
    logits = sd.leaky_relu(lin(h), 0.2)
    f = sd.compile([idx, unused, scale], [logits, sd.argmax(logits, axis=1), h], mode="eval", target="cpu")
    report = f.export(tmp_path / "emb.symdl")
    assert report.validated_batches == (1, 2, 7)
    g = load(tmp_path / "emb.symdl")
    assert [p.name for p in g.inputs] == ["idx", "unused", "scale"]
    assert [s.dtype for s in g.input_signature] == [np.dtype("int64"), np.dtype("float32"), np.dtype("float32")]
    rng = np.random.default_rng(0)
    args = (rng.integers(0, 10, (6, 5)), np.zeros(2, np.float32), rng.random((6, 1)).astype(np.float32))
    got, want = g(*args), f(*args)
    assert [a.dtype for a in got] == [np.float32, np.int64, np.float32]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # independent NumPy formula
    e = emb.weight.value[args[0]].mean(axis=1) * args[2]
    z = e @ lin.weight.value.T + lin.bias.value
    np.testing.assert_allclose(got[0], np.where(z > 0, z, 0.2 * z), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="input idx: expected dtype int64"):
        g(args[0].astype(np.int32), *args[1:])


def test_gradient_nodes_export(tmp_path: Path) -> None:
    """An eval function may contain backward nodes (a saliency map): they export like any other op."""
    sd.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    x = sd.placeholder((None, 6), name="x")
    (gx,) = sd.grad(model(x).sum(), [x])
    f = sd.compile([x], [gx], mode="eval", target="cpu")
    f.export(tmp_path / "sal.symdl")
    art = load_artifact(tmp_path / "sal.symdl")
    assert any(t.role == "backward" for t in art.program.order)
    xb = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    got = load(tmp_path / "sal.symdl")(xb)[0]
    np.testing.assert_array_equal(got, f(xb)[0])
    w1, b1, w2 = (p.value.astype(np.float64) for p in list(model.parameters())[:3])
    t = np.tanh(xb @ w1.T + b1)
    np.testing.assert_allclose(got, ((1 - t**2) * w2) @ w1, rtol=1e-5, atol=1e-6)


def test_non_finite_and_string_props_round_trip(tmp_path: Path) -> None:
    """clip(min=-inf) stores {"float": "-inf"}; binary_cross_entropy's input check stores a string prop. Export
    validation raises on synthetic inputs the check rejects; validate=False exports anyway."""
    p = sd.placeholder((None, 3), name="p")
    t = sd.placeholder((None, 3), name="t")
    y = sd.clip(p, -math.inf, 0.75)
    loss = sd.binary_cross_entropy(sd.sigmoid(p), t, reduction="none")
    f = sd.compile([p, t], [y, loss], mode="eval", target="cpu")
    f.export(tmp_path / "m.symdl")
    graph = json.loads(zipfile.ZipFile(tmp_path / "m.symdl").read("graph.json"))
    clip = next(n for n in graph["nodes"] if n.get("op") == "Clip")
    assert clip["props"] == {"min": {"float": "-inf"}, "max": 0.75}
    check = next(n for n in graph["nodes"] if n.get("op") == "CheckProbabilities")
    assert check["props"] == {"what": "binary_cross_entropy"}
    g = load(tmp_path / "m.symdl")
    pb = np.array([[-1e30, 0.5, 2.0]], np.float32)
    tb = np.array([[0.0, 1.0, 1.0]], np.float32)
    for a, b in zip(g(pb, tb), f(pb, tb)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(g(pb, tb)[0], np.minimum(pb, 0.75))
    # a function that rejects the synthetic validation inputs (t must hold probabilities: normal samples do not)
    q = sd.placeholder((None, 3), name="q")
    f2 = sd.compile([q], [sd.binary_cross_entropy(q, sd.full_like(q, 0.5))], mode="eval", target="cpu")
    with pytest.raises(ExportError, match=r"(?s)cannot validate .* binary_cross_entropy: .*validate=False"):
        f2.export(tmp_path / "bce.symdl")
    assert not (tmp_path / "bce.symdl").exists() and list(tmp_path.glob("*.tmp")) == []
    assert f2.export(tmp_path / "bce.symdl", validate=False).validated_batches == ()
    qb = np.array([[0.1, 0.5, 0.9]], np.float32)
    np.testing.assert_array_equal(load(tmp_path / "bce.symdl")(qb)[0], f2(qb)[0])
    with pytest.raises(sd.OpRuntimeError, match="probabilities"):
        load(tmp_path / "bce.symdl")(qb + 1)


# ----------------------------------------------------------------------------------------------------
# What cannot be exported
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaledSoftmax(Softmax):
    """A user-defined op: compiles (the CPU library finds Softmax's kernel through the base class) but is not
    part of symdl's vocabulary."""

    name: ClassVar[str] = "scaled_softmax"


def test_unknown_op_fails_at_export_naming_op_and_line(tmp_path: Path) -> None:
    x = sd.placeholder((None, 4), name="x")
    line = inspect.currentframe().f_lineno + 1
    y = sd.graph.apply(ScaledSoftmax(axis=1), x * 2.0)
    f = sd.compile([x], [y], mode="eval", target="cpu")
    with pytest.raises(ExportError, match=r"scaled_softmax \(.*ScaledSoftmax\) is not in symdl's op vocabulary") as e:
        f.export(tmp_path / "u.symdl")
    assert f"test_export.py:{line}" in str(e.value)
    assert not (tmp_path / "u.symdl").exists()


def test_export_refuses_non_inference_functions(tmp_path: Path) -> None:
    sd.manual_seed(0)
    lin = nn.Linear(3, 2)
    x = sd.placeholder((None, 3), name="x")
    y = lin(x)
    with pytest.raises(ExportError, match=r"mode='train'.*compile it with mode='eval'"):
        sd.compile([x], [y], target="cpu").export(tmp_path / "a.symdl")
    upd = {lin.bias: lin.bias * 0.5}
    with pytest.raises(ExportError, match=r"updates 1 parameter\(s\) \(bias\)"):
        sd.compile([x], [y], updates=upd, mode="eval", target="cpu").export(tmp_path / "a.symdl")
    with pytest.raises(ExportError, match=r"needs a compiled function \(target='cpu' or 'cuda'\).*target='reference'"):
        sd.compile([x], [y], mode="eval").export(tmp_path / "a.symdl")
    with pytest.raises(ExportError, match="expected a compiled symdl.Function, got function"):
        export(lambda a: a, tmp_path / "a.symdl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sd.compile([x], [y], mode="eval", target="cpu").export(tmp_path / "no" / "dir.symdl")
    assert list(tmp_path.iterdir()) == []


def test_failed_validation_keeps_the_previous_file(
    exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.symdl"
    target.write_bytes(b"previous version")
    real_build = export_mod.build

    class Off:
        def __init__(self, g: LoadedFunction) -> None:
            self.g, self.input_signature = g, g.input_signature

        def __call__(self, *a: np.ndarray) -> list[np.ndarray]:
            out = self.g(*a)
            out[0] = out[0] + np.float32(1e-3)
            return out

    monkeypatch.setattr(export_mod, "build", lambda art, **kw: Off(real_build(art, **kw)))
    with pytest.raises(ExportError, match=r"output 0 .* differs from the original's at batch size 1 .*max abs"):
        exported["mlp"]["f"].export(target)
    assert target.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.symdl"]


def test_load_refuses_unknown_target(exported: dict) -> None:
    with pytest.raises(sd.GraphError, match=r"unknown or unavailable target 'tpu'; available: cpu, cuda"):
        load(exported["mlp"]["path"], target="tpu")


def _cuda_or_skip() -> None:
    """Switch numba.cuda to Numba's CUDA simulator (before its first import) unless ``SYMDL_TEST_CUDA=device``; skip
    when numba-cuda is missing or cannot run here."""
    if "numba.cuda" not in sys.modules and os.environ.get("SYMDL_TEST_CUDA") != "device":
        import numba

        numba.core.config.ENABLE_CUDASIM = 1  # read when numba.cuda is first imported
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed: pip install 'symdl[cuda]'")
    from compiler.codegen.cuda.device import cuda_problem

    problem = cuda_problem()
    if problem is not None:
        pytest.skip(problem)
    sys.setswitchinterval(1e-4)  # the simulator's barriers poll threads; the suite's conftest sets this too


@pytest.mark.parametrize("freeze", [True, False])
def test_load_for_cuda_matches_the_cpu_load(tmp_path: Path, freeze: bool) -> None:
    """A conv-BN-ReLU eval model exported from the cpu target loads for cuda (on the simulator without a GPU)."""
    _cuda_or_skip()
    sd.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4)
    )
    _randomize_bn(model, np.random.default_rng(5))
    x = sd.placeholder((None, 2, 4, 4), name="x")
    y = model(x)
    f = sd.compile([x], [y, sd.softmax(y, axis=1)], mode="eval", target="cpu", freeze_parameters=freeze)
    path = export(f, tmp_path / "m.symdl", batches=(1, 3))
    g_cpu = load(path)
    g = load(path, target="cuda")
    assert isinstance(g, LoadedFunction) and g.target == "cuda" and g.path == Path(os.fspath(path))
    # the stored partition on both targets (the cuda target may launch independent groups together: horizontal)
    groups = sorted(tuple(n.op.name for n in p.nodes) for k in g.lowered.kernels for p in getattr(k, "parts", [k]))
    assert groups == sorted(tuple(n.op.name for n in k.nodes) for k in g_cpu.lowered.kernels)
    for batch in (1, 3):
        xv = np.random.default_rng(batch).standard_normal((batch, 2, 4, 4)).astype(np.float32)
        want, got = g_cpu(xv), g(xv)
        assert [a.shape for a in got] == [a.shape for a in want] == [(batch, 4), (batch, 4)]
        for a, b in zip(got, want):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[0], f(xv)[0], rtol=1e-5, atol=1e-6)


def test_export_from_the_cuda_target_is_validated_on_cuda_and_loads_for_cpu(tmp_path: Path) -> None:
    _cuda_or_skip()
    sd.manual_seed(6)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    x = sd.placeholder((None, 5), name="x")
    f = sd.compile([x], [model(x)], mode="eval", target="cuda")
    report = export(f, tmp_path / "c.symdl", batches=(1, 2))  # reloaded for cuda, compared bit for bit
    assert report.validated_batches == (1, 2)
    xv = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    got_cuda, got_cpu = load(report, target="cuda")(xv)[0], load(report)(xv)[0]
    np.testing.assert_array_equal(got_cuda, f(xv)[0])
    np.testing.assert_allclose(got_cpu, got_cuda, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Vocabulary and props codec
# ----------------------------------------------------------------------------------------------------


def test_vocabulary_is_the_closed_set_of_symdl_ops() -> None:
    voc = vocabulary()
    for name in ("Add", "Conv", "MatMul", "BatchNormEval", "Softmax", "MaxPool", "AvgPool", "Slice", "Cast"):
        assert name in voc
    for name in ("ModeSwitch", "PlaceholderOp", "ParameterOp", "ConstantOp", "Elementwise", "Compare", "_Pool"):
        assert name not in voc
    assert "ScaledSoftmax" not in voc
    for name, entry in voc.items():
        assert entry.cls.__name__ == name and entry.cls.__module__.startswith(("symdl.ops.", "symdl.losses"))
        op = entry.cls()  # every prop has a default: the default op must round-trip exactly
        enc_name, props = encode_op(op)
        assert enc_name == name
        again = entry.cls(**{s.name: decode_prop(s, json.loads(json.dumps(props[s.name]))) for s in entry.props})
        assert again == op


def test_prop_codec() -> None:
    f = PropSpec("min", "float", True)
    assert encode_prop(f, -math.inf) == {"float": "-inf"} and decode_prop(f, {"float": "-inf"}) == -math.inf
    assert math.isnan(decode_prop(f, encode_prop(f, math.nan)))
    assert decode_prop(f, encode_prop(f, np.float32(0.25))) == 0.25 and decode_prop(f, None) is None
    assert encode_prop(f, 2) == 2 and isinstance(decode_prop(f, 2), int)
    t = PropSpec("index", "tuple", False)
    value = ((1, None, -2), 3, (None, None, None), (True, 0.5))
    assert decode_prop(t, json.loads(json.dumps(encode_prop(t, value)))) == value
    d = PropSpec("dtype", "dtype", True)
    assert decode_prop(d, encode_prop(d, np.dtype("int8"))) == np.dtype("int8")
    bad = [
        (PropSpec("axis", "int", False), True, "wrong type"),
        (PropSpec("axis", "int", False), 1.0, "wrong type"),
        (PropSpec("axis", "int", False), None, "is null"),
        (PropSpec("axis", "int", False), 2**70, "out of range"),
        (PropSpec("x", "float", False), "1", "wrong type"),
        (PropSpec("x", "float", False), {"float": "1e3"}, "wrong type"),
        (PropSpec("k", "bool", False), 0, "wrong type"),
        (d, {"dtype": "object"}, "not supported"),
        (d, "float32", "wrong type"),
        (t, [1, "a"], "not a number"),
        (PropSpec("what", "str", False), 3, "wrong type"),
    ]
    for spec, raw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            decode_prop(spec, raw)
    with pytest.raises(ValueError, match="not a int"):
        encode_prop(PropSpec("axis", "int", False), 1.5)
    with pytest.raises(ValueError, match="holds 'a'"):
        encode_prop(t, (1, "a"))


def test_axis_props_check_accepts_what_symdl_builds_and_refuses_the_rest() -> None:
    """Several ops' infer trusts axis-like props (the public builders validate them): the loader checks them.
    No false alarm on a graph (and its gradients) built through the public API; out-of-range axes refused."""
    sd.manual_seed(0)
    x = sd.placeholder((None, 3, 4, 5), name="x")
    lab = sd.placeholder((None,), "int64", name="lab")
    w = sd.parameter(np.ones((2, 3, 3, 3), np.float32), name="w")
    h = sd.conv2d(x, w, padding=1)
    outs = [sd.max_pool2d(h, 2), sd.avg_pool2d(h, 2), h.sum(axis=-1), h.mean(axis=(1, -1), keepdims=True)]
    outs += [h.max(axis=-2), h.min(axis=0), h.var(axis=-1), sd.softmax(h, axis=-1), sd.log_softmax(h, axis=1)]
    outs += [sd.logsumexp(h, axis=(-1, -2)), sd.concat([h, h], axis=-1), sd.stack([h, h], axis=-1)]
    outs += [sd.squeeze(sd.expand_dims(h, -1), -1), sd.transpose(h, (3, 2, 1, 0)), sd.swapaxes(h, -1, 0)]
    outs += [sd.flatten(h, 1, -1), h[:, 1, ::2, -1], sd.pad(h, (1, 1, 2, 0))]
    m = h.mean(axis=(2, 3))
    outs += [sd.cross_entropy(m, lab), sd.nll_loss(sd.log_softmax(m, axis=1), lab)]
    loss = sd.add(outs[0].sum(), sum(o.sum() for o in outs[1:]))
    graph = sd.graph.toposort([*outs, h.argmax(axis=-1), sd.one_hot(lab, 4), *sd.grad(loss, [x, w])])
    checked = {type(n.op).__name__ for n in graph if n.inputs}
    assert {"Sum", "Softmax", "Transpose", "Flatten", "ExpandDims", "Squeeze", "TakeAlongClassGrad"} <= checked
    for n in graph:
        if n.inputs:
            assert axis_problem(n.op, [i.ndim for i in n.inputs], n.ndim) is None, n
    assert "out of range for operands of rank 2" in axis_problem(Sum((5,), False), [2], 2)
    assert "repeats an axis" in axis_problem(Sum((1, -1), False), [2], 0)
    assert "not a permutation" in axis_problem(Transpose((0, 2)), [3], 2)
    assert axis_problem(ConcatPart(1, 1), [2, 2, 2], 2) is None
    assert "does not pick one of the 2 reference operands" in axis_problem(ConcatPart(1, 2), [2, 2, 2], 2)


# ----------------------------------------------------------------------------------------------------
# Refused files
# ----------------------------------------------------------------------------------------------------


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _weights(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


def _tamper(src: Path, dst: Path, graph=None, weights=None, graph_text=None, manifest=None, fix=True) -> Path:
    """Copy ``src`` to ``dst`` editing graph.json (parsed or as text), the weights or the manifest; with ``fix``
    the manifest's sizes and sha256 are recomputed, so only the edit itself is wrong."""
    m = _members(src)
    if graph is not None:
        g = json.loads(m["graph.json"])
        graph(g)
        m["graph.json"] = json.dumps(g).encode()
    if graph_text is not None:
        m["graph.json"] = graph_text(m["graph.json"].decode()).encode()
    if weights is not None:
        w = _weights(m["weights.npz"])
        weights(w)
        m["weights.npz"] = _npz(w)
    man = json.loads(m["manifest.json"])
    if fix:
        for e in man["members"]:
            e["size"], e["sha256"] = len(m[e["name"]]), hashlib.sha256(m[e["name"]]).hexdigest()
    if manifest is not None:
        manifest(man)
    m["manifest.json"] = json.dumps(man).encode()
    _write(dst, m)
    return dst


@pytest.fixture(scope="module")
def mlp_file(exported: dict) -> Path:
    return exported["mlp"]["path"]


def _node(g: dict, op: str) -> dict:
    return next(n for n in g["nodes"] if n.get("op") == op)


def test_unmodified_copy_loads(mlp_file: Path, tmp_path: Path) -> None:
    """The tampering helper itself changes nothing when asked to change nothing (zip rewritten, checksums kept)."""
    art = load_artifact(_tamper(mlp_file, tmp_path / "same.symdl"))
    assert len(art.kernels) == len(load_artifact(mlp_file).kernels)


@pytest.mark.parametrize("keep", [0, 20, 0.5, -1, -22])
def test_truncated_file(mlp_file: Path, tmp_path: Path, keep: float) -> None:
    data = mlp_file.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    bad = tmp_path / "t.symdl"
    bad.write_bytes(data[:n])
    with pytest.raises(ArtifactError, match=r"t\.symdl'.*(truncated|corrupted)"):
        load_artifact(bad)


def test_flipped_bytes_fail_the_checksum(exported: dict, tmp_path: Path) -> None:
    data = bytearray(exported["mlp"]["path"].read_bytes())
    w = exported["mlp"]["model"][0].weight.value
    pos = data.find(w.tobytes()[:64])
    assert pos > 0  # weights.npz is stored uncompressed: the raw float32 bytes are in the file
    data[pos + 5] ^= 0x10
    bad = tmp_path / "flip.symdl"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"\(weights\.npz\): checksum mismatch"):
        load_artifact(bad)


def test_rewritten_member_fails_sha256(mlp_file: Path, tmp_path: Path) -> None:
    def scale(w: dict) -> None:
        for k in w:
            w[k] = w[k] * 2

    bad = _tamper(mlp_file, tmp_path / "w.symdl", weights=scale, fix=False)  # np.savez: another size too
    with pytest.raises(ArtifactError, match=r"\(weights\.npz\): size mismatch: \d+ bytes, the manifest says \d+"):
        load_artifact(bad)
    m = _members(mlp_file)
    raw = bytearray(m["weights.npz"])
    raw[len(raw) // 2] ^= 0xFF  # the same size, a consistent outer zip (CRC recomputed): only sha256 can tell
    _write(tmp_path / "w2.symdl", {**m, "weights.npz": bytes(raw)})
    with pytest.raises(ArtifactError, match=r"\(weights\.npz\): sha256 checksum mismatch: [0-9a-f]{64}, the manifest"):
        load_artifact(tmp_path / "w2.symdl")

    def rename(g: dict) -> None:
        g["nodes"][0]["name"] = "y"  # same length: the size check passes, the checksum does not

    bad = _tamper(mlp_file, tmp_path / "g.symdl", graph=rename, fix=False)
    with pytest.raises(ArtifactError, match=r"\(graph\.json\): (sha256 checksum|size) mismatch"):
        load_artifact(bad)


def test_future_format_version_is_refused(mlp_file: Path, tmp_path: Path) -> None:
    bad = _tamper(mlp_file, tmp_path / "v.symdl", manifest=lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(
        ArtifactError, match=r"format version 2 is newer than this symdl \(.*\) reads \(format version 1\)"
    ):
        load_artifact(bad)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(format="onnx"), r"format is 'onnx', expected 'symdl-model'"),
        (lambda m: m.update(format_version="1"), r"invalid format_version '1'"),
        (lambda m: m.update(format_version=0), r"invalid format_version 0"),
        (lambda m: m.pop("members"), r"the manifest lacks \['members'\]"),
        (lambda m: m.update(extra=1), r"the manifest has unknown keys \['extra'\]"),
        (lambda m: m["members"].pop(), r"the manifest lists members \['graph.json'\], expected"),
        (lambda m: m["members"][0].update(sha256="00"), r"malformed member entry"),
    ],
)
def test_bad_manifest(mlp_file: Path, tmp_path: Path, edit, match: str) -> None:
    with pytest.raises(ArtifactError, match=r"\(manifest\.json\): " + match):
        load_artifact(_tamper(mlp_file, tmp_path / "m.symdl", manifest=edit))


def test_missing_or_extra_members(mlp_file: Path, tmp_path: Path) -> None:
    m = _members(mlp_file)
    _write(tmp_path / "a.symdl", {k: v for k, v in m.items() if k != "weights.npz"})
    with pytest.raises(ArtifactError, match=r"missing: \['weights.npz'\]"):
        load_artifact(tmp_path / "a.symdl")
    _write(tmp_path / "b.symdl", {**m, "run.py": b"import os"})
    with pytest.raises(ArtifactError, match=r"members not listed in the manifest: \['run.py'\]"):
        load_artifact(tmp_path / "b.symdl")
    _write(tmp_path / "c.symdl", {k: v for k, v in m.items() if k != "manifest.json"})
    with pytest.raises(
        ArtifactError, match=r"no manifest.json member .*truncated or corrupted, or is not a symdl-model file"
    ):
        load_artifact(tmp_path / "c.symdl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_artifact(tmp_path / "nothing.symdl")
    with pytest.raises(ArtifactError, match="not a regular file"):
        load_artifact(tmp_path)


def _set(path: list, value: object):  # noqa: ANN202 - returns an edit
    def edit(g: dict) -> None:
        obj = g
        for key in path[:-1]:
            obj = obj[key] if not callable(key) else key(obj)
        obj[path[-1]] = value

    return edit


def _first(op: str):  # noqa: ANN202 - a path step
    return lambda g: _node(g, op)


def _duplicate_last_op(g: dict) -> None:
    n = dict(g["nodes"][-1])
    n["id"] = len(g["nodes"])
    g["nodes"].append(n)


def _dangling_node(g: dict) -> None:
    g["nodes"].append(dict(_node(g, "Relu"), id=len(g["nodes"]), inputs=[0], type=g["nodes"][0]["type"]))


def _wrong_operand(g: dict) -> None:
    """x (None, 20) @ the first layer's untransposed weight (32, 20)."""
    _node(g, "MatMul")["inputs"][1] = next(n["id"] for n in g["nodes"] if n["name"] == "0.weight")


def _merge_kernels(g: dict) -> None:
    a, b = g["kernels"][-2], g["kernels"][-1]
    g["kernels"][-2:] = [dict(a, nodes=a["nodes"] + b["nodes"], outputs=b["outputs"])]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_set([_first("Relu"), "op"], "System"), r"node \d+ \(System\): op 'System' is not in symdl's op vocabulary"),
        (_set([_first("Relu"), "op"], "os.system"), r"op 'os.system' is not in symdl's op vocabulary"),
        (_set([_first("Relu"), "op"], "Elementwise"), r"op 'Elementwise' is not in symdl's op vocabulary"),
        (_set([_first("Softmax"), "props", "axis"], "1"), r"\(Softmax\): prop 'axis' \(int\) has the wrong type"),
        (_set([_first("Softmax"), "props", "axis"], 1.5), r"prop 'axis' \(int\) has the wrong type: 1.5"),
        (_set([_first("Softmax"), "props", "axis"], True), r"prop 'axis' \(int\) has the wrong type: true"),
        (_set([_first("Transpose"), "props", "perm"], "1,0"), r"prop 'perm' \(tuple\) has the wrong type"),
        (_set([_first("Softmax"), "props"], {}), r"\(Softmax\): props lacks \['axis'\]"),
        (_set([_first("Softmax"), "props", "code"], "x"), r"props has unknown keys \['code'\]"),
        (
            _set([_first("Softmax"), "props", "axis"], 7),
            r"\(Softmax\): .*axis 7 is out of range for a rank-2 operand",
        ),
        (_set([_first("Softmax"), "props", "axis"], -3), r"axis -3 is out of range"),
        (
            _set([_first("Transpose"), "props", "perm"], [0, 0]),
            r"\(Transpose\): .*perm \(0, 0\) is not a permutation",
        ),
        (_wrong_operand, r"\(MatMul\): its operands do not fit the op: matmul"),
        (_set([_first("Relu"), "inputs"], [999]), r"\(Relu\): inputs: node id 999 does not exist"),
        (_set([_first("Relu"), "inputs"], [-1]), r"\(Relu\): inputs: node id -1 does not exist"),
        (_set([_first("Relu"), "kind"], "code"), r"kind 'code' is not one of"),
        (_set([_first("Relu"), "id"], 0), r"id 0 differs from its position"),
        (_set([_first("Relu"), "type", "shape"], [None, 33]), r"\(Relu\): declared type \(None, 33\) float32, but"),
        (_set([_first("Relu"), "type", "dtype"], "float64"), r"but the op infers \(None, 32\) float32"),
        (_set([_first("Relu"), "type", "dtype"], "object"), r"dtype object is not supported"),
        (_set([_first("Relu"), "role"], "update"), r"role 'update' is not one of"),
        (_set([_first("Relu"), "frame"], "x.py:1"), r"frame 'x.py:1' is not \[file, line, function\]"),
        (_set(["outputs"], [999]), r"outputs: node id 999 does not exist"),
        (_set(["inputs"], [1]), r"input id 1 is node 1 \(parameter\), not a placeholder"),
        (_set(["inputs"], []), r"placeholder node 0 is needed by the outputs but not an input"),
        (_set(["mode"], "train"), r"mode is 'train'"),
        (_set(["fusion", "fuse_reductions"], 1), r"fuse_reductions is not a boolean"),
        (_set(["kernels", 0, "kind"], "python"), r"kernel 0: kind 'python' is not one of"),
        (_set(["kernels", 0, "nodes"], [5000]), r"kernel 0: nodes: node id 5000 does not exist"),
        (_merge_kernels, r"the stored kernel partition differs from what symdl's fusion produces"),
        (_duplicate_last_op, r"node \d+ duplicates node \d+"),
        (_dangling_node, r"node \d+ \(relu\) is not needed by any output"),
        (lambda g: g.pop("kernels"), r"the graph lacks \['kernels'\]"),
    ],
)
def test_schema_violations(mlp_file: Path, tmp_path: Path, edit, match: str) -> None:
    bad = _tamper(mlp_file, tmp_path / "s.symdl", graph=edit)
    with pytest.raises(ArtifactError, match=r"s\.symdl' \(graph\.json\): .*" + match):
        load_artifact(bad)


def test_json_that_is_not_strict_json(mlp_file: Path, tmp_path: Path) -> None:
    bad = _tamper(mlp_file, tmp_path / "j.symdl", graph_text=lambda s: s.replace('"name": "x"', '"name": NaN', 1))
    with pytest.raises(ArtifactError, match=r"\(graph\.json\): not valid JSON \(NaN is not valid JSON"):
        load_artifact(bad)
    bad = _tamper(mlp_file, tmp_path / "k.symdl", graph_text=lambda s: s.replace('"mode"', '"mode": "eval", "mode"', 1))
    with pytest.raises(ArtifactError, match=r"duplicate key 'mode'"):
        load_artifact(bad)


def _weight_member(path: Path, name: str) -> str:
    g = json.loads(_members(path)["graph.json"])
    return next(n["weight"] for n in g["nodes"] if n.get("name") == name)


def test_weight_shape_or_dtype_differs_from_declared(exported: dict, tmp_path: Path) -> None:
    path = exported["mlp"]["path"]
    member = _weight_member(path, "0.weight")

    def reshape(w: dict) -> None:
        w[member] = w[member].reshape(20, 32)

    with pytest.raises(
        ArtifactError,
        match=rf"\(weights\.npz\): node \d+ \(parameter 0.weight\): array '{member}' "
        r"is \(20, 32\) float32, but the node is declared \(32, 20\) float32",
    ):
        load_artifact(_tamper(path, tmp_path / "a.symdl", weights=reshape))

    def widen(w: dict) -> None:
        w[member] = w[member].astype(np.float64)

    with pytest.raises(ArtifactError, match=r"is \(32, 20\) float64, but the node is declared \(32, 20\) float32"):
        load_artifact(_tamper(path, tmp_path / "b.symdl", weights=widen))

    with pytest.raises(ArtifactError, match=r"arrays not referenced by any node: \['extra'\]"):
        load_artifact(_tamper(path, tmp_path / "c.symdl", weights=lambda w: w.update(extra=np.zeros(2))))

    def drop(w: dict) -> None:
        del w[member]

    with pytest.raises(ArtifactError, match=rf"weight '{member}' is not an array of weights.npz"):
        load_artifact(_tamper(path, tmp_path / "d.symdl", weights=drop))


class _Boom:
    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (print, ("unpickled!",))


def test_pickled_weights_are_never_unpickled(mlp_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    member = _weight_member(mlp_file, "0.bias")
    bad = _tamper(mlp_file, tmp_path / "p.symdl", weights=lambda w: w.update({member: np.array([_Boom()], object)}))

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("the loader unpickled something")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    with pytest.raises(ArtifactError, match=rf"array '{member}' holds pickled Python objects; symdl never unpickles"):
        load_artifact(bad)
    # a valid file reads with pickle and eval unavailable: the reader needs neither
    monkeypatch.setattr("builtins.eval", forbidden)
    assert load_artifact(mlp_file).param_count > 0
