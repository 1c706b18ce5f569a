"""Checkpoints (symdl/checkpoint.py): contents, bit-identical resume, validation, corruption, atomic writes."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import symdl
from symdl import data, nn, optim
from symdl.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from symdl.ops.random import Generator, default_generator, host_rng

# ----------------------------------------------------------------------------------------------------
# A small run: MLP with BatchNorm and dropout, Adam + StepLR, a shuffling loader (the same construction code
# builds the "restarted process" objects)
# ----------------------------------------------------------------------------------------------------


def _data(n=40, d=6, classes=3):
    rng = np.random.default_rng(1234)  # the dataset itself is fixed; training randomness comes from symdl
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int64)
    return x, y


def build(seed=0, target="reference", hidden=12, module_generator=False):
    symdl.manual_seed(seed)
    gen = Generator(seed + 99, name="own_rng") if module_generator else None
    model = nn.Sequential(
        nn.Linear(6, hidden, bias=False),  # a bias before BatchNorm has a zero gradient: Adam would amplify noise
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(0.2, generator=gen),
        nn.Linear(hidden, 3),
    )
    opt = optim.Adam(list(model.parameters()), lr=0.02)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    x, y = _data()
    loader = data.DataLoader(data.ArrayDataset(x, y), batch_size=8, shuffle=True, prefetch=0)
    xp = symdl.placeholder((None, 6), name="x")
    yp = symdl.placeholder((None,), dtype="int64", name="y")
    loss = symdl.cross_entropy(model(xp), yp)
    step = symdl.compile([xp, yp], [loss], updates=opt.minimize(loss), target=target, mode="train")
    return {"model": model, "opt": opt, "sched": sched, "loader": loader, "step": step}


def train_epochs(run, epochs):
    """Per-step losses of ``epochs`` epochs (the scheduler stepped after each)."""
    losses = []
    for _ in range(epochs):
        for xb, yb in run["loader"]:
            losses.append(run["step"](xb, yb)[0].copy())
        run["sched"].step()
    return losses


def snapshot(run):
    """Everything a failed load must leave unchanged."""
    return {
        "model": run["model"].state_dict(),
        "opt": run["opt"].state_dict(),
        "sched": run["sched"].state_dict(),
        "loader": run["loader"].state_dict(),
        "gen": default_generator().get_state(),
        "host": host_rng().bit_generator.state,
        "lr": run["opt"].lr,
    }


def assert_same_state(a, b):
    for part in ("model", "opt"):
        assert list(a[part]) == list(b[part]), part
        for k in a[part]:
            np.testing.assert_array_equal(a[part][k], b[part][k], err_msg=f"{part} {k}")
            assert a[part][k].dtype == b[part][k].dtype
    assert a["sched"] == b["sched"]
    assert a["loader"] == b["loader"]
    np.testing.assert_array_equal(a["gen"], b["gen"])
    assert a["host"] == b["host"]
    assert a["lr"] == b["lr"]


@pytest.fixture
def trained(tmp_path):
    """A run trained 1 epoch and checkpointed, plus the file path."""
    run = build()
    train_epochs(run, 1)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, run["model"], run["opt"], run["sched"], loader=run["loader"], extra={"epoch": 1})
    return run, path


# ----------------------------------------------------------------------------------------------------
# Contents and format
# ----------------------------------------------------------------------------------------------------


def test_contents_round_trip(tmp_path):
    run = build(module_generator=True)
    train_epochs(run, 1)
    host_rng().standard_normal(3)  # move the host RNG away from its seeded state
    extra = {
        "epoch": 1,
        "name": "run-α",
        "flags": [True, None, 2.5, float("inf")],
        "pair": (1, 2),
        "big": 2**70,
        "weights": np.arange(6, dtype=np.float64).reshape(2, 3),
        "nested": {"ids": np.array([3, 1], dtype=np.int32), "scalar": np.float32(0.25)},
        "nan": float("nan"),
    }
    path = save_checkpoint(
        tmp_path / "run.npz", run["model"], run["opt"], run["sched"], loader=run["loader"], extra=extra
    )
    assert path == tmp_path / "run.npz"
    ck = read_checkpoint(path)
    assert ck.version == VERSION and ck.model_class == "Sequential"
    want = run["model"].state_dict()
    assert list(ck.model_state) == list(want)  # BatchNorm buffers included, PyTorch's order
    assert "1.running_mean" in ck.model_state and "1.running_var" in ck.model_state
    for k, v in want.items():
        np.testing.assert_array_equal(ck.model_state[k], v)
        assert ck.model_state[k].dtype == v.dtype and ck.model_state[k].shape == v.shape
    assert ck.optimizer_class == "Adam"
    opt_state = run["opt"].state_dict()
    assert list(ck.optimizer_state) == list(opt_state)
    for k, v in opt_state.items():
        np.testing.assert_array_equal(ck.optimizer_state[k], v)
    assert ck.step == 5 == int(run["opt"].step_parameter.value)  # 40 samples / batch 8
    assert ck.scheduler_class == "StepLR" and ck.scheduler_state == run["sched"].state_dict()
    assert ck.loader_state == run["loader"].state_dict() == {"seed": run["loader"].seed, "epoch": 1, "batch": 0}
    np.testing.assert_array_equal(ck.rng_state["default_generator"], [0, 5])
    own = run["model"][6].generator
    assert list(ck.rng_state["generators"]) == ["6.generator"]
    np.testing.assert_array_equal(ck.rng_state["generators"]["6.generator"], own.get_state())
    assert ck.rng_state["host"] == host_rng().bit_generator.state
    # extra: JSON values, arrays and NumPy scalars with their dtypes; tuples come back as lists
    e = ck.extra
    assert e["epoch"] == 1 and e["name"] == "run-α" and e["big"] == 2**70 and e["pair"] == [1, 2]
    assert e["flags"][:3] == [True, None, 2.5] and e["flags"][3] == float("inf") and np.isnan(e["nan"])
    np.testing.assert_array_equal(e["weights"], extra["weights"])
    assert e["weights"].dtype == np.float64
    assert e["nested"]["ids"].dtype == np.int32 and e["nested"]["ids"].tolist() == [3, 1]
    assert isinstance(e["nested"]["scalar"], np.float32) and e["nested"]["scalar"] == np.float32(0.25)


def test_file_is_a_plain_npz_without_pickle(trained):
    run, path = trained
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}  # every member loads without pickle
    meta = json.loads(arrays["metadata"].tobytes().decode("utf-8"))
    assert meta["format"] == FORMAT == "symdl-checkpoint" and meta["version"] == 1
    names = [e["name"] for e in meta["model"]["entries"]]
    assert names == list(run["model"].state_dict())
    for e in meta["model"]["entries"]:
        desc = meta["members"][e["member"]]
        value = run["model"].state_dict()[e["name"]]
        assert desc == {"shape": list(value.shape), "dtype": str(value.dtype)}
        np.testing.assert_array_equal(arrays[e["member"]], value)
    assert meta["extra"] == {"epoch": 1}
    assert set(arrays) == {"metadata", *meta["members"]}


def test_step_can_be_given_and_model_only(tmp_path):
    run = build()
    path = save_checkpoint(tmp_path / "m.npz", run["model"], step=123)
    ck = read_checkpoint(path)
    assert ck.step == 123 and ck.optimizer_state is None and ck.scheduler_state is None and ck.loader_state is None
    assert save_checkpoint(tmp_path / "n.npz", run["model"]) and read_checkpoint(tmp_path / "n.npz").step is None


# ----------------------------------------------------------------------------------------------------
# Resuming
# ----------------------------------------------------------------------------------------------------


def _resume_run(tmp_path, target, stop_after=None):
    """Uninterrupted 2 epochs vs (1 epoch [+ stop_after batches], save, fresh objects, load, rest)."""
    full = build(target=target)
    want = train_epochs(full, 2)
    want_state = full["model"].state_dict()

    first = build(target=target)
    part1 = train_epochs(first, 1)
    path = tmp_path / "resume.npz"
    if stop_after is None:
        save_checkpoint(path, first["model"], first["opt"], first["sched"], loader=first["loader"])
    else:  # a checkpoint taken inside the loop: the loader's state says where in the epoch it is
        for b, (xb, yb) in enumerate(first["loader"]):
            part1.append(first["step"](xb, yb)[0].copy())
            if b + 1 == stop_after:
                save_checkpoint(path, first["model"], first["opt"], first["sched"], loader=first["loader"])
                assert read_checkpoint(path).loader_state["batch"] == stop_after
                break

    second = build(target=target)  # the restarted process: same construction code, fresh objects
    ck = load_checkpoint(path, second["model"], second["opt"], second["sched"], loader=second["loader"])
    assert ck.step == len(part1)
    if stop_after is None:
        part2 = train_epochs(second, 1)
    else:  # finish the interrupted epoch, then step the scheduler as the loop would have
        part2 = [second["step"](xb, yb)[0].copy() for xb, yb in second["loader"]]
        second["sched"].step()
    got = part1 + part2
    assert len(got) == len(want) == 10
    np.testing.assert_array_equal(np.array(got), np.array(want))
    for k, v in second["model"].state_dict().items():
        np.testing.assert_array_equal(v, want_state[k], err_msg=k)
    return path, want


def test_resume_is_bit_identical_reference(tmp_path):
    path, want = _resume_run(tmp_path, "reference")
    # the check is meaningful: without the checkpoint's random state (dropout counter) the curve differs
    fresh = build()
    load_checkpoint(path, fresh["model"], fresh["opt"], fresh["sched"], loader=fresh["loader"], restore_rng=False)
    assert not np.array_equal(np.array(train_epochs(fresh, 1)), np.array(want[5:]))
    # ... and so does it without the optimiser state (Adam moments, step, lr)
    fresh = build()
    load_checkpoint(path, fresh["model"], loader=fresh["loader"])
    assert not np.array_equal(np.array(train_epochs(fresh, 1)), np.array(want[5:]))


def test_resume_mid_epoch_is_bit_identical(tmp_path):
    _resume_run(tmp_path, "reference", stop_after=2)


def test_resume_is_bit_identical_cpu(tmp_path):
    # two CPU runs with the same seed agree bit for bit, and so does the resumed one (checked inside)
    a = build(target="cpu")
    la = train_epochs(a, 1)
    b = build(target="cpu")
    lb = train_epochs(b, 1)
    np.testing.assert_array_equal(np.array(la), np.array(lb))
    for k, v in a["model"].state_dict().items():
        np.testing.assert_array_equal(v, b["model"].state_dict()[k], err_msg=k)
    _resume_run(tmp_path, "cpu")


def test_module_generator_is_restored(tmp_path):
    run = build(module_generator=True)
    train_epochs(run, 1)
    own = run["model"][6].generator
    saved = own.get_state()
    assert saved[1] == 5  # advanced once per train step
    path = save_checkpoint(tmp_path / "g.npz", run["model"])
    own.set_state([7, 7])
    load_checkpoint(path, run["model"])
    np.testing.assert_array_equal(own.get_state(), saved)
    # a model without that generator does not fit the random state
    plain = build()
    with pytest.raises(CheckpointError, match=r"generators for modules \['6.generator'\], the model has \[\]"):
        load_checkpoint(path, plain["model"])
    load_checkpoint(path, plain["model"], restore_rng=False)  # weights only: fine


# ----------------------------------------------------------------------------------------------------
# Validation: nothing changes on a mismatch
# ----------------------------------------------------------------------------------------------------


def test_wrong_shapes_raise_and_change_nothing(trained):
    _, path = trained
    other = build(hidden=10)
    before = snapshot(other)
    with pytest.raises(CheckpointError, match="does not fit; nothing was loaded") as err:
        load_checkpoint(path, other["model"], other["opt"], other["sched"], loader=other["loader"])
    msg = str(err.value)
    assert str(path) in msg
    assert "model entry 0.weight: shape (12, 6) in the checkpoint, (10, 6) in the model" in msg
    assert "optimizer entry state.0.weight.exp_avg: shape (12, 6) in the checkpoint, (10, 6) in the optimizer" in msg
    assert_same_state(before, snapshot(other))


def test_wrong_names_raise_and_change_nothing(trained):
    _, path = trained
    symdl.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))  # no BatchNorm, other indices
    before = model.state_dict()
    gen_before = default_generator().get_state()
    with pytest.raises(
        CheckpointError, match=r"model: missing from the checkpoint: 0\.bias, 2\.weight, 2\.bias\n"
    ) as err:
        load_checkpoint(path, model)
    assert "in the checkpoint but not in the model: 1.weight, 1.bias, 1.running_mean" in str(err.value)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    np.testing.assert_array_equal(default_generator().get_state(), gen_before)


def test_missing_parts_and_wrong_classes(tmp_path, trained):
    run, path = trained
    model_only = save_checkpoint(tmp_path / "model_only.npz", run["model"])
    other = build()
    before = snapshot(other)
    with pytest.raises(CheckpointError, match="optimizer: the checkpoint has no optimizer state"):
        load_checkpoint(model_only, other["model"], other["opt"])
    with pytest.raises(CheckpointError, match="scheduler: the checkpoint has no scheduler state"):
        load_checkpoint(model_only, other["model"], scheduler=other["sched"])
    with pytest.raises(CheckpointError, match="loader: the checkpoint has no loader state"):
        load_checkpoint(model_only, other["model"], loader=other["loader"])
    sgd = optim.SGD(list(other["model"].parameters()), lr=0.1)
    with pytest.raises(CheckpointError, match="the checkpoint holds Adam state, not SGD"):
        load_checkpoint(path, other["model"], sgd)
    exp = optim.lr_scheduler.ExponentialLR(other["opt"], gamma=0.5)
    with pytest.raises(CheckpointError, match="the checkpoint holds StepLR state, not ExponentialLR"):
        load_checkpoint(path, other["model"], other["opt"], exp)
    other["sched"].load_state_dict(before["sched"])  # building ExponentialLR wrote the optimiser's lr
    assert_same_state(before, snapshot(other))


class _BadStepLR(optim.lr_scheduler.StepLR):
    def state_dict(self):
        return {**super().state_dict(), "last_epoch": -3}


_BadStepLR.__name__ = "StepLR"  # the checkpoint records the class name: make it pass the class check


def test_component_refusing_its_state_rolls_everything_back(tmp_path):
    # a scheduler state that passes the key check but is refused by StepLR.load_state_dict
    run = build()
    train_epochs(run, 1)
    bad = _BadStepLR(run["opt"], step_size=1, gamma=0.7)
    path = save_checkpoint(tmp_path / "bad.npz", run["model"], run["opt"], bad, loader=run["loader"])
    other = build()
    before = snapshot(other)
    with pytest.raises(CheckpointError, match=r"nothing was loaded: ValueError: StepLR.load_state_dict: 'last_epoch'"):
        load_checkpoint(path, other["model"], other["opt"], other["sched"], loader=other["loader"])
    assert_same_state(before, snapshot(other))  # model and optimiser were loaded, then rolled back


# ----------------------------------------------------------------------------------------------------
# Damaged files
# ----------------------------------------------------------------------------------------------------


def test_truncated_file_raises_and_changes_nothing(tmp_path, trained):
    _, path = trained
    blob = path.read_bytes()
    other = build()
    before = snapshot(other)
    cut = tmp_path / "cut.npz"
    for size in sorted(
        {0, 1, 4, 30, 100, len(blob) // 3, len(blob) // 2, len(blob) - 100, len(blob) - 22, len(blob) - 1}
    ):
        cut.write_bytes(blob[:size])
        with pytest.raises(CheckpointError, match=r"cut\.npz.*(truncated or corrupted|corrupted)"):
            load_checkpoint(cut, other["model"], other["opt"], other["sched"], loader=other["loader"])
    assert_same_state(before, snapshot(other))


def test_flipped_bytes_raise_or_are_harmless(tmp_path, trained):
    _, path = trained
    blob = path.read_bytes()
    other = build()
    before = snapshot(other)
    bad = tmp_path / "flipped.npz"
    # every byte of every member's stored data (zip CRC-32 protected) must be detected
    with zipfile.ZipFile(path) as zf:
        spans = []
        for info in zf.infolist():
            name_len = int.from_bytes(blob[info.header_offset + 26 : info.header_offset + 28], "little")
            extra_len = int.from_bytes(blob[info.header_offset + 28 : info.header_offset + 30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            spans.append((start, start + info.compress_size))
    data_offsets = sorted({o for a, b in spans for o in range(a, b, max(1, (b - a) // 7))})
    assert len(data_offsets) > 50
    for offset in data_offsets:
        damaged = bytearray(blob)
        damaged[offset] ^= 0x10
        bad.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=r"flipped\.npz.*corrupted"):
            load_checkpoint(bad, other["model"], other["opt"], other["sched"], loader=other["loader"])
    assert_same_state(before, snapshot(other))
    # anywhere else (headers, directory): an error, or a flip in a field nothing depends on (e.g. a timestamp)
    want = read_checkpoint(path)
    harmless = 0
    offsets = range(0, len(blob), max(1, len(blob) // 600))
    for offset in offsets:
        damaged = bytearray(blob)
        damaged[offset] ^= 0xFF
        bad.write_bytes(bytes(damaged))
        try:
            got = read_checkpoint(bad)
        except CheckpointError:
            continue
        harmless += 1
        for part in ("model_state", "optimizer_state"):
            a, b = getattr(got, part), getattr(want, part)
            assert list(a) == list(b)
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
                assert a[k].dtype == b[k].dtype
        assert got.metadata == want.metadata
    assert harmless < len(offsets) // 4


def test_not_a_checkpoint_and_newer_version(tmp_path):
    run = build()
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_checkpoint(tmp_path / "nope.npz", run["model"])
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"plain\.npz.*no 'metadata' member: this is not a symdl checkpoint"):
        load_checkpoint(plain, run["model"])
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.npz.*not a readable \.npz archive"):
        read_checkpoint(text)
    future = tmp_path / "future.npz"
    meta = {"format": FORMAT, "version": VERSION + 1, "members": {}}
    np.savez(future, metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(CheckpointError, match=f"format version {VERSION + 1} was written by a newer symdl"):
        read_checkpoint(future)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, metadata=np.array([{"format": FORMAT}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled"):
        read_checkpoint(pickled)


# ----------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------


def _savez_that_dies(exc):
    real = np.savez

    def dying(file, *args, **kwds):
        real(file, *args, **kwds)  # write a whole archive into the temporary file ...
        file.seek(0)
        file.truncate(os.fstat(file.fileno()).st_size // 2)  # ... then be cut off midway
        raise exc

    return dying


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, trained, exc):
    run, path = trained
    original = path.read_bytes()
    train_epochs(run, 1)  # new state to save
    monkeypatch.setattr(np, "savez", _savez_that_dies(exc))
    with pytest.raises(type(exc)):
        save_checkpoint(path, run["model"], run["opt"], run["sched"], loader=run["loader"])
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]  # no temporary file left behind
    assert read_checkpoint(path).extra == {"epoch": 1}


def test_failed_rename_leaves_no_temp_file(tmp_path, monkeypatch, trained):
    run, path = trained
    original = path.read_bytes()

    def no_replace(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(PermissionError):
        save_checkpoint(path, run["model"])
    monkeypatch.undo()
    assert path.read_bytes() == original and sorted(os.listdir(tmp_path)) == ["ck.npz"]


def test_successful_save_replaces_and_leaves_no_temp_file(tmp_path, trained):
    run, path = trained
    train_epochs(run, 1)
    save_checkpoint(path, run["model"], run["opt"], extra={"epoch": 2})
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]
    assert read_checkpoint(path).extra == {"epoch": 2}
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a private temp file


def test_unsaveable_extra_writes_nothing(tmp_path):
    run = build()
    with pytest.raises(TypeError, match=r"extra\['cb'\] is a function; checkpoints store None, bool"):
        save_checkpoint(tmp_path / "x.npz", run["model"], extra={"cb": lambda: 0})
    with pytest.raises(TypeError, match=r"extra\['o'\] is an array of dtype object"):
        save_checkpoint(tmp_path / "x.npz", run["model"], extra={"o": np.array([None, 1], dtype=object)})
    with pytest.raises(TypeError, match="has a key 1 that is not a string"):
        save_checkpoint(tmp_path / "x.npz", run["model"], extra={"d": {1: 2}})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "missing_dir" / "x.npz", run["model"])
    assert os.listdir(tmp_path) == []
