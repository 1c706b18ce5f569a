"""The examples train on scikit-learn's real digits data and reach the accuracies the README promises."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from examples import logistic_regression, mlp_digits  # noqa: E402


@pytest.mark.slow
def test_logistic_regression_digits():
    result = logistic_regression.train(epochs=15, verbose=False)
    assert result["test_accuracy"] >= 0.93


@pytest.mark.slow
def test_mlp_digits_reaches_95_percent():
    result = mlp_digits.train(epochs=30, verbose=False, target="cpu")
    assert result["test_accuracy"] >= 0.95
    history = result["loss_history"]
    assert history[-1] < 0.5 * history[0]
    assert np.all(np.isfinite(history))


@pytest.mark.slow
def test_mlp_digits_cpu_target_follows_the_reference_loss_curve():
    cpu = mlp_digits.train(epochs=4, verbose=False, target="cpu")
    ref = mlp_digits.train(epochs=4, verbose=False, target="reference")
    np.testing.assert_allclose(cpu["loss_history"], ref["loss_history"], rtol=1e-4)
    assert cpu["test_accuracy"] == pytest.approx(ref["test_accuracy"], abs=1 / 450)
