"""Beam, DFS, best-of-N, greedy on scripted cases small enough to check by hand."""

from __future__ import annotations

import pytest

from search.algorithms.common import vote
from search.api import run_search
from search.testing import (
    CARRY_PROBLEM,
    CARRY_SCRIPT,
    CARRY_VALUES,
    ScriptedPolicy,
    ScriptedValue,
    ToyEnv,
    chain_sum_policy,
    chain_sum_value,
)
from search.tree import Tree

ENV = ToyEnv()
P, SCRIPT, VALUES = CARRY_PROBLEM, CARRY_SCRIPT, CARRY_VALUES
Q = "Q: 5+7\n"


def run(algo, value=True, **cfg):
    pol = ScriptedPolicy(SCRIPT, cycle=True)
    val = ScriptedValue(VALUES, default=None) if value else None
    return run_search(ENV, [P], pol, val, algo=algo, config=cfg), pol


def test_greedy_follows_the_top_step():
    r, pol = run("greedy", value=False)
    t = r.trees[0]
    assert t.answer_node is not None
    assert t.answer == "2" and t.steps(t.answer_node) == ["5+7=2", "A: 2"] and len(t) == 3
    assert all(c["temperature"] == 0 for c in pol.calls) and r.stats["accuracy"] == 0.0


def test_beam_keeps_top_k_by_value():
    # Depth 1: three children valued -0.5, 0.8, 0.1; k=2 keeps "5+7=12" and "5+7=13".
    r, _ = run("beam", beam_width=2, expand_n=3, verifier=False)
    t = r.trees[0]
    assert [c.visits for c in t.children(0)] == [0, 1, 1]
    assert t.answer == "12" and r.stats["accuracy"] == 1.0


def test_dfs_backtracks_below_threshold():
    # Children sorted by value: "5+7=12" (0.8) first; "5+7=2" (-0.5) is pruned at threshold 0.
    r, pol = run("dfs", expand_n=3, threshold=0.0)
    t = r.trees[0]
    assert t.answer == "12"
    assert t.children(0)[0].visits == 0 and t.children(0)[1].visits == 1
    # If "5+7=13" looks best (0.9), DFS goes there first, finds the wrong "A: 13" (verdict -1, below the
    # threshold), backtracks to "5+7=12" and stops at the verified "A: 12".
    pol = ScriptedPolicy(SCRIPT, cycle=True)
    val = ScriptedValue({**VALUES, Q + "5+7=13\n": 0.9}, default=None)
    t = run_search(ENV, [P], pol, val, algo="dfs", config={"expand_n": 3}).trees[0]
    assert [c.visits for c in t.children(0)] == [0, 1, 1]
    assert [n.step for n in t.terminals()] == ["A: 13", "A: 12"] and t.answer == "12"
    assert len(pol.calls) == 3  # root, 13, 12: one expansion per round


@pytest.mark.parametrize(("vote_rule", "want"), [("majority", "2"), ("value", "12"), ("verifier", "12")])
def test_best_of_n_votes(vote_rule, want):
    # cycle sampling with n=5 at the root: 2, 12, 13, 2, 12 -> visits 2, 2, 1 on the three children.
    # majority: "2" and "12" tie at 2 votes, "2" came first; value: 2·(1-0.6)/2=0.4 vs 2·(1+0.9)/2=1.9.
    r, _ = run("best_of_n", n=5, vote=vote_rule)
    t = r.trees[0]
    assert [c.visits for c in t.children(0)] == [2, 2, 1] and t.root.visits == 5
    assert t.answer == want


def test_vote_helper_ties_and_none():
    t = Tree(P)
    a = t.add_child(0, "A: 1", terminal=True, answer="1")
    b = t.add_child(0, "A: 2", terminal=True, answer="2")
    c = t.add_child(0, "A: ?", terminal=True, answer=None)
    assert vote([a, b, c], [1.0, 1.0, 5.0]) is a
    assert vote([a, b], [1.0, 1.5]) is b
    assert vote([c], [1.0]) is None


def test_search_beats_greedy_on_the_scripted_chain_sums():
    env = ToyEnv()
    probs = env.load("test", 40, seed=5)
    pol, val = ScriptedPolicy(chain_sum_policy()), ScriptedValue(chain_sum_value())
    greedy = run_search(env, probs, pol, algo="greedy").stats["accuracy"]
    mcts = run_search(env, probs, pol, val, algo="mcts", config={"simulations": 16}).stats["accuracy"]
    beam = run_search(env, probs, pol, val, algo="beam").stats["accuracy"]
    assert mcts > greedy + 0.2 and beam > greedy + 0.2
