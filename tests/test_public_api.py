"""The public API is type-hinted and the names fixed by the design are present."""

import inspect

import pytest

import symdl

FIXED_NAMES = """placeholder parameter constant grad check_grad compile render print_graph
add sub mul div neg pow exp log sqrt abs square maximum minimum where clip cast matmul sum mean max min argmax var
reshape transpose concat stack broadcast_to pad flatten one_hot relu leaky_relu prelu elu sigmoid tanh softplus
softmax log_softmax logsumexp conv1d conv2d max_pool1d max_pool2d avg_pool2d global_avg_pool2d batch_norm dropout
embedding mse_loss l1_loss cross_entropy nll_loss binary_cross_entropy
binary_cross_entropy_with_logits kl_div""".split()


@pytest.mark.parametrize("name", FIXED_NAMES)
def test_fixed_name_exists(name):
    assert callable(getattr(symdl, name))


def _public_functions():
    for name in sorted(dir(symdl)):
        obj = getattr(symdl, name)
        if name.startswith("_") or not inspect.isfunction(obj):
            continue
        if not (obj.__module__ or "").startswith(("symdl", "compiler", "runtime")):
            continue
        yield name, obj


@pytest.mark.parametrize("name,fn", list(_public_functions()))
def test_public_function_is_type_hinted(name, fn):
    sig = inspect.signature(fn)
    missing = [
        p.name
        for p in sig.parameters.values()
        if p.annotation is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    assert not missing, f"symdl.{name}: parameters without type hints: {missing}"
    assert sig.return_annotation is not inspect.Signature.empty, f"symdl.{name}: no return annotation"


@pytest.mark.parametrize("name,fn", list(_public_functions()))
def test_public_function_is_documented(name, fn):
    assert fn.__doc__ and fn.__doc__.strip(), f"symdl.{name} has no docstring"
