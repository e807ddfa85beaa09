"""End to end on real trees (slow): a tiny SFT policy searches (MCTS), strategies extract pairs, and
training on pairs from some trees raises the chosen-vs-rejected margin on pairs from held-out trees;
the value model trained on the same trees separates good prefixes from bad on held-out trees."""

from __future__ import annotations

import pytest

# `learning`: not part of `make test-slow`/CI yet. With the digit-token tiny policy (issue 3's final
# build) the held-out margin rises by less than 0.01 for q-gap/first-error step-DPO and falls for cDPO
# (measured 2026-11-25); run with `make test-learning`. Issue 5 stays open on this.
pytestmark = [pytest.mark.slow, pytest.mark.learning]


@pytest.fixture(scope="module")
def trees_and_policy(tmp_path_factory):
    from agents.hf import HFPolicy
    from agents.policy_init import build_tiny_policy
    from envs.registry import make_env
    from search.api import run_search

    policy = str(tmp_path_factory.mktemp("search") / "policy")
    built = build_tiny_policy("arithmetic", policy, steps=1200, seed=0)
    # the pairs only carry signal when the search finds right and wrong steps (measured: greedy 0.35, pass@16 0.55)
    assert built["best_of_16_accuracy"] >= 0.4, f"the tiny policy is too weak to test training on: {built}"
    env = make_env("arithmetic")
    res = run_search(env, env.load("train", 128, seed=1), HFPolicy(policy), algo="mcts",
                     config={"simulations": 16, "expand_n": 3}, seed=0)
    return res.trees, policy, env.step_delimiter


@pytest.mark.parametrize(("strategy", "loss"), [("q-gap", "step-dpo"), ("first-error", "step-dpo"),
                                                ("subtree-outcome", "cdpo"), ("ranked-list", "tpo")])
def test_heldout_margin_rises(trees_and_policy, tmp_path, strategy, loss):
    from selfimprove.pairs import extract
    from selfimprove.train import train_policy

    trees, policy, delim = trees_and_policy
    train, _ = extract(trees[:96], strategy, {"delimiter": delim})
    held, _ = extract(trees[96:], "q-gap" if loss == "tpo" else strategy, {"delimiter": delim})
    assert len(train) >= 40 and len(held) >= 10
    m = train_policy(policy, train, tmp_path / "next", loss=loss, beta=0.1, lr=1e-4, epochs=2, batch_size=16,
                     eval_records=held)
    assert m["eval_margin_after"] > m["eval_margin_before"] + 0.01, m
    assert m["eval_accuracy_after"] > 0.55, m


def test_value_model_heldout_auroc(trees_and_policy, tmp_path):
    from selfimprove.train import train_value

    trees, policy, delim = trees_and_policy
    m = train_value(trees, tmp_path / "value", init_from=policy, epochs=3, lr=1e-3, heldout_fraction=0.25,
                    delimiter=delim)
    assert m["heldout_auroc_before"] == pytest.approx(0.5)
    assert m["heldout_auroc"] > 0.6, m
