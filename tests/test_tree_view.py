"""`tree show` rendering (snapshots on a hand-built tree) and the json/graphml/dot exports.

Regenerate the stored snapshots with `SELFIMPROVE_UPDATE_SNAPSHOTS=1 pytest tests/test_tree_view.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
from rich.cells import cell_len

from envs.types import Problem
from search.tree import Tree, write_trees
from selfimprove.tree_view import export_tree, pair_marks, render_text, select_tree

SNAPSHOTS = Path(__file__).parent / "snapshots"
CLI = str(Path(sys.executable).parent / "selfimprove")
UPDATE = os.environ.get("SELFIMPROVE_UPDATE_SNAPSHOTS") == "1"


def hand_tree() -> Tree:
    """An MCTS-like tree for 3+4*2-5 = 6: a correct path, a wrong branch, low-visit and unvisited leaves."""
    t = Tree(Problem(id="arith-7", prompt="3+4*2-5", answer="6"), tree_id="t7",
             prompt="Q: 3+4*2-5\n", checkpoint="base")
    r = t.root
    r.visits, r.value_sum, r.value = 10, 4.0, 0.1
    a = t.add_child(0, "4*2=8", visits=7, value_sum=5.6, value=0.4, prior=0.6)
    b = t.add_child(0, "4*2=9", visits=2, value_sum=-1.0, value=-0.2, prior=0.3)
    t.add_child(0, "3+4=7", visits=1, value_sum=-1.0, value=-0.5, prior=0.1)
    a1 = t.add_child(a.id, "3+8=11", visits=6, value_sum=5.0, value=0.6, prior=0.8)
    t.add_child(a.id, "3+8=12", visits=1, value_sum=-1.0, value=0.0, prior=0.2)
    a2 = t.add_child(a1.id, "11-5=6", visits=5, value_sum=5.0, value=0.9, prior=0.9)
    t.add_child(a1.id, "11-5=7 and a very long step text that must be elided to fit eighty columns",
                visits=0, prior=0.1)
    a3 = t.add_child(a2.id, "A: 6", visits=4, value_sum=4.0, value=None, prior=1.0, terminal=True,
                     score=1.0, answer="6")
    b1 = t.add_child(b.id, "3+9=12", visits=1, value_sum=-1.0, value=-0.3, prior=1.0)
    b2 = t.add_child(b1.id, "12-5=7", visits=1, value_sum=-1.0, value=-0.4, prior=1.0)
    t.add_child(b2.id, "A: 7", visits=1, value_sum=-1.0, prior=1.0, terminal=True, score=0.0, answer="7")
    t.answer, t.answer_node = "6", a3.id
    return t


PAIRS = [
    {"prompt": "Q: 3+4*2-5\n", "chosen": "4*2=8", "rejected": "4*2=9",
     "kind": "pair", "tree_id": "t7", "chosen_node": 1, "rejected_node": 2, "iteration": 0},
    {"prompt": "Q: 3+4*2-5\n4*2=8\n", "chosen": "3+8=11", "rejected": "3+8=12",
     "kind": "pair", "tree_id": "t7", "chosen_node": 4, "rejected_node": 5, "iteration": 0},
    {"prompt": "x", "chosen": "y", "rejected": "z",
     "kind": "pair", "tree_id": "other", "chosen_node": 3, "rejected_node": 1},
]


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"snapshot {path} is missing; run with SELFIMPROVE_UPDATE_SNAPSHOTS=1 to create it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def assert_fits(text: str, width: int = 80) -> None:
    for line in text.splitlines():
        assert cell_len(line) <= width, line


def test_show_default_snapshot():
    text = render_text(hand_tree())
    assert_fits(text)
    check_snapshot("tree_show_default.txt", text)
    # best path marked, long step elided, the unvisited leaf folded into a count
    assert "▶ A: 6" in text and "…" in text and "1 more (N<1)" in text
    assert "11-5=7 and a very" not in text


def test_show_min_visits_depth_and_pairs_snapshot():
    t = hand_tree()
    text = render_text(t, min_visits=2, depth=2, marks=pair_marks(PAIRS, t.id))
    assert_fits(text)
    check_snapshot("tree_show_pairs.txt", text)
    assert "… 1 more (N<2)" in text  # "3+4=7" (N=1) folded; "4*2=9" (N=2) kept since it is marked
    assert "nodes deeper" in text


def test_show_everything_visible():
    text = render_text(hand_tree(), min_visits=0)
    assert "more (N<" not in text
    assert "11-5=7 and a very" in text


def test_rejected_steps_are_marked():
    from selfimprove.tree_view import node_stats

    t = hand_tree()
    node = t.node(2)
    before = render_text(t, min_visits=0).count("✗")
    assert not node.terminal and "✗" not in node_stats(node)
    node.check = False
    assert "✗" in node_stats(node) and render_text(t, min_visits=0).count("✗") == before + 1


def test_pair_marks_filters_by_tree():
    assert pair_marks(PAIRS, "t7") == {1: "+", 2: "-", 4: "+", 5: "-"}
    ranked = [{"kind": "list", "tree_id": "t7", "node_ids": [4, 6, 5]}]
    assert pair_marks(ranked, "t7") == {4: "+", 5: "-"}
    assert pair_marks([*PAIRS, {"provenance": {"tree_id": "t7", "chosen_node": 2, "rejected_node": 3}}],
                      "t7")[2] == "±"


def test_select_tree_errors():
    from envs.errors import UserError

    trees = [hand_tree()]
    assert select_tree(trees, "f", problem="arith-7") is trees[0]
    with pytest.raises(UserError, match="no tree for problem 'nope'"):
        select_tree(trees, "f", problem="nope")
    with pytest.raises(UserError, match="out of range"):
        select_tree(trees, "f", index=3)


def test_exports(tmp_path):
    t = hand_tree()
    data = json.loads(export_tree(t, "json"))
    assert data["id"] == "t7" and len(data["nodes"]) == len(t)
    out = tmp_path / "t.graphml"
    export_tree(t, "graphml", out)
    g = nx.read_graphml(out)
    assert g.number_of_nodes() == len(t) and g.number_of_edges() == len(t) - 1
    assert g.nodes["1"]["step"] == "4*2=8" and g.nodes["8"]["value"] == ""  # None → ""
    dot = export_tree(t, "dot")
    assert dot.startswith("digraph") and dot.count("->") == len(t) - 1
    assert 'n8 [label="A: 6\\nN=4 Q=+1.00\\n✓", style=bold];' in dot


def test_cli_show_and_export(tmp_path):
    trees = tmp_path / "trees.jsonl"
    write_trees(trees, [hand_tree()])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    env = {**os.environ, "COLUMNS": "80"}
    cmd = [CLI, "tree", "show", str(trees), "--problem", "arith-7",
           "--pairs", str(pairs)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "▶ A: 6" in res.stdout and " +" in res.stdout
    assert_fits(res.stdout)
    res = subprocess.run([*cmd[:4], "--index", "5"], capture_output=True, text=True, env=env)
    assert res.returncode == 1 and "out of range" in res.stderr and "Traceback" not in res.stderr
    dot = tmp_path / "t.dot"
    res = subprocess.run([CLI, "tree", "export", str(trees),
                          "--format", "dot", "--out", str(dot)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert dot.read_text().startswith("digraph")
