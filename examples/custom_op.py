"""A custom op: Swish, ``x * sigmoid(beta * x)``, defined as a new ``symdl.graph.Op``, gradient-checked and used in
a model trained on the digits.

python examples/custom_op.py

An op is a frozen dataclass whose fields are its (hashable) properties, with three methods (see
``symdl/ops/*.py`` for the built-in ones):

- ``infer(x_type) -> TensorType``: the output's static shape and dtype (raise ``InferError`` on bad operands:
  ``symdl.graph.apply`` adds the op's name, the operands and your file:line to the message);
- ``perform(x) -> np.ndarray``: the NumPy implementation, used by the reference executor;
- ``grad(inputs, output, g) -> [dx]``: the vector-Jacobian product as *graph nodes* built from other symdl ops,
  so that it can be printed, differentiated again, and compiled like any other part of the graph.

The compiled CPU target has no kernel for an op it does not know, and symdl never falls back silently: compiling a
graph that contains ``Swish`` with ``target="cpu"`` raises a ``GraphError`` naming the op and the line that
created it. So a model using the custom op runs on ``target="reference"`` (the NumPy interpreter: fine for small
models like this one). To get compiled kernels, express the function with existing ops instead
(:func:`swish_composed`): the compiler then fuses ``x * sigmoid(beta * x)`` into one loop, forward and backward.
The example checks that both give the same values and the same gradients.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import symdl as sd
from symdl import data, nn, optim
from symdl.graph import InferError, Op, Tensor, TensorType, apply

try:
    from examples.common import (
        accuracy,
        digits_splits,
        out_dir_for,
        plot_digit_grid,
        plot_learning_curves,
        predict_in_batches,
        progress,
    )
except ImportError:  # run as a script
    from common import (
        accuracy,
        digits_splits,
        out_dir_for,
        plot_digit_grid,
        plot_learning_curves,
        predict_in_batches,
        progress,
    )


@dataclass(frozen=True)
class Swish(Op):
    """``x * sigmoid(beta * x)`` elementwise (SiLU for ``beta = 1``; ``torch.nn.SiLU``)."""

    beta: float = 1.0
    name: ClassVar[str] = "swish"

    def infer(self, x: TensorType) -> TensorType:  # type: ignore[override]
        """Same shape and dtype as the input, which must be floating-point."""
        if x.dtype.kind != "f":
            raise InferError(f"swish needs a floating-point input, got {x.dtype}")
        return x

    def perform(self, x: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """NumPy: a numerically stable sigmoid (no overflow in ``exp`` for large ``|x|``)."""
        bx = x * x.dtype.type(self.beta)
        e = np.exp(-np.abs(bx))
        s = np.where(bx >= 0, 1 / (1 + e), e / (1 + e))
        return (x * s).astype(x.dtype, copy=False)

    def grad(self, inputs: tuple[Tensor, ...], output: Tensor, g: Tensor) -> list[Any]:  # type: ignore[override]
        """``d/dx x s(bx) = s + b x s (1 - s)`` with ``s = sigmoid(b x)``, built from existing ops."""
        (x,) = inputs
        s = sd.sigmoid(x * self.beta)
        return [g * (s + self.beta * x * s * (1.0 - s))]


def swish(x: Tensor, beta: float = 1.0) -> Tensor:
    """The custom op applied to ``x`` (the user-facing function: validates, then ``apply``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"swish: x must be a symbolic Tensor, got {type(x).__name__}")
    return apply(Swish(float(beta)), x)


def swish_composed(x: Tensor, beta: float = 1.0) -> Tensor:
    """The same function written with existing ops: compiles for every target."""
    return x * sd.sigmoid(x * beta)


class SwishLayer(nn.Module):
    """A layer applying :func:`swish` (or :func:`swish_composed`)."""

    def __init__(self, beta: float = 1.0, composed: bool = False) -> None:
        super().__init__()
        self.beta = beta
        self.composed = composed

    def forward(self, x: Tensor) -> Tensor:
        """``swish(x)``."""
        return swish_composed(x, self.beta) if self.composed else swish(x, self.beta)

    def extra_repr(self) -> str:
        """``beta=1.0, composed=False``."""
        return f"beta={self.beta}, composed={self.composed}"


def build_mlp(composed: bool, hidden: int = 128) -> nn.Sequential:
    """A 64-hidden-hidden-10 MLP with Swish activations."""
    return nn.Sequential(
        nn.Linear(64, hidden),
        SwishLayer(1.0, composed),
        nn.Linear(hidden, hidden),
        SwishLayer(1.0, composed),
        nn.Linear(hidden, 10),
    )


def check_gradients(verbose: bool = True) -> dict:
    """Finite-difference checks of the op's gradient (first and second order) with ``symdl.check_grad``."""
    rng = np.random.default_rng(0)
    x0 = rng.normal(scale=3.0, size=(5, 7))
    first = sd.check_grad(lambda x: swish(x, beta=1.5), [x0])
    # the gradient is made of graph nodes, so it can be differentiated again: check d/dx of sum(dswish/dx * r)
    r = rng.normal(size=(5, 7))

    def first_derivative(x: Tensor) -> Tensor:
        """The gradient of ``sum(swish(x) * r)`` with respect to ``x``, as a graph."""
        y = (swish(x, beta=1.5) * sd.constant(r)).sum()
        return sd.grad(y, [x])[0]

    second = sd.check_grad(first_derivative, [x0])
    if verbose:
        print(f"check_grad first derivative: max abs error {first.max_abs_error:.2e} ({first.checked} partials)")
        print(f"check_grad second derivative: max abs error {second.max_abs_error:.2e} ({second.checked} partials)")
    return {"first": first.max_abs_error, "second": second.max_abs_error}


def cpu_compile_error(verbose: bool = True) -> str:
    """The error ``target="cpu"`` raises for a graph containing the custom op (returned as text)."""
    x = sd.placeholder((None, 4), name="x")
    try:
        sd.compile([x], [swish(x)], target="cpu")
    except sd.GraphError as e:
        if verbose:
            print(f"target='cpu' refuses the custom op, as documented:\n  {e}")
        return str(e)
    raise AssertionError("expected target='cpu' to refuse an op without a CPU kernel")


def main(
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    out_dir: str | Path | None = None,
    verbose: bool = True,
) -> dict:
    """Check the op's gradients, show the CPU target's error, train the Swish MLP (reference target) on the
    digits, and check that the composed version compiled for the CPU computes the same thing."""
    t0 = time.perf_counter()
    out = out_dir_for("custom_op", out_dir)
    grad_errors = check_gradients(verbose)
    error_text = cpu_compile_error(verbose)

    sd.manual_seed(seed)
    split = digits_splits(flatten=True)
    model = build_mlp(composed=False)
    x = sd.placeholder((None, 64), name="x")
    y = sd.placeholder((None,), dtype="int64", name="y")
    logits = model(x)
    loss = sd.cross_entropy(logits, y)
    opt = optim.Adam(model.parameters(), lr=lr)
    train_step = sd.compile([x, y], [loss], updates=opt.minimize(loss), target="reference")
    evaluate = sd.compile([x, y], [loss, sd.argmax(logits, axis=1)], mode="eval", target="reference")
    predict = sd.compile([x], [sd.argmax(logits, axis=1)], mode="eval", target="reference")

    loader = data.DataLoader(data.ArrayDataset(*split.train), batch_size=batch_size, shuffle=True)
    history: dict[str, list[float]] = {"train_loss": [], "test_loss": [], "test_acc": []}
    bar = progress(range(epochs), desc="swish MLP (reference)", enabled=verbose)
    for _ in bar:
        losses, sizes = [], []
        for xb, yb in loader:
            losses.append(train_step(xb, yb)[0])
            sizes.append(len(yb))
        test_loss, test_pred = evaluate(*split.test)
        history["train_loss"].append(float(np.average(losses, weights=sizes)))
        history["test_loss"].append(float(test_loss))
        history["test_acc"].append(float(np.mean(test_pred == split.test[1])))
        bar.set_postfix(loss=history["train_loss"][-1], test_acc=history["test_acc"][-1])
    bar.close()
    test_acc = accuracy(predict, *split.test)

    # the same trained weights in the composed model, compiled for the CPU: same logits, same gradients
    composed = build_mlp(composed=True)
    composed.load_state_dict(model.state_dict())
    logits_c = composed(x)
    loss_c = sd.cross_entropy(logits_c, y)
    ref_fn = sd.compile([x, y], [logits, loss, *sd.grad(loss, list(model.parameters()))], target="reference")
    cpu_fn = sd.compile([x, y], [logits_c, loss_c, *sd.grad(loss_c, list(composed.parameters()))], target="cpu")
    xb, yb = split.test[0][:64], split.test[1][:64]
    ref_out, cpu_out = ref_fn(xb, yb), cpu_fn(xb, yb)
    max_diff = max(float(np.max(np.abs(a - b) / (1e-3 + np.abs(b)))) for a, b in zip(cpu_out, ref_out))
    cpu_acc = accuracy(sd.compile([x], [sd.argmax(logits_c, axis=1)], mode="eval", target="cpu"), *split.test)

    files = [
        plot_learning_curves(history, out / "learning_curves.png", "MLP with a custom Swish op", verbose),
        plot_digit_grid(
            split.test[0],
            split.test[1],
            predict_in_batches(predict, split.test[0]),
            out / "test_digits.png",
            title="Swish MLP",
            verbose=verbose,
        ),
    ]
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"composed Swish on target='cpu' vs the custom op on 'reference': max relative difference {max_diff:.1e}")
        print(f"test accuracy {test_acc:.4f} (custom op, reference) / {cpu_acc:.4f} (composed, cpu)")
        print(f"files: {', '.join(str(f) for f in files if f is not None)}  ({seconds:.1f} s)")
    return {
        "test_accuracy": test_acc,
        "cpu_test_accuracy": cpu_acc,
        "history": history,
        "grad_check_errors": grad_errors,
        "cpu_error": error_text,
        "composed_max_rel_diff": max_diff,
        "files": [f for f in files if f is not None],
        "seconds": seconds,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    main(epochs=args.epochs, out_dir=args.out_dir)
