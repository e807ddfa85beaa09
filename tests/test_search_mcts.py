"""MCTS: golden trees computed by hand, selection formulas, backups, virtual loss, dedup, modes."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import pytest

from envs.types import Problem
from search.algorithms.mcts import _MCTS, MCTSConfig
from search.algorithms.selection import UNVISITED, alphazero_puct, alphazero_w, puct, selection_rule, uct
from search.algorithms.values import backup_mcts_dpo, backup_mean, node_estimator
from search.api import run_search
from search.context import SearchContext
from search.testing import ScriptedPolicy, ScriptedValue, ToyEnv, cand, chain_sum_policy, chain_sum_value
from search.tree import Tree

FIXTURES = Path(__file__).parent / "fixtures"
ENV = ToyEnv()
P = Problem(id="p", prompt="1+2", answer="3")
# Root proposes A = "1+2=3" (p 0.6) and B = "1+2=4" (p 0.4); each then only states its answer.
# With cycle=True and expand_n=2 the root gets exactly A and B, and A/B each get one child
# (their two samples are identical and merge). prior_alpha=0 makes priors 0.6 / 0.4 exactly.
SCRIPT = {"Q: 1+2\n": [cand("1+2=3", math.log(0.6)), cand("1+2=4", math.log(0.4))],
          "Q: 1+2\n1+2=3\n": [cand("A: 3")], "Q: 1+2\n1+2=4\n": [cand("A: 4")]}
VALUES = {"Q: 1+2\n": 0.0, "Q: 1+2\n1+2=3\n": 0.0, "Q: 1+2\n1+2=4\n": 0.5}
GOLDEN_CFG = dict(simulations=6, parallel_leaves=1, expand_n=2, prior_alpha=0, c_puct=1.0, unvisited="value")


def golden_tree(backup: str) -> Tree:
    pol = ScriptedPolicy(SCRIPT, cycle=True)
    val = ScriptedValue(VALUES, default=None)
    return run_search(ENV, [P], pol, val, algo="mcts", config={**GOLDEN_CFG, "backup": backup}).trees[0]


def check_fixture(tree: Tree, name: str) -> None:
    path = FIXTURES / name
    nodes = [n.to_json() for n in tree]
    if os.environ.get("REGEN_GOLDEN"):
        path.write_text(json.dumps({"answer": tree.answer, "answer_node": tree.answer_node, "nodes": nodes},
                                   indent=1) + "\n")
    want = json.loads(path.read_text())
    assert (tree.answer, tree.answer_node) == (want["answer"], want["answer_node"])
    assert nodes == want["nodes"]


def test_golden_mean_backup():
    # Hand computation (PUCT, c=1, score = Q + c·P·sqrt(N_parent)/(1+N); unvisited Q = value estimate,
    # a terminal's Q = its verdict ±1; running-mean backup). Ids: 0 root, 1 A, 2 B, then by creation.
    # sim 1: root is the leaf: expand (A, B), value root 0.0, children valued A 0.0, B 0.5.
    #        root N=1 W=0.
    # sim 2: A: 0 + 0.6·1/1 = 0.6;  B: 0.5 + 0.4·1/1 = 0.9      -> B; expand B -> 3 "A: 4" (wrong).
    #        back up V(B)=0.5: root N=2 W=0.5, B N=1 W=0.5.
    # sim 3: A: 0 + 0.6·√2/1 = 0.849;  B: 0.5 + 0.4·√2/2 = 0.783 -> A; expand A -> 4 "A: 3" (correct).
    #        back up V(A)=0: root N=3 W=0.5, A N=1 W=0.
    # sim 4: A: 0 + 0.6·√3/2 = 0.520;  B: 0.5 + 0.4·√3/2 = 0.846 -> B -> 3 (terminal): back up -1.
    #        root N=4 W=-0.5, B N=2 W=-0.5, 3 N=1 W=-1.
    # sim 5: A: 0 + 0.6·2/2 = 0.6;  B: -0.25 + 0.4·2/3 = 0.017  -> A -> 4 (terminal): back up +1.
    #        root N=5 W=0.5, A N=2 W=1, 4 N=1 W=1.
    # sim 6: A: 0.5 + 0.6·√5/3 = 0.947;  B: -0.25 + 0.4·√5/3 = 0.048 -> A -> 4: back up +1.
    #        root N=6 W=1.5, A N=3 W=2, 4 N=2 W=2.
    t = golden_tree("mean")
    got = {n.id: (n.step, n.visits, round(n.value_sum, 9)) for n in t}
    assert got == {0: ("", 6, 1.5), 1: ("1+2=3", 3, 2.0), 2: ("1+2=4", 2, -0.5),
                   3: ("A: 4", 1, -1.0), 4: ("A: 3", 2, 2.0)}
    assert [round(t.node(i).prior, 9) for i in (1, 2, 3, 4)] == [0.6, 0.4, 1.0, 1.0]
    assert (t.answer, t.answer_node) == ("3", 4)
    assert t.node(4).score == 1.0 and t.node(3).score == 0.0
    check_fixture(t, "golden_mcts_mean.json")


def test_golden_mcts_dpo_backup():
    # v0 = a node's own value (leaf value at first visit; terminals ±1). r(c) = v0(c) - v0(parent),
    # Q(c) = r(c) + V(c), V = visit-weighted mean of children's Q (v0 while no child is visited).
    # sim 1: root v0=0, Q=0.  sim 2: A 0.6, B 0.9 -> B: v0=0.5, r=0.5, Q(B)=1; root V=1 (W=2).
    # sim 3: A 0.849, B 1 + 0.4·√2/2 = 1.283 -> B -> 3 terminal -1: r=-1.5, Q(3)=-2.5;
    #        Q(B)=0.5-2.5=-2 (W=-4); root V=-2 (W=-6).
    # sim 4: A 0 + 0.6·√3 = 1.039, B -2 + 0.4·√3/3 = -1.77 -> A: v0=0, r=0, Q(A)=0; root V=-4/3.
    # sim 5: A 0 + 0.6·2/2 = 0.6 -> A -> 4 terminal +1: r=1, Q(4)=2; Q(A)=0+2=2 (W=4); root V=0.
    # sim 6: A 2.45 -> A -> 4: Q(4)=2 (W=4); Q(A)=2 (W=6); root V=(6-4)/5=0.4 (W=2.4).
    t = golden_tree("mcts_dpo")
    got = {n.id: (n.visits, round(n.q, 9), round(n.reward, 9)) for n in t}
    assert got == {0: (6, 0.4, 0.0), 1: (3, 2.0, 0.0), 2: (2, -2.0, 0.5), 3: (1, -2.5, -1.5), 4: (2, 2.0, 1.0)}
    check_fixture(t, "golden_mcts_dpo.json")


def test_selection_formulas():
    # rule(constants, q, prior, N(parent), N)
    assert puct(1.5, 0.5, 0.4, 4, 1) == pytest.approx(0.5 + 1.5 * 0.4 * 2 / 2)
    assert alphazero_w(0) == pytest.approx(1.25 + math.log(19653 / 19652))
    assert alphazero_w(100, 1.25, 19652) == pytest.approx(1.25 + math.log(19753 / 19652))
    assert alphazero_puct(1.25, 19652, 0.5, 0.4, 100, 1) == pytest.approx(0.5 + alphazero_w(100) * 0.4 * 10 / 2)
    assert uct(2.0, False, 0.1, 0.3, math.e ** 4, 4) == pytest.approx(0.1 + 2.0 * 1.0)
    # An unvisited child outranks every visited one; among unvisited ones its Q (or its prior) decides.
    assert uct(2.0, False, 0.1, 0.3, 10, 0) == UNVISITED + 0.1 > uct(2.0, False, 100.0, 1.0, 1e6, 1)
    assert uct(2.0, True, 0.1, 0.3, 10, 0) == UNVISITED + 0.3


@pytest.mark.parametrize(("selection", "fn", "constants"), [("puct", puct, (0.7,)),
                                                             ("alphazero", alphazero_puct, (0.9, 100.0)),
                                                             ("uct", uct, (0.4, True))])
def test_mcts_runs_the_tested_rule(selection, fn, constants):
    # The rule MCTS scores children with is the function above, with the config's constants bound once
    # (UCT ranks unvisited children by prior when there is no value model to rank them by).
    cfg = MCTSConfig(selection=selection, c_puct=0.7, c_init=0.9, c_base=100.0, c_uct=0.4)
    st = _MCTS(SearchContext(0, P, Tree(P), ENV, cfg), cfg)
    assert (st.rule.func, st.rule.args) == (fn, constants)
    assert st.rule(0.2, 0.5, 9, 2) == fn(*constants, 0.2, 0.5, 9, 2)
    assert selection_rule(selection, c_puct=0.7, c_init=0.9, c_base=100.0, c_uct=0.4,
                          unvisited_by_prior=True).args == constants


def test_node_values_of_unvisited_children_and_leaves():
    # One node-value function; MCTS binds it twice: unvisited children (value estimate only with
    # unvisited="value", else fpu) and leaves (a terminal without a verdict: its value, else 0).
    tree = Tree(P)
    step = tree.add_child(0, "1+2=3", logprob=math.log(0.8), num_tokens=2, value=0.3)
    bare = tree.add_child(0, "1+2=4", logprob=math.log(0.25), num_tokens=2)
    end = tree.add_child(step.id, "A: 3", terminal=True, score=1.0)
    cfg = MCTSConfig(fpu=-0.2)
    with_value = _MCTS(SearchContext(0, P, tree, ENV, cfg, has_value=True), cfg)
    prior_only = _MCTS(SearchContext(0, P, tree, ENV, cfg), cfg)
    assert (with_value.unvisited_q(step), prior_only.unvisited_q(step)) == (0.3, -0.2)
    assert with_value.leaf_estimate(bare) == pytest.approx(2 * 0.5 - 1)  # the prior estimate 2·p̄ − 1
    assert with_value.unvisited_q(end) == with_value.leaf_estimate(end) == 1.0
    blind = MCTSConfig(verifier=False)
    b = _MCTS(SearchContext(0, P, tree, ENV, blind, has_value=True), blind)
    assert b.leaf_estimate(end) == 0.0 and node_estimator(blind)(end) == pytest.approx(2 * 1.0 - 1)


def _two_child_tree(prior_a: float, n_a: int, w_a: float, prior_b: float, n_b: int, w_b: float, n_root: int):
    tree = Tree(P)
    a = tree.add_child(0, "a", prior=prior_a, visits=n_a, value_sum=w_a)
    b = tree.add_child(0, "b", prior=prior_b, visits=n_b, value_sum=w_b)
    tree.root.visits = n_root
    return tree, a, b


@pytest.mark.parametrize(("selection", "extra", "want"), [
    # PUCT c=1, N=9: a: 0.5 + 0.2·3/7 = 0.586; b: 0.2 + 0.8·3/3 = 1.0 -> b
    ("puct", {"c_puct": 1.0}, "b"),
    # PUCT c=0.1: a: 0.5 + 0.02·3/7 = 0.509; b: 0.2 + 0.08 = 0.28 -> a
    ("puct", {"c_puct": 0.1}, "a"),
    # AlphaZero c_init=0.5: w = 0.5 + log(19662/19652) = 0.5005; a: 0.5 + 0.5005·0.2·3/7 = 0.543;
    # b: 0.2 + 0.5005·0.8·3/3 = 0.600 -> b ; with c_init=0.3: a 0.526, b 0.440 -> a
    ("alphazero", {"c_init": 0.5}, "b"),
    ("alphazero", {"c_init": 0.3}, "a"),
    # UCT c=1: a: 0.5 + sqrt(ln 9 / 6) = 1.101; b: 0.2 + sqrt(ln 9 / 2) = 1.242 -> b; c=0.5: 0.80 vs 0.72 -> a
    ("uct", {"c_uct": 1.0}, "b"),
    ("uct", {"c_uct": 0.5}, "a"),
])
def test_selection_order(selection, extra, want):
    tree, _a, _b = _two_child_tree(0.2, 6, 3.0, 0.8, 2, 0.4, 9)  # Q(a)=0.5, Q(b)=0.2, N(root)=9
    cfg = MCTSConfig(selection=selection, **extra)
    st = _MCTS(SearchContext(0, P, tree, ENV, cfg), cfg)
    st.expanded.add(0)
    assert st.select(tree.root)[-1].step == want


def test_uct_prefers_unvisited_child():
    tree, _a, b = _two_child_tree(0.9, 5, 5.0, 0.1, 0, 0.0, 6)
    cfg = MCTSConfig(selection="uct")
    st = _MCTS(SearchContext(0, P, tree, ENV, cfg), cfg)
    st.expanded.add(0)
    assert st.select(tree.root)[-1] is b


def test_backup_arithmetic():
    tree = Tree(P)
    a = tree.add_child(0, "a")
    x = tree.add_child(a.id, "x")
    backup_mean([tree.root, a, x], 0.5)
    backup_mean([tree.root, a], -1.0)
    assert (tree.root.visits, tree.root.value_sum, a.visits, a.q, x.visits, x.q) == (2, -0.5, 2, -0.25, 1, 0.5)
    # MCTS-DPO: v0(root)=0.2, v0(a)=0.6; leaf x gets v=-0.4 (gamma 0.9):
    # r(x) = -0.4-0.6 = -1.0, Q(x) = -1.0 + 0.9·(-0.4) = -1.36; r(a) = 0.4, V(a) = Q(x) -> Q(a) = 0.4 + 0.9·-1.36
    t2 = Tree(P)
    a2 = t2.add_child(0, "a")
    x2 = t2.add_child(a2.id, "x")
    v0 = {0: 0.2, a2.id: 0.6}
    t2.root.visits, a2.visits = 1, 1  # visited once each as leaves
    a2.value_sum = 1.0
    backup_mcts_dpo(t2, [t2.root, a2, x2], -0.4, v0, 0.9)
    assert x2.reward == pytest.approx(-1.0) and x2.q == pytest.approx(-1.36)
    assert a2.reward == pytest.approx(0.4) and a2.q == pytest.approx(0.4 + 0.9 * -1.36) and a2.visits == 2
    assert t2.root.q == pytest.approx(0.4 + 0.9 * -1.36)


def test_virtual_loss_spreads_parallel_leaves():
    # Root with three unexpanded children: 4 parallel selections in one round pick distinct leaves,
    # so the first policy call after the root's expansion carries 3 different prefixes.
    script = {"Q: 1+2\n": [cand("x", -1.0), cand("y", -1.1), cand("z", -1.2)]}
    pol = ScriptedPolicy(script, default=[cand("A: 3")], cycle=True)
    r = run_search(ENV, [P], pol, None, algo="mcts",
                   config=dict(simulations=4, parallel_leaves=4, expand_n=3, rollout_weight=0))
    assert [c["batch"] for c in pol.calls] == [1, 3]
    t = r.trees[0]
    assert sorted(c.visits for c in t.children(0)) == [1, 1, 1]
    assert all(n.virtual_loss == 0 for n in t)


def test_identical_siblings_merge_and_sum_prior():
    script = {"Q: 1+2\n": [cand("s", math.log(0.5)), cand("s", math.log(0.5)), cand("t", math.log(0.5))]}
    pol = ScriptedPolicy(script, default=[cand("A: 3")], cycle=True)
    t = run_search(ENV, [P], pol, None, algo="mcts",
                   config=dict(simulations=1, expand_n=3, prior_alpha=0, rollout_weight=0)).trees[0]
    kids = t.children(0)
    assert [c.step for c in kids] == ["s", "t"]
    assert [c.prior for c in kids] == pytest.approx([2 / 3, 1 / 3])


def test_commit_mode_walks_to_a_terminal():
    env = ToyEnv()
    probs = env.load("test", 6, seed=1)
    pol, val = ScriptedPolicy(chain_sum_policy()), ScriptedValue(chain_sum_value())
    r = run_search(env, probs, pol, val, algo="mcts",
                   config=dict(mode="commit", simulations=2, first_root_factor=2, commit_by="q_sample"))
    for t in r.trees:
        committed = t.stats["committed"]
        assert committed[0] == 0
        assert all(t.node(b).parent == a for a, b in itertools.pairwise(committed))
        assert t.node(committed[-1]).terminal


def test_root_noise_is_seeded():
    env = ToyEnv()
    probs = env.load("test", 4, seed=2)
    pol = ScriptedPolicy(chain_sum_policy())
    cfg = dict(simulations=8, root_noise_eps=0.5)
    a = run_search(env, probs, pol, algo="mcts", config=cfg, seed=3)
    b = run_search(env, probs, pol, algo="mcts", config=cfg, seed=3)
    strip = [{**x.to_json(), "stats": None} for x in a.trees]
    assert strip == [{**x.to_json(), "stats": None} for x in b.trees]
    # Noise perturbs selection only: the stored priors are the policy's.
    plain = run_search(env, probs, pol, algo="mcts", config={**cfg, "root_noise_eps": 0.0}, seed=3)
    assert [c.prior for c in a.trees[0].children(0)] == [c.prior for c in plain.trees[0].children(0)]


def test_answer_rules_and_verifier_off():
    t = golden_tree("mean")
    assert t.answer == "3"
    pol = ScriptedPolicy(SCRIPT, cycle=True)
    val = ScriptedValue({**VALUES, "Q: 1+2\n1+2=3\nA: 3\n": -0.9, "Q: 1+2\n1+2=4\nA: 4\n": 0.9}, default=None)
    # Without the verifier the search trusts the value model on terminals: it prefers "A: 4".
    r = run_search(ENV, [P], pol, val, algo="mcts",
                   config={**GOLDEN_CFG, "verifier": False, "answer_rule": "q"})
    assert r.trees[0].answer == "4" and r.stats["accuracy"] == 0.0


def test_greedy_rollouts_are_kept_and_cached():
    # No value model: leaf value = greedy rollout verdict. Sim 1 expands the root (A "1+2=3", B "1+2=4")
    # and rolls out greedily: "1+2=3" (merges into A), then "A: 3" (correct, +1): 3 policy calls.
    # Sim 2 selects A (its prior holds the rollout's mass too), expands it; its rollout verdict is
    # cached from sim 1, so the only call is the expansion.
    pol = ScriptedPolicy(SCRIPT, cycle=True)
    r = run_search(ENV, [P], pol, algo="mcts",
                   config=dict(simulations=2, parallel_leaves=1, expand_n=2, prior_alpha=0))
    t = r.trees[0]
    assert [(c["n"], c["temperature"]) for c in pol.calls] == [(2, 1.0), (1, 0.0), (1, 0.0), (2, 1.0)]
    assert [(n.step, n.visits, n.value_sum) for n in t] == [
        ("", 2, 2.0), ("1+2=3", 1, 1.0), ("1+2=4", 0, 0.0), ("A: 3", 0, 0.0)]
    assert t.node(1).prior == pytest.approx(2 * 0.6 / (2 * 0.6 + 0.4))
    assert (t.answer, r.stats["accuracy"]) == ("3", 1.0)
    # Off-tree rollouts reach the same verdicts but leave no nodes behind (and cannot be reused).
    pol = ScriptedPolicy(SCRIPT, cycle=True)
    t = run_search(ENV, [P], pol, algo="mcts", config=dict(simulations=1, expand_n=2, keep_rollouts=False)).trees[0]
    assert [n.step for n in t] == ["", "1+2=3", "1+2=4"] and t.root.value_sum == 1.0 and t.answer is None
