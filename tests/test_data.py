"""symdl.data: datasets, the DataLoader (order, epochs, resume, prefetch thread), splitting, scalers, real data."""

from __future__ import annotations

import gc
import math
import sys
import threading
import time
import traceback

import numpy as np
import pytest

import symdl
from symdl import data
from symdl.data import ArrayDataset, DataLoader, Subset

# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _independent_rng(seed, *values_and_tag):
    """The documented loader streams, written out: 32-bit (lo, hi) words of each value, then the tag."""
    *values, tag = values_and_tag
    words = []
    for v in values:
        words += [v % 2**32, (v >> 32) % 2**32]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed % 2**32, seed >> 32, *words, tag])))


def _collect(loader, epochs=1):
    return [[tuple(np.array(a) for a in b) for b in loader] for _ in range(epochs)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert len(ea) == len(eb)
        for ba, bb in zip(ea, eb):
            assert len(ba) == len(bb)
            for xa, xb in zip(ba, bb):
                assert xa.dtype == xb.dtype
                np.testing.assert_array_equal(xa, xb)


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("symdl-DataLoader-prefetch") and t.is_alive()]


def _wait_no_prefetch_threads(timeout=5.0):
    deadline = time.monotonic() + timeout
    while _prefetch_threads() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    return _prefetch_threads()


def _run_with_timeout(fn, timeout=10.0):
    """Run fn in a helper thread; fail (instead of hanging the suite) if it does not finish in time."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"did not finish within {timeout} s (deadlock?)"
    if "error" in result:
        raise result["error"]
    return result.get("value")


class SampleDataset(data.Dataset):
    """A generic dataset: float32 image + Python-int label per sample, optionally failing at one index."""

    def __init__(self, n=10, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise ValueError(f"bad sample {i}")
        return np.full((1, 2, 2), i, dtype=np.float32), int(i)


class PlainSequence:
    """Not a symdl Dataset: only __len__ and __getitem__, single-array samples."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.arange(3, dtype=np.int16) + 10 * i


# ----------------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------------


def test_array_dataset_items_and_batches_keep_dtypes():
    x = np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2)
    y = np.arange(6, dtype=np.int64) % 3
    ds = ArrayDataset(x, y)
    assert len(ds) == 6
    xi, yi = ds[4]
    np.testing.assert_array_equal(xi, x[4])
    assert yi == y[4]
    idx = np.array([5, 0, 3])
    xb, yb = ds.get_batch(idx)
    assert xb.dtype == np.float32 and yb.dtype == np.int64
    np.testing.assert_array_equal(xb, x[idx])
    np.testing.assert_array_equal(yb, y[idx])
    assert not np.shares_memory(xb, x)  # batches never alias the dataset


def test_array_dataset_length_mismatch_names_each_length():
    with pytest.raises(ValueError, match=r"same length.*array 0 has 10, array 1 has 9, array 2 has 10"):
        ArrayDataset(np.zeros((10, 3)), np.zeros(9), np.zeros(10))


def test_array_dataset_rejects_scalars_and_nothing():
    with pytest.raises(ValueError, match="array 1 is a scalar"):
        ArrayDataset(np.zeros(3), np.float32(1))
    with pytest.raises(ValueError, match="at least one array"):
        ArrayDataset()


def test_loader_batches_an_array_dataset_without_per_sample_access():
    class NoItems(ArrayDataset):
        def __getitem__(self, i):
            raise AssertionError("per-sample __getitem__ used for an ArrayDataset batch")

    x = np.arange(10, dtype=np.float32)
    loader = DataLoader(NoItems(x), batch_size=4, shuffle=True, seed=1, prefetch=0)
    got = np.concatenate([b[0] for b in loader])
    assert sorted(got.tolist()) == x.tolist()


def test_generic_dataset_samples_are_stacked():
    loader = DataLoader(SampleDataset(5), batch_size=2, prefetch=0)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    xb, yb = batches[1]
    assert xb.dtype == np.float32 and xb.shape == (2, 1, 2, 2)
    assert yb.dtype == np.int64
    np.testing.assert_array_equal(yb, [2, 3])
    np.testing.assert_array_equal(xb[:, 0, 0, 0], [2.0, 3.0])


def test_plain_sequence_with_single_array_samples():
    loader = DataLoader(PlainSequence(3), batch_size=2, prefetch=0)
    first, second = list(loader)
    assert isinstance(first, np.ndarray) and first.dtype == np.int16
    np.testing.assert_array_equal(first, [[0, 1, 2], [10, 11, 12]])
    np.testing.assert_array_equal(second, [[20, 21, 22]])


def test_collate_errors():
    with pytest.raises(ValueError, match=r"field 0 of sample 0 has shape \(2,\) but sample 1 has shape \(3,\)"):
        data.collate([(np.zeros(2), 1), (np.zeros(3), 1)])
    with pytest.raises(ValueError, match="sample 0 has 2 fields but sample 1 is tuple with 1 fields"):
        data.collate([(1, 2), (1,)])
    with pytest.raises(ValueError, match="zero samples"):
        data.collate([])
    with pytest.raises(TypeError, match="dict samples"):
        data.collate([{"x": 1}])


def test_subset_indexes_and_batches_through_the_parent():
    x = np.arange(10, dtype=np.float32) * 2
    sub = Subset(ArrayDataset(x), [7, 2, 9])
    assert len(sub) == 3
    assert sub[1][0] == 4.0
    (xb,) = sub.get_batch(np.array([2, 0]))
    np.testing.assert_array_equal(xb, [18.0, 14.0])
    with pytest.raises(IndexError, match="index 10 is out of range for a dataset of length 10"):
        Subset(ArrayDataset(x), [1, 10])


# ----------------------------------------------------------------------------------------------------
# DataLoader: order, sizes, epochs
# ----------------------------------------------------------------------------------------------------


def test_sequential_batches_ragged_last_and_len():
    x = np.arange(10, dtype=np.float32)
    y = np.arange(10, dtype=np.int64)
    loader = DataLoader(ArrayDataset(x, y), batch_size=4)
    assert len(loader) == 3
    batches = list(loader)
    assert [b[0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(b[1].dtype == np.int64 for b in batches)


def test_drop_last():
    loader = DataLoader(ArrayDataset(np.arange(10)), batch_size=4, drop_last=True, shuffle=True, seed=3)
    assert len(loader) == 2
    for _ in range(3):
        batches = [b[0] for b in loader]
        assert [len(b) for b in batches] == [4, 4]
        assert len(set(np.concatenate(batches).tolist())) == 8
    exact = DataLoader(ArrayDataset(np.arange(8)), batch_size=4, drop_last=True)
    assert len(exact) == 2 and [b[0].tolist() for b in exact] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_empty_dataset_gives_no_batches():
    loader = DataLoader(ArrayDataset(np.zeros((0, 3))), batch_size=2)
    assert len(loader) == 0 and list(loader) == []


def test_shuffle_is_deterministic_per_seed_and_epoch_and_covers_every_index():
    n = 23
    ds = ArrayDataset(np.arange(n))
    a = DataLoader(ds, batch_size=5, shuffle=True, seed=42)
    b = DataLoader(ds, batch_size=5, shuffle=True, seed=42)
    c = DataLoader(ds, batch_size=5, shuffle=True, seed=43)
    orders_a = [np.concatenate([bt[0] for bt in a]) for _ in range(4)]
    orders_b = [np.concatenate([bt[0] for bt in b]) for _ in range(4)]
    orders_c = [np.concatenate([bt[0] for bt in c]) for _ in range(4)]
    for oa, ob in zip(orders_a, orders_b):
        np.testing.assert_array_equal(oa, ob)  # same seed, same epoch: same order
    for o in orders_a + orders_c:
        assert sorted(o.tolist()) == list(range(n))  # each index exactly once per epoch
    assert len({tuple(o) for o in orders_a}) == 4  # every epoch a new order
    assert not all(np.array_equal(oa, oc) for oa, oc in zip(orders_a, orders_c))
    for e, o in enumerate(orders_a):  # the documented formula
        np.testing.assert_array_equal(o, _independent_rng(42, e, 0x53485546).permutation(n))


def test_documented_stream_formulas_with_large_seed():
    seed = 2**64 - 5
    np.testing.assert_array_equal(data.epoch_rng(seed, 3).random(4), _independent_rng(seed, 3, 0x53485546).random(4))
    np.testing.assert_array_equal(
        data.batch_rng(seed, 3, 7).random(4), _independent_rng(seed, 3, 7, 0x41554731).random(4)
    )
    # the shuffle and augmentation streams differ, and batch streams differ from each other
    assert data.epoch_rng(1, 0).random() != data.batch_rng(1, 0, 0).random()
    assert data.batch_rng(1, 0, 0).random() != data.batch_rng(1, 0, 1).random()
    with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\*\*64\)"):
        data.epoch_rng(2**64, 0)


def test_default_seed_comes_from_manual_seed():
    ds = ArrayDataset(np.arange(50))
    symdl.manual_seed(7)
    a = DataLoader(ds, shuffle=True)
    symdl.manual_seed(7)
    b = DataLoader(ds, shuffle=True)
    want = int(np.random.Generator(np.random.PCG64(7)).integers(0, 2**64, dtype=np.uint64))
    assert a.seed == b.seed == want
    c = DataLoader(ds, shuffle=True)  # the next draw of host_rng: another seed
    assert c.seed != a.seed
    symdl.manual_seed(0)


def test_shuffle_false_keeps_order_every_epoch():
    loader = DataLoader(ArrayDataset(np.arange(7)), batch_size=3)
    for _ in range(3):
        assert np.concatenate([b[0] for b in loader]).tolist() == list(range(7))


def test_transform_gets_the_batch_rng_and_only_touches_inputs():
    seen = []

    def transform(x, rng):
        draw = rng.random()
        seen.append(draw)
        return x + np.float32(draw)

    x = np.zeros((5, 2), np.float32)
    y = np.arange(5, dtype=np.int64)
    loader = DataLoader(ArrayDataset(x, y), batch_size=2, seed=11, transform=transform, prefetch=0)
    for epoch in range(2):
        batches = list(loader)
        for b, (xb, yb) in enumerate(batches):
            want = data.batch_rng(11, epoch, b).random()
            np.testing.assert_array_equal(xb, np.full_like(xb, np.float32(want)))
            assert xb.dtype == np.float32
            np.testing.assert_array_equal(yb, y[2 * b : 2 * b + 2])  # labels untouched
    assert len(seen) == 6


def test_bad_arguments_raise():
    ds = ArrayDataset(np.arange(4))
    for bs in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            DataLoader(ds, batch_size=bs)
    with pytest.raises(TypeError, match="shuffle must be True or False, got str 'yes'"):
        DataLoader(ds, shuffle="yes")
    with pytest.raises(TypeError, match="drop_last must be True or False, got int 1"):
        DataLoader(ds, drop_last=1)
    with pytest.raises(ValueError, match="prefetch must be an integer >= 0"):
        DataLoader(ds, prefetch=-1)
    with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\*\*64\), got -1"):
        DataLoader(ds, seed=-1)
    with pytest.raises(TypeError, match="seed must be an int, got str"):
        DataLoader(ds, seed="1")
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(ds, transform=3)
    with pytest.raises(TypeError, match="dataset must have __len__ and __getitem__, got int"):
        DataLoader(5)


# ----------------------------------------------------------------------------------------------------
# DataLoader: state, resume
# ----------------------------------------------------------------------------------------------------


def _jitter(x, rng):
    return x + rng.normal(size=x.shape).astype(x.dtype)


def _resumable_loader(seed, prefetch=2):
    x = np.arange(26, dtype=np.float32).reshape(13, 2)
    y = np.arange(13, dtype=np.int64)
    return DataLoader(ArrayDataset(x, y), batch_size=4, shuffle=True, seed=seed, transform=_jitter, prefetch=prefetch)


def test_state_dict_is_plain_ints_and_counts_epochs():
    loader = _resumable_loader(5)
    assert loader.state_dict() == {"seed": 5, "epoch": 0, "batch": 0}
    list(loader)
    list(loader)
    state = loader.state_dict()
    assert state == {"seed": 5, "epoch": 2, "batch": 0}
    assert all(type(v) is int for v in state.values())


def test_resume_at_epoch_boundary_gives_identical_batches():
    full = _collect(_resumable_loader(5), epochs=4)
    first = _resumable_loader(5)
    _collect(first, epochs=2)
    state = first.state_dict()
    resumed = _resumable_loader(999)  # a different seed: load_state_dict restores it
    resumed.load_state_dict(state)
    _assert_same_batches(_collect(resumed, epochs=2), full[2:])


def test_resume_inside_an_epoch_gives_identical_batches():
    full = _collect(_resumable_loader(8), epochs=2)
    run = _resumable_loader(8)
    seen = []
    for k, batch in enumerate(run):  # checkpoint inside the loop after the second batch, then "crash"
        seen.append(tuple(np.array(a) for a in batch))
        if k == 1:
            state = run.state_dict()
            assert run.epoch == 0
            break
    assert state == {"seed": 8, "epoch": 0, "batch": 2}
    resumed = _resumable_loader(0)
    resumed.load_state_dict(state)
    rest = _collect(resumed, epochs=2)
    _assert_same_batches([seen + rest[0], rest[1]], full)


def test_state_after_leaving_a_loop_is_the_next_epoch():
    loader = _resumable_loader(3)
    for _ in loader:
        break
    gc.collect()
    assert loader.state_dict() == {"seed": 3, "epoch": 1, "batch": 0}
    it = iter(loader)
    for _ in range(len(loader)):  # all batches delivered, StopIteration not seen yet
        next(it)
    assert loader.state_dict() == {"seed": 3, "epoch": 2, "batch": 0}


def test_set_epoch_and_load_state_dict_validation():
    a, b = _resumable_loader(4), _resumable_loader(4)
    _collect(a, epochs=3)
    b.set_epoch(3)
    _assert_same_batches(_collect(a), _collect(b))
    with pytest.raises(ValueError, match="expected a dict with 'seed' and 'epoch'"):
        b.load_state_dict({"epoch": 1})
    with pytest.raises(ValueError, match=r"unknown keys \['step'\]"):
        b.load_state_dict({"seed": 1, "epoch": 1, "step": 0})
    with pytest.raises(TypeError, match="epoch must be an int"):
        b.load_state_dict({"seed": 1, "epoch": 1.5})


def test_two_seeded_training_runs_and_a_resumed_one_are_bit_identical():
    """manual_seed drives initialisation and shuffling: equal runs give equal weights; a run resumed from a
    checkpoint (weights + loader state) continues the identical loss curve."""
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(40, 3)).astype(np.float32)
    ys = (xs.sum(1) > 0).astype(np.int64)

    def build():
        symdl.manual_seed(123)
        w = symdl.parameter(symdl.ops.random.host_rng().normal(size=(3, 2)).astype(np.float32), name="w")
        x = symdl.placeholder((None, 3), name="x")
        y = symdl.placeholder((None,), dtype="int64", name="y")
        loss = symdl.cross_entropy(x @ w, y)
        (g,) = symdl.grad(loss, [w])
        step = symdl.compile([x, y], [loss], updates={w: w - 0.5 * g})
        loader = DataLoader(ArrayDataset(xs, ys), batch_size=8, shuffle=True, transform=_jitter)
        return w, step, loader

    def train(w, step, loader, epochs):
        return [float(step(xb, yb)[0]) for _ in range(epochs) for xb, yb in loader]

    w1, step1, loader1 = build()
    curve1 = train(w1, step1, loader1, 3)
    w2, step2, loader2 = build()
    curve2 = train(w2, step2, loader2, 1)
    checkpoint = {"w": w2.value.copy(), "loader": loader2.state_dict()}
    w3, step3, loader3 = build()
    w3.value = checkpoint["w"]
    loader3.load_state_dict(checkpoint["loader"])
    curve3 = train(w3, step3, loader3, 2)
    assert curve1 == curve2 + curve3
    np.testing.assert_array_equal(w1.value, w3.value)
    symdl.manual_seed(0)


# ----------------------------------------------------------------------------------------------------
# DataLoader: the prefetch thread
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefetch", [1, 2, 5])
def test_prefetch_gives_the_same_batches_as_no_prefetch(prefetch):
    want = _collect(_resumable_loader(21, prefetch=0), epochs=3)
    got = _run_with_timeout(lambda: _collect(_resumable_loader(21, prefetch=prefetch), epochs=3))
    _assert_same_batches(got, want)
    assert not _wait_no_prefetch_threads()


@pytest.mark.parametrize("prefetch", [0, 2])
def test_exception_in_the_dataset_reaches_the_loop_with_its_traceback(prefetch):
    loader = DataLoader(SampleDataset(n=20, fail_at=7), batch_size=3, prefetch=prefetch)
    delivered = []

    def run():
        for xb, _ in loader:
            delivered.append(xb[:, 0, 0, 0].tolist())

    with pytest.raises(ValueError, match="bad sample 7") as info:
        _run_with_timeout(run)
    assert delivered == [[0, 1, 2], [3, 4, 5]]  # every batch before the failing one
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "__getitem__" in frames  # the original traceback, down to the failing line
    if prefetch and sys.version_info >= (3, 11):  # exception notes exist from Python 3.11
        assert any("prefetch thread while loading batch 2 of epoch 0" in n for n in info.value.__notes__)
    assert not _wait_no_prefetch_threads()


def test_exception_in_the_transform_propagates():
    def bad(x, rng):
        raise RuntimeError("transform failed")

    loader = DataLoader(ArrayDataset(np.zeros((4, 1))), batch_size=2, transform=bad, prefetch=2)
    with pytest.raises(RuntimeError, match="transform failed"):
        _run_with_timeout(lambda: list(loader))


def test_breaking_out_early_does_not_hang_or_leak_threads():
    x = np.zeros((1000, 4), np.float32)
    loader = DataLoader(ArrayDataset(x), batch_size=2, prefetch=1)  # the producer blocks on a full queue

    def run():
        for _ in range(5):
            for k, _batch in enumerate(loader):
                if k == 2:
                    time.sleep(0.02)  # let the producer fill the queue and block
                    break
        it = iter(loader)  # an abandoned iterator, never exhausted
        next(it)
        del it

    _run_with_timeout(run)
    assert not _wait_no_prefetch_threads(), "prefetch threads still alive after leaving the loops"
    assert loader.state_dict()["epoch"] == 6


def test_closing_an_iterator_stops_it():
    loader = DataLoader(ArrayDataset(np.arange(100)), batch_size=1, prefetch=3)
    it = iter(loader)
    assert next(it)[0].tolist() == [0]
    it.close()
    with pytest.raises(StopIteration):
        next(it)
    assert not _wait_no_prefetch_threads()


# ----------------------------------------------------------------------------------------------------
# splitting
# ----------------------------------------------------------------------------------------------------


def test_random_split_with_lengths():
    ds = ArrayDataset(np.arange(10) * 10)
    parts = data.random_split(ds, [3, 7], seed=4)
    assert [len(p) for p in parts] == [3, 7]
    perm = np.random.Generator(np.random.PCG64(4)).permutation(10)
    np.testing.assert_array_equal(parts[0].indices, perm[:3])
    np.testing.assert_array_equal(parts[1].indices, perm[3:])
    assert parts[0][1][0] == 10 * perm[1]
    again = data.random_split(ds, [3, 7], seed=4)
    np.testing.assert_array_equal(again[1].indices, parts[1].indices)


def test_random_split_fractions_follow_torchs_rule():
    ds = ArrayDataset(np.arange(10))
    parts = data.random_split(ds, [0.33, 0.33, 0.34], seed=0)
    assert [len(p) for p in parts] == [4, 3, 3]  # floors 3, 3, 3; the remainder goes to the first
    union = np.concatenate([p.indices for p in parts])
    assert sorted(union.tolist()) == list(range(10))


def test_random_split_sizes_match_torch():
    torch = pytest.importorskip("torch")
    for n, fracs in [(10, [0.33, 0.33, 0.34]), (101, [0.7, 0.15, 0.15]), (7, [0.5, 0.5])]:
        want = [len(s) for s in torch.utils.data.random_split(range(n), fracs)]
        got = [len(s) for s in data.random_split(ArrayDataset(np.arange(n)), fracs, seed=0)]
        assert got == want


def test_random_split_errors():
    ds = ArrayDataset(np.arange(10))
    with pytest.raises(ValueError, match=r"the lengths \[3, 3\] sum to 6, not to len\(dataset\) = 10"):
        data.random_split(ds, [3, 3])
    with pytest.raises(ValueError, match="non-negative integers"):
        data.random_split(ds, [2.5, 7.5])
    with pytest.warns(UserWarning, match="length of split at index 1 is 0"):
        data.random_split(ArrayDataset(np.arange(2)), [0.9, 0.1], seed=0)


def test_train_val_test_split_sizes_and_alignment():
    x = np.arange(101, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(101, dtype=np.int64)
    (xtr, ytr), (xva, yva), (xte, yte) = data.train_val_test_split(x, y, val=0.15, test=0.15, seed=0)
    assert (len(ytr), len(yva), len(yte)) == (69, 16, 16)  # ceil(0.15 * 101) = 16
    for xs, ys in ((xtr, ytr), (xva, yva), (xte, yte)):
        np.testing.assert_array_equal(xs[:, 0], ys.astype(np.float32))  # rows stay aligned
        assert xs.dtype == np.float32 and ys.dtype == np.int64
    assert sorted(np.concatenate([ytr, yva, yte]).tolist()) == list(range(101))  # disjoint and complete
    counts = data.train_val_test_split(y, val=10, test=0, seed=0)
    assert [len(c[0]) for c in counts] == [91, 10, 0]


def test_train_val_test_split_is_seeded():
    y = np.arange(50)
    a = data.train_val_test_split(y, seed=3)
    b = data.train_val_test_split(y, seed=3)
    c = data.train_val_test_split(y, seed=4)
    for sa, sb in zip(a, b):
        np.testing.assert_array_equal(sa[0], sb[0])
    assert not np.array_equal(a[0][0], c[0][0])
    symdl.manual_seed(9)
    d = data.train_val_test_split(y)
    symdl.manual_seed(9)
    e = data.train_val_test_split(y)
    np.testing.assert_array_equal(d[2][0], e[2][0])
    symdl.manual_seed(0)


def test_stratified_split_exact_proportions():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    train, val, test = data.train_val_test_indices(100, val=0.2, test=0.1, seed=1, stratify=y)
    assert np.bincount(y[test]).tolist() == [5, 3, 2]
    assert np.bincount(y[val]).tolist() == [10, 6, 4]  # 20 of the remaining 45/27/18
    assert np.bincount(y[train]).tolist() == [35, 21, 14]
    assert len(np.intersect1d(train, val)) == len(np.intersect1d(train, test)) == len(np.intersect1d(val, test)) == 0


def test_stratified_split_rounding_stays_within_one_per_class():
    rng = np.random.default_rng(0)
    y = rng.choice(np.array(["a", "b", "c", "d"]), size=97, p=[0.5, 0.25, 0.15, 0.1])
    _, counts = np.unique(y, return_counts=True)
    for seed in range(5):
        tr, va, te = data.train_val_test_indices(97, val=0.15, test=0.2, seed=seed, stratify=y)
        assert (len(tr), len(va), len(te)) == (97 - 15 - 20, 15, 20)
        _, te_counts = np.unique(np.concatenate([y[te], np.unique(y)]), return_counts=True)
        te_counts -= 1
        ideal = 20 * counts / 97
        assert np.all(te_counts >= np.floor(ideal)) and np.all(te_counts <= np.ceil(ideal))
        assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(97))


def test_split_without_shuffle_keeps_order():
    tr, va, te = data.train_val_test_indices(10, val=2, test=3, shuffle=False)
    assert (tr.tolist(), va.tolist(), te.tolist()) == ([0, 1, 2, 3, 4], [5, 6], [7, 8, 9])
    with pytest.raises(ValueError, match="stratify needs shuffle=True"):
        data.train_val_test_indices(10, shuffle=False, stratify=np.zeros(10))


def test_split_errors():
    with pytest.raises(ValueError, match="all arrays must have the same length, but array 0 has 5, array 1 has 4"):
        data.train_val_test_split(np.zeros(5), np.zeros(4))
    with pytest.raises(ValueError, match="leave no training samples out of 10"):
        data.train_val_test_split(np.zeros(10), val=0.5, test=0.5)
    with pytest.raises(ValueError, match=r"val as a fraction must lie in \[0, 1\)"):
        data.train_val_test_split(np.zeros(10), val=1.5)
    with pytest.raises(ValueError, match="stratify must be a 1-D array of 10 labels"):
        data.train_val_test_split(np.zeros(10), stratify=np.zeros(9))


# ----------------------------------------------------------------------------------------------------
# preprocessing
# ----------------------------------------------------------------------------------------------------


def test_standard_scaler_matches_numpy_and_handles_constant_features():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(50, 4)).astype(np.float32)
    train[:, 2] = np.float32(0.1)  # constant: a float64 mean of it is not exactly 0.1
    test = rng.normal(3.0, 2.0, size=(7, 4)).astype(np.float32)
    sc = data.StandardScaler().fit(train)
    t64 = train.astype(np.float64)
    mean, std = t64.mean(0), t64.std(0)
    out = sc.transform(test)
    assert out.dtype == np.float32 and out.shape == test.shape
    want = (test.astype(np.float64) - mean) / np.where(std == 0, 1, std)
    keep = [0, 1, 3]
    np.testing.assert_allclose(out[:, keep], want[:, keep], rtol=1e-6, atol=1e-6)
    train_out = sc.transform(train)
    assert np.all(np.isfinite(train_out))
    assert np.all(train_out[:, 2] == 0)  # exactly 0, not (0.1 - mean) / tiny
    np.testing.assert_allclose(out[:, 2], test[:, 2].astype(np.float64) - np.float64(np.float32(0.1)), rtol=1e-6)
    np.testing.assert_allclose(train_out[:, keep].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(train_out[:, keep].std(0), 1, atol=1e-6)
    np.testing.assert_allclose(sc.inverse_transform(out), test, rtol=1e-6, atol=1e-5)
    assert sc.scale[0, 2] == 1.0 and sc.mean.shape == (1, 4)


def test_standard_scaler_matches_sklearn():
    skp = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.default_rng(1)
    train = rng.normal(size=(30, 5)) * [1, 10, 100, 0, 3]
    test = rng.normal(size=(6, 5))
    want = skp.StandardScaler().fit(train).transform(test)
    np.testing.assert_allclose(data.StandardScaler().fit(train).transform(test), want, rtol=1e-12, atol=1e-12)


def test_standard_scaler_per_channel_axis_and_state_dict():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, size=(6, 3, 4, 5)).astype(np.uint8)
    sc = data.StandardScaler(axis=(0, 2, 3)).fit(x)
    out = sc.transform(x)
    assert out.dtype == np.float32  # integer images give float32
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean((0, 2, 3), keepdims=True)) / x64.std((0, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    state = sc.state_dict()
    assert set(state) == {"mean", "var", "scale"} and state["mean"].shape == (1, 3, 1, 1)
    other = data.StandardScaler(axis=(0, 2, 3))
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.transform(x[:2]), out[:2])
    state["mean"][:] = 0  # a copy: the scaler is unchanged
    np.testing.assert_array_equal(sc.transform(x[:2]), out[:2])


def test_scaler_errors():
    with pytest.raises(RuntimeError, match="StandardScaler is not fitted: call fit"):
        data.StandardScaler().transform(np.zeros((2, 3)))
    sc = data.StandardScaler().fit(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"expected shape \('\*', 3\) \(\* = any\), got \(2, 4\)"):
        sc.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"fitted on 2-D data, got an array of shape \(3,\)"):
        sc.transform(np.zeros(3))
    with pytest.raises(ValueError, match="expected keys"):
        sc.load_state_dict({"mean": np.zeros((1, 3))})
    with pytest.raises(ValueError, match="minimum of feature_range must be smaller than maximum"):
        data.MinMaxScaler(feature_range=(1, 0))
    with pytest.raises(ValueError, match="no samples to fit on"):
        data.MinMaxScaler().fit(np.zeros((0, 2)))


def test_min_max_scaler_matches_formula_and_sklearn():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(20, 3)).astype(np.float32)
    train[:, 1] = 5.0  # constant
    test = rng.normal(size=(5, 3)).astype(np.float32) * 3
    sc = data.MinMaxScaler(feature_range=(-1, 1)).fit(train)
    t64 = train.astype(np.float64)
    lo, hi = t64.min(0), t64.max(0)
    rng_ = np.where(hi - lo == 0, 1, hi - lo)
    want = (test - lo) / rng_ * 2 - 1
    out = sc.transform(test)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    tr = sc.transform(train)
    assert tr[:, [0, 2]].min() == -1 and tr[:, [0, 2]].max() == 1 and np.all(tr[:, 1] == -1)
    np.testing.assert_allclose(sc.inverse_transform(out), test, rtol=1e-5, atol=1e-5)
    clipped = data.MinMaxScaler(feature_range=(-1, 1), clip=True).fit(train).transform(test)
    np.testing.assert_allclose(clipped, np.clip(want, -1, 1), rtol=1e-5, atol=1e-5)
    restored = data.MinMaxScaler(feature_range=(-1, 1))
    restored.load_state_dict(sc.state_dict())
    np.testing.assert_array_equal(restored.transform(test), out)
    skp = pytest.importorskip("sklearn.preprocessing")
    sk = skp.MinMaxScaler(feature_range=(-1, 1)).fit(t64)
    np.testing.assert_allclose(
        sc.transform(test.astype(np.float64)), sk.transform(test.astype(np.float64)), rtol=1e-12, atol=1e-12
    )


def test_normalize_per_channel():
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(4, 3, 5, 5)).astype(np.float32)
    norm = data.Normalize(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5])
    out = norm(x, rng=None)
    assert out.dtype == np.float32
    m = np.array([0.5, 0.4, 0.3], np.float32)[None, :, None, None]
    s = np.array([0.2, 0.25, 0.5], np.float32)[None, :, None, None]
    np.testing.assert_array_equal(out, (x - m) / s)  # float32 arithmetic, like torchvision
    np.testing.assert_allclose(norm.inverse_transform(out), x, rtol=1e-6, atol=1e-6)
    fitted = data.Normalize().fit(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(fitted.mean, x64.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(fitted.std, x64.std((0, 2, 3)), rtol=1e-12)
    z = fitted.transform(x).astype(np.float64)
    np.testing.assert_allclose(z.mean((0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std((0, 2, 3)), 1, atol=1e-5)
    restored = data.Normalize()
    restored.load_state_dict(fitted.state_dict())
    np.testing.assert_array_equal(restored.transform(x), fitted.transform(x))


def test_normalize_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(2, 3, 4, 4)).astype(np.float32)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    t = torch.from_numpy(x)
    want = (t - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    np.testing.assert_allclose(data.Normalize(mean, std).transform(x), want.numpy(), rtol=1e-6, atol=1e-7)


def test_normalize_errors():
    with pytest.raises(ValueError, match="std evaluated to zero"):
        data.Normalize([0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="give both mean and std"):
        data.Normalize(mean=[0.5])
    with pytest.raises(
        ValueError, match=r"the batch has 1 channels \(axis 1 of shape \(2, 1, 3, 3\)\) but mean/std have 3"
    ):
        data.Normalize([0.1, 0.2, 0.3], [1, 1, 1]).transform(np.zeros((2, 1, 3, 3), np.float32))
    with pytest.raises(RuntimeError, match="Normalize has no mean/std"):
        data.Normalize().transform(np.zeros((2, 1, 3, 3)))
    const = data.Normalize().fit(np.full((2, 1, 3, 3), 0.7, np.float32))
    assert const.std.tolist() == [1.0]


# ----------------------------------------------------------------------------------------------------
# real datasets
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loader,shape,counts,first_class",
    [
        (data.load_digits, (1797, 1, 8, 8), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180], "0"),
        (data.load_iris, (150, 4), [50, 50, 50], "setosa"),
        (data.load_breast_cancer, (569, 30), [212, 357], "malignant"),
        (data.load_wine, (178, 13), [59, 71, 48], "class_0"),
    ],
)
def test_real_datasets(loader, shape, counts, first_class):
    pytest.importorskip("sklearn")
    bundle = loader()
    x, y = bundle
    assert x.shape == shape and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == (shape[0],) and y.dtype == np.int64
    assert np.bincount(y).tolist() == counts
    assert bundle.num_classes == len(counts) and bundle.classes[0] == first_class
    assert len(bundle.feature_names) == math.prod(shape[1:])
    ds = bundle.dataset()
    assert len(ds) == shape[0] and ds[0][1] == y[0]


def test_digits_scaling_and_flattening():
    datasets = pytest.importorskip("sklearn.datasets")
    raw = datasets.load_digits()
    x, _ = data.load_digits()
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(x.reshape(1797, 64), (raw.data / 16).astype(np.float32))
    flat, _ = data.load_digits(scale=False, flatten=True)
    assert flat.shape == (1797, 64) and flat.max() == 16.0
    np.testing.assert_array_equal(flat, raw.data.astype(np.float32))


def test_missing_scikit_learn_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    for fn in (data.load_digits, data.load_iris, data.load_breast_cancer, data.load_wine):
        with pytest.raises(
            ImportError, match=rf"symdl.data.{fn.__name__} needs scikit-learn.*pip install scikit-learn"
        ):
            fn()
