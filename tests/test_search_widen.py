"""MCTS that turns budget into coverage: re-expansion of nodes whose children are all known, progressive
widening, value pruning, stopping once found, and the value model picking the answer (test-time verifier)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from envs.errors import UserError
from envs.types import Problem
from search.algorithms.mcts import _MCTS, MCTSConfig
from search.api import run_search
from search.context import SearchContext
from search.testing import ScriptedPolicy, ScriptedValue, ToyEnv, cand
from search.tree import Tree

ENV = ToyEnv()
P = Problem(id="p", prompt="1+2", answer="3")
Q = "Q: 1+2\n"


def second_try_policy() -> ScriptedPolicy:
    """The root's first sample is the wrong step "1+2=4" (→ "A: 4"); every later one is "1+2=3" (→ "A: 3")."""
    asked: Counter[str] = Counter()

    def script(prefix: str):
        asked[prefix] += 1
        if prefix == Q:
            return [cand("1+2=4")] if asked[prefix] == 1 else [cand("1+2=3")]
        return [cand("A: 4")] if prefix.endswith("1+2=4\n") else [cand("A: 3")]

    return ScriptedPolicy(script)


BASE = dict(expand_n=1, parallel_leaves=1, rollout_weight=0)


def test_without_widening_known_terminals_are_rescored_forever():
    r = run_search(ENV, [P], second_try_policy(), algo="mcts", config={**BASE, "simulations": 20})
    t = r.trees[0]
    # sim 1 expands the root, sim 2 its only child; sims 3..20 re-score the known wrong terminal "A: 4".
    assert [n.step for n in t] == ["", "1+2=4", "A: 4"]
    assert t.node(2).visits == 18 and r.stats["expansions"] == 2 and r.stats["accuracy"] == 0.0


def test_reexpand_widens_upwards_until_found():
    # sim 1: expand root -> "1+2=4";  sim 2: expand it -> "A: 4" (wrong, scored);  sim 3: back up its -1;
    # sim 4: its only child is known -> expand "1+2=4" again: "A: 4" merges, so it is exhausted;
    # sim 5: the root's only child is exhausted -> expand the root again -> "1+2=3";
    # sim 6: expand "1+2=3" -> "A: 3" (correct). stop_when_found ends the search there.
    cfg = {**BASE, "simulations": 20, "widen": "reexpand", "stop_when_found": True}
    r = run_search(ENV, [P], second_try_policy(), algo="mcts", config=cfg)
    t = r.trees[0]
    assert [(n.step, n.parent) for n in t] == [("", None), ("1+2=4", 0), ("A: 4", 1), ("1+2=3", 0), ("A: 3", 3)]
    assert t.stats["simulations"] == 6 and r.stats["expansions"] == 5
    assert (t.node(2).visits, t.node(2).value_sum) == (1, -1.0)  # the known terminal was scored once, never again
    assert (t.answer, r.stats["accuracy"]) == ("3", 1.0)
    # Without stop_when_found the budget keeps widening (every simulation expands something).
    r = run_search(ENV, [P], second_try_policy(), algo="mcts", config={**cfg, "stop_when_found": False})
    t = r.trees[0]
    assert t.stats["simulations"] == 20 and t.node(2).visits == 1 and t.node(4).visits == 1
    assert r.stats["expansions"] == 20 - 2 and r.stats["accuracy"] == 1.0  # all but the two first scorings


def _expanded_root(child_values: list[float | None], root_visits: int, cfg: MCTSConfig, has_value: bool = False):
    tree = Tree(P)
    kids = [tree.add_child(0, f"s{i}", prior=1 / len(child_values), value=v) for i, v in enumerate(child_values)]
    tree.root.visits = root_visits
    st = _MCTS(SearchContext(0, P, tree, ENV, cfg, has_value=has_value), cfg)
    st.expanded.add(0)
    st.drawn[0] = len(kids)
    return tree, kids, st


def test_progressive_widening_allows_k_n_alpha_samples():
    cfg = MCTSConfig(widen="progressive", pw_k=1.0, pw_alpha=0.5)
    # one sampled step; allowed = 1 · N^0.5: N=1 -> 1 (descend), N=4 -> 2 > 1 (widen the root)
    tree, kids, st = _expanded_root([None], 1, cfg)
    assert st.select(tree.root)[-1] is kids[0]
    tree.root.visits = 4
    assert st.allowed(tree.root) == pytest.approx(2.0) and st.select(tree.root) == [tree.root]
    st.drawn[0] = 2
    assert st.select(tree.root)[-1] is kids[0]


def test_value_pruning_skips_low_children_and_reexpands_when_all_are_low():
    cfg = MCTSConfig(prune_below=-0.5, c_puct=1.0)
    tree, kids, st = _expanded_root([-0.8, -0.4], 2, cfg, has_value=True)
    # PUCT alone picks s0: -0.8 + 0.99·√2 = 0.60 beats -0.4 + 0.01·√2 = -0.39; but s0 is below -0.5
    kids[0].prior, kids[1].prior = 0.99, 0.01
    assert st.select(tree.root)[-1] is kids[1]
    st.cfg.prune_below = None
    st.known_rules = False
    assert st.select(tree.root)[-1] is kids[0]
    st.cfg.prune_below, st.known_rules = -0.5, True
    kids[1].value = -0.7
    assert st.select(tree.root) == [tree.root]  # both below -0.5: the root is expanded again
    with pytest.raises(UserError, match="prune_below needs a value model"):
        run_search(ENV, [P], second_try_policy(), algo="mcts", config={**BASE, "prune_below": 0.0})
    with pytest.raises(UserError, match="stop_when_found needs verifier=true"):
        run_search(ENV, [P], second_try_policy(), algo="mcts",
                   config={**BASE, "stop_when_found": True, "verifier": False})


# Root proposes "1+2=3" (p 0.6) and "1+2=4" (p 0.4); a value model that (wrongly) likes "A: 4" best.
SCRIPT = {Q: [cand("1+2=3", math.log(0.6)), cand("1+2=4", math.log(0.4))],
          Q + "1+2=3\n": [cand("A: 3")], Q + "1+2=4\n": [cand("A: 4")]}
VALUES = {Q: 0.0, Q + "1+2=3\n": 0.1, Q + "1+2=4\n": 0.2, Q + "1+2=3\nA: 3\n": 0.3, Q + "1+2=4\nA: 4\n": 0.7}


def test_value_model_picks_the_answer_without_a_verifier():
    cfg = dict(simulations=6, expand_n=2, parallel_leaves=1, verifier=False, answer_rule="value")
    r = run_search(ENV, [P], ScriptedPolicy(SCRIPT, cycle=True), ScriptedValue(VALUES), algo="mcts", config=cfg)
    assert r.trees[0].answer == "4"  # highest-valued terminal (0.7), right or not
    ok = {**VALUES, Q + "1+2=3\nA: 3\n": 0.9}
    r = run_search(ENV, [P], ScriptedPolicy(SCRIPT, cycle=True), ScriptedValue(ok), algo="mcts", config=cfg)
    assert r.trees[0].answer == "3" and r.stats["accuracy"] == 1.0
    # best-of-N reranked by the value model: 3 samples "A: 3" (0.3), 1 of "A: 4" (0.7) -> "4"; majority -> "3"
    bon = {Q: [cand("1+2=3"), cand("1+2=3"), cand("1+2=3"), cand("1+2=4")], **{k: v for k, v in SCRIPT.items()
                                                                             if k != Q}}
    got = {}
    for vote in ("rerank", "majority"):
        r = run_search(ENV, [P], ScriptedPolicy(bon, cycle=True), ScriptedValue(VALUES), algo="best_of_n",
                       config={"n": 4, "vote": vote})
        got[vote] = r.trees[0].answer
    assert got == {"rerank": "4", "majority": "3"}
    with pytest.raises(UserError, match="answer_rule='value' needs a value model"):
        run_search(ENV, [P], ScriptedPolicy(SCRIPT, cycle=True), algo="mcts", config=cfg)


def test_rerank_skips_samples_without_an_answer():
    # max_depth 1: "1+2=4" ends the sample without an answer line; the value model likes it best, but a
    # sample that never answered cannot be the answer.
    script = {Q: [cand("1+2=4"), cand("A: 3")]}
    vals = {Q + "1+2=4\n": 0.9, Q + "A: 3\n": 0.1}
    r = run_search(ENV, [P], ScriptedPolicy(script, cycle=True), ScriptedValue(vals), algo="best_of_n",
                   config={"n": 2, "vote": "rerank", "max_depth": 1})
    assert r.trees[0].answer == "3"
    r = run_search(ENV, [P], ScriptedPolicy(script, cycle=True), ScriptedValue(vals, default=0.0), algo="mcts",
                   config={"simulations": 2, "expand_n": 2, "max_depth": 1, "verifier": False,
                           "answer_rule": "value"})
    assert r.trees[0].answer == "3"


def test_value_vote_weighs_terminals_by_their_path_prior():
    # The right answer sits on one path the policy takes 60% of the time; two wrong variants of 20% each
    # answer "4". Equal values: by node count "4" would win 2 to 1; by path prior "3" wins 0.6 to 0.4.
    from search.algorithms.mcts import path_prior

    tree = Tree(P)
    right = tree.add_child(0, "1+2=3", prior=0.6)
    w1, w2 = tree.add_child(0, "1+2=4", prior=0.2), tree.add_child(0, "1+2 = 4", prior=0.2)
    ends = [tree.add_child(x.id, f"A: {a}", terminal=True, answer=a, value=0.0, prior=1.0)
            for x, a in ((right, "3"), (w1, "4"), (w2, "4"))]
    assert [path_prior(tree, n) for n in ends] == pytest.approx([0.6, 0.2, 0.2])
    cfg = MCTSConfig(verifier=False, answer_rule="value")
    st = _MCTS(SearchContext(0, P, tree, ENV, cfg, has_value=True), cfg)
    assert st.choose_answer([tree.root]) is ends[0]
    ends[1].value = ends[2].value = 1.0  # (1+1)/2·0.2·2 = 0.4 vs (1+0)/2·0.6 = 0.3: the verifier overrules
    assert st.choose_answer([tree.root]) in (ends[1], ends[2])
