"""Text form (print_graph / format_graph) and graphviz drawings (render / graph_to_dot)."""

import io
import re
import shutil
import sys
import warnings

import numpy as np
import pytest

import symdl
from symdl.render import format_graph, graph_to_dot, print_graph, render

render_mod = sys.modules["symdl.render"]  # symdl.render is the function

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="graphviz's dot program is not installed")


def mlp():
    x = symdl.placeholder((None, 4), name="x")
    W = symdl.parameter(np.zeros((4, 3), "float32"), name="W")
    loss = symdl.tanh(x @ W).mean()
    loss.name = "loss"
    (gW,) = symdl.grad(loss, [W])
    return x, W, loss, gW


def line_of(text, t):
    """The text-form line that defines tensor ``t``."""
    lines = [ln for ln in text.splitlines() if re.match(rf"%{t.id}\s", ln)]
    assert len(lines) == 1, text
    return lines[0]


# ----------------------------------------------------------------------------------------------------
# Text form
# ----------------------------------------------------------------------------------------------------


def test_text_form_shows_ops_types_names_and_grad_marks():
    x, W, loss, gW = mlp()
    text = format_graph([loss, gW])
    for op in ("matmul", "tanh", "sum", "div", "transpose"):
        assert op in text
    assert line_of(text, x).startswith(f"%{x.id}")
    assert "x = placeholder : float32[?, 4]" in line_of(text, x)
    assert "W = parameter : float32[4, 3]" in line_of(text, W)
    assert gW.name == "dloss/dW"
    gline = line_of(text, gW)
    assert "dloss/dW = matmul(" in gline and ": float32[4, 3]" in gline
    assert "[grad]" in gline and "-> out[1]" in gline
    assert "[grad]" not in line_of(text, loss) and "-> out[0]" in line_of(text, loss)
    matmul = x @ W  # hash-consed: the very node of the graph
    assert f"matmul(%{x.id}:x, %{W.id}:W)" in line_of(text, matmul)
    assert "axes=(0, 1)" in text  # props of the mean's sum
    assert "keepdims=False" not in text  # default-valued props are left out
    assert text.splitlines()[-2] == f"outputs: [0] %{loss.id} loss, [1] %{gW.id} dloss/dW"


def test_shared_subexpression_printed_once_and_referenced_by_id():
    x = symdl.placeholder((2, 3), name="x")
    a = symdl.exp(x)
    y = (a * a + a).sum()
    text = format_graph(y)
    assert sum(" = exp(" in ln for ln in text.splitlines()) == 1
    assert f"mul(%{a.id}, %{a.id})" in text
    assert len(re.findall(rf"%{x.id}\b", text)) == 2  # its own line and exp's operand
    body = [ln for ln in text.splitlines() if ln.startswith("%")]
    assert len(body) == len({ln.split()[0] for ln in body})  # every node once


def test_leaf_kinds_and_small_constants():
    x = symdl.placeholder((None, 2), dtype="int32", name="idx")
    p = symdl.parameter(np.ones(2, "float32"), name="bn.gamma")
    b = symdl.parameter(np.zeros(2, "float32"), name="bn.running_mean", trainable=False)
    c = symdl.constant(np.array([1.5, 2.0], "float32"))
    big = symdl.constant(np.zeros((10, 10), "float32"), name="table")
    y = x.astype("float32") * p + b + c + big[0, :2]
    text = format_graph(y)
    assert "idx = placeholder : int32[?, 2]" in text
    assert "bn.gamma = parameter : float32[2]" in text
    assert "bn.running_mean = buffer : float32[2]" in text
    assert "constant [1.5, 2. ]" in line_of(text, c)
    assert "table = constant : float32[10, 10]" in text  # large constants: no value


def test_scalar_constants_are_inlined_in_operand_references():
    x = symdl.placeholder((3,), name="x")
    text = format_graph(x * 0.5)
    assert re.search(r"mul\(%\d+:x, %\d+:0\.5\)", text)


def test_frames_and_output_labels():
    x, W, loss, gW = mlp()
    text = format_graph({"loss": loss, "grad": gW}, show_frames=True)
    assert "# test_render.py:" in line_of(text, gW)  # backward nodes carry the forward op's line
    assert "-> out[grad]" in line_of(text, gW)
    assert "[loss] %" in text.splitlines()[-2]


def test_print_graph_writes_to_file(capsys):
    _, _, loss, gW = mlp()
    buf = io.StringIO()
    assert print_graph([loss, gW], file=buf) is None
    assert buf.getvalue().strip() == format_graph([loss, gW])
    print_graph(loss)
    assert "tanh" in capsys.readouterr().out


def test_deep_chain_formats_without_recursion():
    x = symdl.placeholder((None, 8), name="x")
    y = x
    for _ in range(5000):
        y = symdl.tanh(y)
    text = format_graph(y)
    assert len(text.splitlines()) == 5001 + 2
    with pytest.raises(ValueError, match="max_nodes"):
        graph_to_dot(y)
    src = graph_to_dot(y, collapse="frame")  # one group node for the loop line
    assert src.count("box3d") >= 1


def test_bad_outputs():
    with pytest.raises(TypeError):
        format_graph([np.zeros(3)])


# ----------------------------------------------------------------------------------------------------
# DOT source
# ----------------------------------------------------------------------------------------------------


def node_stmt(src, t):
    m = re.search(rf"^\s*n{t.id} \[(.*)\]$", src, re.M)
    assert m, f"node n{t.id} not in source"
    return m.group(1)


def test_dot_source_styles_leaves_ops_and_gradients():
    x = symdl.placeholder((None, 3), name="x")
    W = symdl.parameter(np.ones((3, 3), "float32"), name="W")
    buf = symdl.parameter(np.zeros(3, "float32"), name="running", trainable=False)
    c = symdl.constant(np.arange(3, dtype="float32"))
    loss = ((x @ W + buf) * c).sum()
    loss.name = "loss"
    (gW,) = symdl.grad(loss, [W])
    src = graph_to_dot([loss, gW], title="my graph")
    styles = render_mod.STYLES
    assert "shape=ellipse" in node_stmt(src, x)
    assert "shape=cylinder" in node_stmt(src, W) and styles["parameter"]["fillcolor"] in node_stmt(src, W)
    assert "dashed" in node_stmt(src, buf) and styles["buffer"]["fillcolor"] in node_stmt(src, buf)
    assert "shape=note" in node_stmt(src, c)
    fwd, bwd = node_stmt(src, x @ W), node_stmt(src, gW)
    assert styles["op"]["fillcolor"] in fwd and styles["grad"]["fillcolor"] in bwd
    assert styles["op"]["fillcolor"] != styles["grad"]["fillcolor"]
    assert "peripheries=2" in bwd and "out[1]" in bwd and "dloss/dW" in bwd
    assert "float32[?, 3]" in fwd and "matmul" in fwd
    assert "gradient (backward)" in src and "legend" in src and "my graph" in src
    assert len({styles[k]["fillcolor"] for k in ("placeholder", "parameter", "buffer", "constant")}) == 4


def test_dot_scalar_constants_inline_or_drawn():
    x = symdl.placeholder((3,), name="x")
    y = x * 0.25
    src = graph_to_dot(y)
    assert "0.25" in node_stmt(src, y) and "shape=note" not in src
    src = graph_to_dot(y, inline_scalars=False)
    assert "shape=note" in src and "constant 0.25" in src


def test_dot_collapse_by_scope_and_clusters():
    x = symdl.placeholder((None, 4), name="x")
    W1 = symdl.parameter(np.zeros((4, 4), "float32"), name="l1.W")
    b1 = symdl.parameter(np.zeros(4, "float32"), name="l1.b")
    h = symdl.relu(x @ W1 + b1)
    h.name = "l1/out"
    W2 = symdl.parameter(np.zeros((4, 2), "float32"), name="l2.W")
    out = symdl.sigmoid(h @ W2)
    src = graph_to_dot(out, collapse=True)
    assert "<b>l1</b>" in src and "5 nodes" in src  # l1.W, l1.b, matmul, add, relu
    assert f"n{h.id} " not in src and f"n{W1.id} " not in src
    src = graph_to_dot(out, scopes=True)
    assert "scope l1" in src and f"n{h.id} " in src
    src = graph_to_dot(out, clusters={"fused kernel 0": [h, out]})
    assert re.search(r"subgraph cluster_\d+ \{[^}]*fused kernel 0", src)
    with pytest.raises(ValueError, match="collapse"):
        graph_to_dot(out, collapse="bogus")


def test_max_nodes_guard():
    x = symdl.placeholder((2,), name="x")
    y = x
    for _ in range(30):
        y = symdl.exp(y)
    with pytest.raises(ValueError, match=r"max_nodes=10.*collapse="):
        render(y, "/nonexistent/never.svg", max_nodes=10)
    assert graph_to_dot(y, max_nodes=None)


# ----------------------------------------------------------------------------------------------------
# render
# ----------------------------------------------------------------------------------------------------


def test_render_dot_format_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    _, _, loss, gW = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = render([loss, gW], tmp_path / "g.dot")
    assert written == str(tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text().startswith("digraph")


def test_render_without_dot_writes_source_and_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    _, _, loss, gW = mlp()
    with pytest.warns(symdl.GraphvizMissingWarning, match="apt-get install graphviz") as rec:
        written = render([loss, gW], tmp_path / "graph.svg")
    msg = str(rec[0].message)
    assert "brew install graphviz" in msg and "conda install graphviz" in msg and "graph.dot" in msg
    assert written == str(tmp_path / "graph.dot")
    assert not (tmp_path / "graph.svg").exists()
    assert "dloss/dW" in (tmp_path / "graph.dot").read_text()


@needs_dot
def test_render_svg(tmp_path):
    _, _, loss, gW = mlp()
    written = render([loss, gW], tmp_path / "graph.svg", show_frames=True)
    assert written == str(tmp_path / "graph.svg")
    svg = (tmp_path / "graph.svg").read_text()
    assert svg.lstrip().startswith(("<?xml", "<svg"))
    for text in ("matmul", "tanh", "dloss/dW", "gradient (backward)", render_mod.STYLES["grad"]["fillcolor"]):
        assert text in svg


@needs_dot
def test_render_png_and_format_argument(tmp_path):
    _, _, loss, gW = mlp()
    written = render([loss, gW], tmp_path / "graph.png")
    assert (tmp_path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written.endswith("graph.png")
    written = render(loss, tmp_path / "noext", format="png")  # the suffix is added
    assert written == str(tmp_path / "noext.png")
    assert (tmp_path / "noext.png").read_bytes()[:4] == b"\x89PNG"
    written = render(loss, tmp_path / "sub" / "default")  # svg by default, folders made
    assert written.endswith("default.svg")


def test_to_networkx_mirrors_the_graph():
    import networkx as nx

    x = symdl.placeholder((None, 4), name="x")
    w = symdl.parameter(np.ones((4, 3), np.float32), name="w")
    loss = symdl.tanh(x @ w).mean()
    (gw,) = symdl.grad(loss, [w])
    g = symdl.to_networkx([loss, gw])
    assert nx.is_directed_acyclic_graph(g)
    assert g.nodes[x.id]["op"] == "placeholder" and g.nodes[w.id]["shape"] == (4, 3)
    assert g.nodes[gw.id]["role"] == "backward" and g.nodes[gw.id]["outputs"] == [1]
    assert nx.has_path(g, w.id, loss.id) and nx.has_path(g, x.id, gw.id)
    assert g.number_of_nodes() == len(symdl.graph.toposort([loss, gw]))
