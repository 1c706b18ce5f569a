"""The benchmark workloads in PyTorch eager (an optional baseline; never a dependency of symdl)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _train_step(torch, model, opt, x, y) -> Callable[[], object]:  # noqa: ANN001
    """One eager training step: zero grads, cross-entropy, backward, optimiser step."""

    def step() -> object:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def mlp_step(torch, sizes: tuple[int, ...], batch: int, seed: int = 0) -> Callable[[], object]:  # noqa: ANN001
    nn = torch.nn
    torch.manual_seed(seed)
    layers: list = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(batch, sizes[0])).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, sizes[-1], batch))

    return _train_step(torch, model, opt, x, y)


def lenet_step(torch, batch: int, seed: int = 0) -> Callable[[], object]:  # noqa: ANN001
    nn = torch.nn
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(batch, 1, 28, 28)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch))

    return _train_step(torch, model, opt, x, y)


def elementwise_chain(torch, x: np.ndarray) -> Callable[[], object]:  # noqa: ANN001
    t = torch.from_numpy(x)

    def run() -> object:
        with torch.no_grad():
            return torch.tanh(t * 1.5 + 0.5) * torch.exp(-(t * t)) + t

    return run


def conv_bn_relu_net(torch, batch: int, seed: int = 0) -> Callable[[], object]:  # noqa: ANN001
    nn = torch.nn
    torch.manual_seed(seed)
    blocks: list = []
    cin = 3
    for i, cout in enumerate((16, 32, 32)):
        blocks += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        if i > 0:
            blocks.append(nn.MaxPool2d(2))
        cin = cout
    model = nn.Sequential(*blocks).eval()
    from torch.fx.experimental.optimization import fuse

    model = fuse(model)  # BN folded into the convs, as symdl does
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(batch, 3, 32, 32)).astype(np.float32))

    def run() -> object:
        with torch.no_grad():
            return model(x)

    return run
