"""`selfimprove search` and run_search on the real HF backend (a tiny random policy)."""

from __future__ import annotations

import json

import pytest

from search.tree import read_trees
from selfimprove.cli import main

SMALL = ["--set", "max_depth=3", "--set", "max_step_tokens=6"]


def test_search_cli_writes_trees_and_summary(tiny_policy_dir, tmp_path, capsys):
    out = tmp_path / "trees.jsonl"
    rc = main(["search", "--policy", tiny_policy_dir, "--env", "arithmetic", "--algo", "mcts", "--problems", "3",
               "--seed", "1", "--out", str(out), "--set", "simulations=3", "--set", "expand_n=2", *SMALL, "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["problems"] == 3 and summary["backend_calls"] >= 1 and summary["tokens"] > 0
    assert 0 <= summary["accuracy"] <= 1 and 0 < summary["model_share"] <= 1
    trees = read_trees(out)
    assert len(trees) == 3 and all(t.config["algo"] == "mcts" and t.config["simulations"] == 3 for t in trees)
    assert all(t.checkpoint and t.root.visits == 3 for t in trees)
    assert summary["nodes"] == sum(len(t) for t in trees)


def test_search_cli_knobs_set_the_environment(tiny_policy_dir, tmp_path, capsys):
    from envs.arithmetic import tokenize

    out = tmp_path / "trees.jsonl"
    rc = main(["search", "--policy", tiny_policy_dir, "--env", "arithmetic", "--algo", "greedy", "--problems", "4",
               "--knob", "min_ops=1", "--knob", "max_ops=1", "--knob", "operand_max=9", "--out", str(out), *SMALL[2:]])
    assert rc == 0
    exprs = [t.problem.metadata["expression"] for t in read_trees(out)]
    assert all(len(tokenize(e)) == 3 and max(int(x) for x in tokenize(e)[::2]) <= 9 for e in exprs), exprs
    assert main(["search", "--policy", tiny_policy_dir, "--env", "arithmetic", "--knob", "max_opz=1",
                 "--out", str(tmp_path / "t2.jsonl")]) == 1
    assert "max_opz" in capsys.readouterr().err and not (tmp_path / "t2.jsonl").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--algo", "mtcs"], "unknown search algorithm 'mtcs' (did you mean 'mcts'?)"),
    (["--set", "simulation=3"], "field 'simulation': unknown key"),
    (["--set", "simulations"], "--set 'simulations': expected key=value"),
    (["--env", "nope"], "unknown environment 'nope'"),
])
def test_search_cli_bad_input_is_one_sentence(tiny_policy_dir, tmp_path, capsys, args, message):
    # A later --algo / --env overrides the earlier one (click keeps the last value).
    argv = ["search", "--policy", tiny_policy_dir, "--env", "arithmetic", "--out", str(tmp_path / "t.jsonl"), *args]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "t.jsonl").exists()


def test_hf_backend_batched_equals_one_at_a_time(tiny_policy_dir):
    from agents.hf import HFPolicy
    from envs.registry import make_env
    from search.api import run_search

    env = make_env("arithmetic")
    probs = env.load("test", 4, seed=0)
    cfg = {"simulations": 3, "expand_n": 2, "max_depth": 3, "max_step_tokens": 6}
    pol = HFPolicy(tiny_policy_dir)
    a = run_search(env, probs, pol, algo="mcts", config=cfg, seed=2)
    b = run_search(env, probs, pol, algo="mcts", config=cfg, seed=2, max_active=1)
    strip = lambda trees: [[(n.parent, n.step, n.visits) for n in t] for t in trees]  # noqa: E731
    assert strip(a.trees) == strip(b.trees)
    assert a.stats["backend_calls"] < b.stats["backend_calls"]
