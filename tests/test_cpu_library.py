"""CPU library kernels (``compiler/codegen/cpu/library_misc.py``) against each op's NumPy ``perform``.

Every case builds a node with the public symdl functions (or ``apply`` for internal ops), computes the reference
with ``node.op.perform(*arrays)`` and runs ``factory(node).run(*arrays, out)`` into a preallocated buffer. Shapes
are small except where a case exercises the parallel schedule; the dtype mix is kept small so that the Numba
compiles (disk-cached across runs) stay few.
"""

from __future__ import annotations

import numpy as np
import pytest

import symdl as sd
from compiler.codegen.cpu import library_misc as M
from compiler.codegen.cpu.library import LIBRARY, LibraryImpl, lookup
from symdl.errors import OpRuntimeError
from symdl.graph import apply, constant
from symdl.losses import CheckProbabilities
from symdl.ops import indexing, nn, normalization, random, reduce, shape
from symdl.ops.elementwise import FillLike

RNG = np.random.default_rng(1234)


def impl(node) -> LibraryImpl:
    factory = lookup(node)
    assert factory is not None, f"no CPU kernel for {node.op.name}"
    return factory(node)


def run(node, *arrays, serial: bool = False):
    """Reference value and the kernel's value (through ``run`` or the ``serial`` twin) for ``node``."""
    ref = np.asarray(node.op.perform(*arrays))
    out = np.full(ref.shape, 7, dtype=node.dtype)  # garbage: kernels must write every element
    lib = impl(node)
    fn = lib.serial if serial else lib.run
    assert fn is not None
    fn(*arrays, out)
    assert out.dtype == ref.dtype, (out.dtype, ref.dtype)
    return ref, out


def check(node, *arrays, exact: bool = False, rtol: float | None = None, atol: float = 0.0, serial: bool = False):
    ref, out = run(node, *arrays, serial=serial)
    if exact:
        np.testing.assert_array_equal(out, ref)
    else:
        rtol = rtol if rtol is not None else (1e-5 if ref.dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)
    return out


def randn(*shape: int, dtype: str = "float32") -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def ph(shape: tuple, dtype: str = "float32"):
    """A placeholder whose first dim is free (the batch)."""
    return sd.placeholder((None,) + tuple(shape[1:]), dtype)


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------

OPS = [
    reduce.Sum,
    reduce.Max,
    reduce.Min,
    reduce.Argmax,
    reduce.DimSize,
    shape.Unbroadcast,
    shape.BroadcastLike,
    shape.BroadcastTo,
    shape.Transpose,
    shape.Concat,
    shape.ConcatPart,
    shape.Pad,
    shape.Slice,
    shape.SliceGrad,
    nn.Softmax,
    nn.LogSoftmax,
    nn.LogSumExp,
    indexing.OneHot,
    indexing.Embedding,
    indexing.EmbeddingGrad,
    indexing.TakeAlongClass,
    indexing.TakeAlongClassGrad,
    random.DropoutMask,
    normalization.BatchCount,
    normalization.BatchNormEval,
    CheckProbabilities,
    FillLike,
]


@pytest.mark.parametrize("cls", OPS, ids=lambda c: c.__name__)
def test_every_op_is_registered(cls):
    assert cls in LIBRARY


# ----------------------------------------------------------------------------------------------------
# Reductions
# ----------------------------------------------------------------------------------------------------

AXES3 = [None, 0, 1, 2, (0, 1), (1, 2), (0, 2)]


@pytest.mark.parametrize("axis", AXES3, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("fn", ["sum", "max", "min"])
def test_reductions_float32(fn, axis, keepdims):
    a = randn(6, 5, 7)
    node = getattr(sd, fn)(ph(a.shape), axis, keepdims)
    check(node, a, exact=fn != "sum", atol=1e-6)


@pytest.mark.parametrize("axes", [(0, 2, 3), (0, 2), (1, 3), (0, 1, 3), (3,), (1, 2)], ids=str)
def test_reductions_4d_patterns_float64(axes):
    """Batch statistics (0, 2, 3), the copy fallback ([R, K, R, K] = (0, 2)) and the remaining layouts."""
    a = randn(3, 4, 5, 6, dtype="float64")
    x = ph(a.shape, "float64")
    check(sd.sum(x, axes, True), a, rtol=1e-12)
    check(sd.max(x, axes), a, exact=True)


def test_reductions_size_one_axes_and_all_reduced():
    a = randn(1, 4, 1, 3)
    x = ph(a.shape)
    for axes in [(0,), (2,), (0, 2), (1, 3), None]:
        check(sd.sum(x, axes, True), a, atol=1e-6)
        check(sd.min(x, axes), a, exact=True)


def test_sum_of_integers_and_bools_is_int64():
    ints = RNG.integers(-1000, 1000, size=(7, 9)).astype("int64")
    bools = RNG.random((7, 9)) > 0.5
    for axis in [None, 0, 1]:
        check(sd.sum(ph(ints.shape, "int64"), axis), ints, exact=True)
        check(sd.sum(ph(bools.shape, "bool"), axis), bools, exact=True)
    check(sd.max(ph(bools.shape, "bool"), 1), bools, exact=True)
    check(sd.min(ph(ints.shape, "int64"), 0), ints, exact=True)


def test_max_min_propagate_nan_and_empty_raises():
    a = randn(4, 6)
    a[1, 3] = np.nan
    a[2, 0] = np.nan
    x = ph(a.shape)
    for axis in [None, 0, 1]:
        check(sd.max(x, axis), a, exact=True)
        check(sd.min(x, axis), a, exact=True)
    node = sd.max(x, 1)
    with pytest.raises(OpRuntimeError, match=r"max of an empty array \(shape \(0, 6\)\)"):
        impl(node).run(np.zeros((0, 6), "float32"), np.empty(0, "float32"))


def test_sum_of_empty_is_zero():
    x = sd.placeholder((None, 3))
    ref, out = run(sd.sum(x, 0), np.zeros((0, 3), "float32"))
    np.testing.assert_array_equal(out, ref)


@pytest.fixture
def many_threads(monkeypatch):
    """Plan schedules as on an 8-thread machine (splits reductions into chunks even on a 2-core CI box), with
    the parallel size threshold lowered so that these test sizes take the parallel path."""
    monkeypatch.setattr(M, "_threads", lambda: 8)
    monkeypatch.setattr(M, "PARALLEL_MIN_SIZE", 1 << 12)


@pytest.mark.parametrize("shape_axis", [((300_000,), None), ((64, 2048), 0), ((2048, 64), 1), ((8, 4096, 3), 1)])
def test_parallel_reductions_match_serial_twin_and_reference(many_threads, shape_axis):
    shp, axis = shape_axis
    a = randn(*shp)
    x = sd.placeholder(shp)
    for fn in ("sum", "max"):
        node = getattr(sd, fn)(x, axis)
        par = check(node, a, exact=fn == "max", rtol=1e-4, atol=1e-3)
        ser = check(node, a, exact=fn == "max", rtol=1e-4, atol=1e-3, serial=True)
        if fn == "max":
            np.testing.assert_array_equal(par, ser)
        else:
            np.testing.assert_allclose(par, ser, rtol=1e-5, atol=1e-4)
    plan = M.reduce_plan(a.shape, (0,) if axis is None else (axis,), 8)
    assert plan.parallel and plan.ntasks >= 8 or plan.dims[0] >= 32


def test_reduce_plan_layouts():
    assert M.reduce_plan((4, 5, 6), (2,)).dims == (20, 1, 1, 6)
    assert M.reduce_plan((4, 5, 6), (0,)).dims == (1, 4, 30, 1)
    assert M.reduce_plan((2, 3, 4, 5), (0, 2, 3)).dims == (1, 2, 3, 20)
    assert M.reduce_plan((2, 3, 4, 5), (0, 2)).perm == (1, 3, 0, 2)  # [R, K, R, K]: one transposing copy
    plan = M.reduce_plan((1, 300_000), (0, 1), 8)
    assert plan.nchunk > 1 and plan.split_r2  # a full reduction is split along its reduced axis


UNBROADCAST = [((4, 3, 5), (3, 1)), ((4, 3, 5), (1, 5)), ((4, 3, 5), (5,)), ((4, 3, 5), (4, 1, 5)), ((2, 3), (2, 3))]


@pytest.mark.parametrize("g_shape,ref_shape", UNBROADCAST, ids=str)
def test_unbroadcast(g_shape, ref_shape):
    g, r = randn(*g_shape), randn(*ref_shape)
    node = apply(shape.Unbroadcast(), sd.placeholder(g_shape), sd.placeholder(ref_shape))
    check(node, g, r, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Argmax
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [None, 0, 1, 2])
@pytest.mark.parametrize("keepdims", [False, True])
def test_argmax_first_index_ties_and_nan(axis, keepdims):
    a = RNG.integers(0, 3, size=(5, 6, 4)).astype("float32")  # many ties
    check(sd.argmax(ph(a.shape), axis, keepdims), a, exact=True)
    a[2, 3, 1] = np.nan
    a[4, 1, 2] = np.nan
    check(sd.argmax(ph(a.shape), axis, keepdims), a, exact=True)


def test_argmax_ints_bools_large_and_empty(many_threads):
    ints = RNG.integers(-5, 5, size=(40, 33)).astype("int64")
    check(sd.argmax(ph(ints.shape, "int64"), 1), ints, exact=True)
    bools = RNG.random((9, 11)) > 0.7
    check(sd.argmax(ph(bools.shape, "bool"), 0), bools, exact=True)
    big = randn(64, 1024)
    node = sd.argmax(ph(big.shape), 0)
    np.testing.assert_array_equal(check(node, big, exact=True), check(node, big, exact=True, serial=True))
    with pytest.raises(OpRuntimeError, match=r"argmax of an empty array"):
        impl(node).run(np.zeros((0, 1024), "float32"), np.empty(1024, "int64"))


# ----------------------------------------------------------------------------------------------------
# Softmax family
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax_log_softmax(dtype, axis):
    a = randn(4, 5, 6, dtype=dtype) * 5
    x = ph(a.shape, dtype)
    atol = 1e-6 if dtype == "float32" else 1e-14
    check(sd.softmax(x, axis), a, atol=atol)
    check(sd.log_softmax(x, axis), a, atol=atol)


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2), (1, 2)], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp(axis, keepdims):
    a = randn(4, 5, 6) * 3
    check(sd.logsumexp(ph(a.shape), axis, keepdims), a, atol=1e-6)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_softmax_family_extreme_values_match_reference():
    """±1e4 logits stay finite; rows of -inf and +inf entries give the reference's -inf/NaN exactly."""
    a = np.array(
        [[1e4, -1e4, 0.0, 3.0], [-np.inf] * 4, [np.inf, 1.0, 2.0, 3.0], [np.nan, 1.0, 2.0, 3.0], [-np.inf, 0, 1, 2]],
        dtype="float32",
    )
    x = ph(a.shape)
    for node in (sd.softmax(x, 1), sd.log_softmax(x, 1), sd.logsumexp(x, 1), sd.softmax(x, 0)):
        ref, out = run(node, a)
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_softmax_parallel_matches_serial():
    a = randn(512, 96) * 4  # above PARALLEL_MIN_SIZE
    x = ph(a.shape)
    for node in (sd.softmax(x, 1), sd.log_softmax(x, 0), sd.logsumexp(x, 1)):  # |log_softmax| ~ 10: atol 1e-5
        np.testing.assert_array_equal(check(node, a, atol=1e-5), check(node, a, atol=1e-5, serial=True))


def test_logsumexp_over_an_empty_axis_is_minus_inf():
    x = sd.placeholder((3, None))
    ref, out = run(sd.logsumexp(x, 1), np.zeros((3, 0), "float32"))
    np.testing.assert_array_equal(out, ref)


# ----------------------------------------------------------------------------------------------------
# Integer-index ops
# ----------------------------------------------------------------------------------------------------


def test_one_hot_and_range_errors():
    labels = RNG.integers(0, 5, size=(3, 4)).astype("int64")
    y = ph(labels.shape, "int64")
    check(sd.one_hot(y, 5), labels, exact=True)
    check(sd.one_hot(y, 7), labels, exact=True)
    with pytest.raises(sd.GraphError, match="depends on the data"):  # num_classes=-1: size from the data
        impl(sd.one_hot(y))
    bad = labels.copy()
    bad[1, 2] = 5
    with pytest.raises(OpRuntimeError, match=r"label 5 is out of range for 5 classes \(valid: 0..4\); first at "):
        impl(sd.one_hot(y, 5)).run(bad, np.empty((3, 4, 5), "int64"))
    bad[1, 2] = -1
    with pytest.raises(OpRuntimeError, match=r"label -1 is out of range"):
        impl(sd.one_hot(y, 5)).run(bad, np.empty((3, 4, 5), "int64"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_embedding_and_its_gradient(dtype):
    w = randn(10, 6, dtype=dtype)
    idx = RNG.integers(0, 10, size=(7, 3)).astype("int64")
    idx[0, :] = 4  # repeated rows accumulate
    ids, W = ph(idx.shape, "int64"), sd.parameter(w)
    emb = sd.embedding(ids, W, padding_idx=4)
    check(emb, idx, w, exact=True)
    g = randn(7, 3, 6, dtype=dtype)
    for op in (indexing.EmbeddingGrad(4, None), indexing.EmbeddingGrad(None, None), indexing.EmbeddingGrad(None, 2)):
        node = apply(op, sd.placeholder((None, 3, 6), dtype), ids, W)
        out = check(node, g, idx, w, exact=True)  # same summation order as np.add.at: bit-exact
        np.testing.assert_array_equal(out, check(node, g, idx, w, exact=True, serial=True))
    assert not out[4].any() or op.padding_idx is None


def test_embedding_ignore_index_and_range_errors():
    w = randn(5, 3)
    idx = np.array([[0, -100, 4], [2, 2, -100]], dtype="int64")
    node = apply(indexing.Embedding(None, -100), ph(idx.shape, "int64"), sd.parameter(w))
    check(node, idx, w, exact=True)
    plain = sd.embedding(ph(idx.shape, "int64"), sd.parameter(w))
    with pytest.raises(OpRuntimeError, match=r"index -100 is out of range for 5 embedding rows \(valid: 0..4\)"):
        impl(plain).run(idx, w, np.empty((2, 3, 3), "float32"))
    grad = apply(indexing.EmbeddingGrad(None, None), sd.placeholder((None, 3, 3)), ph(idx.shape, "int64"), plain)
    with pytest.raises(OpRuntimeError, match=r"index 7 is out of range for 5 embedding rows"):
        impl(grad).run(randn(2, 3, 3), np.full((2, 3), 7, "int64"), w, np.empty((5, 3), "float32"))


def test_embedding_large_parallel_matches_serial():
    w = randn(50, 64)
    idx = RNG.integers(0, 50, size=(1000,)).astype("int32")
    node = sd.embedding(ph(idx.shape, "int32"), sd.parameter(w))
    np.testing.assert_array_equal(check(node, idx, w, exact=True), check(node, idx, w, exact=True, serial=True))


@pytest.mark.parametrize("ignore_index", [None, -100])
def test_take_class_and_grad(ignore_index):
    x = randn(4, 5, 3)
    idx = RNG.integers(0, 5, size=(4, 3)).astype("int64")
    if ignore_index is not None:
        idx[1, 2] = ignore_index
    X, Y = ph(x.shape), ph(idx.shape, "int64")
    node = sd.take_class(X, Y, ignore_index=ignore_index)
    check(node, x, idx, exact=True)
    g = randn(4, 3)
    grad = apply(indexing.TakeAlongClassGrad(1, ignore_index), sd.placeholder((None, 3)), Y, X)
    check(grad, g, idx, x, exact=True)


def test_take_class_and_check_probabilities_parallel_match_serial():
    x = randn(600, 10, 8)
    idx = RNG.integers(0, 10, size=(600, 8)).astype("int64")
    X, Y = ph(x.shape), ph(idx.shape, "int64")
    node = sd.take_class(X, Y)
    np.testing.assert_array_equal(check(node, x, idx, exact=True), check(node, x, idx, exact=True, serial=True))
    grad = apply(indexing.TakeAlongClassGrad(1, None), sd.placeholder((None, 8)), Y, X)
    g = randn(600, 8)
    np.testing.assert_array_equal(check(grad, g, idx, x, exact=True), check(grad, g, idx, x, exact=True, serial=True))
    probs = RNG.random((300, 300)).astype("float32")
    check_node = apply(CheckProbabilities("binary_cross_entropy"), sd.placeholder((None, 300)))
    check(check_node, probs, exact=True)
    check(check_node, probs, exact=True, serial=True)
    probs[299, 299] = -0.5
    with pytest.raises(OpRuntimeError, match=r"at position \[299, 299\] \(1 of 90000 entries"):
        impl(check_node).run(probs, np.empty_like(probs))


def test_take_class_axis0_and_errors():
    x = randn(6)
    idx = np.array(4, dtype="int64")
    node = sd.take_class(sd.placeholder((6,)), sd.placeholder((), "int64"), axis=0)
    check(node, x, idx, exact=True)
    x2 = randn(3, 5)
    node2 = sd.take_class(ph(x2.shape), ph((3,), "int64"))
    with pytest.raises(OpRuntimeError, match=r"label 5 is out of range for 5 classes"):
        impl(node2).run(x2, np.array([0, 5, 1]), np.empty(3, "float32"))
    with pytest.raises(OpRuntimeError, match=r"take_class: the labels have shape \(2,\), expected \(3,\)"):
        impl(node2).run(x2, np.array([0, 1]), np.empty(3, "float32"))


# ----------------------------------------------------------------------------------------------------
# Dropout: bit for bit
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_mask_bit_exact(p, dtype):
    x = sd.placeholder((None, 7, 5), dtype)
    state = constant(np.array([0, 0], dtype="uint64"))
    node = apply(random.DropoutMask(p, 3), x, state)
    a = np.zeros((1000, 7, 5), dtype)  # crosses several 16k-element blocks
    for st in ([0, 0], [12345, 7], [2**64 - 1, 2**63 + 5]):
        s = np.array(st, dtype="uint64")
        out = check(node, a, s, exact=True)
        np.testing.assert_array_equal(out, check(node, a, s, exact=True, serial=True))
    kept = float((out != 0).mean())
    assert abs(kept - (1 - p)) < 0.02


# ----------------------------------------------------------------------------------------------------
# Batch norm (eval), checks, run-time sizes
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shp", [(6, 4), (3, 4, 5, 5)], ids=str)
def test_batch_norm_eval_bit_exact(dtype, shp):
    c = shp[1]
    x = randn(*shp, dtype=dtype)
    mean, bias = randn(c, dtype=dtype), randn(c, dtype=dtype)
    var, weight = RNG.random(c).astype(dtype) + 0.5, randn(c, dtype=dtype)
    vecs = [sd.placeholder((c,), dtype) for _ in range(4)]
    node = apply(normalization.BatchNormEval(1e-3), ph(shp, dtype), *vecs)
    check(node, x, mean, var, weight, bias, exact=True)
    check(node, x, mean, var, weight, bias, exact=True, serial=True)


def test_check_probabilities():
    node = apply(CheckProbabilities("binary_cross_entropy"), sd.placeholder((None, 4)))
    p = RNG.random((5, 4)).astype("float32")
    check(node, p, exact=True)
    p[2, 1] = 1.5
    p[3, 0] = np.nan
    with pytest.raises(OpRuntimeError, match=r"binary_cross_entropy: .* found .*1\.5.* at position \[2, 1\] \(2 of 20"):
        impl(node).run(p, np.empty_like(p))


def test_dim_size_and_batch_count():
    x = sd.placeholder((None, 3, None))
    a = np.zeros((4, 3, 5), "float32")
    check(apply(reduce.DimSize((0, 2), np.dtype("float32")), x), a, exact=True)
    bc = apply(normalization.BatchCount((0, 2), np.dtype("float64")), x)
    check(bc, a, exact=True)
    with pytest.raises(OpRuntimeError, match="expected more than 1 value per channel when training"):
        impl(bc).run(np.zeros((1, 3, 1), "float32"), np.empty((), "float64"))


def test_fill_like():
    node = apply(FillLike(2.5, np.dtype("int64")), sd.placeholder((None, 2)))
    check(node, np.zeros((3, 2), "float32"), exact=True)


# ----------------------------------------------------------------------------------------------------
# Shape copies
# ----------------------------------------------------------------------------------------------------


def test_shape_copies():
    a = randn(3, 4, 5)
    x = ph(a.shape)
    check(sd.transpose(x, (2, 0, 1)), a, exact=True)
    check(sd.broadcast_to(sd.placeholder((4, 1)), (2, 4, 3)), randn(4, 1), exact=True)
    ref = sd.placeholder((None, 4, 5))
    check(apply(shape.BroadcastLike(), sd.placeholder((4, 1)), ref), randn(4, 1), randn(2, 4, 5), exact=True)
    check(sd.pad(x, (1, 2, 0, 3), value=-1.5), a, exact=True)
    check(x[1:, ::2, -1], a, exact=True)
    check(x[::-1, 2], a, exact=True)
    b, c = randn(3, 2, 5), randn(3, 1, 5)
    check(sd.concat([x, ph(b.shape), ph(c.shape)], axis=1), a, b, c, exact=True)
    refs = [sd.placeholder((3, None, 5)) for _ in range(3)]
    g = randn(3, 7, 5)
    for k in range(3):
        check(apply(shape.ConcatPart(1, k), sd.placeholder((3, None, 5)), *refs), g, a, b, c, exact=True)
    check(apply(shape.SliceGrad(((1, None, None), (None, None, 2))), ph((2, 2, 5)), x), randn(2, 2, 5), a, exact=True)


def test_slice_out_of_range_raises():
    x = sd.placeholder((None, 3))
    node = x[5]
    with pytest.raises(OpRuntimeError, match=r"index \(5,\) out of range for shape \(2, 3\)"):
        impl(node).run(np.zeros((2, 3), "float32"), np.empty(3, "float32"))


# ----------------------------------------------------------------------------------------------------
# Compilation: sizes are never baked in
# ----------------------------------------------------------------------------------------------------


def test_new_batch_size_adds_no_signature():
    x, i = sd.placeholder((None, 6)), sd.placeholder((None,), "int64")
    w = sd.parameter(randn(9, 6))
    nodes = [sd.sum(x, 0), sd.softmax(x, 1), sd.argmax(x, 1), sd.embedding(i, w)]

    def run_all(n: int) -> None:
        a, idx = randn(n, 6), RNG.integers(0, 9, size=n).astype("int64")
        for node in nodes:
            args = (idx, w.value) if node.op.name == "embedding" else (a,)
            check(node, *args, atol=1e-6)

    run_all(8)
    dispatchers = {id(d): d for node in nodes for d in impl(node).dispatchers}.values()
    before = {id(d): len(d.signatures) for d in dispatchers}
    run_all(13)
    run_all(1)
    assert {id(d): len(d.signatures) for d in dispatchers} == before
