"""Generated CPU kernels (compiler/codegen) against the ops' NumPy ``perform``.

Numba compiles cost ~0.3 s each, so graphs put many ops into one kernel (every op is an output) and compiled
kernels are shared through module-level caches; tests parametrise over input values, not over new graphs.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symdl as sd
from compiler.codegen import scalar
from compiler.codegen.cpu import build_kernel, library
from compiler.codegen.cpu.elementwise import PARALLEL_THRESHOLD, emit_source
from compiler.fusion import fuse
from compiler.kernels import Kernel
from compiler.program import build_program
from symdl.errors import GraphError
from symdl.ops import elementwise as ew
from symdl.ops.reduce import MatMul

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _kernel_cache(tmp_path_factory):
    """Keep generated modules and Numba's cache out of the user's home directory."""
    d = tmp_path_factory.mktemp("symdl_cache")
    old = os.environ.get("SYMDL_CACHE_DIR")
    os.environ["SYMDL_CACHE_DIR"] = str(d)
    yield
    if old is None:
        os.environ.pop("SYMDL_CACHE_DIR", None)
    else:
        os.environ["SYMDL_CACHE_DIR"] = old


# ----------------------------------------------------------------------------------------------------
# A tiny executor: NumPy perform for the reference, compiled kernels for the candidate
# ----------------------------------------------------------------------------------------------------


def leaf_value(t, feed):
    return feed[t.id] if t.id in feed else t.value


def reference(program, feed):
    """Every node's value by the ops' NumPy perform."""
    env = {}
    for n in program.order:
        with np.errstate(all="ignore"):
            env[n.id] = leaf_value(n, feed) if not n.inputs else n.op.perform(*(env[i.id] for i in n.inputs))
    return env


def execute(compiled, program, feed, use_serial=False):
    """Run compiled kernels in order over freshly allocated outputs (shapes from the reference)."""
    ref = reference(program, feed)
    env = dict(feed)
    for ck in compiled:
        args = [env[i.id] if i.id in env else leaf_value(i, feed) for i in ck.kernel.inputs]
        if ck.mode == "view":
            env[ck.kernel.outputs[0].id] = ck.run(*args)
            continue
        outs = [np.empty(ref[o.id].shape, o.dtype) for o in ck.kernel.outputs]
        (ck.serial if use_serial and ck.serial else ck.run)(*args, *outs)
        env.update({o.id: a for o, a in zip(ck.kernel.outputs, outs)})
    return env, ref


def assert_close(got, want, dtype):
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype.kind == "f":
        rtol = 2e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------------
# Every elementwise op in one kernel per dtype
# ----------------------------------------------------------------------------------------------------

UNARY = {
    "neg": sd.neg,
    "exp": sd.exp,
    "log": sd.log,
    "log1p": sd.log1p,
    "sqrt": sd.sqrt,
    "abs": sd.abs,
    "sign": sd.sign,
    "square": sd.square,
    "relu": sd.relu,
    "leaky_relu": lambda a: sd.leaky_relu(a, 0.2),
    "elu": lambda a: sd.elu(a, 0.7),
    "sigmoid": sd.sigmoid,
    "tanh": sd.tanh,
    "softplus": sd.softplus,
    "softplus_beta": lambda a: sd.softplus(a, beta=2.0, threshold=5.0),
    "clip": lambda a: sd.clip(a, -0.5, 0.25),
    "clip_min": lambda a: sd.clip(a, min=0.1),
    "clip_swapped": lambda a: sd.clip(a, 1.0, -1.0),
    "stop_gradient": sd.stop_gradient,
    "cast_bool": lambda a: sd.cast(a, "bool"),
    "cast_other_float": lambda a: sd.cast(a, "float64" if a.dtype == np.float32 else "float32"),
    "cast_bool_float": lambda a: sd.cast(sd.cast(a, "bool"), a.dtype),
    "logical_not": sd.logical_not,
    "zeros_like": sd.zeros_like,
    "full_like_int": lambda a: sd.full_like(a, 2.5, dtype="int32"),
}
BINARY = {
    "add": sd.add,
    "sub": sd.sub,
    "mul": sd.mul,
    "div": sd.div,
    "pow": sd.pow,
    "maximum": sd.maximum,
    "minimum": sd.minimum,
    "less": sd.less,
    "less_equal": sd.less_equal,
    "greater": sd.greater,
    "greater_equal": sd.greater_equal,
    "equal": sd.equal,
    "not_equal": sd.not_equal,
    "logical_and": sd.logical_and,
    "logical_or": sd.logical_or,
    "where": lambda a, b: sd.where(a > b, a, b * 2.0),
    "row_col": lambda a, c: (a - c) * c,  # (None, 3) with (None, 1)
    "scalar": lambda a, s: sd.where(a > s, a * s, s),  # with a 0-d input
}


@functools.cache
def all_ops_kernel(dtype: str):
    """One fused kernel computing every op on a (None, 3) input a, a (3,) input b, (None, 1) c, 0-d s."""
    a = sd.placeholder((None, 3), dtype, name="a")
    b = sd.placeholder((3,), dtype, name="b")
    c = sd.placeholder((None, 1), dtype, name="c")
    s = sd.placeholder((), dtype, name="s")
    outs = {name: f(a) for name, f in UNARY.items()}
    for name, f in BINARY.items():
        other = c if name == "row_col" else s if name == "scalar" else b
        outs[name] = f(a, other)
    # fusion merges producers into consumers (not unrelated siblings): a sink reading every op ties them into
    # one group, where each op is still an output
    sink = functools.reduce(sd.add, [sd.cast(t, dtype) for t in outs.values()])
    program = build_program([a, b, c, s], [*outs.values(), sink])
    kernels = fuse(program, [])
    assert {k.kind for k in kernels} == {"elementwise"}
    assert max(len(k.nodes) for k in kernels) > 2 * len(outs)  # one big group; b-only casts/muls are (3,)
    return program, (a, b, c, s), outs, [build_kernel(k) for k in kernels]


SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 30.0, -30.0, 100.0, -100.0, 1e-30, 3.0]


def feed_for(phs, dtype, rows, rng):
    a, b, c, s = phs
    av = np.array(SPECIAL * 3, dtype)[: rows * 3].reshape(rows, 3) if rows <= 16 else None
    if av is None:
        av = (rng.standard_normal((rows, 3)) * 3).astype(dtype)
    return {
        a.id: av,
        b.id: np.array([0.0, -2.0, np.nan], dtype) if rows <= 16 else np.array([0.5, -2.0, 3.0], dtype),
        c.id: rng.standard_normal((rows, 1)).astype(dtype),
        s.id: np.array(0.75, dtype),
    }


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows", [1, 7, 16])
def test_every_op_matches_numpy_perform(dtype, rows):
    program, phs, outs, ck = all_ops_kernel(dtype)
    feed = feed_for(phs, dtype, rows, np.random.default_rng(rows))
    env, ref = execute(ck, program, feed)
    for name, t in outs.items():
        try:
            assert_close(env[t.id], ref[t.id], np.dtype(dtype))
        except AssertionError as e:
            raise AssertionError(f"{name} ({dtype}): {e}") from None


def test_parallel_and_serial_twins_agree_on_a_large_input():
    program, phs, outs, ck = all_ops_kernel("float32")
    rows = PARALLEL_THRESHOLD // 3 + 100
    feed = feed_for(phs, "float32", rows, np.random.default_rng(0))
    par, ref = execute(ck, program, feed)
    ser, _ = execute(ck, program, feed, use_serial=True)
    for t in outs.values():
        np.testing.assert_array_equal(par[t.id], ser[t.id])
        assert_close(par[t.id], ref[t.id], np.dtype("float32"))
    big = max(ck, key=lambda c: len(c.kernel.nodes))
    assert big.parallel and big.dispatchers[0].signatures  # the parallel function did run


def test_integer_and_bool_kernels():
    a = sd.placeholder((None, 4), "int64", name="a")
    b = sd.placeholder((4,), "int64", name="b")
    small = sd.placeholder((None, 4), "int8", name="small")
    outs = [
        a + b, a - b, a * b, sd.maximum(a, b), sd.minimum(a, b), sd.abs(a), sd.sign(a), -a, sd.square(a),
        sd.relu(a), sd.clip(a, -2, 3), a < b, sd.equal(a, b), sd.where(a > b, a, b), sd.cast(a, "float32"),
        sd.cast(a, "bool"), sd.logical_or(a, b), a / b, a ** sd.cast(sd.abs(b), "int64"),
        small + small, small * small, sd.cast(small, "uint8"),
    ]  # fmt: skip
    program = build_program([a, b, small], outs)
    kernels = fuse(program, [])
    compiled = [build_kernel(k) for k in kernels]
    rng = np.random.default_rng(0)
    feed = {
        a.id: rng.integers(-5, 6, (6, 4)),
        b.id: np.array([0, -3, 2, 5]),
        small.id: rng.integers(-128, 128, (6, 4)).astype("int8"),
    }
    env, ref = execute(compiled, program, feed)
    for t in outs:
        assert_close(env[t.id], ref[t.id], t.dtype)


def test_zero_d_loop():
    x = sd.placeholder((), "float64", name="x")
    y = sd.sigmoid(x * 3.0) + sd.exp(x)
    program = build_program([x], [y])
    (kern,) = fuse(program, [])
    ck = build_kernel(kern)
    assert not ck.parallel
    for v in (-2.0, 0.0, np.nan):
        env, ref = execute([ck], program, {x.id: np.array(v)})
        assert_close(env[y.id], ref[y.id], np.dtype("float64"))


def test_broadcast_indexing_of_static_one_dims():
    x = sd.placeholder((2, 1, 4), name="x")
    y = sd.placeholder((3, 1), name="y")
    z = sd.tanh(x * y)  # (2, 3, 4)
    program = build_program([x, y], [z])
    (kern,) = fuse(program, [])
    src = emit_source(kern)
    assert "in0[i0, 0, i2]" in src and "in1[i1, 0]" in src
    ck = build_kernel(kern)
    rng = np.random.default_rng(1)
    feed = {x.id: rng.standard_normal((2, 1, 4)).astype("float32"), y.id: rng.standard_normal((3, 1)).astype("float32")}
    env, ref = execute([ck], program, feed)
    assert_close(env[z.id], ref[z.id], np.dtype("float32"))


def test_source_is_deterministic_and_structural():
    def kern(n):
        x = sd.placeholder((None, n), name=f"x{n}")
        (k,) = fuse(build_program([x], [sd.relu(x * 2.0)]), [])
        return k

    a, b = kern(5), kern(5)
    assert emit_source(a) == emit_source(b)
    assert "#" not in emit_source(a)  # no node ids
    assert "float32" not in emit_source(a).split("BOOL = np.bool_")[1]  # sizes/dtypes come from arguments


def test_scalar_expressions_cover_every_elementwise_op():
    classes = {c for c in vars(ew).values() if isinstance(c, type) and issubclass(c, ew.Elementwise)}
    classes -= {ew.Elementwise, ew.Compare}
    assert classes <= set(scalar.SCALAR_EXPR)
    assert scalar.lit(0.5, np.dtype("float32")) == "F32(0.5)"
    assert scalar.lit(float("inf"), np.dtype("float64")) == "F64(math.inf)"


# ----------------------------------------------------------------------------------------------------
# Epilogues, views, ops
# ----------------------------------------------------------------------------------------------------


def _fake_matmul(node):
    return library.LibraryImpl(run=lambda a, b, out: np.matmul(a, b, out=out))


def test_epilogue_runs_the_anchor_into_the_first_output(monkeypatch):
    monkeypatch.setitem(library.LIBRARY, MatMul, _fake_matmul)
    x = sd.placeholder((None, 4), name="x")
    w = sd.parameter(np.random.default_rng(0).standard_normal((4, 3)).astype("float32"), name="W")
    b = sd.parameter(np.array([0.1, -0.2, 0.3], "float32"), name="b")
    pre = x @ w + b
    y = sd.relu(pre)
    program = build_program([x], [y, pre > 0.0])
    kernels = fuse(program, [])
    assert [k.kind for k in kernels] == ["epilogue"]
    ck = build_kernel(kernels[0])
    feed = {x.id: np.random.default_rng(1).standard_normal((5, 4)).astype("float32")}
    env, ref = execute([ck], program, feed)
    for t in kernels[0].outputs:
        assert_close(env[t.id], ref[t.id], np.dtype("float32"))


def test_view_kernels_share_memory():
    x = sd.placeholder((None, 2, 3), name="x")
    outs = [x.reshape(-1, 6), sd.flatten(x, 1), sd.expand_dims(x, 1), sd.squeeze(sd.expand_dims(x, 0), 0)]
    program = build_program([x], outs)
    kernels = fuse(program, [])
    compiled = [build_kernel(k) for k in kernels]
    assert all(ck.mode == "view" for ck in compiled)
    feed = {x.id: np.arange(24, dtype="float32").reshape(4, 2, 3)}
    env, ref = execute(compiled, program, feed)
    for t in outs:
        assert np.shares_memory(env[t.id], feed[x.id])
        np.testing.assert_array_equal(env[t.id], ref[t.id])


def test_op_without_a_library_kernel_is_an_error(monkeypatch):
    x = sd.placeholder((3, 4), name="x")
    y = sd.argmax(x, axis=1)
    (kern,) = fuse(build_program([x], [y]), [])
    for cls in type(y.op).__mro__:
        monkeypatch.delitem(library.LIBRARY, cls, raising=False)
    with pytest.raises(GraphError, match="cpu target has no kernel for op argmax") as e:
        build_kernel(kern)
    assert "test_cpu_elementwise.py" in str(e.value)


def test_op_kernel_uses_the_library_factory(monkeypatch):
    monkeypatch.setitem(library.LIBRARY, MatMul, _fake_matmul)
    x = sd.placeholder((2, 3), "float64", name="x")
    h = x @ x.T
    program = build_program([x], [h])
    kernels = fuse(program, [])
    ck = build_kernel(next(k for k in kernels if k.kind == "op" and k.anchor.op.name == "matmul"))
    assert isinstance(ck.kernel, Kernel) and ck.mode == "write"


# ----------------------------------------------------------------------------------------------------
# Disk cache across processes
# ----------------------------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json
    import numpy as np
    import symdl as sd
    from compiler.codegen.cpu import build_kernel
    from compiler.fusion import fuse
    from compiler.program import build_program

    x = sd.placeholder((None, 3), name="x")
    (kern,) = fuse(build_program([x], [sd.tanh(x * 2.0) + 1.0]), [])
    ck = build_kernel(kern)
    xv = np.ones((4, 3), "float32")
    out = np.empty_like(xv)
    ck.serial(xv, *[np.asarray(i.value) for i in kern.inputs[1:]], out)
    stats = ck.dispatchers[-1].stats
    print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
                      "value": float(out[0, 0])}))
    """
)


def test_second_process_loads_compiled_kernels_from_disk(tmp_path):
    env = dict(os.environ, SYMDL_CACHE_DIR=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["misses"] >= 1
    assert runs[1]["hits"] >= 1 and runs[1]["misses"] == 0
    assert runs[0]["value"] == runs[1]["value"] == pytest.approx(np.tanh(2.0) + 1.0, rel=1e-6)
    assert len(list((tmp_path / "kernels").glob("*.py"))) == 1
