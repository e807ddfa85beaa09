"""The scheduler: cross-problem merging, chunking, grouping, no lock-step, determinism, budgets."""

from __future__ import annotations

import time

import pytest

from envs.errors import UserError
from envs.types import Problem
from search.api import run_search
from search.context import SearchContext
from search.scheduler import Scheduler
from search.testing import ScriptedPolicy, ScriptedValue, ToyEnv, cand, chain_sum_policy, chain_sum_value
from search.tree import Tree
from search.types import Evaluate, Propose, Search

ENV = ToyEnv()


def context(index: int, problem: Problem, env, *, seed: int = 0) -> SearchContext:
    """A hand-driven search's context: the problem's own fresh tree, no algorithm config."""
    return SearchContext(index, problem, Tree(problem), env, None, seed=seed)


def _strip(trees):
    return [{**t.to_json(), "stats": {k: v for k, v in t.stats.items() if k != "wall_s"}} for t in trees]


def test_requests_of_many_problems_share_one_call():
    probs = [Problem(id=f"p{i}", prompt=f"{i}+1", answer=str(i + 1)) for i in range(1, 6)]
    pol = ScriptedPolicy(lambda p: [cand("A: 0", finish="eos")])
    r = run_search(ENV, probs, pol, algo="best_of_n", config={"n": 4})
    assert [c["batch"] for c in pol.calls] == [5] and pol.calls[0]["n"] == 4
    assert r.stats["backend_calls"] == 1 and r.stats["mean_batch"] == 20


def test_value_requests_merge_and_chunk_by_max_batch():
    probs = ENV.load("test", 10, seed=0)
    pol, val = ScriptedPolicy(chain_sum_policy()), ScriptedValue(chain_sum_value())
    run_search(ENV, probs, pol, val, algo="beam", config={"beam_width": 2, "expand_n": 3}, max_batch=12)
    # Each policy call holds at most 12 sequences (4 prefixes × n=3); value calls at most 12 prefixes.
    assert all(c["batch"] * c["n"] <= 12 for c in pol.calls)
    assert all(b <= 12 for b in val.calls) and max(val.calls) == 12
    assert pol.calls[0]["batch"] == 4  # the 10 roots: chunks of 4, 4, 2


def test_requests_with_different_n_or_temperature_are_grouped_apart():
    env = ToyEnv()
    pol = ScriptedPolicy(lambda p: [cand("A: 1")])

    def algo(ctx) -> Search:
        yield [Propose([0], 2, 1.0), Propose([0], 3, 1.0), Propose([0], 2, 0.5)]

    ctxs = [context(i, Problem(id=str(i), prompt="1", answer="1"), env) for i in range(3)]
    Scheduler(env, pol).run([(c, algo(c)) for c in ctxs])
    assert sorted((c["n"], c["temperature"], c["batch"]) for c in pol.calls) == [(2, 0.5, 3), (2, 1.0, 3), (3, 1.0, 3)]


def test_finished_problem_does_not_hold_others():
    # Problem 0 needs 1 round; problem 1 needs 4; with two slots, the queued problem 2 starts in the
    # phase after problem 0 ends, not after problem 1 ends.
    env = ToyEnv()
    pol = ScriptedPolicy(lambda p: [cand("x")])
    log = []

    def algo(ctx, rounds) -> Search:
        for k in range(rounds):
            log.append((ctx.index, k, len(pol.calls)))
            yield [Propose([0], 1, 1.0)]

    ctxs = [context(i, Problem(id=str(i), prompt="1"), env) for i in range(3)]
    Scheduler(env, pol, max_active=2).run([(ctxs[0], algo(ctxs[0], 1)), (ctxs[1], algo(ctxs[1], 4)),
                                           (ctxs[2], algo(ctxs[2], 2))])
    starts = {i: calls for i, k, calls in log if k == 0}
    assert starts == {0: 0, 1: 0, 2: 1}  # problem 2's first request joins the second call
    assert [c["batch"] for c in pol.calls] == [2, 2, 2, 1]


def test_propose_then_value_in_the_same_round():
    env = ToyEnv()
    pol = ScriptedPolicy(lambda p: [cand("x")])
    val = ScriptedValue(lambda p: 0.25)
    order = []

    def algo(ctx) -> Search:
        (kids,), = yield [Propose([0], 1, 1.0)]
        order.append(("proposed", len(pol.calls), len(val.calls)))
        vals, = yield [Evaluate(kids[:1])]
        order.append(("valued", len(pol.calls), len(val.calls), vals))

    c = context(0, Problem(id="0", prompt="1"), env)
    sched = Scheduler(env, pol, val)
    sched.run([(c, algo(c))])
    assert order == [("proposed", 1, 0), ("valued", 1, 1, [0.25])]
    assert sched.stats["phases"] == 2 and c.tree.node(1).value == 0.25


def test_a_prefix_sampled_again_gets_fresh_samples(tiny_policy_dir):
    # The real HF backend: the same node proposed in two rounds must not repeat its samples (a re-expansion
    # or a sampled rollout would add nothing), yet the run stays reproducible.
    from agents.hf import HFPolicy

    def texts(seed):
        got = []

        def algo(ctx) -> Search:
            for _ in range(2):
                (ids,), = yield [Propose([0], 3, 1.0)]
                got.append([ctx.tree.node(i).step for i in ids])

        c = context(0, Problem(id="0", prompt="1+2"), ENV, seed=seed)
        Scheduler(ENV, HFPolicy(tiny_policy_dir), max_step_tokens=6).run([(c, algo(c))])
        return got

    first, again = texts(0)
    assert first != again
    assert texts(0) == [first, again] and texts(1)[0] != first


@pytest.mark.parametrize("algo", ["mcts", "beam", "best_of_n", "dfs", "greedy"])
def test_same_seed_same_trees_batched_or_one_at_a_time(algo):
    probs = ENV.load("test", 8, seed=4)
    val = ScriptedValue(chain_sum_value())
    a = run_search(ENV, probs, ScriptedPolicy(chain_sum_policy()), val, algo=algo, seed=7)
    b = run_search(ENV, probs, ScriptedPolicy(chain_sum_policy()), val, algo=algo, seed=7, max_active=1)
    c = run_search(ENV, probs[::-1], ScriptedPolicy(chain_sum_policy()), val, algo=algo, seed=7, max_batch=5)
    assert _strip(a.trees) == _strip(b.trees)
    assert [len(t) for t in a.trees[::-1]] != [] and a.stats["accuracy"] == b.stats["accuracy"]
    assert c.stats["problems"] == 8
    if algo != "greedy":
        d = run_search(ENV, probs, ScriptedPolicy(chain_sum_policy()), val, algo=algo, seed=8)
        assert _strip(a.trees) != _strip(d.trees)


def test_simulation_budget():
    probs = ENV.load("test", 5, seed=0)
    r = run_search(ENV, probs, ScriptedPolicy(chain_sum_policy()), algo="mcts", config={"simulations": 7})
    assert [t.stats["simulations"] for t in r.trees] == [7] * 5
    assert all(t.root.visits == 7 for t in r.trees)


def test_token_budget():
    probs = [Problem(id=str(i), prompt=f"9+8+7+6+5+{i}", answer=str(35 + i)) for i in range(5)]
    pol = ScriptedPolicy(chain_sum_policy())
    r = run_search(ENV, probs, pol, algo="mcts",
                   config={"simulations": 500, "token_budget": 60, "expand_n": 2, "parallel_leaves": 1,
                           "rollout_weight": 0})
    # One round may overshoot by what it asked for: 2 samples of at most 8 tokens.
    assert all(60 <= t.stats["tokens"] <= 60 + 16 for t in r.trees)
    assert all(t.stats["simulations"] < 500 for t in r.trees)


def test_wall_time_budget():
    probs = ENV.load("test", 3, seed=0)
    pol = ScriptedPolicy(chain_sum_policy(), delay_s=0.02)
    t0 = time.perf_counter()
    r = run_search(ENV, probs, pol, algo="mcts", config={"simulations": 10_000, "wall_budget_s": 0.15,
                                                         "parallel_leaves": 1})
    assert time.perf_counter() - t0 < 1.0
    assert all(t.stats["simulations"] < 10_000 for t in r.trees)


def test_bad_algo_and_config_are_user_errors():
    with pytest.raises(UserError, match=r"unknown search algorithm 'mtcs'.*did you mean 'mcts'"):
        run_search(ENV, [], ScriptedPolicy({}), algo="mtcs")
    with pytest.raises(UserError, match="field 'simulation': unknown key"):
        run_search(ENV, [], ScriptedPolicy({}), algo="mcts", config={"simulation": 3})
    with pytest.raises(UserError, match="needs a value model"):
        run_search(ENV, ENV.load("test", 1), ScriptedPolicy(chain_sum_policy()), algo="best_of_n",
                   config={"vote": "value"})
