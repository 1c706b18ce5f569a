"""Shared pieces of the benchmarks: timing, result tables, and the models written as symdl graphs."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np

import symdl as sd

THREADS = int(os.environ.get("SYMDL_BENCH_THREADS", "2"))


def median_time(fn: Callable[[], object], repeat: int = 20, warmup: int = 3, passes: int = 3) -> float:
    """Median over ``passes`` of the mean time of ``repeat`` calls (seconds)."""
    for _ in range(warmup):
        fn()
    results = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        results.append((time.perf_counter() - t0) / repeat)
    return statistics.median(results)


#: seconds between two timed passes of :func:`interleaved_times`, and the least duration of one pass
PAUSE_S = 0.05
MIN_PASS_S = 0.1


def interleaved_times(
    fns: dict[str, Callable[[], object]], repeat: int = 20, warmup: int = 3, passes: int = 5
) -> dict[str, float]:
    """Per name, the median over ``passes`` of the mean time of ``repeat`` calls (more for short calls: a pass
    lasts at least ``MIN_PASS_S``) in seconds, the workloads taking
    turns pass by pass (in a rotating order), so that a slow phase of this shared VM falls on all of them alike
    rather than on whichever ran first. Each pass starts after a pause of ``PAUSE_S``: PyTorch's OpenMP threads
    and ONNX Runtime's pool spin for a while after their own calls, and on two cores that would slow whatever
    runs next."""
    counts = {}
    for k, fn in fns.items():
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        # a pass lasts at least MIN_PASS_S: short steps would otherwise be timed mostly just after the pause
        counts[k] = max(repeat, min(5000, int(MIN_PASS_S / max(time.perf_counter() - t0, 1e-7))))
    names = list(fns)
    results: dict[str, list[float]] = {k: [] for k in names}
    for p in range(passes):
        for k in names[p % len(names) :] + names[: p % len(names)]:
            fn = fns[k]
            time.sleep(PAUSE_S)
            t0 = time.perf_counter()
            for _ in range(counts[k]):
                fn()
            results[k].append((time.perf_counter() - t0) / counts[k])
    return {k: statistics.median(v) for k, v in results.items()}


def torch_or_none():  # noqa: ANN201 - optional module
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    return torch


def kaiming_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def adam_updates(
    params: list[sd.Parameter],
    grads: list[sd.Tensor],
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> dict:
    """PyTorch's Adam (no weight decay, no amsgrad) written as symdl updates."""
    b1, b2 = betas
    step = sd.parameter(np.zeros((), np.float32), name="adam.step", trainable=False)
    t = step + 1.0
    c1 = 1.0 - sd.pow(sd.constant(np.float32(b1)), t)
    c2 = 1.0 - sd.pow(sd.constant(np.float32(b2)), t)
    updates: dict = {step: t}
    for p, g in zip(params, grads):
        m = sd.parameter(np.zeros_like(p.value), name=f"{p.name}.m", trainable=False)
        v = sd.parameter(np.zeros_like(p.value), name=f"{p.name}.v", trainable=False)
        m1 = m * b1 + g * (1 - b1)
        v1 = v * b2 + sd.square(g) * (1 - b2)
        updates[m] = m1
        updates[v] = v1
        updates[p] = p - lr * (m1 / c1) / (sd.sqrt(v1 / c2) + eps)
    return updates


def sgd_momentum_updates(params: list[sd.Parameter], grads: list[sd.Tensor], lr: float, momentum: float) -> dict:
    """PyTorch's SGD with momentum (dampening 0): ``buf = momentum * buf + g; p -= lr * buf``."""
    updates: dict = {}
    for p, g in zip(params, grads):
        buf = sd.parameter(np.zeros_like(p.value), name=f"{p.name}.momentum", trainable=False)
        nb = buf * momentum + g
        updates[buf] = nb
        updates[p] = p - lr * nb
    return updates


def mlp_step(sizes: tuple[int, ...], batch: int, target: str, seed: int = 0) -> tuple[Callable, list]:
    """An MLP train step (ReLU, cross-entropy, Adam) compiled for ``target``; returns (step, [x, y])."""
    rng = np.random.default_rng(seed)
    x = sd.placeholder((None, sizes[0]), name="x")
    y = sd.placeholder((None,), "int64", name="y")
    params, h = [], x
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = sd.parameter(kaiming_uniform(rng, (a, b), a), name=f"fc{i}.w")
        bias = sd.parameter(kaiming_uniform(rng, (b,), a), name=f"fc{i}.b")
        params += [w, bias]
        h = h @ w + bias
        if i < len(sizes) - 2:
            h = sd.relu(h)
    loss = sd.cross_entropy(h, y)
    grads = sd.grad(loss, params)
    f = sd.compile([x, y], [loss], updates=adam_updates(params, grads), target=target)
    data = [rng.normal(size=(batch, sizes[0])).astype(np.float32), rng.integers(0, sizes[-1], batch)]
    return f, data


def lenet_step(batch: int, target: str, seed: int = 0, warmup: bool | str = True) -> tuple[Callable, list]:
    """LeNet-5 on 1x28x28 (conv5-pad2, pool, conv5, pool, 400-120-84-10), SGD momentum 0.9."""
    rng = np.random.default_rng(seed)
    x = sd.placeholder((None, 1, 28, 28), name="x")
    y = sd.placeholder((None,), "int64", name="y")
    c1w = sd.parameter(kaiming_uniform(rng, (6, 1, 5, 5), 25), name="c1.w")
    c1b = sd.parameter(kaiming_uniform(rng, (6,), 25), name="c1.b")
    c2w = sd.parameter(kaiming_uniform(rng, (16, 6, 5, 5), 150), name="c2.w")
    c2b = sd.parameter(kaiming_uniform(rng, (16,), 150), name="c2.b")
    fcs = []
    for i, (a, b) in enumerate([(400, 120), (120, 84), (84, 10)]):
        fcs += [
            sd.parameter(kaiming_uniform(rng, (a, b), a), name=f"fc{i}.w"),
            sd.parameter(kaiming_uniform(rng, (b,), a), name=f"fc{i}.b"),
        ]
    h = sd.max_pool2d(sd.relu(sd.conv2d(x, c1w, c1b, padding=2)), 2)
    h = sd.max_pool2d(sd.relu(sd.conv2d(h, c2w, c2b)), 2)
    h = sd.flatten(h, 1)
    h = sd.relu(h @ fcs[0] + fcs[1])
    h = sd.relu(h @ fcs[2] + fcs[3])
    logits = h @ fcs[4] + fcs[5]
    loss = sd.cross_entropy(logits, y)
    params = [c1w, c1b, c2w, c2b, *fcs]
    grads = sd.grad(loss, params)
    updates = sgd_momentum_updates(params, grads, 0.01, 0.9)
    f = sd.compile([x, y], [loss], updates=updates, target=target, warmup=warmup)
    data = [rng.normal(size=(batch, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, batch)]
    return f, data


def elementwise_chain(x: sd.Tensor) -> sd.Tensor:
    """The 8-op chain of the benchmark: mul, add, tanh, mul, neg, exp, mul, add."""
    return sd.tanh(x * 1.5 + 0.5) * sd.exp(-(x * x)) + x


def conv_bn_relu_net(target: str, batch: int, seed: int = 0, fold: bool = True) -> tuple[Callable, list]:
    """Three conv(3x3)-BN-ReLU blocks (3→16→32→32 channels on 32x32, pool after blocks 2 and 3) for inference."""
    rng = np.random.default_rng(seed)
    x = sd.placeholder((None, 3, 32, 32), name="x")
    h, cin = x, 3
    for i, cout in enumerate((16, 32, 32)):
        w = sd.parameter(kaiming_uniform(rng, (cout, cin, 3, 3), cin * 9), name=f"conv{i}.w")
        rm = sd.parameter(rng.normal(0, 0.1, cout).astype(np.float32), name=f"bn{i}.mean", trainable=False)
        rv = sd.parameter(rng.uniform(0.5, 1.5, cout).astype(np.float32), name=f"bn{i}.var", trainable=False)
        g = sd.parameter(rng.uniform(0.5, 1.5, cout).astype(np.float32), name=f"bn{i}.weight")
        b = sd.parameter(rng.normal(0, 0.1, cout).astype(np.float32), name=f"bn{i}.bias")
        h = sd.relu(sd.batch_norm(sd.conv2d(h, w, padding=1), rm, rv, g, b))
        if i > 0:
            h = sd.max_pool2d(h, 2)
        cin = cout
    passes = {"fold_bn": fold} if target != "reference" else None
    f = sd.compile([x], [h], mode="eval", target=target, passes=passes, freeze_parameters=True)
    return f, [rng.normal(size=(batch, 3, 32, 32)).astype(np.float32)]
