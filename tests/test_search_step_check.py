"""The env's process verifier in search (`step_check`): rejected steps are dead ends for MCTS, beam and DFS."""

from __future__ import annotations

import pytest

from envs.types import Problem
from search import testing
from search.api import run_search
from search.testing import ScriptedPolicy, ScriptedValue, ToyEnv, chain_sum_policy

ENV = ToyEnv()
P, SCRIPT, VALUES = testing.CARRY_PROBLEM, testing.CARRY_SCRIPT, testing.CARRY_VALUES
Q = "Q: 5+7\n"


def dead_ends_are_leaves(tree) -> bool:
    return all(not tree.children(n.id) for n in tree if n.check is False)


def test_toy_check_step():
    p = Problem(id="t", prompt="5+7+1", answer="13")
    assert ENV.check_step(p, [], "5+7=12") is True
    assert ENV.check_step(p, [], "5+7=2") is False
    assert ENV.check_step(p, ["5+7=2"], "2+1=3") is True   # right given the (wrong) total carried forward
    assert ENV.check_step(p, ["5+7=12"], "A: 12") is False  # a number is left
    assert ENV.check_step(p, ["5+7=12", "12+1=13"], "A: 13") is True


def test_mcts_never_expands_a_rejected_step_and_resamples_its_parent():
    # One step per expansion (expand_n=1), sampled: the root's first sample is the likely "5+7=2",
    # rejected; with every child of the root rejected, the root is expanded again until a live step
    # appears. Greedy rollouts stop at the rejected step, so "A: 2" is never generated.
    cfg = dict(simulations=8, expand_n=1, parallel_leaves=1, prior_alpha=0)
    t = run_search(ENV, [P], ScriptedPolicy(SCRIPT), algo="mcts", config={**cfg, "step_check": True}, seed=1).trees[0]
    kids = {c.step: c for c in t.children(0)}
    assert kids["5+7=2"].check is False and kids["5+7=12"].check is True
    assert kids["5+7=2"].visits >= 1 and kids["5+7=2"].q == -1.0
    assert "A: 2" not in {n.step for n in t} and dead_ends_are_leaves(t)
    assert all(n.check == ENV.check_step(P, t.steps(n.id)[:-1], n.step) for n in t if n.id)
    assert t.answer == "12"
    # Without the check the same search follows "5+7=2" to its wrong ending, and stores no checks.
    t = run_search(ENV, [P], ScriptedPolicy(SCRIPT), algo="mcts", config=cfg, seed=1).trees[0]
    assert "A: 2" in {n.step for n in t} and all(n.check is None for n in t)


def test_beam_drops_rejected_steps():
    # By value, beam (k=2) keeps "5+7=12" (0.8) and "5+7=13" (0.1); the check rejects "5+7=13".
    def beam(**extra):
        val = ScriptedValue(VALUES, default=None)
        cfg = {"beam_width": 2, "expand_n": 3, "verifier": False, **extra}
        return run_search(ENV, [P], ScriptedPolicy(SCRIPT, cycle=True), val, algo="beam", config=cfg).trees[0]

    assert [c.visits for c in beam().children(0)] == [0, 1, 1]
    t = beam(step_check=True)
    assert [c.visits for c in t.children(0)] == [0, 1, 0] and t.answer == "12" and dead_ends_are_leaves(t)


def test_dfs_prunes_rejected_steps_whatever_their_value():
    # The value model likes the slip "5+7=13" best (0.9): plain DFS goes there first and backtracks;
    # with the check it is pruned even at a threshold below every value, so DFS goes to "5+7=12" at once.
    val = ScriptedValue({**VALUES, Q + "5+7=13\n": 0.9}, default=None)
    pol = ScriptedPolicy(SCRIPT, cycle=True)
    t = run_search(ENV, [P], pol, val, algo="dfs",
                   config={"expand_n": 3, "threshold": -2.0, "step_check": True}).trees[0]
    assert [c.visits for c in t.children(0)] == [0, 1, 0] and t.answer == "12"
    assert len(pol.calls) == 2 and dead_ends_are_leaves(t)


def test_step_check_finds_more_answers_with_fewer_tokens_on_chain_sums():
    probs = ENV.load("test", 40, seed=5)
    cfg = {"simulations": 16, "expand_n": 2}
    plain = run_search(ENV, probs, ScriptedPolicy(chain_sum_policy()), algo="mcts", config=cfg, seed=0)
    check = run_search(ENV, probs, ScriptedPolicy(chain_sum_policy()), algo="mcts",
                       config={**cfg, "step_check": True}, seed=0)
    assert check.stats["accuracy"] > plain.stats["accuracy"]
    assert check.stats["tokens"] < plain.stats["tokens"]
    assert all(dead_ends_are_leaves(t) for t in check.trees)


def test_commit_mode_never_commits_to_a_rejected_step():
    probs = ENV.load("test", 20, seed=5)
    r = run_search(ENV, probs, ScriptedPolicy(chain_sum_policy()), algo="mcts",
                   config={"simulations": 8, "mode": "commit", "step_check": True}, seed=0)
    assert all(t.node(i).check is not False for t in r.trees for i in t.stats["committed"])
    assert r.stats["accuracy"] == 1.0


@pytest.mark.parametrize("algo", ["greedy", "best_of_n"])
def test_algorithms_without_a_dead_end_rule_reject_the_knob(algo):
    from envs.errors import UserError

    with pytest.raises(UserError, match="step_check"):
        run_search(ENV, [P], ScriptedPolicy(SCRIPT), algo=algo, config={"step_check": True})
