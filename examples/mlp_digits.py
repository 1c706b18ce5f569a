"""A 64-32-10 MLP on scikit-learn's digits, trained with plain SGD written as `updates`.

python examples/mlp_digits.py [--render graph.svg]
"""

from __future__ import annotations

import argparse

import numpy as np

import symdl as sd

try:
    from examples.common import digits_split, linear_init, minibatches
except ImportError:  # run as a script
    from common import digits_split, linear_init, minibatches


def build(seed: int = 0, hidden: int = 32) -> dict:
    rng = np.random.default_rng(seed)
    w1, b1 = linear_init(rng, 64, hidden)
    w2, b2 = linear_init(rng, hidden, 10)
    x = sd.placeholder((None, 64), name="x")
    y = sd.placeholder((None,), dtype="int64", name="y")
    params = [
        sd.parameter(w1, name="W1"),
        sd.parameter(b1, name="b1"),
        sd.parameter(w2, name="W2"),
        sd.parameter(b2, name="b2"),
    ]
    W1, b1_, W2, b2_ = params
    h = sd.relu(x @ W1 + b1_)
    logits = h @ W2 + b2_
    loss = sd.cross_entropy(logits, y)
    grads = sd.grad(loss, params)
    lr = sd.placeholder((), name="lr")  # a graph input: changing the learning rate never recompiles
    updates = {p: p - lr * g for p, g in zip(params, grads)}
    return {
        "x": x,
        "y": y,
        "lr": lr,
        "params": params,
        "logits": logits,
        "loss": loss,
        "grads": grads,
        "updates": updates,
    }


def train(
    epochs: int = 40,
    batch_size: int = 32,
    lr: float = 0.2,
    seed: int = 0,
    verbose: bool = True,
    render: str | None = None,
    target: str = "cpu",
) -> dict:
    """Plain minibatch SGD with the learning rate decayed linearly to zero over the run."""
    x_train, y_train, x_test, y_test = digits_split(seed)
    g = build(seed)
    step = sd.compile([g["x"], g["y"], g["lr"]], [g["loss"]], updates=g["updates"], target=target)
    predict = sd.compile([g["x"]], [sd.argmax(g["logits"], axis=1)], mode="eval", target=target)
    rng = np.random.default_rng(seed + 1)
    history = []
    for epoch in range(epochs):
        lr_now = np.float32(lr * (1 - epoch / epochs))
        losses = [step(x_train[i], y_train[i], lr_now)[0] for i in minibatches(len(x_train), batch_size, rng)]
        history.append(float(np.mean(losses)))
        if verbose and (epoch % 5 == 4 or epoch == epochs - 1):
            print(f"epoch {epoch + 1:3d}  train loss {history[-1]:.4f}")
    accuracy = float((predict(x_test)[0] == y_test).mean())
    if verbose:
        print(f"test accuracy {accuracy:.4f}")
    if render:
        written = sd.render([g["loss"], *g["grads"]], render)
        if verbose:
            print(f"graph written to {written}")
    return {"test_accuracy": accuracy, "loss_history": history}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--render", help="write the forward+backward graph here (.svg/.png)")
    parser.add_argument("--target", default="cpu", choices=["cpu", "reference"])
    args = parser.parse_args()
    train(epochs=args.epochs, render=args.render, target=args.target)
