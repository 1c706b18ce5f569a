"""The training helper (symdl/training.py): fit/Trainer, metrics, early stopping, History, plot_history."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest

import symdl
from symdl import data, nn, optim
from symdl.checkpoint import load_checkpoint, save_checkpoint
from symdl.training import History, Trainer, accuracy, evaluate, fit, plot_history, predict

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _blobs(n, seed, flip=False):
    """Two features, 3 classes separated by the sign pattern of the features (learnable by a linear model)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    if flip:  # labels no model trained on the unflipped data can fit: its validation loss rises
        y = 2 - y
    return x, y


def _loader(x, y, batch_size=16, shuffle=False, seed=None):
    return data.DataLoader(data.ArrayDataset(x, y), batch_size=batch_size, shuffle=shuffle, seed=seed, prefetch=0)


def _softmax_xent(logits, y):
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def build(seed=0, lr=0.1, dropout=False):
    symdl.manual_seed(seed)
    layers = [nn.Linear(2, 8), nn.ReLU()] + ([nn.Dropout(0.2)] if dropout else []) + [nn.Linear(8, 3)]
    model = nn.Sequential(*layers)
    opt = optim.SGD(list(model.parameters()), lr=lr, momentum=0.9)
    return model, opt


# ----------------------------------------------------------------------------------------------------
# accuracy
# ----------------------------------------------------------------------------------------------------


def test_accuracy_cases():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]], np.float32)
    y = np.array([0, 1, 0, 2])
    assert accuracy(logits, y) == 0.5
    probs = np.eye(3, dtype=np.float32)[[0, 2, 2, 0]]
    assert accuracy(logits, probs) == 0.75
    seg = np.zeros((2, 3, 2, 2), np.float32)  # (N, C, H, W) scores, (N, H, W) labels
    seg[:, 1] = 1.0
    labels = np.array([[[1, 1], [0, 1]], [[1, 2], [1, 1]]])
    assert accuracy(seg, labels) == 6 / 8
    out = np.array([-1.0, 0.5, 2.0, -0.1], np.float32)
    t = np.array([0, 1, 0, 1])
    assert accuracy(out, t) == 0.5
    assert accuracy(out.reshape(4, 1), t.astype(np.float32)) == 0.5
    assert accuracy(out, t, binary_threshold=1.0) == 0.25
    with pytest.raises(ValueError, match=r"cannot compare outputs of shape \(4, 3\) with targets of shape \(4, 2\)"):
        accuracy(logits, np.zeros((4, 2), np.int64))
    with pytest.raises(ValueError, match="binary outputs need targets that are 0 or 1"):
        accuracy(out, np.array([0, 2, 1, 1]))


# ----------------------------------------------------------------------------------------------------
# fit: what it computes
# ----------------------------------------------------------------------------------------------------


def test_fit_records_exact_metrics():
    x, y = _blobs(96, 0)
    xv, yv = _blobs(40, 1)
    model, opt = build()
    train = _loader(x, y, batch_size=32, shuffle=True, seed=5)
    history = fit(model, symdl.cross_entropy, opt, train, _loader(xv, yv), epochs=3, target="reference", progress=False)
    assert history.epoch == [0, 1, 2] and len(history) == 3
    assert len(history.step_loss) == 9
    # train loss = the sample-weighted mean of the epoch's step losses (equal batches: the plain mean)
    for e in range(3):
        assert history.train_loss[e] == pytest.approx(np.mean(history.step_loss[3 * e : 3 * e + 3]), rel=1e-12)
    assert history.train_loss[-1] < history.train_loss[0]
    # the last epoch's validation metrics, recomputed with NumPy from the final weights
    w1, b1, w2, b2 = (p.value.astype(np.float64) for p in model.parameters())
    logits = np.maximum(xv @ w1.T + b1, 0) @ w2.T + b2
    assert history.val_loss[-1] == pytest.approx(_softmax_xent(logits, yv), rel=1e-5)
    assert history.val_accuracy[-1] == np.mean(logits.argmax(1) == yv)
    assert history.lr == [0.1, 0.1, 0.1]
    assert all(t > 0 for t in history.epoch_time)
    assert history.best_epoch == int(np.argmin(history.val_loss))
    assert history.best_val_loss == min(history.val_loss)
    assert not history.stopped_early


def test_fit_equals_the_plain_loop():
    """fit's train step is optimizer.minimize + one compile, its scheduler steps once per epoch."""
    x, y = _blobs(50, 2)

    def setup():
        model, opt = build(dropout=True)
        sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return model, opt, sched, _loader(x, y, batch_size=16, shuffle=True, seed=3)

    model, opt, sched, loader = setup()
    history = fit(
        model, symdl.cross_entropy, opt, loader, epochs=3, scheduler=sched, target="reference", progress=False
    )

    model2, opt2, sched2, loader2 = setup()
    xp = symdl.placeholder((None, 2), name="x")
    yp = symdl.placeholder((None,), dtype="int64", name="y")
    loss = symdl.cross_entropy(model2(xp), yp)
    step = symdl.compile([xp, yp], [loss], updates=opt2.minimize(loss), mode="train")
    losses = []
    for _ in range(3):
        for xb, yb in loader2:
            losses.append(float(step(xb, yb)[0]))
        sched2.step()
    assert history.step_loss == losses
    assert history.lr == [0.1, 0.05, 0.025]
    for a, b in zip(model.parameters(), model2.parameters()):
        np.testing.assert_array_equal(a.value, b.value)
    assert history.val_loss == [] and history.best_epoch is None


def test_reduce_lr_on_plateau_gets_the_validation_loss():
    x, y = _blobs(64, 3)
    xv, yv = _blobs(64, 3, flip=True)  # validation loss rises every epoch
    model, opt = build(lr=0.05)
    sched = optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    history = fit(
        model,
        symdl.cross_entropy,
        opt,
        _loader(x, y),
        _loader(xv, yv),
        epochs=4,
        scheduler=sched,
        target="reference",
        progress=False,
    )
    assert all(b > a for a, b in zip(history.val_loss, history.val_loss[1:]))
    assert history.lr == [0.05, 0.05, 0.025, 0.0125]


def test_custom_metrics_and_loss_only():
    x, y = _blobs(48, 4)
    model, opt = build()

    def top2(outputs, targets):
        return float(np.mean((np.argsort(-outputs, axis=1)[:, :2] == targets[:, None]).any(axis=1)))

    seen = []
    history = fit(
        model,
        symdl.cross_entropy,
        opt,
        _loader(x, y, batch_size=20),  # batches of 20, 20, 8: sample-weighted means
        _loader(x, y, batch_size=48),
        epochs=1,
        metrics=("loss", ("top2", top2)),
        target="reference",
        progress=False,
        callbacks=[lambda epoch, h: seen.append(model.state_dict())],
    )
    assert history.keys() == ["epoch", "train_loss", "train_top2", "val_loss", "val_top2", "lr", "epoch_time"]
    assert history.train_accuracy == []
    w1, b1, w2, b2 = (seen[0][k].astype(np.float64) for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
    logits = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    assert history["val_top2"][0] == top2(logits, y)
    assert history.train_loss[0] == pytest.approx(
        (20 * history.step_loss[0] + 20 * history.step_loss[1] + 8 * history.step_loss[2]) / 48, rel=1e-12
    )
    model, opt = build()
    h = fit(
        model, symdl.cross_entropy, opt, _loader(x, y), epochs=1, metrics=("loss",), progress=False, target="reference"
    )
    assert h.keys() == ["epoch", "train_loss", "lr", "epoch_time"]


# ----------------------------------------------------------------------------------------------------
# Early stopping
# ----------------------------------------------------------------------------------------------------


def _early_stopping_run(restore_best):
    x, y = _blobs(64, 5)
    xv, yv = _blobs(64, 5, flip=True)
    model, opt = build(lr=0.05)
    states = []
    history = fit(
        model,
        symdl.cross_entropy,
        opt,
        _loader(x, y),
        _loader(xv, yv),
        epochs=20,
        early_stopping_patience=2,
        restore_best=restore_best,
        target="reference",
        progress=False,
        callbacks=[lambda epoch, h: states.append(model.state_dict())],
    )
    return model, history, states


def test_early_stopping_stops_after_patience_and_restores_the_best():
    model, history, states = _early_stopping_run(restore_best=True)
    assert all(b > a for a, b in zip(history.val_loss, history.val_loss[1:]))  # the premise: no improvement
    assert history.best_epoch == 0 and history.best_val_loss == history.val_loss[0]
    assert len(history) == 3 and history.stopped_early and history.stopped_epoch == 2  # 0 best, 1 and 2 worse
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, states[0][k], err_msg=k)  # the weights of epoch 0
    assert not np.array_equal(states[0]["0.weight"], states[2]["0.weight"])
    # without restore_best the last epoch's weights stay
    model, history, states = _early_stopping_run(restore_best=False)
    assert len(history) == 3
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, states[2][k], err_msg=k)


def test_patience_counts_epochs_without_improvement_larger_than_min_delta():
    x, y = _blobs(64, 6)
    model, opt = build(lr=0.05)
    h = fit(
        model,
        symdl.cross_entropy,
        opt,
        _loader(x, y),
        _loader(x, y),
        epochs=6,
        early_stopping_patience=1,
        min_delta=10.0,  # no improvement is ever large enough
        target="reference",
        progress=False,
    )
    assert len(h) == 2 and h.stopped_epoch == 1 and h.best_epoch == 0
    assert h.val_loss[1] < h.val_loss[0]  # it did improve, by less than min_delta


def test_callback_can_stop_training():
    x, y = _blobs(32, 7)
    model, opt = build()
    calls = []

    def cb(epoch, history):
        calls.append((epoch, len(history)))
        return epoch == 1

    h = fit(
        model, symdl.cross_entropy, opt, _loader(x, y), epochs=5, callbacks=[cb], target="reference", progress=False
    )
    assert calls == [(0, 1), (1, 2)] and len(h) == 2 and not h.stopped_early


# ----------------------------------------------------------------------------------------------------
# Resuming fit from a checkpoint
# ----------------------------------------------------------------------------------------------------


def test_fit_resumes_bit_identically_from_a_checkpoint(tmp_path):
    x, y = _blobs(50, 8)
    xv, yv = _blobs(30, 9)

    def setup():
        model, opt = build(dropout=True)
        sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return model, opt, sched, _loader(x, y, batch_size=16, shuffle=True)

    model, opt, sched, loader = setup()
    full = fit(model, symdl.cross_entropy, opt, loader, _loader(xv, yv), epochs=2, scheduler=sched,
               target="reference", progress=False)  # fmt: skip

    path = tmp_path / "fit.npz"
    model, opt, sched, loader = setup()

    def save(epoch, history):
        extra = {"epoch": epoch + 1, "history": history.as_dict()}
        save_checkpoint(path, model, opt, sched, loader=loader, extra=extra)

    fit(model, symdl.cross_entropy, opt, loader, _loader(xv, yv), epochs=1, scheduler=sched, target="reference",
        progress=False, callbacks=[save])  # fmt: skip

    model, opt, sched, loader = setup()  # a restarted process
    ck = load_checkpoint(path, model, opt, sched, loader=loader)
    resumed = fit(model, symdl.cross_entropy, opt, loader, _loader(xv, yv), epochs=2, scheduler=sched,
                  target="reference", progress=False, initial_epoch=ck.extra["epoch"],
                  history=History.from_dict(ck.extra["history"]))  # fmt: skip
    np.testing.assert_array_equal(np.array(resumed.step_loss), np.array(full.step_loss))
    for key in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert resumed[key] == full[key], key
    assert resumed.best_epoch == full.best_epoch


# ----------------------------------------------------------------------------------------------------
# evaluate, predict, the CPU target
# ----------------------------------------------------------------------------------------------------


def test_evaluate_and_predict_match_numpy():
    x, y = _blobs(37, 10)
    model, _ = build()
    w1, b1, w2, b2 = (p.value.astype(np.float64) for p in model.parameters())
    logits = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    out = predict(model, x, batch_size=10, target="reference")
    assert out.shape == (37, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, logits, rtol=1e-5, atol=1e-6)
    res = evaluate(model, _loader(x, y, batch_size=10), symdl.cross_entropy, target="reference")
    assert res["loss"] == pytest.approx(_softmax_xent(logits, y), rel=1e-5)
    assert res["accuracy"] == np.mean(logits.argmax(1) == y)
    trainer = Trainer(model, symdl.cross_entropy, target="reference")
    np.testing.assert_array_equal(trainer.predict(x), out)
    assert trainer.evaluate(_loader(x, y, batch_size=37))["loss"] == pytest.approx(res["loss"], rel=1e-6)
    assert trainer.predict_step is not None and trainer.eval_step is not None and trainer.train_step is None


def test_fit_cpu_target_matches_reference():
    x, y = _blobs(40, 11)
    hs = {}
    for target in ("reference", "cpu"):
        model, opt = build()
        hs[target] = fit(model, symdl.cross_entropy, opt, _loader(x, y), _loader(x, y), epochs=2, target=target,
                         progress=False)  # fmt: skip
    np.testing.assert_allclose(hs["cpu"].step_loss, hs["reference"].step_loss, rtol=1e-4)
    np.testing.assert_allclose(hs["cpu"].val_loss, hs["reference"].val_loss, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------
# Progress output
# ----------------------------------------------------------------------------------------------------


def test_progress_text_line_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # "not installed"
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    x, y = _blobs(32, 12)
    model, opt = build()
    h = fit(model, symdl.cross_entropy, opt, _loader(x, y), _loader(x, y), epochs=2, target="reference")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2
    assert out[0].startswith("epoch 1/2 - ") and out[1].startswith("epoch 2/2 - ")
    assert f"loss: {h.train_loss[1]:.4f} - accuracy: {h.train_accuracy[1]:.4f}" in out[1]
    assert f"val_loss: {h.val_loss[1]:.4f} - val_accuracy: {h.val_accuracy[1]:.4f} - lr: 0.1" in out[1]


def test_progress_bar_with_tqdm_and_silence(capsys):
    pytest.importorskip("tqdm")
    x, y = _blobs(32, 13)
    model, opt = build()
    h = fit(model, symdl.cross_entropy, opt, _loader(x, y), epochs=2, target="reference")
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "2/2 [" in err and f"loss: {h.train_loss[1]:.4f}" in err
    fit(model, symdl.cross_entropy, opt, _loader(x, y), epochs=1, target="reference", progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ----------------------------------------------------------------------------------------------------
# History and plot_history
# ----------------------------------------------------------------------------------------------------


def _history():
    h = History()
    for e, (tl, vl) in enumerate([(1.0, 0.9), (0.6, 0.7), (0.4, 0.8)]):
        h.append({"epoch": e, "train_loss": tl, "train_accuracy": 0.5 + e / 10, "val_loss": vl,
                  "val_accuracy": 0.4 + e / 10, "lr": 0.01, "epoch_time": 0.5})  # fmt: skip
        h.step_loss += [tl + 0.1, tl - 0.1]
    h.best_epoch, h.best_val_loss = 1, 0.7
    h.stopped_early, h.stopped_epoch = True, 2
    return h


def test_history_printing_and_round_trip():
    h = _history()
    text = str(h)
    lines = text.splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time"]
    assert lines[2].split() == ["1*", "0.6000", "0.6000", "0.7000", "0.5000", "0.01", "0.50"]
    assert "* best epoch 1 (val_loss 0.7000)" in text and "stopped early after epoch 2" in text
    assert repr(h) == "<History 3 epochs, best_epoch=1, best_val_loss=0.7, stopped_early at epoch 2>"
    d = h.as_dict()
    assert d["val_loss"] == [0.9, 0.7, 0.8] and d["step_loss"] == h.step_loss and d["best_epoch"] == 1
    back = History.from_dict(d)
    assert back.as_dict() == d and str(back) == text
    assert "<History 0 epochs>" == repr(History())


def test_plot_history_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_history(_history(), tmp_path / "curves.png", title="run 1")
    blob = path.read_bytes()
    assert path == tmp_path / "curves.png" and blob[:8] == PNG_SIGNATURE and len(blob) > 10_000
    # no suffix: .png is added; a history without validation or accuracy plots the training loss alone
    h = History()
    for e in range(4):
        h.append({"epoch": e, "train_loss": 1.0 / (e + 1), "lr": 0.1, "epoch_time": 0.1})
    path = plot_history(h, tmp_path / "loss_only")
    assert path == tmp_path / "loss_only.png" and path.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="the history has no epochs"):
        plot_history(History(), tmp_path / "empty.png")


def test_plot_history_without_matplotlib(monkeypatch, tmp_path):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"plot_history needs matplotlib.*pip install matplotlib"):
        plot_history(_history(), tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------


def test_errors_are_clear():
    x, y = _blobs(16, 14)
    model, opt = build()
    loader = _loader(x, y)
    with pytest.raises(ValueError, match="early_stopping_patience needs a val_loader"):
        fit(model, symdl.cross_entropy, opt, loader, epochs=2, early_stopping_patience=2, progress=False)
    with pytest.raises(ValueError, match="early_stopping_patience must be an integer >= 1"):
        fit(model, symdl.cross_entropy, opt, loader, loader, early_stopping_patience=0, progress=False)
    with pytest.raises(ValueError, match="epochs must be an integer >= 0, got 1.5"):
        fit(model, symdl.cross_entropy, opt, loader, epochs=1.5, progress=False)
    with pytest.raises(ValueError, match="metrics: expected 'loss', 'accuracy' or a \\(name, fn\\) pair, got 'f1'"):
        fit(model, symdl.cross_entropy, opt, loader, metrics=("loss", "f1"), progress=False)
    with pytest.raises(ValueError, match="Trainer.fit needs an optimizer"):
        Trainer(model, symdl.cross_entropy, target="reference").fit(loader, progress=False)
    with pytest.raises(ValueError, match=r"batches must be tuples \(inputs\.\.\., targets\); got a single array"):
        fit(model, symdl.cross_entropy, opt, [x], target="reference", progress=False)
    with pytest.raises(ValueError, match=r"loss_fn must return a 0-d tensor \(a reduced loss\), got shape \(None,\)"):
        fit(model, functools.partial(symdl.cross_entropy, reduction="none"), opt, loader, target="reference",
            progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="the loader yielded no batches"):
        fit(model, symdl.cross_entropy, opt, [], target="reference", progress=False)
    with pytest.raises(TypeError, match="callbacks must be callables"):
        fit(model, symdl.cross_entropy, opt, loader, callbacks=[1], progress=False)
    with pytest.raises(TypeError, match="optimizer must be a symdl.optim optimizer"):
        fit(model, symdl.cross_entropy, object(), loader, progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predict(model, x, batch_size=0, target="reference")
