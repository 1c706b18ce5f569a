"""Multinomial logistic regression on scikit-learn's digits, trained with plain SGD written as `updates`.

python examples/logistic_regression.py
"""

from __future__ import annotations

import numpy as np

import symdl as sd

try:
    from examples.common import digits_split, linear_init, minibatches
except ImportError:  # run as a script
    from common import digits_split, linear_init, minibatches


def train(epochs: int = 20, lr: float = 0.5, batch_size: int = 32, seed: int = 0, verbose: bool = True) -> dict:
    x_train, y_train, x_test, y_test = digits_split(seed)
    rng = np.random.default_rng(seed)
    w0, b0 = linear_init(rng, 64, 10)

    x = sd.placeholder((None, 64), name="x")
    y = sd.placeholder((None,), dtype="int64", name="y")
    W = sd.parameter(w0, name="W")
    b = sd.parameter(b0, name="b")
    logits = x @ W + b
    loss = sd.cross_entropy(logits, y)
    gW, gb = sd.grad(loss, [W, b])
    step = sd.compile([x, y], [loss], updates={W: W - lr * gW, b: b - lr * gb})
    predict = sd.compile([x], [sd.argmax(logits, axis=1)], mode="eval")

    for epoch in range(epochs):
        losses = [step(x_train[i], y_train[i])[0] for i in minibatches(len(x_train), batch_size, rng)]
        if verbose and (epoch % 5 == 4 or epoch == epochs - 1):
            print(f"epoch {epoch + 1:3d}  train loss {np.mean(losses):.4f}")
    accuracy = float((predict(x_test)[0] == y_test).mean())
    if verbose:
        print(f"test accuracy {accuracy:.4f}")
    return {"test_accuracy": accuracy, "final_loss": float(np.mean(losses))}


if __name__ == "__main__":
    train()
