"""Look inside search trees: a rich rendering that fits 80 columns, and json/graphml/dot/html exports.

`render_tree` draws one tree: each line is an elided step with its statistics right-aligned
(N visits, Q mean value, V value-model estimate, P prior, ✓/✗ verifier verdict of terminals, ✗ also on
a step the env's step check rejected when the search ran with `step_check`). The
answer path is marked `▶` (and bold); steps of extracted preference pairs are marked `+` (chosen) and
`-` (rejected); children with fewer than `min_visits` visits fold into one "… 3 more (N<2)" line and
nodes below `depth` into a "… 12 nodes deeper" line, so a large tree stays readable.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx
from rich.console import Console, Group
from rich.text import Text
from rich.tree import Tree as RichTree

from envs.base import Environment
from envs.errors import UserError
from envs.io import atomic_write_text, iter_jsonl
from envs.types import SCHEMA_VERSION
from search.tree import Node, Tree
from selfimprove.tree_info import PairRef, answer_ids, marks_of, pair_overlay, verdict_mark

WIDTH = 80
GUIDE = 4  # columns rich.tree uses per level of indentation
STATS_WIDTH = len("N=9999 Q=+0.00 V=+0.00 P=0.00 ✓ +")


def elide(text: str, width: int) -> str:
    """One line of at most `width` columns: newlines shown as ⏎, the tail replaced by … when too long."""
    text = text.replace("\n", "⏎").replace("\t", " ")
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _num(x: float | None, fmt: str, width: int) -> str:
    return (" " * (width - 1) + "-") if x is None else format(x, fmt).rjust(width)


def node_stats(node: Node, mark: str = "") -> str:
    """The fixed-width statistics column of one node."""
    return (f"N={node.visits:<4d} Q={_num(node.q if node.visits else None, '+.2f', 5)} "
            f"V={_num(node.value, '+.2f', 5)} P={node.prior:4.2f} {verdict_mark(node)} {mark or ' '}")


def pair_marks(records: Iterable[dict[str, Any]], tree_id: str, sources: Iterable[str] | None = None) -> dict[int, str]:
    """Node id → "+" (chosen) / "-" (rejected) / "±" (both, in different pairs) for one tree's records.

    Pairs name `chosen_node` / `rejected_node`; ranked lists name `node_ids` best first (the first
    counts as chosen, the last as rejected). Provenance fields may also sit under a `provenance` key.
    A node id that is not an integer is a UserError naming the record's source ("file:line" from
    `sources`, else "pairs record K").
    """
    return marks_of(pair_overlay(list(records), tree_id, sources=None if sources is None else list(sources)))


def pair_marks_file(path: str | os.PathLike, tree_id: str) -> dict[int, str]:
    """`pair_marks` of a pairs JSONL file, errors naming file:line."""
    rows = list(iter_jsonl(path))
    return pair_marks([obj for _, obj in rows], tree_id, sources=[f"{path}:{n}" for n, _ in rows])


def render_tree(tree: Tree, *, depth: int | None = None, min_visits: int | None = None,
                marks: dict[int, str] | None = None, width: int = WIDTH) -> Group:
    """A rich renderable of `tree` (header + tree) that fits `width` columns.

    min_visits defaults to 1 for trees whose root was visited (MCTS) and 0 otherwise (beam, best-of-N).
    """
    marks = marks or {}
    if min_visits is None:
        min_visits = 1 if tree.root.visits > 0 else 0
    best = answer_ids(tree)
    stats = tree.subtree_stats(0)
    chosen = tree.node(tree.answer_node) if tree.answer_node is not None else None
    verdict = "" if chosen is None or not chosen.terminal else (" ✓" if chosen.correct else " ✗")
    header = Text(no_wrap=True, overflow="ellipsis")
    header.append(elide(f"tree {tree.id}  problem {tree.problem.id}", width) + "\n", style="bold")
    header.append(elide("prompt: " + tree.prompt.strip(), width) + "\n")
    header.append(elide(f"answer: {tree.answer}{verdict} (reference {tree.problem.answer})  "
                        f"nodes {stats['nodes']}  terminals {stats['terminals']}  "
                        f"correct {stats['correct']}", width))

    def label(node: Node) -> Text:
        indent = GUIDE * node.depth
        on_best = node.id in best
        text_w = width - indent - STATS_WIDTH - 3
        step = "(root)" if node.parent is None else node.step
        t = Text(no_wrap=True, overflow="crop")
        t.append("▶ " if on_best else "  ", style="bold" if on_best else "")
        t.append(elide(step, text_w).ljust(max(0, text_w)) + " ", style="bold" if on_best else "")
        t.append(node_stats(node, marks.get(node.id, "")), style="bold" if on_best else "dim")
        return t

    def add(branch: RichTree, node: Node) -> None:
        kids = sorted(tree.children(node.id), key=lambda c: (-c.visits, -c.q))
        if depth is not None and node.depth >= depth:
            below = len(tree.subtree(node.id)) - 1
            if below:
                branch.add(Text(elide(f"… {below} nodes deeper", width - GUIDE * (node.depth + 1)),
                                style="dim"))
            return
        shown = [c for c in kids if c.visits >= min_visits or c.id in best or c.id in marks]
        for child in shown:
            add(branch.add(label(child)), child)
        hidden = len(kids) - len(shown)
        if hidden:
            branch.add(Text(elide(f"… {hidden} more (N<{min_visits})", width - GUIDE * (node.depth + 1)),
                            style="dim"))

    root = RichTree(label(tree.root), guide_style="dim")
    add(root, tree.root)
    return Group(header, root)


def render_text(tree: Tree, *, width: int = WIDTH, **kw: Any) -> str:
    """Plain text of `render_tree` (no colour), as the snapshot tests store it."""
    console = Console(width=width, record=True, no_color=True, color_system=None, file=io.StringIO())
    console.print(render_tree(tree, width=width, **kw))
    return console.export_text()


def select_tree(trees: list[Tree], source: str, index: int | None = None, problem: str | None = None) -> Tree:
    """The tree at `index` (default 0) or the one whose problem id is `problem`."""
    if not trees:
        raise UserError(f"{source}: no trees in the file")
    if problem is not None:
        for t in trees:
            if t.problem.id == problem:
                return t
        raise UserError(f"{source}: no tree for problem '{problem}' ({len(trees)} trees)")
    index = 0 if index is None else index
    if not -len(trees) <= index < len(trees):
        raise UserError(f"{source}: --index {index} is out of range ({len(trees)} trees)")
    return trees[index]


# --- exports --------------------------------------------------------------------------------------
def _dot_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(tree: Tree) -> str:
    """Graphviz DOT text: one box per node (step, N, Q, verdict); the answer path drawn bold."""
    best = answer_ids(tree)
    lines = [f"digraph {_dot_quote('tree ' + tree.id)} {{", f"  // {SCHEMA_VERSION} tree export",
             "  node [shape=box, fontname=monospace];"]
    for node in tree:
        step = "(root)" if node.parent is None else elide(node.step, 40)
        verdict = ("\n✓" if node.correct else "\n✗") if node.terminal else ""
        style = ", style=bold" if node.id in best else ""
        label = _dot_quote(f"{step}\nN={node.visits} Q={node.q:+.2f}{verdict}")
        lines.append(f"  n{node.id} [label={label}{style}];")
    lines += [f"  n{a} -> n{b};" for a, b in tree.edges()]
    lines.append("}")
    return "\n".join(lines) + "\n"


def export_tree(tree: Tree, fmt: str, out: str | os.PathLike | None = None, *,
                overlay: dict[int, list[PairRef]] | None = None, env: Environment | None = None) -> str:
    """The tree as json | graphml | dot | html text; written atomically to `out` when given.

    html only: `overlay` marks the nodes preference records compare, `env` judges steps the search did
    not check."""
    if fmt == "html":
        from selfimprove.tree_html import to_html

        text = to_html(tree, overlay, env)
    elif fmt == "json":
        text = json.dumps(tree.to_json(), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "graphml":
        g = tree.to_networkx(missing="")  # GraphML has no null
        g.graph["schema"] = SCHEMA_VERSION  # marks the file as ours (envs.io.written_by_us)
        text = "\n".join(nx.generate_graphml(g)) + "\n"
    elif fmt == "dot":
        text = to_dot(tree)
    else:
        raise UserError(f"--format: unknown format '{fmt}' (json, graphml, dot, html)")
    if out is not None:
        atomic_write_text(Path(out), text)
    return text
