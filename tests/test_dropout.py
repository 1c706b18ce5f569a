"""dropout and the counter-based RNG: train/eval semantics, the mask formula, reproducibility, streams."""

import math

import numpy as np
import pytest

import symdl
from symdl.errors import ShapeError
from symdl.ops.random import DropoutMask

M64 = (1 << 64) - 1


def _mix64_py(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _mask_py(n, seed, counter, stream, p):
    """The documented formula, re-implemented with Python integers (what the Numba targets must reproduce)."""
    key = _mix64_py(_mix64_py(_mix64_py(seed & M64) ^ counter) ^ stream)
    k = math.ceil((1 - p) * 2**53)
    return np.array([(_mix64_py(key ^ ((i * 0x9E3779B97F4A7C15) & M64)) >> 11) < k for i in range(n)])


def _layer(shape=(None, 64), p=0.5, gen=None, seed=0, **kw):
    gen = gen if gen is not None else symdl.Generator(seed)
    x = symdl.placeholder(shape, name="x")
    return x, gen, symdl.dropout(x, p, generator=gen, **kw)


def test_eval_is_identity_and_does_not_advance(rng):
    x, gen, y = _layer()
    f = symdl.compile([x], [y], mode="eval")
    assert f.program.updates == []
    xv = rng.normal(size=(3, 64)).astype(np.float32)
    np.testing.assert_array_equal(f(xv)[0], xv)
    assert gen.counter == 0


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_train_mask_values_and_keep_rate(p):
    x, gen, y = _layer((None, 1000), p=p)
    f = symdl.compile([x], [y], mode="train")
    (out,) = f(np.ones((200, 1000), np.float32))
    scale = np.float32(1) / np.float32(1 - p)
    assert set(np.unique(out)) <= {np.float32(0), scale}
    n = out.size
    keep = (out != 0).mean()
    assert abs(keep - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert gen.counter == 1


def test_mask_follows_documented_formula():
    seed = 123456789
    x, gen, y = _layer((2, 3, 5), p=0.3, seed=seed)
    y2 = symdl.dropout(x, 0.3, generator=gen)  # stream 1
    f = symdl.compile([x], [y, y2], mode="train")
    xv = np.ones((2, 3, 5), np.float32)
    for counter in range(3):
        a, b = f(xv)
        for stream, out in ((0, a), (1, b)):
            expected = _mask_py(30, seed, counter, stream, 0.3).reshape(2, 3, 5)
            np.testing.assert_array_equal(out != 0, expected)
    assert gen.counter == 3


def test_gradient_is_the_same_mask(rng):
    x, gen, y = _layer((None, 50), p=0.4)
    c = rng.normal(size=(4, 50)).astype(np.float32)
    gx = symdl.grad((y * symdl.constant(c)).sum(), x)
    f = symdl.compile([x], [y, gx], mode="train")
    xv = rng.uniform(1, 2, size=(4, 50)).astype(np.float32)
    out, g = f(xv)
    mask = out / xv
    np.testing.assert_allclose(g, mask * c, rtol=1e-6)
    # in eval mode the gradient is the identity's
    f_eval = symdl.compile([x], [gx], mode="eval")
    np.testing.assert_allclose(f_eval(xv)[0], c)


def test_check_grad_through_dropout(rng):
    x = symdl.placeholder((3, 4), "float64")
    w = symdl.parameter(rng.normal(size=(4, 2)))
    y = symdl.tanh(symdl.dropout(x @ w, 0.5, generator=symdl.Generator(3)))
    for mode in ("train", "eval"):
        symdl.check_grad(y, {x: rng.normal(size=(3, 4)), w: w.value}, mode=mode)


def test_reproducible_across_generators_with_same_seed():
    outs = []
    for _ in range(2):
        x, gen, y = _layer(seed=7)
        f = symdl.compile([x], [y], mode="train")
        outs.append([f(np.ones((4, 64), np.float32))[0] for _ in range(3)])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    x, gen, y = _layer(seed=8)
    other = symdl.compile([x], [y], mode="train")(np.ones((4, 64), np.float32))[0]
    assert not np.array_equal(other, outs[0][0])


def test_advances_and_resumes():
    x, gen, y = _layer()
    f = symdl.compile([x], [y], mode="train")
    xv = np.ones((4, 64), np.float32)
    saved = gen.get_state()
    first = f(xv)[0]
    assert gen.counter == 1
    second = f(xv)[0]
    assert gen.counter == 2
    assert not np.array_equal(first, second)
    # resumable: setting the state parameter back replays the same masks
    gen.state.value = saved
    np.testing.assert_array_equal(f(xv)[0], first)
    gen.set_state(np.array([0, 1]))
    np.testing.assert_array_equal(f(xv)[0], second)
    assert gen.state.dtype == np.uint64 and not gen.state.trainable


def test_two_layers_draw_different_streams_and_share_one_update():
    gen = symdl.Generator(11)
    x = symdl.placeholder((None, 256), name="x")
    y1 = symdl.dropout(x, 0.5, generator=gen)
    y2 = symdl.dropout(x, 0.5, generator=gen)
    h = symdl.dropout(y1 + y2, 0.2, generator=gen)
    masks = {n.op.stream for n in symdl.graph.toposort([h]) if isinstance(n.op, DropoutMask)}
    assert masks == {0, 1, 2}
    f = symdl.compile([x], [y1, y2, h], mode="train")
    assert len(f.program.updates) == 1  # one shared `state + [0, 1]` node
    a, b, _ = f(np.ones((8, 256), np.float32))
    assert not np.array_equal(a, b)
    agree = np.mean((a != 0) == (b != 0))
    assert 0.4 < agree < 0.6  # independent streams agree half the time at p = 0.5
    assert gen.counter == 1  # one advance per call, however many layers


def test_p_zero_and_one(rng):
    xv = rng.normal(size=(5, 64)).astype(np.float32)
    x, _, y0 = _layer(p=0.0)
    np.testing.assert_array_equal(symdl.compile([x], [y0], mode="train")(xv)[0], xv)
    x, _, y1 = _layer(p=1.0)
    out = symdl.compile([x], [y1], mode="train")(xv)[0]
    np.testing.assert_array_equal(out, np.zeros_like(xv))
    np.testing.assert_array_equal(symdl.compile([x], [y1], mode="eval")(xv)[0], xv)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_bad_p_raises(p):
    x = symdl.placeholder((2, 3))
    with pytest.raises(ValueError, match="between 0 and 1"):
        symdl.dropout(x, p)


def test_bad_operands_raise():
    with pytest.raises(ShapeError, match="floating-point"):
        symdl.dropout(symdl.placeholder((2, 3), "int64"), 0.5)
    with pytest.raises(TypeError, match="generator"):
        symdl.dropout(symdl.placeholder((2, 3)), 0.5, generator=42)


def test_forced_training_flags():
    gen = symdl.Generator(5)
    x = symdl.placeholder((4, 64))
    xv = np.ones((4, 64), np.float32)
    always = symdl.dropout(x, 0.5, training=True, generator=gen)
    out = symdl.compile([x], [always], mode="eval")(xv)[0]
    assert set(np.unique(out)) == {0.0, 2.0}
    assert gen.counter == 0  # an eval-mode compile applies no updates
    symdl.compile([x], [always], mode="train")(xv)
    assert gen.counter == 1
    never = symdl.dropout(x, 0.5, training=False, generator=gen)
    assert never is x


def test_manual_seed_resets_default_generator():
    def run():
        symdl.manual_seed(2024)
        x = symdl.placeholder((None, 128))
        y = symdl.dropout(symdl.dropout(x, 0.5), 0.5)
        f = symdl.compile([x], [y], mode="train")
        return [f(np.ones((3, 128), np.float32))[0] for _ in range(2)]

    a, b = run(), run()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], a[1])
    gen = symdl.default_generator()
    assert gen.seed == 2024 and gen.counter == 2
    assert gen is symdl.manual_seed(0) and gen.counter == 0


def test_float64_and_runtime_shapes():
    gen = symdl.Generator(1)
    x = symdl.placeholder((None, None), "float64")
    y = symdl.dropout(x, 0.25, generator=gen)
    f = symdl.compile([x], [y], mode="train")
    for shape in [(2, 3), (7, 1), (0, 4)]:
        out = f(np.ones(shape))[0]
        assert out.shape == shape and out.dtype == np.float64
        assert set(np.unique(out)) <= {0.0, 1 / 0.75}
