"""Looking at graphs: a debugprint-style text form and graphviz drawings.

- :func:`format_graph` / :func:`print_graph`: one line per node in topological order, in the style of
  Theano/PyTensor's ``debugprint``::

      %0  x = placeholder : float32[?, 4]
      %1  W = parameter : float32[4, 3]
      %2  = matmul(%0:x, %1:W) : float32[?, 3]
      ...
      %21 dloss/dW = matmul(%20, %17) : float32[4, 3]  [grad]
      outputs: [0] %6 loss, [1] %21 dloss/dW

  The ``%N`` ids are the tensors' own ids (the ``#N`` of ``Tensor.label()`` and of error messages), so a
  shared subexpression is printed once and referred to by id.
- :func:`render`: a graphviz drawing (``.svg``, ``.png``, ``.pdf`` or ``.dot``). Op nodes show the op, its
  props, the output type; placeholders, trainable parameters, buffers (non-trainable parameters) and
  constants have their own shapes and colours; gradient (backward) nodes are orange and grouped in a
  "gradient" cluster; outputs have a double border. Without the ``dot`` program the DOT source is
  written instead, with a warning saying how to install graphviz.
- :func:`graph_to_dot`: the DOT source :func:`render` draws.

Everything here is iterative: 10,000-node chains print and render without touching the recursion limit.
"""

from __future__ import annotations

import dataclasses
import html
import os
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from symdl.graph import ConstantOp, Op, ParameterOp, PlaceholderOp, Tensor, is_float, toposort

__all__ = ["render", "print_graph", "format_graph", "graph_to_dot", "to_networkx", "GraphvizMissingWarning"]

Outputs = Tensor | Sequence[Tensor] | Mapping[str, Tensor]

#: Formats :func:`render` knows; anything else that ``dot -T`` accepts also works when dot is installed.
DOT_SUFFIXES = ("dot", "gv")
DEFAULT_MAX_NODES = 1500
INSTALL_HINT = (
    "install graphviz to get drawings: `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` "
    "(macOS) or `conda install graphviz`; or render the .dot file yourself with `dot -Tsvg FILE -o out.svg`"
)


class GraphvizMissingWarning(UserWarning):
    """``render`` could not find the ``dot`` program and wrote the DOT source instead."""


# ----------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------


def _as_outputs(outputs: Outputs) -> list[tuple[str | None, Tensor]]:
    """Normalise ``outputs`` to ``[(output label or None, tensor)]``."""
    if isinstance(outputs, Tensor):
        pairs: list[tuple[str | None, Tensor]] = [(None, outputs)]
    elif isinstance(outputs, Mapping):
        pairs = [(str(k), v) for k, v in outputs.items()]
    elif isinstance(outputs, Sequence) and not isinstance(outputs, (str, bytes)):
        pairs = [(None, t) for t in outputs]
    else:
        raise TypeError(f"outputs must be a Tensor, a sequence or a dict of Tensors, got {type(outputs).__name__}")
    for _, t in pairs:
        if not isinstance(t, Tensor):
            raise TypeError(f"outputs must hold symbolic Tensors, got {type(t).__name__}")
    return pairs


def _kind(t: Tensor) -> str:
    """``placeholder``, ``parameter``, ``buffer`` (non-trainable parameter), ``constant`` or ``op``."""
    op = t.op
    if isinstance(op, PlaceholderOp):
        return "placeholder"
    if isinstance(op, ParameterOp):
        return "parameter" if getattr(t, "trainable", True) else "buffer"
    if isinstance(op, ConstantOp):
        return "constant"
    return "op"


def _short(v: Any, limit: int) -> str:
    if isinstance(v, Tensor):
        s = v.label()
    elif isinstance(v, tuple) and any(isinstance(e, Tensor) for e in v):
        s = "(" + ", ".join(e.label() if isinstance(e, Tensor) else repr(e) for e in v) + ")"
    elif isinstance(v, np.dtype):
        s = str(v)
    elif isinstance(v, float):
        s = f"{v:g}"
    else:
        s = str(v)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


_SIMPLE = (bool, int, float, str, type(None), np.dtype)


def _is_default(field: dataclasses.Field, value: Any) -> bool:
    """Whether a prop has its field's default value (left out of labels: ``keepdims=False`` is noise)."""
    if field.default is dataclasses.MISSING or not isinstance(value, (*_SIMPLE, tuple)):
        return False
    if isinstance(value, tuple) and not all(isinstance(e, _SIMPLE) for e in value):
        return False  # never compare Tensors with == (it builds a node)
    try:
        return type(value) is type(field.default) and bool(value == field.default)
    except Exception:  # noqa: BLE001
        return False


def _props(op: Op, limit: int = 60) -> str:
    """The op's props, short: instance dataclass fields only (class-level constants are not props)."""
    if type(op).props_str is not Op.props_str:  # the op formats itself
        try:
            s = " ".join(op.props_str().split())
        except Exception:  # noqa: BLE001 - a broken props_str must not break debugging output
            s = "?"
    else:
        try:
            fields = dataclasses.fields(op)  # type: ignore[arg-type]
        except TypeError:
            fields = ()
        s = ", ".join(
            f"{f.name}={_short(getattr(op, f.name, '?'), 30)}"
            for f in fields
            if not _is_default(f, getattr(op, f.name, None))
        )
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _constant_text(t: Tensor, max_size: int = 6) -> str | None:
    """The value of a small constant, compactly; ``None`` for large ones."""
    value = getattr(t, "value", None)
    if not isinstance(value, np.ndarray) or value.size > max_size:
        return None
    if value.size == 1 and value.ndim == 0:
        v = value.item()
        return f"{v:g}" if is_float(value.dtype) else str(v)
    return " ".join(np.array2string(value, separator=", ", precision=4, threshold=max_size).split())


def _frame_text(t: Tensor) -> str | None:
    f = t.frame
    if f is None:
        return None
    return f"{os.path.basename(f.filename)}:{f.lineno}"


def _input_ref(t: Tensor) -> str:
    """How a node is referred to as an input in the text form: ``%id``, plus its name or scalar value."""
    if t.name is not None:
        return f"%{t.id}:{t.name}"
    if _kind(t) == "constant":
        text = _constant_text(t, max_size=1)
        if text is not None:
            return f"%{t.id}:{text}"
    return f"%{t.id}"


# ----------------------------------------------------------------------------------------------------
# Text form
# ----------------------------------------------------------------------------------------------------


def format_graph(outputs: Outputs, show_frames: bool = False, max_props: int = 60) -> str:
    """The graph that computes ``outputs`` as text, one line per node in topological order.

    Each line is ``%id name = op[props](inputs) : dtype[shape]``; leaves show their kind (``placeholder``,
    ``parameter``, ``buffer`` for non-trainable parameters, ``constant`` with the value of small constants).
    Gradient nodes end in ``[grad]``, outputs in ``-> out[i]``; ``show_frames`` adds the user line that
    created each node (``# model.py:12``). Inputs are referred to by id (``%3``, or ``%3:name`` for named
    tensors), so shared subexpressions appear once. The last line lists the outputs.

    ``outputs`` is a Tensor, a sequence of Tensors or a dict ``{label: Tensor}``.
    """
    pairs = _as_outputs(outputs)
    order = toposort([t for _, t in pairs])
    out_marks: dict[int, list[str]] = {}
    for i, (label, t) in enumerate(pairs):
        out_marks.setdefault(t.id, []).append(f"out[{i}]" if label is None else f"out[{label}]")

    id_width = max((len(str(t.id)) for t in order), default=1) + 1
    bodies: list[str] = []
    notes: list[str] = []
    for t in order:
        kind = _kind(t)
        head = f"%{t.id}".ljust(id_width)
        lhs = f"{head} {t.name} =" if t.name is not None else f"{head} ="
        if kind == "op":
            props = _props(t.op, max_props)
            props = f"[{props}]" if props else ""
            args = ", ".join(_input_ref(i) for i in t.inputs)
            rhs = f"{t.op.name}{props}({args})"
        elif kind == "constant":
            text = _constant_text(t)
            rhs = "constant" if text is None else f"constant {text}"
        else:
            rhs = kind
        bodies.append(f"{lhs} {rhs} : {t.type}")
        frame = _frame_text(t) if show_frames else None
        notes.append(
            [
                "[grad]" if t.role == "backward" else "",
                "-> " + ", ".join(out_marks[t.id]) if t.id in out_marks else "",
                f"# {frame}" if frame is not None else "",
            ]
        )

    width = max((len(b) for b in bodies if len(b) <= 72), default=0)  # long outliers do not widen all
    cols = [max((len(n[c]) for n in notes), default=0) for c in range(3)]
    lines = []
    for body, note in zip(bodies, notes):
        tail = "  ".join(n.ljust(w) for n, w in zip(note, cols) if w).rstrip()
        lines.append(f"{body.ljust(width)}  {tail}" if tail else body)
    listed = []
    for i, (label, t) in enumerate(pairs):
        key = str(i) if label is None else label
        listed.append(f"[{key}] %{t.id}" + (f" {t.name}" if t.name is not None else ""))
    n_grad = sum(t.role == "backward" for t in order)
    lines.append("outputs: " + ", ".join(listed))
    lines.append(f"# {len(order)} nodes" + (f" ({n_grad} gradient)" if n_grad else ""))
    return "\n".join(lines)


def print_graph(outputs: Outputs, file: IO[str] | None = None, show_frames: bool = False) -> None:
    """Print :func:`format_graph` of ``outputs`` to ``file`` (default ``sys.stdout``)."""
    print(format_graph(outputs, show_frames=show_frames), file=file if file is not None else sys.stdout)


# ----------------------------------------------------------------------------------------------------
# Graphviz
# ----------------------------------------------------------------------------------------------------

FONT = "Helvetica"
GRAD_BORDER = "#c0661c"
STYLES: dict[str, dict[str, str]] = {
    # forward op, backward op, and the leaves
    "op": {"shape": "box", "style": "rounded,filled", "fillcolor": "#dcebf7", "color": "#4a78a8"},
    "grad": {"shape": "box", "style": "rounded,filled", "fillcolor": "#fde3c8", "color": GRAD_BORDER},
    "placeholder": {"shape": "ellipse", "style": "filled", "fillcolor": "#c9efc4", "color": "#3d8b37"},
    "parameter": {"shape": "cylinder", "style": "filled", "fillcolor": "#fff0a0", "color": "#a68a00"},
    "buffer": {"shape": "cylinder", "style": "filled,dashed", "fillcolor": "#e4e4e4", "color": "#777777"},
    "constant": {"shape": "note", "style": "filled", "fillcolor": "#f4f4f4", "color": "#999999"},
    "group": {"shape": "box3d", "style": "filled", "fillcolor": "#e8ddf5", "color": "#6a4f9a"},
}
LEGEND = {
    "op": "forward op",
    "grad": "gradient op",
    "placeholder": "placeholder / input",
    "parameter": "trainable parameter",
    "buffer": "buffer / non-trainable",
    "constant": "constant",
    "group": "collapsed group",
}


def _style_key(t: Tensor) -> str:
    kind = _kind(t)
    if kind == "op":
        return "grad" if t.role == "backward" else "op"
    return kind


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def _node_label(t: Tensor, outs: list[str], show_frames: bool, max_props: int, inlined: set[int]) -> str:
    """An HTML-like graphviz label for one tensor."""
    kind = _kind(t)
    rows: list[str] = []
    if outs:
        rows.append(f'<font point-size="9" color="#b00000"><b>{_esc(", ".join(outs))}</b></font>')
    if t.name is not None:
        rows.append(f"<b>{_esc(t.name)}</b>")
    if kind == "op":
        head = f"<b>{_esc(t.op.name)}</b>" if t.name is None else _esc(t.op.name)
        rows.append(head)
        props = _props(t.op, max_props)
        if props:
            rows.append(f'<font point-size="9" color="#444444">{_esc(props)}</font>')
        if any(i.id in inlined for i in t.inputs):
            args = ", ".join(_constant_text(i, 1) or "?" if i.id in inlined else "\u00b7" for i in t.inputs)
            rows.append(f'<font point-size="9" color="#444444">({_esc(args)})</font>')
    elif kind == "constant":
        text = _constant_text(t)
        rows.append("constant" if text is None else f"constant {_esc(text)}")
    else:
        rows.append(f"<i>{kind}</i>")
    id_text = f"%{t.id}" + ("  grad" if t.role == "backward" else "")
    rows.append(
        f'<font point-size="9">{_esc(str(t.type))}</font><font point-size="8" color="#888888">  {_esc(id_text)}</font>'
    )
    if show_frames:
        frame = _frame_text(t)
        if frame is not None:
            rows.append(f'<font point-size="8" color="#666666">{_esc(frame)}</font>')
    return "<" + "<br/>".join(rows) + ">"


def _scope_of(name: str | None) -> str | None:
    """Name scope: the part of ``name`` before its last ``/`` or ``.`` (``"enc/l1.W"`` -> ``"enc/l1"``)."""
    if not name:
        return None
    cut = max(name.rfind("/"), name.rfind("."))
    return name[:cut] if cut > 0 else None


def _scope_groups(order: list[Tensor]) -> dict[int, str]:
    """Forward nodes grouped by name scope.

    Named tensors go by their name; an unnamed op or constant joins scope ``S`` when all its forward
    consumers are in ``S`` and one of its inputs is too (it lies between nodes of ``S``).
    """
    consumers: dict[int, list[Tensor]] = {t.id: [] for t in order}
    for t in order:
        for i in t.inputs:
            consumers[i.id].append(t)
    group: dict[int, str] = {}
    for t in reversed(order):  # consumers first: tentative scopes
        if t.role == "backward":
            continue
        scope = _scope_of(t.name)
        if scope is None and t.name is None and _kind(t) in ("op", "constant"):
            scopes = {group.get(c.id) for c in consumers[t.id] if c.role != "backward"}
            if len(scopes) == 1:
                scope = scopes.pop()
        if scope is not None:
            group[t.id] = scope
    for t in order:  # inputs first: an unnamed op needs a (named or op) input of its scope
        scope = group.get(t.id)
        if (
            scope is not None
            and t.name is None
            and _kind(t) == "op"
            and not any(group.get(i.id) == scope and (i.name is not None or _kind(i) == "op") for i in t.inputs)
        ):
            del group[t.id]
    for t in order:  # unnamed constants follow their consumers
        if t.id in group and t.name is None and _kind(t) == "constant":
            if any(group.get(c.id) != group[t.id] for c in consumers[t.id] if c.role != "backward"):
                del group[t.id]
    return group


def _frame_groups(order: list[Tensor]) -> dict[int, str]:
    """Op nodes and constants grouped by the user line that created them, forward and gradient apart."""
    group: dict[int, str] = {}
    for t in order:
        if _kind(t) in ("op", "constant") and t.frame is not None:
            where = f"{os.path.basename(t.frame.filename)}:{t.frame.lineno}"
            group[t.id] = f"{where} (grad)" if t.role == "backward" else where
    return group


def _group_label(name: str, members: list[Tensor]) -> str:
    ops = Counter(t.op.name for t in members if _kind(t) == "op")
    n_grad = sum(t.role == "backward" for t in members)
    top = ", ".join(f"{op}" + (f" ({n})" if n > 1 else "") for op, n in ops.most_common(4))
    if len(ops) > 4:
        top += ", ..."
    count = f"{len(members)} node{'s' if len(members) > 1 else ''}" + (f" ({n_grad} grad)" if n_grad else "")
    rows = [f"<b>{_esc(name)}</b>", count]
    if top:
        rows.append(f'<font point-size="9">{_esc(top)}</font>')
    return "<" + "<br/>".join(rows) + ">"


def _is_compiled_function(obj: object) -> bool:
    return getattr(obj, "lowered", None) is not None and hasattr(obj, "program")


def _plan_view(fn: Any) -> tuple[dict[str, Tensor], dict[str, list[Tensor]]]:
    """A compiled Function as outputs (its outputs and update values) and one cluster per fused kernel."""
    program = fn.program
    outs: dict[str, Tensor] = {str(i): t for i, t in enumerate(program.outputs)}
    for p, v in program.updates:
        outs[f"update {p.label()}"] = v
    clusters = {f"{k.name} ({k.kind})": list(k.nodes) for k in fn.lowered.kernels if len(k.nodes) > 1}
    return outs, clusters


def graph_to_dot(
    outputs: Outputs,
    title: str | None = None,
    show_frames: bool = False,
    max_nodes: int | None = DEFAULT_MAX_NODES,
    collapse: bool | str = False,
    scopes: bool = False,
    clusters: Mapping[str, Sequence[Tensor]] | None = None,
    grad_cluster: bool = True,
    legend: bool = True,
    rankdir: str = "TB",
    inline_scalars: bool = True,
    max_props: int = 48,
) -> str:
    """The graphviz DOT source of the graph that computes ``outputs`` (see :func:`render` for the options)."""
    import graphviz

    if _is_compiled_function(outputs):
        outputs, plan_clusters = _plan_view(outputs)
        clusters = clusters if clusters is not None else plan_clusters
        grad_cluster = False
    pairs = _as_outputs(outputs)
    order = toposort([t for _, t in pairs])
    out_marks: dict[int, list[str]] = {}
    for i, (label, t) in enumerate(pairs):
        out_marks.setdefault(t.id, []).append(f"out[{i}]" if label is None else f"out[{label}]")

    # -- collapsing: which nodes are drawn as one group node -------------------------------------
    if collapse in (False, None, "none"):
        collapsed: dict[int, str] = {}
    elif collapse is True or collapse == "scope":
        collapsed = _scope_groups(order)
    elif collapse == "frame":
        collapsed = _frame_groups(order)
    else:
        raise ValueError(f"render: collapse must be False, True/'scope' or 'frame', got {collapse!r}")
    for t in order:  # outputs stay visible
        if t.id in out_marks:
            collapsed.pop(t.id, None)
    group_members: dict[str, list[Tensor]] = {}
    for t in order:
        if t.id in collapsed:
            group_members.setdefault(collapsed[t.id], []).append(t)
    # unnamed scalar constants are written into their consumers' labels, e.g. ``mul (\u00b7, 0.5)``
    inlined = {
        t.id
        for t in order
        if inline_scalars
        and _kind(t) == "constant"
        and t.name is None
        and t.id not in collapsed
        and t.id not in out_marks
        and getattr(t, "value", np.zeros(2)).size == 1
    }
    n_drawn = sum(t.id not in collapsed and t.id not in inlined for t in order) + len(group_members)
    if max_nodes is not None and n_drawn > max_nodes:
        hint = (
            (
                "collapse=True (groups nodes by name scope: name tensors like 'layer1/h') or collapse='frame' "
                "(groups nodes by the source line that created them)"
            )
            if not collapsed
            else "collapse='frame' or 'scope', or name more tensors with scopes"
        )
        raise ValueError(
            f"render: the graph has {n_drawn} nodes to draw, more than max_nodes={max_nodes} (graphviz's dot "
            f"gets very slow beyond ~1000 nodes). Try {hint}, draw fewer outputs, use print_graph(...) for the "
            f"text form, or pass a larger max_nodes= if you are willing to wait."
        )

    group_ids = {g: f"g{i}" for i, g in enumerate(group_members)}

    def drawn_id(t: Tensor) -> str:
        g = collapsed.get(t.id)
        return group_ids[g] if g is not None else f"n{t.id}"

    # -- cluster membership for the nodes drawn individually -------------------------------------
    member_of: dict[str, str] = {}  # drawn id -> cluster title
    in_graph = {t.id for t in order}
    for cname, tensors in (clusters or {}).items():
        for t in tensors:
            if isinstance(t, Tensor) and t.id in in_graph:
                member_of.setdefault(drawn_id(t), str(cname))
    if scopes:
        for tid, scope in _scope_groups(order).items():
            if tid not in collapsed:
                member_of.setdefault(f"n{tid}", f"scope {scope}")
    grad_title = "gradient (backward)"
    if grad_cluster:
        for t in order:
            if t.role == "backward" and t.id not in collapsed:
                member_of.setdefault(f"n{t.id}", grad_title)
        for g, members in group_members.items():
            if all(m.role == "backward" for m in members):
                member_of.setdefault(group_ids[g], grad_title)

    # -- build the graph ---------------------------------------------------------------------------
    dot = graphviz.Digraph("symdl")
    dot.attr(rankdir=rankdir, fontname=FONT, newrank="true", nodesep="0.25", ranksep="0.35")
    if title:
        dot.attr(label=f"<<b>{_esc(title)}</b>>", labelloc="t", fontsize="16")
    dot.attr("node", fontname=FONT, fontsize="11", margin="0.1,0.04", height="0.3")
    dot.attr("edge", fontname=FONT, fontsize="8", arrowsize="0.6", color="#555555")

    statements: dict[str | None, list[tuple[str, dict[str, str]]]] = {}
    used_styles: set[str] = set()
    for t in order:
        if t.id in collapsed or t.id in inlined:
            continue
        key = _style_key(t)
        used_styles.add(key)
        attrs = dict(STYLES[key])
        if t.role == "backward" and key != "grad":  # e.g. the seed constant of a gradient
            attrs["color"] = GRAD_BORDER
        if t.id in out_marks:
            attrs.update(peripheries="2", penwidth="1.6")
        attrs["label"] = _node_label(t, out_marks.get(t.id, []), show_frames, max_props, inlined)
        attrs["tooltip"] = f"{t.label()} {t.type}" + (f"  {t.frame}" if t.frame is not None else "")
        did = f"n{t.id}"
        statements.setdefault(member_of.get(did), []).append((did, attrs))
    for g, members in group_members.items():
        used_styles.add("group")
        attrs = dict(STYLES["group"])
        if all(m.role == "backward" for m in members):
            attrs.update(fillcolor=STYLES["grad"]["fillcolor"], color=GRAD_BORDER)
        attrs["label"] = _group_label(g, members)
        did = group_ids[g]
        statements.setdefault(member_of.get(did), []).append((did, attrs))

    for node_name, attrs in statements.pop(None, []):
        dot.node(node_name, **attrs)
    for i, (cname, nodes) in enumerate(statements.items()):
        is_grad = cname == grad_title
        with dot.subgraph(name=f"cluster_{i}") as sub:
            sub.attr(
                label=f"<<b>{_esc(cname)}</b>>",
                labeljust="l",
                fontsize="12",
                style="rounded,dashed",
                color=GRAD_BORDER if is_grad else "#6a4f9a",
                fontcolor=GRAD_BORDER if is_grad else "#6a4f9a",
            )
            for node_name, attrs in nodes:
                sub.node(node_name, **attrs)

    # -- edges ------------------------------------------------------------------------------------
    seen_group_edges: Counter[tuple[str, str]] = Counter()
    backward_dst: set[str] = set()
    for t in order:
        dst = drawn_id(t)
        n_in = len(t.inputs)
        for k, i in enumerate(t.inputs):
            src = drawn_id(i)
            if src == dst or i.id in inlined:
                continue
            if i.id in collapsed or t.id in collapsed:
                seen_group_edges[(src, dst)] += 1
                if t.role == "backward":
                    backward_dst.add(dst)
                continue
            attrs: dict[str, str] = {}
            if n_in > 1:
                attrs["headlabel"] = str(k)
                attrs["labelfontcolor"] = "#777777"
            if t.role == "backward":
                attrs["color"] = GRAD_BORDER
            dot.edge(src, dst, **attrs)
    for (src, dst), n in seen_group_edges.items():
        attrs = {"label": f" x{n}"} if n > 1 else {}
        if dst in backward_dst:
            attrs["color"] = GRAD_BORDER
        dot.edge(src, dst, **attrs, penwidth="1.3")

    # -- legend: one HTML table node, so it does not disturb the layout -------------------------------
    if legend and used_styles:
        rows = []
        for k, text in LEGEND.items():
            if k in used_styles:
                st = STYLES[k]
                rows.append(
                    f'<tr><td bgcolor="{st["fillcolor"]}" color="{st["color"]}" border="1" '
                    f'style="rounded">{_esc(text)} ({st["shape"]})</td></tr>'
                )
        if out_marks:
            rows.append('<tr><td border="2" style="rounded">output: double border, out[i]</td></tr>')
        dot.node(
            "legend",
            label='<<table border="0" cellspacing="3" cellpadding="3">'
            '<tr><td><font color="#666666">legend</font></td></tr>' + "".join(rows) + "</table>>",
            shape="plaintext",
            fontsize="9",
        )
    return dot.source


# ----------------------------------------------------------------------------------------------------
# render
# ----------------------------------------------------------------------------------------------------


def _which_dot() -> str | None:
    """Path of graphviz's ``dot`` program, or ``None`` (tests monkeypatch ``shutil.which``)."""
    return shutil.which("dot")


def _resolve_path(path: str | os.PathLike[str], fmt: str | None) -> tuple[Path, str]:
    p = Path(path)
    suffix = p.suffix[1:].lower()
    if fmt is None:
        fmt = suffix or "svg"
    fmt = fmt.lower().lstrip(".")
    if suffix != fmt and not (fmt in DOT_SUFFIXES and suffix in DOT_SUFFIXES):
        known = suffix in {"svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps", *DOT_SUFFIXES}
        p = p.with_suffix(f".{fmt}") if known else p.with_name(f"{p.name}.{fmt}")
    return p, fmt


def render(
    outputs: Outputs,
    path: str | os.PathLike[str],
    format: str | None = None,  # noqa: A002 - graphviz's name
    title: str | None = None,
    show_frames: bool = False,
    max_nodes: int | None = DEFAULT_MAX_NODES,
    collapse: bool | str = False,
    scopes: bool = False,
    clusters: Mapping[str, Sequence[Tensor]] | None = None,
    grad_cluster: bool = True,
    legend: bool = True,
    rankdir: str = "TB",
    inline_scalars: bool = True,
    timeout: float | None = 120.0,
) -> str:
    """Draw the graph that computes ``outputs`` with graphviz and return the path written.

    ``outputs``: a Tensor, a sequence of Tensors, a dict ``{label: Tensor}``, or a function compiled for a
    compiled target (``symdl.compile(..., target="cpu")``): its plan is drawn, each fused kernel as a cluster. The
    format comes from ``format`` or the suffix of ``path`` (``.svg``, ``.png``, ``.pdf``, ``.dot``; default svg);
    a missing or different suffix is fixed up. Op nodes show the op, its props and output type (``?`` for dims
    known at run time only) and ``%id`` (as in :func:`print_graph`); placeholders are green ellipses, trainable
    parameters yellow cylinders, buffers grey dashed cylinders, constants notes; gradient nodes are orange and,
    with ``grad_cluster``, grouped in a "gradient" cluster; outputs have a double border.

    - ``title``: a caption. ``show_frames``: add the user ``file:line`` that created each node.
    - ``max_nodes``: refuse (``ValueError``) to draw more nodes than this; dot is very slow beyond ~1000.
    - ``collapse``: ``True``/``"scope"`` draws each name scope (the part of tensor names before the last
      ``/`` or ``.``, e.g. ``layer1`` for ``layer1.W``) as one node; ``"frame"`` draws the nodes created by
      each source line as one node (forward and gradient apart). ``scopes=True`` draws name scopes as
      clusters instead, keeping every node.
    - ``clusters``: ``{title: [tensors]}`` drawn as labelled clusters (e.g. fused kernels).
    - ``legend``: add a legend of the node styles used. ``rankdir``: ``"TB"`` or ``"LR"``.
    - ``inline_scalars``: write unnamed one-element constants into their consumers' labels (``mul (\u00b7,
      0.5)``) instead of drawing them as nodes. ``timeout``: seconds to give ``dot``.

    Without graphviz's ``dot`` program, the DOT source is written next to ``path`` (suffix ``.dot``), a
    :class:`GraphvizMissingWarning` says how to install graphviz, and that path is returned.
    """
    target, fmt = _resolve_path(path, format)
    source = graph_to_dot(
        outputs,
        title=title,
        show_frames=show_frames,
        max_nodes=max_nodes,
        collapse=collapse,
        scopes=scopes,
        clusters=clusters,
        grad_cluster=grad_cluster,
        legend=legend,
        rankdir=rankdir,
        inline_scalars=inline_scalars,
    )
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    if fmt in DOT_SUFFIXES:
        target.write_text(source, encoding="utf-8")
        return str(target)
    dot_program = _which_dot()
    if dot_program is None:
        dot_path = target.with_suffix(".dot")
        dot_path.write_text(source, encoding="utf-8")
        warnings.warn(
            f"render: graphviz's `dot` program was not found, so the graph source was written to {dot_path} "
            f"instead of {target}; {INSTALL_HINT}",
            GraphvizMissingWarning,
            stacklevel=2,
        )
        return str(dot_path)
    try:
        proc = subprocess.run(
            [dot_program, f"-T{fmt}", "-o", str(target)],
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(
            f"render: dot took more than {timeout}s on {target}; draw fewer nodes (collapse=True, fewer "
            f"outputs) or pass timeout=None"
        ) from e
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"render: dot -T{fmt} failed (exit {proc.returncode}): {msg}")
    return str(target)


def to_networkx(outputs: Outputs) -> Any:
    """The graph that computes ``outputs`` as a ``networkx.DiGraph`` for analysis (paths, centrality, custom
    layouts): one node per tensor id with attributes ``op``, ``name``, ``shape``, ``dtype``, ``role`` and
    ``frame``; an edge from each input to its consumer, with the input position as ``index``."""
    import networkx as nx

    graph = nx.DiGraph()
    pairs = _as_outputs(outputs)
    for n in toposort([t for _, t in pairs]):
        graph.add_node(
            n.id,
            op=n.op.name,
            name=n.name,
            shape=tuple(n.shape),
            dtype=str(n.dtype),
            role=n.role,
            frame=str(n.frame) if n.frame is not None else None,
        )
        for k, i in enumerate(n.inputs):
            graph.add_edge(i.id, n.id, index=k)
    for k, (_, t) in enumerate(pairs):
        graph.nodes[t.id].setdefault("outputs", []).append(k)
    return graph
