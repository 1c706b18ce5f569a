"""symdl.nn.init: gains, fans, distributions, layer defaults and reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import symdl
from symdl import nn
from symdl.nn import init
from symdl.ops.random import host_rng


def _param(shape, dtype="float32"):
    return symdl.parameter(np.zeros(shape, dtype))


def _ks_uniform(values, bound):
    return stats.kstest(values.ravel(), stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue


def _ks_normal(values, std, mean=0.0):
    return stats.kstest(values.ravel(), stats.norm(loc=mean, scale=std).cdf).pvalue


# ----------------------------------------------------------------------------------------------------
# Gains and fans
# ----------------------------------------------------------------------------------------------------

# torch.nn.init.calculate_gain's documented table
DOCUMENTED_GAINS = [
    ("linear", None, 1.0),
    ("conv1d", None, 1.0),
    ("conv2d", None, 1.0),
    ("conv3d", None, 1.0),
    ("conv_transpose1d", None, 1.0),
    ("conv_transpose2d", None, 1.0),
    ("conv_transpose3d", None, 1.0),
    ("sigmoid", None, 1.0),
    ("tanh", None, 5.0 / 3.0),
    ("relu", None, math.sqrt(2.0)),
    ("leaky_relu", None, math.sqrt(2.0 / (1 + 0.01**2))),
    ("leaky_relu", 0.2, math.sqrt(2.0 / (1 + 0.2**2))),
    ("leaky_relu", 1, 1.0),
    ("leaky_relu", math.sqrt(5), math.sqrt(1.0 / 3.0)),
    ("selu", None, 0.75),
]


@pytest.mark.parametrize("nonlinearity, param, gain", DOCUMENTED_GAINS)
def test_calculate_gain_matches_the_documented_table(nonlinearity, param, gain):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(gain, rel=1e-15)


def test_calculate_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for nonlinearity, param, _ in DOCUMENTED_GAINS:
        assert init.calculate_gain(nonlinearity, param) == pytest.approx(
            torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-12
        )


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="unsupported nonlinearity 'gelu'"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="unsupported nonlinearity 'identity'"):  # as torch: use "linear"
        init.calculate_gain("identity")
    with pytest.raises(ValueError, match="negative_slope True is not a valid number"):
        init.calculate_gain("leaky_relu", True)


def test_fans():
    assert init.calculate_fan_in_and_fan_out((5, 3)) == (3, 5)
    assert init.calculate_fan_in_and_fan_out((8, 4, 3, 2)) == (24, 48)
    assert init.calculate_fan_in_and_fan_out(_param((6, 2, 5))) == (10, 30)
    with pytest.raises(ValueError, match=r"fewer than 2 dimensions \(shape \(7,\)\)"):
        init.calculate_fan_in_and_fan_out((7,))


# ----------------------------------------------------------------------------------------------------
# The initialisers
# ----------------------------------------------------------------------------------------------------


def test_constant_fillers_act_in_place_and_return_the_parameter():
    p = _param((2, 3))
    assert init.ones_(p) is p
    np.testing.assert_array_equal(p.value, np.ones((2, 3), np.float32))
    assert init.zeros(p) is p and not p.value.any()
    init.constant_(p, 2.5)
    assert p.value.dtype == np.float32 and (p.value == 2.5).all()
    counts = symdl.parameter(np.ones(3, np.int64))
    init.zeros_(counts)
    assert counts.value.dtype == np.int64 and not counts.value.any()
    arr = np.zeros((2, 2))
    assert init.constant_(arr, 3.0) is arr and (arr == 3.0).all()


def test_aliases_are_the_same_functions():
    for name in ("zeros", "ones", "constant", "uniform", "normal", "xavier_uniform", "xavier_normal"):
        assert getattr(init, name) is getattr(init, name + "_")
    assert init.kaiming_uniform is init.kaiming_uniform_ and init.kaiming_normal is init.kaiming_normal_


def test_uniform_and_normal_distributions():
    gen = np.random.default_rng(0)
    p = _param((400, 500))
    init.uniform_(p, -0.5, 1.5, generator=gen)
    v = p.value.astype(np.float64)
    assert v.min() >= -0.5 and v.max() < 1.5
    assert stats.kstest(v.ravel(), stats.uniform(loc=-0.5, scale=2.0).cdf).pvalue > 1e-3
    init.normal_(p, mean=2.0, std=0.5, generator=gen)
    assert _ks_normal(p.value.astype(np.float64), 0.5, mean=2.0) > 1e-3
    assert p.value.mean() == pytest.approx(2.0, abs=5e-3) and p.value.std() == pytest.approx(0.5, rel=1e-2)


@pytest.mark.parametrize("shape", [(300, 200), (64, 16, 3, 3)])
def test_xavier(shape):
    gen = np.random.default_rng(1)
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(shape)
    p = _param(shape)
    init.xavier_uniform_(p, gain=2.0, generator=gen)
    bound = 2.0 * math.sqrt(6.0 / (fan_in + fan_out))
    v = p.value.astype(np.float64)
    assert np.abs(v).max() <= bound and np.abs(v).max() > 0.99 * bound
    assert _ks_uniform(v, bound) > 1e-3
    init.xavier_normal_(p, generator=gen)
    assert _ks_normal(p.value.astype(np.float64), math.sqrt(2.0 / (fan_in + fan_out))) > 1e-3


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming(mode):
    gen = np.random.default_rng(2)
    shape = (120, 40, 3, 3)
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    p = _param(shape)
    init.kaiming_uniform_(p, mode=mode, nonlinearity="relu", generator=gen)
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan)
    v = p.value.astype(np.float64)
    assert np.abs(v).max() <= bound and _ks_uniform(v, bound) > 1e-3
    init.kaiming_normal_(p, a=0.1, mode=mode, generator=gen)  # leaky_relu with slope 0.1
    std = math.sqrt(2.0 / (1 + 0.1**2)) / math.sqrt(fan)
    assert _ks_normal(p.value.astype(np.float64), std) > 1e-3


def test_kaiming_uniform_with_a_sqrt5_has_bound_one_over_sqrt_fan_in():
    p = _param((256, 100))
    init.kaiming_uniform_(p, a=math.sqrt(5), generator=np.random.default_rng(3))
    v = p.value.astype(np.float64)
    assert np.abs(v).max() <= 0.1 and np.abs(v).max() > 0.0999
    assert _ks_uniform(v, 0.1) > 1e-3


def test_float64_targets_keep_their_dtype():
    p = _param((10, 10), "float64")
    init.xavier_uniform_(p)
    assert p.value.dtype == np.float64


def test_initialiser_errors():
    with pytest.raises(TypeError, match="init.normal_: needs a floating-point target, got dtype int64"):
        init.normal_(symdl.parameter(np.zeros(3, np.int64)))
    with pytest.raises(ValueError, match="mode 'fan_avg' is not supported"):
        init.kaiming_uniform_(_param((3, 3)), mode="fan_avg")
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(_param((5,)))
    with pytest.raises(TypeError, match="expected a symdl Parameter or a NumPy array, got list"):
        init.zeros_([1.0, 2.0])
    with pytest.raises(TypeError, match="generator must be a numpy.random.Generator"):
        init.uniform_(_param((2,)), generator=np.random.RandomState(0))
    with pytest.raises(ValueError, match="expected a <= b"):
        init.uniform_(_param((2,)), 1.0, 0.0)


def test_zero_element_tensors_are_a_no_op():
    p = _param((0, 4))
    assert init.kaiming_uniform_(p) is p and p.value.shape == (0, 4)


# ----------------------------------------------------------------------------------------------------
# Reproducibility
# ----------------------------------------------------------------------------------------------------


def test_manual_seed_makes_models_reproducible():
    def build():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.Embedding(5, 2))

    symdl.manual_seed(123)
    a = build().state_dict()
    symdl.manual_seed(123)
    b = build().state_dict()
    symdl.manual_seed(124)
    c = build().state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["0.weight"], c["0.weight"])
    assert not np.array_equal(a["4.weight"], c["4.weight"])


def test_explicit_generator_leaves_the_host_rng_alone():
    symdl.manual_seed(7)
    expected_next = np.random.Generator(np.random.PCG64(7)).random()
    p, q = _param((4, 4)), _param((4, 4))
    init.normal_(p, generator=np.random.default_rng(99))
    init.normal_(q, generator=np.random.default_rng(99))
    np.testing.assert_array_equal(p.value, q.value)
    assert host_rng().random() == expected_next  # the default stream was not consumed
    # and the default is host_rng(): the same draws as a generator seeded like manual_seed
    symdl.manual_seed(11)
    init.uniform_(p, -1.0, 1.0)
    want = np.random.Generator(np.random.PCG64(11)).uniform(-1.0, 1.0, size=(4, 4)).astype(np.float32)
    np.testing.assert_array_equal(p.value, want)


# ----------------------------------------------------------------------------------------------------
# Layer defaults (PyTorch's)
# ----------------------------------------------------------------------------------------------------


def test_linear_default_init():
    symdl.manual_seed(0)
    lin = nn.Linear(400, 300)
    bound = 1.0 / math.sqrt(400)
    w, b = lin.weight.value.astype(np.float64), lin.bias.value.astype(np.float64)
    assert lin.weight.value.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert _ks_uniform(w, bound) > 1e-3
    assert np.abs(b).max() <= bound and _ks_uniform(b, bound) > 1e-3


def test_conv_default_init_uses_fan_in_per_group():
    symdl.manual_seed(0)
    conv = nn.Conv2d(32, 64, (3, 5), groups=4)
    assert conv.weight.shape == (64, 8, 3, 5)
    bound = 1.0 / math.sqrt(8 * 3 * 5)
    w = conv.weight.value.astype(np.float64)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert _ks_uniform(w, bound) > 1e-3
    assert np.abs(conv.bias.value).max() <= bound
    c1 = nn.Conv1d(6, 500, 4)
    bound1 = 1.0 / math.sqrt(24)
    assert np.abs(c1.bias.value).max() <= bound1 and _ks_uniform(c1.bias.value.astype(np.float64), bound1) > 1e-3


def test_other_layer_defaults():
    bn = nn.BatchNorm2d(5)
    np.testing.assert_array_equal(bn.weight.value, np.ones(5, np.float32))
    np.testing.assert_array_equal(bn.bias.value, np.zeros(5, np.float32))
    np.testing.assert_array_equal(bn.running_mean.value, np.zeros(5, np.float32))
    np.testing.assert_array_equal(bn.running_var.value, np.ones(5, np.float32))
    assert bn.num_batches_tracked.value == 0 and bn.num_batches_tracked.value.dtype == np.int64
    symdl.manual_seed(0)
    emb = nn.Embedding(500, 200, padding_idx=3)
    w = emb.weight.value.astype(np.float64)
    assert not w[3].any()
    rest = np.delete(w, 3, axis=0)
    assert _ks_normal(rest, 1.0) > 1e-3
    pr = nn.PReLU(4)
    np.testing.assert_array_equal(pr.weight.value, np.full(4, 0.25, np.float32))


def test_reset_parameters_redraws_from_the_host_rng():
    symdl.manual_seed(5)
    lin = nn.Linear(3, 2)
    first = lin.state_dict()
    symdl.manual_seed(5)
    lin.reset_parameters()
    for k, v in lin.state_dict().items():
        np.testing.assert_array_equal(v, first[k])
