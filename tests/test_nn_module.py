"""symdl.nn.Module and the containers: registration, names, traversal, state dicts, freezing, layer-path errors."""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import pytest
from helpers import line_here

import symdl
from symdl import nn
from symdl.errors import ShapeError


class MLP(nn.Module):
    def __init__(self, d_in=4, hidden=6, d_out=3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 2 * 2, 3))

    def forward(self, x):
        return self.head(self.features(x))


class ResidualBlock(nn.Module):
    """y = relu(x + fc2(relu(fc1(x)))): a skip connection as a custom module."""

    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden, dtype="float64")
        self.fc2 = nn.Linear(hidden, d, dtype="float64")

    def forward(self, x):
        return symdl.relu(x + self.fc2(symdl.relu(self.fc1(x))))


def _values(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _assert_same_state(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ----------------------------------------------------------------------------------------------------
# Registration, traversal, names
# ----------------------------------------------------------------------------------------------------


def test_parameters_buffers_and_modules_are_registered_on_assignment():
    model = ConvNet()
    names = [n for n, _ in model.named_parameters()]
    assert names == [
        "features.0.weight",
        "features.0.bias",
        "features.1.weight",
        "features.1.bias",
        "head.1.weight",
        "head.1.bias",
    ]
    assert [n for n, _ in model.named_buffers()] == [
        "features.1.running_mean",
        "features.1.running_var",
        "features.1.num_batches_tracked",
    ]
    # parameters() holds no buffer; every entry is a symdl Parameter
    params = list(model.parameters())
    assert len(params) == 6 and all(isinstance(p, symdl.Parameter) for p in params)
    assert all(p.trainable for p in params)
    assert all(not b.trainable for b in model.buffers())
    assert not {id(b) for b in model.buffers()} & {id(p) for p in params}
    # the state dict holds both, in PyTorch's order (own params, own buffers, then children)
    assert list(model.state_dict()) == [
        "features.0.weight",
        "features.0.bias",
        "features.1.weight",
        "features.1.bias",
        "features.1.running_mean",
        "features.1.running_var",
        "features.1.num_batches_tracked",
        "head.1.weight",
        "head.1.bias",
    ]
    assert [n for n, _ in model.named_modules()] == [
        "",
        "features",
        "features.0",
        "features.1",
        "features.2",
        "features.3",
        "head",
        "head.0",
        "head.1",
    ]
    assert [n for n, _ in model.named_children()] == ["features", "head"]
    assert list(model.children()) == [model.features, model.head]
    assert len(list(model.modules())) == 9
    assert model.get_submodule("features.1") is model.features[1]
    assert model.get_submodule("") is model
    with pytest.raises(AttributeError, match="has no submodule 'nope'"):
        model.get_submodule("features.nope")


def test_parameter_names_are_dotted_paths_whatever_the_build_order():
    model = ConvNet()
    assert model.features[0].weight.name == "features.0.weight"
    assert model.features[1].running_var.name == "features.1.running_var"
    # top-down: attach an empty container first, fill it afterwards
    top = nn.Module()
    top.blocks = nn.ModuleList()
    top.blocks.append(nn.Linear(2, 2))
    top.blocks.append(nn.Sequential(nn.Linear(2, 3)))
    assert top.blocks[0].weight.name == "blocks.0.weight"
    assert top.blocks[1][0].bias.name == "blocks.1.0.bias"
    assert [p.name for p in top.parameters()] == [n for n, _ in top.named_parameters()]
    # a graph built from the model shows the names
    x = symdl.placeholder((None, 2), name="x")
    y = top.blocks[0](x)
    assert "blocks.0.weight" in {t.name for t in symdl.graph.toposort([y])}


def test_assignment_rules():
    class Early(nn.Module):
        def __init__(self):
            self.w = symdl.parameter(np.zeros(2, "float32"))
            super().__init__()

    with pytest.raises(AttributeError, match=r"cannot assign Parameter 'w' before Early.__init__\(\) has called"):
        Early()
    lin = nn.Linear(2, 3)
    with pytest.raises(TypeError, match=r"cannot assign ndarray to Linear.weight: it is a registered parameter"):
        lin.weight = np.zeros((3, 2), "float32")
    lin.bias = None  # allowed: the name stays registered with no value
    assert "bias" not in dict(lin.named_parameters()) and lin.bias is None
    assert "bias" not in lin.state_dict()
    # a Parameter assigned to a buffer name stays a buffer
    bn = nn.BatchNorm1d(3)
    new_mean = symdl.parameter(np.full(3, 2.0, "float32"), trainable=False)
    bn.running_mean = new_mean
    assert dict(bn.named_buffers())["running_mean"] is new_mean
    assert new_mean.name == "running_mean"
    assert "running_mean" not in dict(bn.named_parameters())
    # plain attributes are plain
    lin.note = "hello"
    assert lin.note == "hello" and "note" not in lin.state_dict()
    # register_buffer wraps arrays in non-trainable parameters
    m = nn.Module()
    b = m.register_buffer("steps", np.zeros(2, "int32"))
    assert isinstance(b, symdl.Parameter) and not b.trainable and b.dtype == np.int32
    assert m.steps is b and list(m.state_dict()) == ["steps"]
    m.register_buffer("scratch", np.zeros(1, "float32"), persistent=False)
    assert list(m.state_dict()) == ["steps"] and len(list(m.buffers())) == 2
    del m.steps
    assert list(m.state_dict()) == []
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'steps'"):
        _ = m.steps


def test_shared_modules_and_parameters_are_listed_once():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(model.parameters())) == 2
    assert [n for n, _ in model.named_modules()] == ["", "0", "1"]
    # the state dict lists every name, like PyTorch
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_apply_train_eval_and_repr():
    model = ConvNet()
    seen = []
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    assert seen == [
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "MaxPool2d",
        "Sequential",
        "Flatten",
        "Linear",
        "Sequential",
        "ConvNet",
    ]
    assert model.training and model.features[1].training
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    assert repr(model) == (
        "ConvNet(\n"
        "  (features): Sequential(\n"
        "    (0): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))\n"
        "    (1): BatchNorm2d(2, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)\n"
        "    (2): ReLU()\n"
        "    (3): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)\n"
        "  )\n"
        "  (head): Sequential(\n"
        "    (0): Flatten(start_dim=1, end_dim=-1)\n"
        "    (1): Linear(in_features=8, out_features=3, bias=True)\n"
        "  )\n"
        ")"
    )


def test_the_training_flag_does_not_change_the_graph(rng):
    """eval() is informational: a train-mode compile of a graph built after eval() still uses batch statistics
    and updates the running statistics."""
    bn = nn.BatchNorm1d(3).eval()
    x = symdl.placeholder((None, 3), name="x")
    y = bn(x)
    xb = rng.standard_normal((5, 3)).astype(np.float32)
    (out,) = symdl.compile([x], [y], mode="train")(xb)
    np.testing.assert_allclose(out, (xb - xb.mean(0)) / np.sqrt(xb.var(0) + 1e-5), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.value, 0.1 * xb.mean(0), rtol=1e-6)


def test_forward_must_be_overridden():
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        nn.Module()(symdl.placeholder((2,)))


# ----------------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------------


def test_sequential_indexing_len_iteration_and_append():
    a, b, c = nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq[0] is a and seq[-1] is c and seq[-3] is a
    head = seq[1:]
    assert isinstance(head, nn.Sequential) and list(head) == [b, c]
    assert [n for n, _ in head.named_children()] == ["1", "2"]  # keys kept, as PyTorch
    with pytest.raises(IndexError, match="Sequential index 3 is out of range for length 3"):
        seq[3]
    with pytest.raises(TypeError, match="Sequential: element 3 must be a Module, got int"):
        seq.append(3)
    d = nn.Sigmoid()
    assert seq.append(d) is seq and seq[3] is d and len(seq) == 4
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert [n for n, _ in named.named_children()] == ["fc", "act"]
    assert named.fc.weight.name == "fc.weight"
    seq[1] = nn.Tanh()
    assert isinstance(seq[1], nn.Tanh)


def test_sequential_forward_is_the_composition(rng):
    seq = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    x = symdl.placeholder((None, 4), name="x")
    xb = rng.standard_normal((3, 4)).astype(np.float32)
    (got,) = symdl.compile([x], [seq(x)])(xb)
    w0, b0, w1, b1 = (p.value for p in seq.parameters())
    want = np.tanh(xb @ w0.T + b0) @ w1.T + b1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_module_list_append_extend_insert_index():
    layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    assert len(layers) == 2
    third = nn.Linear(2, 2)
    assert layers.append(third) is layers and layers[2] is third and layers[-1] is third
    layers.extend([nn.ReLU(), nn.Tanh()])
    assert len(layers) == 5
    layers += [nn.Sigmoid()]
    assert isinstance(layers[5], nn.Sigmoid)
    first = nn.Linear(2, 2)
    layers.insert(0, first)
    assert layers[0] is first and layers[3] is third and len(layers) == 7
    assert [n for n, _ in layers.named_children()] == [str(i) for i in range(7)]
    assert third.weight.name == "3.weight"  # renumbered by the insert
    assert isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    layers[1] = nn.Identity()
    assert isinstance(layers[1], nn.Identity)
    assert len(list(layers.parameters())) == 2 * 3
    with pytest.raises(TypeError, match="ModuleList: element 7 must be a Module, got str"):
        layers.append("relu")
    with pytest.raises(NotImplementedError, match="ModuleList has no forward"):
        layers(symdl.placeholder((2,)))


def test_module_list_in_a_custom_module(rng):
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(3, 3) for _ in range(3))

        def forward(self, x):
            for layer in self.layers:
                x = symdl.tanh(layer(x))
            return x

    model = Stack()
    assert [n for n, _ in model.named_parameters()][-1] == "layers.2.bias"
    x = symdl.placeholder((None, 3), name="x")
    xb = rng.standard_normal((2, 3)).astype(np.float32)
    (got,) = symdl.compile([x], [model(x)])(xb)
    want = xb
    for layer in model.layers:
        want = np.tanh(want @ layer.weight.value.T + layer.bias.value)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_module_dict():
    d = nn.ModuleDict({"enc": nn.Linear(2, 3), "dec": nn.Linear(3, 2)})
    assert len(d) == 2 and list(d) == ["enc", "dec"] and "enc" in d and "x" not in d
    assert d.keys() == ["enc", "dec"] and isinstance(d["dec"], nn.Linear)
    d["act"] = nn.ReLU()
    assert [k for k, _ in d.items()] == ["enc", "dec", "act"] and len(d.values()) == 3
    del d["act"]
    assert list(d) == ["enc", "dec"]
    assert list(d.state_dict()) == ["enc.weight", "enc.bias", "dec.weight", "dec.bias"]


# ----------------------------------------------------------------------------------------------------
# Custom modules: a residual block
# ----------------------------------------------------------------------------------------------------


def test_residual_block_forward_and_gradients(rng):
    symdl.manual_seed(3)
    block = ResidualBlock(4, 5)
    x = symdl.placeholder((None, 4), dtype="float64", name="x")
    y = block(x)
    assert isinstance(y, symdl.Tensor) and y.shape == (None, 4)
    xb = rng.standard_normal((6, 4))
    (got,) = symdl.compile([x], [y])(xb)
    w1, b1, w2, b2 = (p.value for p in block.parameters())
    want = np.maximum(xb + np.maximum(xb @ w1.T + b1, 0) @ w2.T + b2, 0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # gradients of every parameter (and of x) against central finite differences
    loss = (y * y).sum()
    symdl.check_grad(loss, {x: xb, **{p: p.value for p in block.parameters()}})
    # the skip path: d sum(y) / dx includes the identity term
    gx, *_ = symdl.grad(y.sum(), [x, *block.parameters()])
    (gxv,) = symdl.compile([x], [gx])(xb)
    pre = xb + np.maximum(xb @ w1.T + b1, 0) @ w2.T + b2
    inner = (xb @ w1.T + b1 > 0).astype(np.float64)
    gy = (pre > 0).astype(np.float64)
    want_gx = gy + ((gy @ w2) * inner) @ w1
    np.testing.assert_allclose(gxv, want_gx, rtol=1e-12, atol=1e-12)


def test_residual_network_trains_with_sgd(rng):
    symdl.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(ResidualBlock(3, 8), ResidualBlock(3, 8))
            self.out = nn.Linear(3, 1, dtype="float64")

        def forward(self, x):
            return self.out(self.blocks(x))

    net = Net()
    x = symdl.placeholder((None, 3), dtype="float64", name="x")
    t = symdl.placeholder((None, 1), dtype="float64", name="t")
    loss = symdl.mse_loss(net(x), t)
    params = list(net.parameters())
    grads = symdl.grad(loss, params)
    step = symdl.compile([x, t], [loss], updates={p: p - 0.05 * g for p, g in zip(params, grads)})
    xb = rng.standard_normal((32, 3))
    tb = xb.sum(1, keepdims=True)
    losses = [float(step(xb, tb)[0]) for _ in range(60)]
    assert losses[-1] < 0.2 * losses[0]


# ----------------------------------------------------------------------------------------------------
# Freezing
# ----------------------------------------------------------------------------------------------------


def test_freeze_and_requires_grad(rng):
    model = ConvNet()
    assert model.features.freeze() is model.features
    frozen = list(model.features.parameters())
    assert frozen and all(not p.trainable for p in frozen)
    # frozen parameters are still parameters (as PyTorch); trainable_parameters() skips them
    assert len(list(model.parameters())) == 6
    assert [p.name for p in model.trainable_parameters()] == ["head.1.weight", "head.1.bias"]
    assert all(not b.trainable for b in model.buffers())
    model.features.unfreeze()
    assert all(p.trainable for p in model.parameters())
    model.requires_grad_(False)
    assert not any(p.trainable for p in model.parameters())
    # buffers are never made trainable
    model.requires_grad_(True)
    assert not any(b.trainable for b in model.buffers())


# ----------------------------------------------------------------------------------------------------
# State dicts
# ----------------------------------------------------------------------------------------------------


def test_state_dict_is_a_copy():
    model = MLP()
    sd = model.state_dict()
    assert isinstance(sd, OrderedDict)
    before = model.fc1.weight.value.copy()
    sd["fc1.weight"][...] = 7.0
    np.testing.assert_array_equal(model.fc1.weight.value, before)


def test_state_dict_round_trip_gives_the_same_function(rng):
    symdl.manual_seed(1)
    a = ConvNet()
    symdl.manual_seed(2)
    b = ConvNet()
    a.features[1].running_mean.value = rng.standard_normal(2).astype(np.float32)
    a.features[1].num_batches_tracked.value = np.array(5, np.int64)
    assert not np.array_equal(a.head[1].weight.value, b.head[1].weight.value)
    result = b.load_state_dict(a.state_dict())
    assert result == nn.IncompatibleKeys([], [])
    _assert_same_state(a.state_dict(), b.state_dict())
    x = symdl.placeholder((None, 1, 4, 4), name="x")
    xb = rng.standard_normal((3, 1, 4, 4)).astype(np.float32)
    out_a = symdl.compile([x], [a(x)], mode="eval")(xb)[0]
    out_b = symdl.compile([x], [b(x)], mode="eval")(xb)[0]
    np.testing.assert_array_equal(out_a, out_b)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda sd: sd.pop("head.1.bias"), r"missing keys: head\.1\.bias"),
        (lambda sd: sd.update({"head.2.weight": np.zeros(1, "float32")}), r"unexpected keys: head\.2\.weight"),
        (
            lambda sd: sd.update({"head.1.weight": np.zeros((3, 9), "float32")}),
            r"head\.1\.weight: shape \(3, 9\) in the state dict, \(3, 8\) in the model",
        ),
        (
            lambda sd: sd.update({"head.1.bias": np.zeros(3, "float64")}),
            r"head\.1\.bias: dtype float64 in the state dict cannot be cast safely to the model's float32",
        ),
        (
            lambda sd: sd.update({"features.1.num_batches_tracked": np.array(1.5)}),
            r"num_batches_tracked: dtype float64 .* to the model's int64",
        ),
    ],
)
def test_load_state_dict_failures_leave_the_model_unchanged(rng, corrupt, message):
    model = ConvNet()
    before = _values(model)
    other = ConvNet()
    sd = {k: v + 1 if v.dtype.kind == "f" else v + 1 for k, v in other.state_dict().items()}
    corrupt(sd)  # every other entry is valid and different: nothing may be assigned
    with pytest.raises(nn.StateDictError, match=r"load_state_dict for ConvNet: nothing was loaded") as info:
        model.load_state_dict(sd)
    assert re.search(message, str(info.value))
    _assert_same_state(before, model.state_dict())


def test_load_state_dict_reports_every_problem_at_once():
    model = MLP()
    sd = model.state_dict()
    sd.pop("fc1.bias")
    sd["fc2.weight"] = np.zeros((1, 1), "float32")
    sd["extra"] = np.zeros(1, "float32")
    with pytest.raises(nn.StateDictError) as info:
        model.load_state_dict(sd)
    text = str(info.value)
    assert "missing keys: fc1.bias" in text and "unexpected keys: extra" in text
    assert "fc2.weight: shape (1, 1) in the state dict, (3, 6) in the model" in text


def test_load_state_dict_non_strict_and_safe_casts():
    model = MLP()
    w = np.arange(24, dtype=np.float32).reshape(6, 4)
    result = model.load_state_dict({"fc1.weight": w, "junk": np.zeros(2)}, strict=False)
    assert result.missing_keys == ["fc1.bias", "fc2.weight", "fc2.bias"]
    assert result.unexpected_keys == ["junk"]
    np.testing.assert_array_equal(model.fc1.weight.value, w)
    # a float64 model accepts float32 and int values (safe casts); values are copied
    m64 = nn.Linear(2, 2, dtype="float64")
    src = {"weight": np.array([[1, 2], [3, 4]], dtype=np.int32), "bias": np.array([0.5, 0.25], np.float32)}
    m64.load_state_dict(src)
    assert m64.weight.value.dtype == np.float64
    np.testing.assert_array_equal(m64.weight.value, [[1, 2], [3, 4]])
    src["bias"][0] = 9.0
    assert m64.bias.value[0] == 0.5
    with pytest.raises(TypeError, match="load_state_dict expects a mapping"):
        m64.load_state_dict([("weight", 1)])


# ----------------------------------------------------------------------------------------------------
# Layer-path errors
# ----------------------------------------------------------------------------------------------------


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(7, 4))
        self.fc1 = nn.Linear(10, 5)

    def forward(self, x, which):
        if which == "features":
            return self.features(x)
        return self.fc1(x)


def test_shape_mismatch_names_the_layer_path_the_shapes_and_the_user_line():
    model = Classifier()
    x = symdl.placeholder((None, 10), name="x")
    with pytest.raises(ShapeError) as info:
        model(x, "features")
    text = str(info.value)
    assert text.startswith("model.features.2 (Linear(in_features=7, out_features=4, bias=True)): ")
    assert "the input's last dim is 8 but in_features=7: got an input (None, 8) float32, expected (*, 7)" in text
    # the user's line: the innermost user frame, here `return self.features(x)` in Classifier.forward (the frames
    # inside symdl, e.g. Sequential.forward, are skipped)
    line = Classifier.forward.__code__.co_firstlineno + 2
    assert f"{__file__}:{line} in forward" in text
    # a model called at top level points at the call itself
    line = line_here() + 2
    with pytest.raises(ShapeError) as info:
        model.features(x)
    assert str(info.value).startswith("model.2 (Linear(in_features=7")
    assert f"{__file__}:{line} in test_" in str(info.value)
    assert info.value.layer_path == "model.2"


def test_linear_on_a_wrong_width_input_names_model_fc1():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(10, 5)

        def forward(self, x):
            return self.fc1(x)  # the call the error must point at

    call_line = Net.forward.__code__.co_firstlineno + 1
    with pytest.raises(
        ShapeError,
        match=(
            r"^model\.fc1 \(Linear\(in_features=10, out_features=5, bias=True\)\): the input's last dim is 7 "
            r"but in_features=10: got an input \(None, 7\) float32"
        ),
    ) as info:
        Net()(symdl.placeholder((None, 7)))
    assert f"{__file__}:{call_line} in forward" in str(info.value)


def test_op_errors_inside_a_forward_get_the_layer_path_prepended_once():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return x + self.fc(x)  # (N, 4) + (N, 3): the add op fails

    model = nn.Sequential(nn.Identity(), Broken())
    line = Broken.forward.__code__.co_firstlineno + 1
    with pytest.raises(ShapeError) as info:
        model(symdl.placeholder((None, 4)))
    text = str(info.value)
    assert text.startswith("model.1 (Broken()): add: ")
    assert text.count("model.") == 1  # the outer Sequential did not prefix again
    assert "(None, 4) float32, (None, 3) float32" in text
    assert f"{__file__}:{line} in forward" in text


def test_op_error_in_a_library_layer_and_a_directly_called_layer():
    conv = nn.Conv2d(1, 2, 5)
    with pytest.raises(ShapeError, match=r"^model \(Conv2d\(1, 2, kernel_size=\(5, 5\), stride=\(1, 1\)\)\): conv"):
        conv(symdl.placeholder((None, 1, 3, 3)))
    # called as a submodule: the path from the root that was called
    net = nn.Sequential(nn.Identity(), nn.Sequential(nn.ReLU(), conv))
    with pytest.raises(ShapeError, match=r"^model\.1\.1 \(Conv2d\(.*can't be greater than the padded input size 3"):
        net(symdl.placeholder((None, 1, 3, 3)))

    # a layer called from a module that did not register it
    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.__dict__["secret"] = nn.Linear(3, 2)

        def forward(self, x):
            return self.secret(x)

    with pytest.raises(ShapeError, match=r"^model\.<unregistered Linear> \(Linear\(in_features=3"):
        Hidden()(symdl.placeholder((None, 4)))
    # after an error the call stack is empty again: the next root call is "model"
    with pytest.raises(ShapeError, match=r"^model \(Linear"):
        nn.Linear(3, 2)(symdl.placeholder((None, 4)))
