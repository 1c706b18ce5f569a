"""The symdl model file: format ``"symdl-model"``, version 1 — schema, op vocabulary, checksums, writer, reader.

A model file is what :meth:`symdl.Function.export` writes and :func:`runtime.export.load` reads: the frozen,
declarative description of one compiled inference function (an eval-mode ``target="cpu"`` compile). It holds
no code: loading rebuilds the graph from symdl's own op classes, re-runs symdl's own fusion and code generation
(kernels come from symdl's library and the kernel disk cache), and **never executes code, unpickles objects or
imports modules named in the file**.

Layout
------
One zip archive with exactly three members (fixed timestamps: the same model exports to the same bytes):

``manifest.json``
    ``{"format": "symdl-model", "format_version": 1, "symdl_version": "0.1.0",
    "members": [{"name": "graph.json", "size": <bytes>, "sha256": <hex>}, {"name": "weights.npz", ...}]}``.
    The reader checks the format name, refuses a newer ``format_version`` (the message gives both numbers),
    then checks every listed member's size and SHA-256 before parsing anything else.

``graph.json`` (strict JSON: no NaN/Infinity literals, no duplicate keys, no unknown keys)
    ``{"mode": "eval", "nodes": [...], "inputs": [ids], "outputs": [ids], "kernels": [...],
    "fusion": {"fuse_reductions": bool}}``. Nodes are listed inputs-first; a node's ``id`` is its position.
    Every node has ``id``, ``kind``, ``name`` (string or null), ``type`` (``{"shape": [int or null, ...],
    "dtype": "float32"}``; ``null`` is a dim known only at run time, e.g. the batch), ``role``
    (``"forward"``/``"backward"``) and ``frame`` (``[file, line, function]`` of the user code that created it,
    or null; only used in messages). By ``kind``:

    - ``"placeholder"``: a graph input (listed in ``inputs``, in call order);
    - ``"parameter"`` / ``"constant"``: a leaf whose array is the member ``weight`` of ``weights.npz``
      (parameters are exported with their current values; the model is frozen);
    - ``"op"``: ``op`` (the op *class* name, which must be in :func:`vocabulary`: the closed set of op classes
      defined in ``symdl.ops.*`` and ``symdl.losses``), ``props`` (the op dataclass's fields, every one of
      them, encoded below) and ``inputs`` (ids of earlier nodes).

    Props encoding: ``float``/``int``/``bool``/``str`` fields are JSON scalars; ``tuple`` fields are (nested)
    arrays of numbers, booleans and nulls; ``np.dtype`` fields are ``{"dtype": "float32"}``; a non-finite
    float is ``{"float": "inf" | "-inf" | "nan"}``; ``None`` is null (only for fields typed ``X | None``).
    ``kernels`` is the fused kernel partition in execution order: ``{"kind", "name", "nodes", "inputs",
    "outputs"}`` (kinds of :mod:`compiler.kernels`; ``name`` is informational).

``weights.npz``
    A NumPy ``.npz`` (uncompressed zip of ``.npy`` members), read with ``allow_pickle=False``: one array per
    parameter/constant node, of exactly the node's declared shape and dtype; every member is referenced once.

Validation on load (:func:`load_artifact`)
------------------------------------------
Zip structure and member set, format and version, sizes and SHA-256 checksums, the JSON schema, every op name
against the vocabulary and every prop against its field's declared type, every input id (an earlier node),
every weight's shape and dtype; then each node is rebuilt with :func:`symdl.graph.apply` (re-running the op's
``infer``) and its inferred type must equal the declared one, axis-like props must lie in range
(:func:`axis_problem`: several ops' ``infer`` trusts them); every node must be needed by the outputs;
finally symdl's fusion is re-run on the rebuilt program and must reproduce the stored kernel partition exactly
(so the kernels that get generated are precisely those symdl would generate for this type-checked graph).
Any violation raises :class:`ArtifactError` naming the file, the member, the node id and op, and the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from symdl.errors import Frame, ShapeError, SymdlError, where
from symdl.graph import (
    Constant,
    LeafOp,
    Op,
    Parameter,
    PlaceholderOp,
    Tensor,
    TensorType,
    as_dtype,
    build_context,
    is_placeholder,
    toposort,
)
from symdl.graph import apply as apply_op

if TYPE_CHECKING:  # compiler modules are imported where used: symdl/__init__ imports this module
    from compiler.kernels import Kernel
    from compiler.program import Program

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Artifact",
    "ArtifactError",
    "ExportError",
    "KernelSpec",
    "OpEntry",
    "PropSpec",
    "TensorSpec",
    "artifact_bytes",
    "axis_problem",
    "decode_prop",
    "describe_function",
    "dump_graph",
    "encode_op",
    "encode_prop",
    "load_artifact",
    "temp_path",
    "vocabulary",
    "weights_bytes",
    "write_artifact",
]

FORMAT = "symdl-model"
"""The ``format`` field of a model file's manifest."""

FORMAT_VERSION = 1
"""The format version this symdl writes, and the newest it reads."""

MANIFEST = "manifest.json"
GRAPH = "graph.json"
WEIGHTS = "weights.npz"
MEMBERS = (GRAPH, WEIGHTS)

#: the modules whose op classes form the closed vocabulary of exportable ops
VOCABULARY_MODULES = (
    "symdl.ops.elementwise",
    "symdl.ops.reduce",
    "symdl.ops.shape",
    "symdl.ops.nn",
    "symdl.ops.conv",
    "symdl.ops.indexing",
    "symdl.ops.normalization",
    "symdl.ops.pool",
    "symdl.ops.random",
    "symdl.losses",
)

_LEAF_KINDS = ("placeholder", "parameter", "constant")
_ROLES = ("forward", "backward")
_MAX_INT = 2**62  # ints beyond this are refused (shapes, axes, strides ... never come close)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ArtifactError(SymdlError, ValueError):
    """A model file cannot be loaded: truncated, corrupted (checksum), a newer format version, or content that
    violates the schema (unknown op, wrongly typed prop, dangling input id, weight of the wrong shape ...)."""


class ExportError(SymdlError, ValueError):
    """A compiled function cannot be exported (not an eval-mode compiled inference function, an op outside
    symdl's vocabulary, or a reloaded model whose outputs differ from the original's)."""


# ----------------------------------------------------------------------------------------------------
# The op vocabulary and the props codec
# ----------------------------------------------------------------------------------------------------

_PROP_KINDS = {"float": "float", "int": "int", "bool": "bool", "str": "str", "tuple": "tuple"}
_PROP_KINDS.update({"np.dtype": "dtype", "numpy.dtype": "dtype", "dtype": "dtype"})


@dataclass(frozen=True)
class PropSpec:
    """One op prop: the dataclass field's name, its kind (float, int, bool, str, tuple, dtype) and whether
    ``None`` is allowed."""

    name: str
    kind: str
    optional: bool


@dataclass(frozen=True)
class OpEntry:
    """One exportable op class and the specs of its props (its dataclass fields, in order)."""

    cls: type
    props: tuple[PropSpec, ...]


def _prop_spec(f: dataclasses.Field) -> PropSpec | None:
    ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    parts = [p.strip() for p in str(ann).replace("Optional[", "").rstrip("]").split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    if len(parts) != 1 or parts[0] not in _PROP_KINDS:
        return None
    return PropSpec(f.name, _PROP_KINDS[parts[0]], optional)


_VOCABULARY: dict[str, OpEntry] | None = None


def vocabulary() -> dict[str, OpEntry]:
    """``{op class name: OpEntry}``: every concrete op class defined in :data:`VOCABULARY_MODULES` whose props
    all have an encodable type. Leaves and mode switches are not ops of an exported graph."""
    global _VOCABULARY
    if _VOCABULARY is None:
        found: dict[str, OpEntry] = {}
        for modname in VOCABULARY_MODULES:
            mod = importlib.import_module(modname)
            for obj in vars(mod).values():
                if not (isinstance(obj, type) and issubclass(obj, Op) and obj.__module__ == modname):
                    continue
                if issubclass(obj, LeafOp) or obj.__name__.startswith("_") or not dataclasses.is_dataclass(obj):
                    continue
                if getattr(obj, "name", "op") == "op":  # abstract families (Elementwise, Compare, Reduce)
                    continue
                specs = [_prop_spec(f) for f in dataclasses.fields(obj)]
                if any(s is None for s in specs):
                    continue
                if obj.__name__ in found and found[obj.__name__].cls is not obj:  # pragma: no cover - a bug
                    raise SymdlError(f"internal: two op classes named {obj.__name__} in the export vocabulary")
                found[obj.__name__] = OpEntry(obj, tuple(s for s in specs if s is not None))
        _VOCABULARY = found
    return _VOCABULARY


def _encode_scalar_in_tuple(v: Any, what: str) -> Any:
    if v is None or isinstance(v, (bool, np.bool_)):
        return None if v is None else bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _encode_float(float(v))
    if isinstance(v, (tuple, list)):
        return [_encode_scalar_in_tuple(e, what) for e in v]
    raise ValueError(f"{what} holds {v!r} ({type(v).__name__}); tuples may hold numbers, booleans and None")


def _encode_float(v: float) -> Any:
    if math.isfinite(v):
        return v
    return {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}


def encode_prop(spec: PropSpec, value: Any) -> Any:
    """The JSON value of one prop (see the module docstring); ``ValueError`` if it does not fit its type."""
    what = f"prop {spec.name!r}"
    if value is None:
        if spec.optional:
            return None
        raise ValueError(f"{what} is None but its type does not allow None")
    if spec.kind == "bool" and isinstance(value, (bool, np.bool_)):
        return bool(value)
    if spec.kind == "int" and isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if spec.kind == "float" and not isinstance(value, (bool, np.bool_)):
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return _encode_float(float(value))
    if spec.kind == "str" and isinstance(value, str):
        return value
    if spec.kind == "dtype" and isinstance(value, np.dtype):
        return {"dtype": as_dtype(value).name}
    if spec.kind == "tuple" and isinstance(value, tuple):
        return _encode_scalar_in_tuple(value, what)
    raise ValueError(f"{what} has value {value!r} ({type(value).__name__}), which is not a {spec.kind}")


def _decode_float(v: Any) -> float | int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if abs(v) <= _MAX_INT else None
    if isinstance(v, float):
        return v
    if isinstance(v, dict) and set(v) == {"float"} and v["float"] in ("inf", "-inf", "nan"):
        return float(v["float"])
    return None


def _decode_in_tuple(v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, list):
        return tuple(_decode_in_tuple(e) for e in v)
    if isinstance(v, int) and abs(v) > _MAX_INT:
        raise ValueError(f"int {v} is out of range")
    if isinstance(v, int):
        return v
    f = _decode_float(v)
    if f is None:
        raise ValueError(f"{v!r} is not a number, boolean, null or array")
    return f


def decode_prop(spec: PropSpec, raw: Any) -> Any:
    """The Python value of one prop from its JSON value; ``ValueError`` naming the problem."""
    what = f"prop {spec.name!r} ({spec.kind}{' or null' if spec.optional else ''})"
    if raw is None:
        if spec.optional:
            return None
        raise ValueError(f"{what} is null")
    if spec.kind == "bool" and isinstance(raw, bool):
        return raw
    if spec.kind == "int" and isinstance(raw, int) and not isinstance(raw, bool):
        if abs(raw) > _MAX_INT:
            raise ValueError(f"{what} is out of range: {raw}")
        return raw
    if spec.kind == "float":
        f = _decode_float(raw)
        if f is not None:
            return f
    if spec.kind == "str" and isinstance(raw, str):
        return raw
    if spec.kind == "dtype" and isinstance(raw, dict) and set(raw) == {"dtype"} and isinstance(raw["dtype"], str):
        try:
            return as_dtype(raw["dtype"])
        except TypeError as e:
            raise ValueError(f"{what}: {e}") from None
    if spec.kind == "tuple" and isinstance(raw, list):
        try:
            return _decode_in_tuple(raw)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    raise ValueError(f"{what} has the wrong type: {json.dumps(raw)[:80]}")


def encode_op(op: Op) -> tuple[str, dict[str, Any]]:
    """``(class name, props)`` of an op in the vocabulary; ``ValueError`` saying why another op is not."""
    cls = type(op)
    entry = vocabulary().get(cls.__name__)
    if entry is None or entry.cls is not cls:
        raise ValueError(
            f"op {op.name} ({cls.__module__}.{cls.__qualname__}) is not in symdl's op vocabulary (the op classes "
            f"of {', '.join(VOCABULARY_MODULES)}): a model file can only describe ops symdl defines itself"
        )
    props = {s.name: encode_prop(s, getattr(op, s.name)) for s in entry.props}
    # the exact round trip is part of the contract: decoding must rebuild the same op
    again = entry.cls(**{s.name: decode_prop(s, props[s.name]) for s in entry.props})
    if {s.name: encode_prop(s, getattr(again, s.name)) for s in entry.props} != props:  # pragma: no cover
        raise ValueError(f"op {op.name}: its props do not survive encoding ({op.props_str()})")
    return cls.__name__, props


# ----------------------------------------------------------------------------------------------------
# Describing a compiled function (export side)
# ----------------------------------------------------------------------------------------------------


def _type_json(t: Tensor) -> dict[str, Any]:
    return {"shape": [None if d is None else int(d) for d in t.shape], "dtype": t.dtype.name}


def _frame_json(frame: Frame | None) -> list[Any] | None:
    return None if frame is None else [str(frame.filename), int(frame.lineno), str(frame.function)]


def _kernel_json(kernels: Sequence[Kernel], index: dict[int, int]) -> list[dict[str, Any]]:
    return [
        {
            "kind": k.kind,
            "name": k.name,
            "nodes": [index[n.id] for n in k.nodes],
            "inputs": [index[n.id] for n in k.inputs],
            "outputs": [index[n.id] for n in k.outputs],
        }
        for k in kernels
    ]


def _partition(kernels: Sequence[Kernel], index: dict[int, int]) -> list[tuple]:
    """Kernels as comparable tuples over node positions (the ``name`` is not part of the comparison)."""
    return [(d["kind"], d["nodes"], d["inputs"], d["outputs"]) for d in _kernel_json(kernels, index)]


def describe_function(program: Program, kernels: Sequence[Kernel]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(graph.json content, weight arrays by member name)`` of an eval-mode program and its kernels.

    Raises :class:`ExportError` naming the op and the user's line for a node that cannot be exported."""
    from compiler.fusion import fuse

    order_ids = {n.id for n in program.order}
    nodes = list(program.order) + [p for p in program.inputs if p.id not in order_ids]
    index = {n.id: k for k, n in enumerate(nodes)}
    arrays: dict[str, np.ndarray] = {}
    out_nodes: list[dict[str, Any]] = []
    for k, n in enumerate(nodes):
        d: dict[str, Any] = {"id": k}
        if is_placeholder(n):
            d["kind"] = "placeholder"
        elif isinstance(n, (Parameter, Constant)) and not n.inputs:
            d["kind"] = "parameter" if isinstance(n, Parameter) else "constant"
            d["weight"] = f"n{k}"
            arr = np.asarray(n.value)
            if arr.shape != tuple(n.shape) or arr.dtype != n.dtype:
                raise ExportError(
                    f"export: {n.label()} holds a {arr.shape} {arr.dtype} array but is declared {n.type}"
                    f"{where(n.frame)}"
                )
            arrays[d["weight"]] = arr
        elif not n.inputs:
            raise ExportError(f"export: leaf {n.label()} of unknown kind {type(n).__name__}{where(n.frame)}")
        else:
            try:
                name, props = encode_op(n.op)
            except ValueError as e:
                raise ExportError(f"export: node {n.label()}: {e}{where(n.frame)}") from None
            d.update(kind="op", op=name, props=props, inputs=[index[i.id] for i in n.inputs])
        d.update(name=n.name, type=_type_json(n), role=n.role, frame=_frame_json(n.frame))
        out_nodes.append(d)
    # the file keeps the target-independent partition (compiler.fusion.fuse); the CPU target's own merges
    # (compiler.conv_pool_fusion) are made again when a loader compiles for it
    from compiler.conv_pool_fusion import fuse_conv_pool

    stored = _partition(kernels, index)
    for flag, pooled in ((True, True), (True, False), (False, True), (False, False)):
        base = fuse(program, [], flag)
        if _partition(fuse_conv_pool(base, program, []) if pooled else base, index) == stored:
            fuse_reductions, kernels = flag, base
            break
    else:
        raise ExportError(
            "export: the function's kernels are not what symdl's fusion produces for its program, so a loader could "
            "not reproduce them (was the function's lowering modified?)"
        )
    graph = {
        "mode": "eval",
        "nodes": out_nodes,
        "inputs": [index[p.id] for p in program.inputs],
        "outputs": [index[t.id] for t in program.outputs],
        "kernels": _kernel_json(kernels, index),
        "fusion": {"fuse_reductions": fuse_reductions},
    }
    return graph, arrays


# ----------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------


def _zip_bytes(members: Sequence[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, compression in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def weights_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The ``weights.npz`` member: an uncompressed zip of ``.npy`` files (no pickled data, fixed timestamps)."""
    members = []
    for name, arr in arrays.items():
        b = io.BytesIO()
        np.lib.format.write_array(b, np.asanyarray(arr), allow_pickle=False)
        members.append((f"{name}.npy", b.getvalue(), zipfile.ZIP_STORED))
    return _zip_bytes(members)


def dump_graph(graph: dict[str, Any]) -> str:
    """``graph.json``'s text: strict JSON, one node (and one kernel) per line, readable in a diff."""

    def compact(v: Any) -> str:
        return json.dumps(v, allow_nan=False, separators=(", ", ": "))

    lines = ["{"]
    items = list(graph.items())
    for i, (key, value) in enumerate(items):
        end = "," if i < len(items) - 1 else ""
        if isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
            lines.append(f" {json.dumps(key)}: [")
            lines += [f"  {compact(e)}{',' if j < len(value) - 1 else ''}" for j, e in enumerate(value)]
            lines.append(f" ]{end}")
        else:
            lines.append(f" {json.dumps(key)}: {compact(value)}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def artifact_bytes(graph: dict[str, Any], arrays: dict[str, np.ndarray], symdl_version: str) -> bytes:
    """The whole model file for ``graph`` (``graph.json`` content) and its weight ``arrays``."""
    graph_data = dump_graph(graph).encode("utf-8")
    parts = {GRAPH: graph_data, WEIGHTS: weights_bytes(arrays)}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "symdl_version": symdl_version,
        "members": [
            {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in parts.items()
        ],
    }
    manifest_data = json.dumps(manifest, allow_nan=False, indent=1).encode("utf-8")
    return _zip_bytes(
        [
            (MANIFEST, manifest_data, zipfile.ZIP_DEFLATED),
            (GRAPH, graph_data, zipfile.ZIP_DEFLATED),
            (WEIGHTS, parts[WEIGHTS], zipfile.ZIP_STORED),
        ]
    )


def write_artifact(path: str | os.PathLike[str], data: bytes, check: Callable[[Path], None] | None = None) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, fsync, ``check(temp
    file)`` if given (raising keeps the previous file and removes the temporary one), then ``os.replace``."""
    path = Path(os.fspath(path))
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def temp_path(path: Path) -> Path:
    """A fresh temporary file name next to ``path`` (created empty, so that no one else takes it)."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"export: the directory of {str(path)!r} does not exist")
    while True:
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:  # pragma: no cover - a 48-bit collision
            continue
        os.close(fd)
        return tmp


# ----------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A signature entry: name, shape (``None`` for dims known at run time) and dtype."""

    name: str | None
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        return f"{self.name or '?'}: ({dims}{',' if len(self.shape) == 1 else ''}) {self.dtype}"


@dataclass(frozen=True)
class KernelSpec:
    """One stored kernel: kind, informational name, and the node ids it computes, reads and writes."""

    kind: str
    name: str
    nodes: tuple[int, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass
class Artifact:
    """A model file read and fully validated by :func:`load_artifact` (nothing compiled yet).

    ``program`` is the rebuilt inference :class:`~compiler.program.Program` (graph nodes of symdl's own op
    classes), ready for :func:`runtime.export.build`."""

    path: Path
    format_version: int
    symdl_version: str
    manifest: dict[str, Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    kernels: list[KernelSpec]
    weights: dict[str, np.ndarray]
    program: Program
    fuse_reductions: bool = True
    node_ops: list[str] = field(default_factory=list)  # op class name of every non-leaf node

    @property
    def param_count(self) -> int:
        """Number of stored values: elements of every parameter and constant array."""
        return int(sum(a.size for a in self.weights.values()))

    @property
    def weight_bytes(self) -> int:
        """Bytes of every parameter and constant array."""
        return int(sum(a.nbytes for a in self.weights.values()))

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op class the graph has."""
        return dict(Counter(self.node_ops))

    def summary(self) -> str:
        """A few lines: format, versions, signature, kernels and weights."""
        lines = [
            f"{self.path}: {FORMAT} v{self.format_version}, written by symdl {self.symdl_version}",
            "  inputs:  " + "; ".join(str(s) for s in self.inputs),
            "  outputs: " + "; ".join(str(s) for s in self.outputs),
            f"  {len(self.program.order)} nodes, {len(self.kernels)} kernels: "
            + ", ".join(f"{k.name} ({k.kind})" for k in self.kernels),
            f"  {len(self.weights)} weight arrays, {self.param_count} values, {self.weight_bytes} bytes",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class _Reader:
    """Validation state of one :func:`load_artifact` call: every failure names the file (and member, node)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str, member: str | None = None) -> ArtifactError:
        where_ = f" ({member})" if member else ""
        return ArtifactError(f"model file {str(self.path)!r}{where_}: {message}")

    # --- zip and manifest ---------------------------------------------------------------------------
    def read_member(self, zf: zipfile.ZipFile, name: str) -> bytes:
        info = zf.getinfo(name)
        if info.flag_bits & 0x1:
            raise self.fail("the member is encrypted", name)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.fail(f"unsupported zip compression method {info.compress_type}", name)
        try:
            return zf.read(name)
        except zipfile.BadZipFile as e:
            if "CRC" in str(e):
                raise self.fail("checksum mismatch (zip CRC-32): the file is corrupted or was modified", name) from None
            raise self.fail(f"corrupted or truncated member ({e})", name) from None
        except (zlib.error, EOFError, OSError, ValueError, NotImplementedError) as e:
            raise self.fail(f"corrupted or truncated member ({type(e).__name__}: {e})", name) from None

    def parse_json(self, data: bytes, member: str) -> Any:
        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, v in items:
                if k in out:
                    raise ValueError(f"duplicate key {k!r}")
                out[k] = v
            return out

        def no_constant(name: str) -> Any:
            raise ValueError(f"{name} is not valid JSON")

        try:
            return json.loads(data.decode("utf-8"), object_pairs_hook=pairs, parse_constant=no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise self.fail(f"not valid JSON ({e})", member) from None

    def read(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The manifest and every listed member's bytes, after the format, version, size and SHA-256 checks."""
        try:
            zf = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
            if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
                raise
            raise self.fail(f"not a readable zip archive: the file is truncated or corrupted ({e})") from None
        with zf:
            names = zf.namelist()
            if len(names) != len(set(names)):
                raise self.fail(f"the archive lists a member twice: {sorted(names)}")
            if MANIFEST not in names:
                raise self.fail(
                    f"no {MANIFEST} member (members: {sorted(names)[:8]}): the file is truncated or corrupted, or is "
                    f"not a {FORMAT} file"
                )
            manifest = self.parse_json(self.read_member(zf, MANIFEST), MANIFEST)
            self.check_manifest(manifest)
            listed = {m["name"]: m for m in manifest["members"]}
            missing = sorted(set(listed) - set(names))
            extra = sorted(set(names) - set(listed) - {MANIFEST})
            if missing:
                raise self.fail(f"members listed in the manifest are missing: {missing}")
            if extra:
                raise self.fail(f"members not listed in the manifest: {extra}")
            data: dict[str, bytes] = {}
            for name, m in listed.items():
                size = zf.getinfo(name).file_size
                if size != m["size"]:
                    raise self.fail(f"size mismatch: {size} bytes, the manifest says {m['size']} (modified)", name)
                raw = self.read_member(zf, name)
                digest = hashlib.sha256(raw).hexdigest()
                if len(raw) != m["size"] or digest != m["sha256"]:
                    raise self.fail(
                        f"sha256 checksum mismatch: {digest}, the manifest says {m['sha256']} "
                        "(the file is corrupted or was modified)",
                        name,
                    )
                data[name] = raw
        return manifest, data

    def check_manifest(self, m: Any) -> None:
        if not isinstance(m, dict):
            raise self.fail("the manifest is not a JSON object", MANIFEST)
        if m.get("format") != FORMAT:
            raise self.fail(f"format is {m.get('format')!r}, expected {FORMAT!r}", MANIFEST)
        version = m.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise self.fail(f"invalid format_version {version!r} (a positive integer)", MANIFEST)
        if version > FORMAT_VERSION:
            from symdl import __version__

            raise self.fail(
                f"format version {version} is newer than this symdl ({__version__}) reads (format version "
                f"{FORMAT_VERSION}); upgrade symdl or re-export the model with this version",
                MANIFEST,
            )
        self.keys(m, {"format", "format_version", "symdl_version", "members"}, MANIFEST, "the manifest")
        if not isinstance(m["symdl_version"], str):
            raise self.fail("symdl_version is not a string", MANIFEST)
        members = m["members"]
        if not isinstance(members, list):
            raise self.fail("'members' is not a list", MANIFEST)
        seen = []
        for e in members:
            if not isinstance(e, dict):
                raise self.fail(f"member entry {e!r} is not an object", MANIFEST)
            self.keys(e, {"name", "size", "sha256"}, MANIFEST, "a member entry")
            ok = (
                isinstance(e["name"], str)
                and isinstance(e["size"], int)
                and not isinstance(e["size"], bool)
                and e["size"] >= 0
                and isinstance(e["sha256"], str)
                and len(e["sha256"]) == 64
            )
            if not ok:
                raise self.fail(f"malformed member entry {e!r}", MANIFEST)
            seen.append(e["name"])
        if sorted(seen) != sorted(MEMBERS):
            raise self.fail(f"the manifest lists members {seen}, expected {list(MEMBERS)}", MANIFEST)

    def keys(self, d: dict[str, Any], allowed: set[str], member: str, what: str) -> None:
        missing = sorted(allowed - set(d))
        unknown = sorted(set(d) - allowed)
        if missing:
            raise self.fail(f"{what} lacks {missing}", member)
        if unknown:
            raise self.fail(f"{what} has unknown keys {unknown}", member)

    # --- weights ------------------------------------------------------------------------------------
    def weights(self, data: bytes) -> dict[str, np.ndarray]:
        try:
            npz = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - whatever NumPy trips on in bad bytes
            raise self.fail(f"not a readable .npz archive ({type(e).__name__}: {e})", WEIGHTS) from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise self.fail("not an .npz archive", WEIGHTS)
        out: dict[str, np.ndarray] = {}
        with npz:
            for name in npz.files:
                try:
                    out[name] = npz[name]
                except ValueError as e:
                    if "pickle" in str(e).lower() or "object" in str(e).lower():
                        raise self.fail(
                            f"array {name!r} holds pickled Python objects; symdl never unpickles model files", WEIGHTS
                        ) from None
                    raise self.fail(f"array {name!r} cannot be read ({e})", WEIGHTS) from None
                except Exception as e:  # noqa: BLE001 - corrupted member
                    raise self.fail(f"array {name!r} cannot be read ({type(e).__name__}: {e})", WEIGHTS) from None
                if out[name].dtype.hasobject:  # pragma: no cover - allow_pickle=False refuses these first
                    raise self.fail(f"array {name!r} has an object dtype", WEIGHTS)
        return out

    # --- graph --------------------------------------------------------------------------------------
    def graph(self, g: Any, weights: dict[str, np.ndarray]) -> tuple[Program, list[KernelSpec], bool, list[str]]:
        if not isinstance(g, dict):
            raise self.fail("not a JSON object", GRAPH)
        self.keys(g, {"mode", "nodes", "inputs", "outputs", "kernels", "fusion"}, GRAPH, "the graph")
        if g["mode"] != "eval":
            raise self.fail(f"mode is {g['mode']!r}; model files hold eval-mode functions", GRAPH)
        if not isinstance(g["nodes"], list):
            raise self.fail("'nodes' is not a list", GRAPH)
        fusion = g["fusion"]
        if not isinstance(fusion, dict):
            raise self.fail("'fusion' is not an object", GRAPH)
        self.keys(fusion, {"fuse_reductions"}, GRAPH, "'fusion'")
        if not isinstance(fusion["fuse_reductions"], bool):
            raise self.fail("fusion.fuse_reductions is not a boolean", GRAPH)

        built: list[Tensor] = []
        used_weights: set[str] = set()
        node_ops: list[str] = []
        seen_ids: dict[int, int] = {}
        for k, d in enumerate(g["nodes"]):
            t = self.node(k, d, built, weights, used_weights)
            if t.id in seen_ids:
                raise self.fail(f"node {k} duplicates node {seen_ids[t.id]} (same op on the same inputs)", GRAPH)
            seen_ids[t.id] = k
            built.append(t)
            if d["kind"] == "op":
                node_ops.append(d["op"])
        unused = sorted(set(weights) - used_weights)
        if unused:
            raise self.fail(f"arrays not referenced by any node: {unused}", WEIGHTS)

        inputs = [self.ref(i, built, "inputs") for i in self.id_list(g["inputs"], "inputs")]
        for i, t in zip(g["inputs"], inputs):
            if not is_placeholder(t):
                raise self.fail(f"input id {i} is node {i} ({t.op.name}), not a placeholder", GRAPH)
        if len(set(g["inputs"])) != len(g["inputs"]):
            raise self.fail(f"an input id is listed twice in inputs {g['inputs']}", GRAPH)
        outputs = [self.ref(i, built, "outputs") for i in self.id_list(g["outputs"], "outputs")]
        order = toposort(outputs)
        reachable = {t.id for t in order}
        input_ids = {t.id for t in inputs}
        for k, t in enumerate(built):
            if t.id not in reachable and t.id not in input_ids:
                raise self.fail(f"node {k} ({t.op.name}) is not needed by any output", GRAPH)
        if [t for t in built if t.id in reachable] != order:  # pragma: no cover - implied by inputs-first ids
            raise self.fail("the nodes are not listed in the order symdl builds them", GRAPH)
        for t in order:
            if is_placeholder(t) and t.id not in input_ids:
                raise self.fail(f"placeholder node {seen_ids[t.id]} is needed by the outputs but not an input", GRAPH)
        from compiler.program import Program

        program = Program(inputs, outputs, [], order, "eval")
        kernels = self.kernels(g["kernels"], len(built))
        self.check_partition(program, kernels, built, fusion["fuse_reductions"])
        return program, kernels, fusion["fuse_reductions"], node_ops

    def id_list(self, v: Any, what: str) -> list[int]:
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise self.fail(f"{what} is not a list of node ids: {json.dumps(v)[:80]}", GRAPH)
        return v

    def ref(self, i: int, built: list[Tensor], what: str) -> Tensor:
        if not 0 <= i < len(built):
            raise self.fail(
                f"{what}: node id {i} does not exist or is not an earlier node (ids 0..{len(built) - 1})", GRAPH
            )
        return built[i]

    def node(self, k: int, d: Any, built: list[Tensor], weights: dict[str, np.ndarray], used: set[str]) -> Tensor:
        if not isinstance(d, dict):
            raise self.fail(f"node {k} is not an object", GRAPH)
        kind = d.get("kind")
        label = f"node {k}" + (f" ({d.get('op')})" if kind == "op" and isinstance(d.get("op"), str) else "")
        common = {"id", "kind", "name", "type", "role", "frame"}
        extra = {"op": {"op", "props", "inputs"}, "parameter": {"weight"}, "constant": {"weight"}, "placeholder": set()}
        if kind not in extra:
            raise self.fail(f"{label}: kind {kind!r} is not one of {['op', *_LEAF_KINDS]}", GRAPH)
        self.keys(d, common | extra[kind], GRAPH, label)
        if d["id"] != k or isinstance(d["id"], bool):
            raise self.fail(f"{label}: id {d['id']!r} differs from its position {k}", GRAPH)
        name = d["name"]
        if name is not None and not isinstance(name, str):
            raise self.fail(f"{label}: name {name!r} is not a string or null", GRAPH)
        ttype = self.ttype(d["type"], label)
        if d["role"] not in _ROLES:
            raise self.fail(f"{label}: role {d['role']!r} is not one of {list(_ROLES)}", GRAPH)
        frame = self.frame(d["frame"], label)

        if kind == "placeholder":
            return Tensor(PlaceholderOp(), (), ttype, name=name, frame=frame, role=d["role"])
        if kind in ("parameter", "constant"):
            member = d["weight"]
            if not isinstance(member, str) or member not in weights:
                raise self.fail(f"{label}: weight {member!r} is not an array of {WEIGHTS}", GRAPH)
            if member in used:
                raise self.fail(f"{label}: weight {member!r} is used by two nodes", GRAPH)
            used.add(member)
            arr = weights[member]
            if None in ttype.shape or arr.shape != ttype.shape or arr.dtype != ttype.dtype:
                raise self.fail(
                    f"{label} ({kind} {name or ''}): array {member!r} is {arr.shape} {arr.dtype}, but the node "
                    f"is declared {_fmt_type(ttype)}",
                    WEIGHTS,
                )
            if kind == "parameter":
                t: Tensor = Parameter(arr, name=name, trainable=False)
            else:
                with build_context(d["role"], frame):
                    t = Constant(arr, name=name)
            t.frame, t.role = frame, d["role"]
            return t

        entry = vocabulary().get(d["op"]) if isinstance(d["op"], str) else None
        if entry is None:
            raise self.fail(
                f"{label}: op {d['op']!r} is not in symdl's op vocabulary (known: op classes of "
                f"{', '.join(VOCABULARY_MODULES)})",
                GRAPH,
            )
        raw = d["props"]
        if not isinstance(raw, dict):
            raise self.fail(f"{label}: props is not an object", GRAPH)
        self.keys(raw, {s.name for s in entry.props}, GRAPH, f"{label}: props")
        props = {}
        for s in entry.props:
            try:
                props[s.name] = decode_prop(s, raw[s.name])
            except ValueError as e:
                raise self.fail(f"{label}: {e}", GRAPH) from None
        try:
            op = entry.cls(**props)
            hash(op)
        except Exception as e:  # noqa: BLE001 - an op's own validation of its props
            raise self.fail(f"{label}: invalid props {raw}: {type(e).__name__}: {e}", GRAPH) from None
        ins = [self.ref(i, built, f"{label}: inputs") for i in self.id_list(d["inputs"], f"{label}: inputs")]
        for i in d["inputs"]:
            if i >= k:  # pragma: no cover - ref() only knows earlier nodes
                raise self.fail(f"{label}: input id {i} is not an earlier node", GRAPH)
        try:
            with build_context(d["role"], frame):
                t = apply_op(op, *ins, name=name)
        except ShapeError as e:
            raise self.fail(f"{label}: its operands do not fit the op: {e}", GRAPH) from None
        except Exception as e:  # noqa: BLE001 - infer() of an op given inputs it does not expect
            raise self.fail(f"{label}: the op rejects its operands: {type(e).__name__}: {e}", GRAPH) from None
        problem = axis_problem(op, [i.ndim for i in ins], t.ndim)
        if problem is not None:
            raise self.fail(f"{label}: {problem}", GRAPH)
        if t.type.shape != ttype.shape or t.type.dtype != ttype.dtype:
            raise self.fail(
                f"{label}: declared type {_fmt_type(ttype)}, but the op infers {_fmt_type(t.type)} from its inputs",
                GRAPH,
            )
        return t

    def ttype(self, v: Any, label: str) -> TensorType:
        if not isinstance(v, dict) or set(v) != {"shape", "dtype"}:
            raise self.fail(f"{label}: type must be {{'shape': [...], 'dtype': '...'}}, got {v!r}", GRAPH)
        shape = v["shape"]
        ok = isinstance(shape, list) and all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_INT) for d in shape
        )
        if not ok:
            raise self.fail(f"{label}: shape {shape!r} is not a list of non-negative ints and nulls", GRAPH)
        if not isinstance(v["dtype"], str):
            raise self.fail(f"{label}: dtype {v['dtype']!r} is not a string", GRAPH)
        try:
            dtype = as_dtype(v["dtype"])
        except TypeError as e:
            raise self.fail(f"{label}: {e}", GRAPH) from None
        return TensorType(tuple(shape), dtype)

    def frame(self, v: Any, label: str) -> Frame | None:
        if v is None:
            return None
        ok = (
            isinstance(v, list)
            and len(v) == 3
            and isinstance(v[0], str)
            and isinstance(v[1], int)
            and isinstance(v[2], str)
        )
        if not ok:
            raise self.fail(f"{label}: frame {v!r} is not [file, line, function] or null", GRAPH)
        return Frame(v[0], v[1], v[2])

    def kernels(self, v: Any, n_nodes: int) -> list[KernelSpec]:
        from compiler.kernels import KINDS

        if not isinstance(v, list):
            raise self.fail("'kernels' is not a list", GRAPH)
        out = []
        for k, d in enumerate(v):
            if not isinstance(d, dict):
                raise self.fail(f"kernel {k} is not an object", GRAPH)
            self.keys(d, {"kind", "name", "nodes", "inputs", "outputs"}, GRAPH, f"kernel {k}")
            if d["kind"] not in KINDS:
                raise self.fail(f"kernel {k}: kind {d['kind']!r} is not one of {list(KINDS)}", GRAPH)
            if not isinstance(d["name"], str):
                raise self.fail(f"kernel {k}: name is not a string", GRAPH)
            lists = {}
            for key in ("nodes", "inputs", "outputs"):
                ids = self.id_list(d[key], f"kernel {k}: {key}")
                for i in ids:
                    if not 0 <= i < n_nodes:
                        raise self.fail(f"kernel {k}: {key}: node id {i} does not exist (ids 0..{n_nodes - 1})", GRAPH)
                lists[key] = tuple(ids)
            out.append(KernelSpec(d["kind"], d["name"], lists["nodes"], lists["inputs"], lists["outputs"]))
        return out

    def check_partition(self, program: Program, stored: list[KernelSpec], built: list[Tensor], flag: bool) -> None:
        from compiler.fusion import fuse

        index = {t.id: k for k, t in enumerate(built)}
        mine = _partition(fuse(program, [], flag), index)
        theirs = [(s.kind, list(s.nodes), list(s.inputs), list(s.outputs)) for s in stored]
        if mine == theirs:
            return
        k = next((k for k, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
        got = theirs[k] if k < len(theirs) else "nothing"
        want = mine[k] if k < len(mine) else "nothing"
        raise self.fail(
            f"the stored kernel partition differs from what symdl's fusion produces for this graph, first at "
            f"kernel {k}: stored {got}, expected {want} (kind, nodes, inputs, outputs); the file was modified or "
            "written by a symdl whose fusion differs: re-export the model",
            GRAPH,
        )


def axis_problem(op: Op, in_ndims: Sequence[int], out_ndim: int) -> str | None:
    """What is wrong with an op's axis-like props (``axis``, ``axes``, ``perm``, ``start``/``end``, ``k``), or None.

    Several ops' ``infer`` trust these (the user-facing builders validate and normalise them), so a file could
    otherwise smuggle in an axis that silently computes something else. Axes must lie in ``[-n, n)`` where ``n``
    is the largest rank among the operands and the result, ``axes`` and ``perm`` hold distinct axes, ``perm`` is
    a permutation of the result's axes and ``k`` (``ConcatPart``) picks one of the reference operands."""
    n = max([out_ndim, *in_ndims])
    for name in ("axis", "axes", "perm", "start", "end"):
        if not hasattr(op, name):
            continue
        value = getattr(op, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and (not isinstance(v, int) or isinstance(v, bool)) for v in values):
            return f"prop {name!r} = {value!r} must hold integer axes"
        axes = [v for v in values if v is not None]
        bad = [v for v in axes if not -n <= v < max(n, 1)]
        if bad:
            return f"prop {name!r} = {value!r} is out of range for operands of rank {n}"
        norm = [v % max(n, 1) for v in axes]
        if name in ("axes", "perm") and len(set(norm)) != len(norm):
            return f"prop {name!r} = {value!r} repeats an axis"
        if name == "perm" and sorted(v % max(out_ndim, 1) for v in axes) != list(range(out_ndim)):
            return f"prop 'perm' = {value!r} is not a permutation of the {out_ndim} axes of the result"
    if hasattr(op, "k") and isinstance(op.k, int) and not 0 <= op.k < len(in_ndims) - 1:
        return f"prop 'k' = {op.k!r} does not pick one of the {len(in_ndims) - 1} reference operands"
    return None


def _fmt_type(t: TensorType) -> str:
    dims = ", ".join("None" if d is None else str(d) for d in t.shape)
    return f"({dims}{',' if len(t.shape) == 1 else ''}) {t.dtype}"


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read and validate a model file (see the module docstring) without generating any kernel.

    Raises :class:`ArtifactError` naming the file, the member, the node and the problem; ``FileNotFoundError``
    if there is no such file."""
    p = Path(os.fspath(path))
    if not p.is_file():
        if not p.exists():
            raise FileNotFoundError(f"model file {str(p)!r} does not exist")
        raise ArtifactError(f"model file {str(p)!r} is not a regular file")
    r = _Reader(p)
    manifest, data = r.read()
    graph = r.parse_json(data[GRAPH], GRAPH)
    weights = r.weights(data[WEIGHTS])
    program, kernels, fuse_reductions, node_ops = r.graph(graph, weights)

    def spec(t: Tensor) -> TensorSpec:
        return TensorSpec(t.name, tuple(t.shape), t.dtype)

    return Artifact(
        path=p,
        format_version=manifest["format_version"],
        symdl_version=manifest["symdl_version"],
        manifest=manifest,
        inputs=[spec(t) for t in program.inputs],
        outputs=[spec(t) for t in program.outputs],
        kernels=kernels,
        weights=weights,
        program=program,
        fuse_reductions=fuse_reductions,
        node_ops=node_ops,
    )
