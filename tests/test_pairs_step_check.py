"""The `step-check` strategy (pairs judged by the environment's process verifier) on the golden trees.

Hand-worked from the pictures in tests/test_pairs.py with arithmetic's check_step: in tree A, "2+3=5" is
wrong (3*4 comes first) and "3*4=13" / "2+12=15" are wrong results; in tree B, "1+1=3" and "1+1=11" are
wrong and "1+1=2." is not a step the checker can parse (None: left out). Wrong siblings go lowest Q first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.errors import UserError
from selfimprove.pairs import PreferencePair, extract

FIX = Path(__file__).parent / "fixtures" / "pairs_trees.jsonl"


def triples(records):
    return [(r.tree_id, r.prefix_node, r.chosen_node, r.rejected_node) for r in records]


@pytest.fixture(scope="module")
def trees():
    from search.tree import read_trees

    return read_trees(FIX)


def test_step_check_pairs(trees):
    recs, stats = extract(trees, "step-check", {"env": "arithmetic"})
    assert all(isinstance(r, PreferencePair) for r in recs)
    recs = [r for r in recs if isinstance(r, PreferencePair)]
    assert stats["count"] == 5
    assert triples(recs) == [("tree-a", 0, 1, 2), ("tree-a", 0, 1, 9), ("tree-a", 1, 3, 4),
                             ("tree-b", 0, 1, 3), ("tree-b", 0, 1, 7)]
    assert (recs[2].prompt, recs[2].chosen, recs[2].rejected) == ("Q: 2+3*4\n3*4=12\n", "2+12=14\n", "2+12=15\n")
    assert all(r.strategy == "step-check" and r.margin == 1.0 for r in recs)
    one, _ = extract(trees, "step-check", {"env": "arithmetic", "max_pairs_per_node": 1})
    assert triples(one) == [("tree-a", 0, 1, 2), ("tree-a", 1, 3, 4), ("tree-b", 0, 1, 3)]


def test_step_check_needs_an_env(trees):
    with pytest.raises(UserError, match="env"):
        extract(trees, "step-check", {})


def test_step_check_judges_with_the_env_it_is_handed(trees):
    from envs.registry import make_env

    named, _ = extract(trees, "step-check", {"env": "arithmetic"})
    handed, _ = extract(trees, "step-check", {}, env=make_env("arithmetic"))
    assert triples(handed) == triples(named) and len(handed) == 5
