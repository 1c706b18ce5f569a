"""The compiler's graph passes, as one explicit, ordered list of ``(name, pass)``.

Each pass takes the roots of a graph (outputs and update values) and returns a node map ``{old id: new
node}`` built with :func:`compiler.rewrite.rewrite`, logging every replacement with its reason. Every pass
can be switched off by name: ``compile(..., passes={"simplify": False})``.

Common-subexpression elimination and dead-code elimination are structural rather than passes: nodes are
hash-consed (identical op + identical inputs is one node, also after every rewrite), and a Program is built
by walking back from its outputs and update values, so dead nodes never enter it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from compiler.passes.constant_fold import constant_fold
from compiler.passes.fold_bn import fold_bn
from compiler.passes.simplify import simplify
from compiler.rewrite import RewriteLog
from symdl.errors import GraphError
from symdl.graph import Tensor

Pass = Callable[[Sequence[Tensor], RewriteLog], dict[int, Tensor]]

PASSES: list[tuple[str, Pass]] = [
    ("simplify", simplify),
    ("fold_bn", fold_bn),
    ("constant_fold", constant_fold),
]
PASS_NAMES = tuple(name for name, _ in PASSES)
#: switches of the fusion step (compiled targets), accepted in ``compile(passes=...)`` beside the graph passes
FUSION_SWITCHES = ("fuse_reductions", "fuse_pooling")


def enabled_passes(switches: Mapping[str, bool] | None) -> list[tuple[str, Pass]]:
    switches = dict(switches or {})
    unknown = set(switches) - set(PASS_NAMES) - set(FUSION_SWITCHES) - {"resolve_modes"}
    if unknown:
        raise GraphError(
            f"compile: unknown pass name(s) {sorted(unknown)}; passes are {', '.join(PASS_NAMES + FUSION_SWITCHES)}"
        )
    return [(name, p) for name, p in PASSES if switches.get(name, True)]


def run_passes(roots: Sequence[Tensor], switches: Mapping[str, bool] | None, log: RewriteLog) -> dict[int, Tensor]:
    """Run the enabled passes in order; returns the composed map from the original roots' ids to new nodes."""
    current = {r.id: r for r in roots}
    for _name, p in enabled_passes(switches):
        memo = p(list({n.id: n for n in current.values()}.values()), log)
        current = {k: memo[v.id] for k, v in current.items()}
    return current
