"""Checkpoints: save and restore a whole training run to one ``.npz`` file (no pickle), atomically.

::

    symdl.save_checkpoint("run.npz", model, opt, sched, loader=train_loader, extra={"epoch": epoch + 1})
    ...  # a new process: same construction code (symdl.manual_seed, model, optimiser, scheduler, loader)
    ck = symdl.load_checkpoint("run.npz", model, opt, sched, loader=train_loader)
    start_epoch = ck.extra["epoch"]

What a checkpoint holds
    - the model's :meth:`~symdl.nn.Module.state_dict`: parameters and buffers (BatchNorm running statistics);
    - the optimiser's ``state_dict()`` (moments, step counter, learning rates) and its class name;
    - the scheduler's ``state_dict()`` and its class name;
    - the data loader's ``state_dict()`` (``{"seed", "epoch", "batch"}``: the next batch it will deliver);
    - the random state: the default dropout generator's ``[seed, counter]``, the generator of every module that
      has its own (e.g. ``Dropout(generator=...)``), and the state of :func:`symdl.ops.random.host_rng`;
    - the step count (the optimiser's update counter unless ``step=`` is given) and ``extra``: your own
      JSON-able values and NumPy arrays (epoch number, history, a validation loader's state ...).

    Resuming from it continues the *bit-identical* run: the same batches, dropout masks, learning rates and
    optimiser updates as the uninterrupted run. Dropout stream ids are taken when a graph is *built*, so rebuild
    the model and its graph with the same code after the same ``symdl.manual_seed`` call, as a restarted process
    does.

File format (version 1)
    A NumPy ``.npz`` archive (a zip of ``.npy`` members), readable with ``np.load(path, allow_pickle=False)``:
    member ``metadata`` is UTF-8 JSON (as a ``uint8`` array) with ``format = "symdl-checkpoint"``, ``version``,
    the name, shape and dtype of every array, and the JSON parts of the state; members ``model/<i>``,
    ``optimizer/<i>``, ``rng/...``, ``extra/<i>`` ... hold the arrays (names are in the metadata, so any
    parameter name is safe).

Safety
    :func:`save_checkpoint` writes to a temporary file in the target's directory, ``fsync`` s it and renames it
    over the target with ``os.replace``: an interrupted or failed save never damages the previous checkpoint
    and leaves no temporary file behind. :func:`load_checkpoint` reads and checks the whole file (zip CRCs,
    format, every member's shape and dtype) and checks it against the model, optimiser, scheduler and loader
    *before* changing anything; a truncated or corrupted file, or one whose names or shapes do not match,
    raises :class:`CheckpointError` (naming the file and the problem) and leaves everything unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from symdl.errors import SymdlError
from symdl.ops.random import Generator, default_generator, host_rng

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "symdl-checkpoint"
"""The ``format`` field of a checkpoint's metadata."""

VERSION = 1
"""The checkpoint format version this symdl writes (and the newest it reads)."""

_META = "metadata"
_ARRAY = "__ndarray__"  # marker of an array inside a JSON tree: {"__ndarray__": member, "scalar": bool}


class CheckpointError(SymdlError, ValueError):
    """A checkpoint file cannot be read (missing parts, truncated, corrupted, unknown format) or does not fit
    the model, optimiser, scheduler or loader it is loaded into. Nothing was changed."""


# ----------------------------------------------------------------------------------------------------
# What a checkpoint holds once read
# ----------------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """The content of a checkpoint file (what :func:`read_checkpoint` and :func:`load_checkpoint` return).

    ``model_state`` is a state dict for :meth:`~symdl.nn.Module.load_state_dict` (e.g. to load weights only,
    or with ``strict=False``); ``optimizer_state`` / ``scheduler_state`` / ``loader_state`` are ``None`` when
    the checkpoint was saved without them. ``rng_state`` holds ``"default_generator"`` (``uint64 [seed,
    counter]``), ``"generators"`` (``{module path: [seed, counter]}``) and ``"host"`` (the
    ``bit_generator.state`` dict of :func:`~symdl.ops.random.host_rng`). ``extra`` is the ``extra`` dict given
    to :func:`save_checkpoint` (tuples come back as lists).
    """

    path: Path
    version: int
    step: int | None
    model_class: str
    model_state: OrderedDict[str, np.ndarray]
    optimizer_class: str | None = None
    optimizer_state: dict[str, np.ndarray] | None = None
    scheduler_class: str | None = None
    scheduler_state: dict[str, Any] | None = None
    loader_state: dict[str, Any] | None = None
    rng_state: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------------------------------
# Encoding: arrays become members, everything else JSON
# ----------------------------------------------------------------------------------------------------


class _Writer:
    """Collects the array members and their descriptions while the metadata is being built."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.members: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, int] = {}

    def add(self, member: str, value: Any, what: str) -> str:
        arr = np.asarray(value)
        if arr.dtype.kind in "OV":
            raise TypeError(
                f"save_checkpoint: {what} is an array of dtype {arr.dtype}; checkpoints store plain numeric, bool "
                "and string arrays only (no pickle)"
            )
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d arrays into 1-d ones)
        self.arrays[member] = arr
        self.members[member] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        return member

    def tree(self, value: Any, prefix: str, what: str) -> Any:
        """``value`` as JSON, its arrays (and NumPy scalars) stored as members ``<prefix>/<i>``."""
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, (np.integer, np.floating)):
            return value
        if isinstance(value, (np.ndarray, np.generic)):
            n = self._counts.get(prefix, 0)
            self._counts[prefix] = n + 1
            member = self.add(f"{prefix}/{n}", value, what)
            return {_ARRAY: member, "scalar": isinstance(value, np.generic)}
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise TypeError(f"save_checkpoint: {what} has a key {k!r} that is not a string (JSON keys)")
                if k == _ARRAY:
                    raise ValueError(f"save_checkpoint: {what} uses the reserved key {_ARRAY!r}")
                out[k] = self.tree(v, prefix, f"{what}[{k!r}]")
            return out
        if isinstance(value, (list, tuple)):
            return [self.tree(v, prefix, f"{what}[{i}]") for i, v in enumerate(value)]
        raise TypeError(
            f"save_checkpoint: {what} is a {type(value).__name__}; checkpoints store None, bool, int, float, str, "
            "NumPy arrays and scalars, and lists/dicts of them (no pickle)"
        )


def _decode(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if _ARRAY in tree:
            arr = arrays[tree[_ARRAY]]
            return arr[()] if tree.get("scalar") else arr
        return {k: _decode(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_decode(v, arrays) for v in tree]
    return tree


def _tree_members(tree: Any) -> list[str]:
    if isinstance(tree, dict):
        if _ARRAY in tree:
            return [tree[_ARRAY]]
        return [m for v in tree.values() for m in _tree_members(v)]
    if isinstance(tree, list):
        return [m for v in tree for m in _tree_members(v)]
    return []


def _module_generators(model: Any) -> OrderedDict[str, Generator]:
    """``{"<module path>.<attribute>": Generator}`` of the modules holding their own dropout generator (the
    default generator is saved separately; a generator shared by several modules is listed once)."""
    out: OrderedDict[str, Generator] = OrderedDict()
    named = getattr(model, "named_modules", None)
    if named is None:
        return out
    seen = {id(default_generator())}
    for path, module in named():
        for attr, value in vars(module).items():
            if isinstance(value, Generator) and id(value) not in seen:
                seen.add(id(value))
                out[f"{path}.{attr}" if path else attr] = value
    return out


def _need(obj: Any, methods: tuple[str, ...], what: str, fn: str) -> None:
    for m in methods:
        if not callable(getattr(obj, m, None)):
            raise TypeError(f"{fn}: {what} must have a {m}() method, got {type(obj).__name__}")


# ----------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike,
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    loader: Any = None,
    extra: Mapping[str, Any] | None = None,
    step: int | None = None,
) -> Path:
    """Save the training state to ``path`` (an ``.npz`` file, replaced atomically); returns the path.

    Args:
        path: the file to write (its directory must exist). Written as a temporary file in the same directory,
            flushed to disk, then renamed over ``path``: a failure at any point leaves an existing ``path``
            intact and removes the temporary file.
        model: a :class:`~symdl.nn.Module` (its ``state_dict()``: parameters and buffers).
        optimizer: a :mod:`symdl.optim` optimiser (its flat ``state_dict()`` of arrays), or ``None``.
        scheduler: a :mod:`symdl.optim.lr_scheduler` scheduler (its ``state_dict()``), or ``None``.
        loader: a :class:`~symdl.data.DataLoader` whose ``state_dict()`` is saved, or ``None``.
        extra: your own state: a dict with string keys whose values are ``None``, bools, ints, floats, strings,
            NumPy arrays or scalars, or lists/dicts of them (e.g. ``{"epoch": 3, "history": h.as_dict()}``).
        step: the step count to record; default: the optimiser's update counter (``None`` without optimiser).

    The random state (default dropout generator, module generators, :func:`~symdl.ops.random.host_rng`) is
    always saved. See the module docstring for the file format.
    """
    fn = "save_checkpoint"
    path = Path(os.fspath(path))
    _need(model, ("state_dict", "load_state_dict"), "model", fn)
    w = _Writer()
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    try:
        from symdl import __version__ as symdl_version
    except ImportError:  # pragma: no cover - partially initialised package
        symdl_version = None
    meta["symdl_version"] = symdl_version

    entries = []
    for i, (name, value) in enumerate(model.state_dict().items()):
        entries.append({"name": name, "member": w.add(f"model/{i}", value, f"model entry {name!r}")})
    meta["model"] = {"class": type(model).__name__, "entries": entries}

    meta["optimizer"] = None
    if optimizer is not None:
        _need(optimizer, ("state_dict", "load_state_dict"), "optimizer", fn)
        entries = []
        for i, (key, value) in enumerate(optimizer.state_dict().items()):
            entries.append({"name": key, "member": w.add(f"optimizer/{i}", value, f"optimizer entry {key!r}")})
        meta["optimizer"] = {"class": type(optimizer).__name__, "entries": entries}
        if step is None and hasattr(optimizer, "step_parameter"):
            step = int(np.asarray(optimizer.step_parameter.value))

    meta["scheduler"] = None
    if scheduler is not None:
        _need(scheduler, ("state_dict", "load_state_dict"), "scheduler", fn)
        state = w.tree(dict(scheduler.state_dict()), "scheduler", "the scheduler state")
        meta["scheduler"] = {"class": type(scheduler).__name__, "state": state}

    meta["loader"] = None
    if loader is not None:
        _need(loader, ("state_dict", "load_state_dict"), "loader", fn)
        meta["loader"] = w.tree(dict(loader.state_dict()), "loader", "the loader state")

    generators = _module_generators(model)
    meta["rng"] = {
        "default_generator": w.add("rng/default", default_generator().get_state(), "the default generator"),
        "generators": [
            {"path": p, "member": w.add(f"rng/module/{i}", g.get_state(), f"generator {p!r}")}
            for i, (p, g) in enumerate(generators.items())
        ],
        "host": w.tree(host_rng().bit_generator.state, "rng/host", "the host RNG state"),
    }

    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"{fn}: step must be an int, got {type(step).__name__} {step!r}")
        step = int(step)
    meta["step"] = step
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"{fn}: extra must be a dict, got {type(extra).__name__}")
    meta["extra"] = w.tree(dict(extra) if extra is not None else {}, "extra", "extra")
    meta["members"] = w.members

    text = json.dumps(meta, allow_nan=True, separators=(",", ":"))
    arrays = {_META: np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **w.arrays}
    _atomic_savez(path, arrays)
    return path


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` into a temporary file next to ``path``, fsync, ``os.replace``; no trace left on failure."""
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"save_checkpoint: the directory of {str(path)!r} does not exist")
    while True:
        tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:  # os.open applies the umask, as an ordinary file (mkstemp would make it private)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 48-bit collision
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX); best effort
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


# ----------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint file without loading it into anything.

    Every zip member's CRC, the format and version, and the name, shape and dtype of every array are checked;
    any problem raises :class:`CheckpointError` naming ``path`` (``FileNotFoundError`` if it does not exist).
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except Exception as e:  # noqa: BLE001 - whatever the zip parser trips on in garbage bytes
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a readable .npz archive (truncated or corrupted): {type(e).__name__}: {e}"
        ) from e
    if bad is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: member {bad!r} fails its CRC check")
    try:
        return _parse(path)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupted content: report it as such
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: {type(e).__name__}: {e}") from e


def _parse(path: Path) -> Checkpoint:
    def fail(message: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {str(path)!r}: {message}")

    with np.load(path, allow_pickle=False) as npz:
        names = set(npz.files)
        if _META not in names:
            raise fail("no 'metadata' member: this is not a symdl checkpoint")
        raw = npz[_META]
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise fail("the 'metadata' member is not UTF-8 JSON bytes")
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise fail(f"the metadata is not valid JSON ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise fail(f"format is {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}")
        version = meta.get("version")
        if not isinstance(version, int) or version < 1:
            raise fail(f"invalid format version {version!r}")
        if version > VERSION:
            raise fail(
                f"format version {version} was written by a newer symdl; this one reads versions up to {VERSION}"
            )
        members = meta.get("members")
        if not isinstance(members, dict):
            raise fail("the metadata has no 'members' table")
        listed = set(members)
        missing = sorted(listed - names)
        unexpected = sorted(names - listed - {_META})
        if missing:
            raise fail(f"members listed in the metadata are missing: {missing}")
        if unexpected:
            raise fail(f"members not listed in the metadata: {unexpected}")
        arrays: dict[str, np.ndarray] = {}
        for member, desc in members.items():
            arr = npz[member]
            shape, dtype = tuple(desc["shape"]), np.dtype(desc["dtype"])
            if arr.shape != shape or arr.dtype != dtype:
                raise fail(
                    f"member {member!r} is {arr.shape} {arr.dtype}, the metadata says {shape} {dtype} (corrupted)"
                )
            arrays[member] = arr

    def entries(section: dict[str, Any], what: str) -> OrderedDict[str, np.ndarray]:
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        for e in section["entries"]:
            if e["name"] in out:
                raise fail(f"{what} entry {e['name']!r} appears twice")
            out[e["name"]] = arrays[e["member"]]
        return out

    model = meta["model"]
    ck = Checkpoint(
        path=path,
        version=version,
        step=meta.get("step"),
        model_class=model["class"],
        model_state=entries(model, "model"),
        metadata=meta,
    )
    if meta.get("optimizer") is not None:
        ck.optimizer_class = meta["optimizer"]["class"]
        ck.optimizer_state = dict(entries(meta["optimizer"], "optimizer"))
    if meta.get("scheduler") is not None:
        ck.scheduler_class = meta["scheduler"]["class"]
        ck.scheduler_state = _decode(meta["scheduler"]["state"], arrays)
    if meta.get("loader") is not None:
        ck.loader_state = _decode(meta["loader"], arrays)
    rng = meta["rng"]
    ck.rng_state = {
        "default_generator": arrays[rng["default_generator"]],
        "generators": OrderedDict((g["path"], arrays[g["member"]]) for g in rng["generators"]),
        "host": _decode(rng["host"], arrays),
    }
    ck.extra = _decode(meta.get("extra") or {}, arrays)
    return ck


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def _check_entries(
    have: Mapping[str, np.ndarray], want: Mapping[str, Any], what: str, problems: list[str], casting: str
) -> None:
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    if missing:
        problems.append(f"{what}: missing from the checkpoint: {', '.join(missing)}")
    if unexpected:
        problems.append(f"{what}: in the checkpoint but not in the {what}: {', '.join(unexpected)}")
    for k, cur in want.items():
        if k not in have:
            continue
        arr, cur = have[k], np.asarray(cur)
        if arr.shape != cur.shape:
            problems.append(f"{what} entry {k}: shape {arr.shape} in the checkpoint, {cur.shape} in the {what}")
        elif arr.dtype != cur.dtype and not np.can_cast(arr.dtype, cur.dtype, casting=casting):
            problems.append(
                f"{what} entry {k}: dtype {arr.dtype} in the checkpoint cannot be cast to the {what}'s {cur.dtype}"
            )


def load_checkpoint(
    path: str | os.PathLike,
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    loader: Any = None,
    restore_rng: bool = True,
) -> Checkpoint:
    """Restore a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``,
    ``scheduler``, ``loader`` when given); returns the :class:`Checkpoint` (``.step``, ``.extra`` ...).

    Everything is checked before anything changes: the file (see :func:`read_checkpoint`), the model's entry
    names, shapes and dtypes (exactly the model's ``state_dict()`` keys; dtypes as
    :meth:`~symdl.nn.Module.load_state_dict` accepts them), the optimiser's and scheduler's classes and keys,
    and that every part asked for is in the file. Problems raise :class:`CheckpointError` listing them all, and
    the model, optimiser, scheduler, loader and random state are left unchanged (if a component still refuses
    its state while being loaded, the ones already loaded are rolled back).

    ``restore_rng=True`` also restores the default dropout generator, the generators of modules that have
    their own, and :func:`~symdl.ops.random.host_rng` (needed for a bit-identical resume). Parts of the file
    not asked for (an optimiser state when ``optimizer`` is ``None`` ...) are ignored. To load weights only,
    or non-strictly, use ``model.load_state_dict(read_checkpoint(path).model_state, strict=False)``.
    """
    fn = "load_checkpoint"
    _need(model, ("state_dict", "load_state_dict"), "model", fn)
    for obj, what in ((optimizer, "optimizer"), (scheduler, "scheduler"), (loader, "loader")):
        if obj is not None:
            _need(obj, ("state_dict", "load_state_dict"), what, fn)
    ck = read_checkpoint(path)
    p = str(ck.path)

    problems: list[str] = []
    _check_entries(ck.model_state, model.state_dict(), "model", problems, "safe")
    if optimizer is not None:
        if ck.optimizer_state is None:
            problems.append("optimizer: the checkpoint has no optimizer state")
        elif ck.optimizer_class != type(optimizer).__name__:
            problems.append(
                f"optimizer: the checkpoint holds {ck.optimizer_class} state, not {type(optimizer).__name__}"
            )
        else:
            _check_entries(ck.optimizer_state, optimizer.state_dict(), "optimizer", problems, "same_kind")
    if scheduler is not None:
        if ck.scheduler_state is None:
            problems.append("scheduler: the checkpoint has no scheduler state")
        elif ck.scheduler_class != type(scheduler).__name__:
            problems.append(
                f"scheduler: the checkpoint holds {ck.scheduler_class} state, not {type(scheduler).__name__}"
            )
        else:
            want = list(scheduler.state_dict())
            have = list(ck.scheduler_state) if isinstance(ck.scheduler_state, dict) else []
            if sorted(want) != sorted(have):
                problems.append(f"scheduler: keys {sorted(have)} in the checkpoint, {sorted(want)} expected")
    if loader is not None and ck.loader_state is None:
        problems.append("loader: the checkpoint has no loader state")
    generators = _module_generators(model)
    if restore_rng:
        saved = ck.rng_state["generators"]
        if list(saved) != list(generators):
            problems.append(
                f"random state: the checkpoint has generators for modules {list(saved)}, "
                f"the model has {list(generators)}"
            )
        host = ck.rng_state["host"]
        kind = type(host_rng().bit_generator).__name__
        if not isinstance(host, dict) or host.get("bit_generator") != kind:
            problems.append(f"random state: the host RNG state is not a {kind} state")
        state = ck.rng_state["default_generator"]
        if state.shape != (2,) or state.dtype.kind not in "iu":
            problems.append(f"random state: the default generator state is {state.shape} {state.dtype}")
    if problems:
        details = "".join(f"\n  {line}" for line in problems)
        raise CheckpointError(f"checkpoint {p!r} does not fit; nothing was loaded:{details}")

    # apply, each step undoable; roll everything back if a component still refuses its state
    undo: list[Any] = []
    try:
        before = model.state_dict()
        model.load_state_dict(ck.model_state)
        undo.append(lambda: model.load_state_dict(before))
        if optimizer is not None:
            opt_before = optimizer.state_dict()
            optimizer.load_state_dict(ck.optimizer_state)
            undo.append(lambda: optimizer.load_state_dict(opt_before))
        if scheduler is not None:
            sched_before = scheduler.state_dict()
            scheduler.load_state_dict(ck.scheduler_state)
            undo.append(lambda: scheduler.load_state_dict(sched_before))
        if loader is not None:
            loader_before = loader.state_dict()
            loader.load_state_dict(ck.loader_state)
            undo.append(lambda: loader.load_state_dict(loader_before))
        if restore_rng:
            gen = default_generator()
            gen_before = gen.get_state()
            gen.set_state(ck.rng_state["default_generator"])
            undo.append(lambda: gen.set_state(gen_before))
            for path_, g in generators.items():
                g_before = g.get_state()
                g.set_state(ck.rng_state["generators"][path_])
                undo.append(lambda g=g, s=g_before: g.set_state(s))
            bitgen = host_rng().bit_generator
            host_before = bitgen.state
            bitgen.state = ck.rng_state["host"]
            undo.append(lambda: setattr(bitgen, "state", host_before))
    except Exception as e:
        for action in reversed(undo):
            with contextlib.suppress(Exception):
                action()
        raise CheckpointError(f"checkpoint {p!r} does not fit; nothing was loaded: {type(e).__name__}: {e}") from e
    return ck
