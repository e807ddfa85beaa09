"""Tree: building, navigation helpers, JSON round-trip, trees.jsonl errors."""

from __future__ import annotations

import json

import pytest

from envs.errors import UserError
from envs.types import Problem
from search.api import run_search
from search.testing import ScriptedPolicy, ScriptedValue, ToyEnv, chain_sum_policy, chain_sum_value
from search.tree import Tree, read_trees, write_trees

P = Problem(id="p1", prompt="2+3", answer="5")


def small_tree() -> Tree:
    t = Tree(P, config={"algo": "x"}, checkpoint="ck")
    a = t.add_child(0, "2+3=5", visits=3, value_sum=2.0, prior=0.7)
    b = t.add_child(0, "2+3=6", visits=1, value_sum=-1.0, prior=0.3)
    t.add_child(a.id, "A: 5", visits=2, value_sum=2.0, terminal=True, score=1.0, answer="5")
    t.add_child(b.id, "A: 6", visits=1, value_sum=-1.0, terminal=True, score=0.0, answer="6")
    return t


def test_navigation_helpers():
    t = small_tree()
    assert [n.step for n in t.best_path()] == ["", "2+3=5", "A: 5"]
    assert t.steps(3) == ["2+3=5", "A: 5"] and t.path_text(3) == "2+3=5\nA: 5"
    assert [n.id for n in t.siblings(1)] == [2]
    assert t.subtree_stats(0) == {"nodes": 5, "terminals": 2, "correct": 1, "max_depth": 2, "best_score": 1.0}
    assert [n.id for n in t.leaves()] == [3, 4]
    assert t.node(3).depth == 2 and t.node(1).q == pytest.approx(2 / 3)


def test_json_round_trip(tmp_path):
    env = ToyEnv()
    r = run_search(env, env.load("test", 3), ScriptedPolicy(chain_sum_policy()), ScriptedValue(chain_sum_value()),
                   algo="mcts", config={"simulations": 6})
    trees = [small_tree(), *r.trees]
    path = tmp_path / "trees.jsonl"
    assert write_trees(path, trees) == 4
    back = read_trees(path)
    assert [t.to_json() for t in back] == [t.to_json() for t in trees]
    # Navigation works on read trees (fast indexes rebuilt).
    assert [n.id for n in back[0].children(0)] == [1, 2] and back[0].steps(4) == ["2+3=6", "A: 6"]
    assert back[1].answer == r.trees[0].answer and back[1].config["algo"] == "mcts"
    assert back[1].stats["simulations"] == 6


def test_bad_tree_lines_name_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    good = json.dumps(small_tree().to_json())
    path.write_text(good + "\n" + json.dumps({"schema": "selfimprove/0", "id": "x", "problem": {}, "nodes": []}) + "\n")
    with pytest.raises(UserError, match=r"t.jsonl:2: schema 'selfimprove/0'"):
        read_trees(path)
    bad = json.loads(good)
    bad["nodes"][2]["parent"] = 99
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(UserError, match=r"t.jsonl:1: field 'nodes.2.parent': must be an earlier node \(got 99"):
        read_trees(path)
