"""The loop on code: code-tiny end to end (search → pairs → step-DPO → evaluation) with every candidate
program scored in the real sandbox, on a tiny policy with tiny budgets; plus the shipped example config.

The policy is the session's random tiny Llama after a few seconds of SFT on code-tiny's reference
solutions (small a and c), so search finds both programs that pass their tests and programs that fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from envs.registry import make_env
from search.tree import read_trees
from selfimprove.config import load_config, parse_config
from selfimprove.loop import run_loop

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "selfimprove")
KNOBS = {"a_max": 3, "c_max": 3, "shown": 3, "hidden": 2, "timeout": 5.0}
ITERATIONS = 2
ARTIFACTS = ["config.yaml", "summary.json", "summary.png"] + [
    f"iter-{i:03d}/{f}" for i in range(ITERATIONS)
    for f in ("trees.jsonl", "pairs.jsonl", "metrics.json", "policy/config.json", "policy/model.safetensors")]


@pytest.fixture(scope="module")
def code_policy_dir(tiny_policy_dir, tmp_path_factory):
    """The random tiny policy after a few seconds of SFT on code-tiny references: right sometimes."""
    from selfimprove.train import train_policy

    env = make_env("code-tiny", KNOBS)
    records = [{"prompt": env.prompt(p), "completion": env.render(p, env.reference_steps(p) or [])[len(env.prompt(p)):]}
               for p in env.load("train", 160, seed=7)]
    out = tmp_path_factory.mktemp("code_policy")
    train_policy(tiny_policy_dir, records, out, {"loss": "sft", "lr": 3e-3, "epochs": 15, "batch_size": 16,
                                                 "max_length": 256}, seed=0)
    return str(out)


def code_config(policy_dir: str, **over) -> dict:
    cfg = {
        "name": "code-smoke", "seed": 0, "iterations": ITERATIONS,
        "env": {"name": "code-tiny", "knobs": KNOBS},
        "policy": {"path": policy_dir},
        "search": {"algo": "mcts", "problems": 4,
                   "config": {"simulations": 12, "expand_n": 3, "max_depth": 4, "max_step_tokens": 10,
                              "rollout_temperature": 1.0}},
        "pairs": {"strategy": "q-gap", "config": {"nodes": "all", "min_parent_visits": 1, "min_gap": 0.0}},
        "train": {"loss": "step-dpo", "beta": 0.1, "lr": 1e-3, "epochs": 1, "batch_size": 4, "max_length": 64},
        "eval": {"problems": 4, "k": 2},
    }
    cfg.update(over)
    return cfg


def test_code_loop_end_to_end_in_the_sandbox(tmp_path, code_policy_dir):
    cfg = parse_config(code_config(code_policy_dir), "code-smoke.yaml")
    run = tmp_path / "run"
    summary = run_loop(cfg, run)
    for rel in ARTIFACTS:
        assert (run / rel).exists(), rel
    assert not list(run.glob("iter-*/.*"))  # no temp directories left behind
    assert [r["iteration"] for r in summary["rows"]] == [-1, 0, 1]
    for r in summary["rows"]:  # pass@1 (greedy) and pass@k on the held-out split, every row
        assert 0.0 <= r["greedy_acc"] <= 1.0 and 0.0 <= r["maj_acc"] <= r["pass_acc"] <= 1.0
    env = make_env("code-tiny", KNOBS)
    for i in range(ITERATIONS):
        m = json.loads((run / f"iter-{i:03d}" / "metrics.json").read_text())
        assert m["iteration"] == i and m["eval"]["problems"] == 4 and m["eval"]["k"] == 2
        assert 0.0 <= m["eval"]["greedy_acc"] <= 1.0 and m["eval"]["tokens"] > 0
        assert m["search"]["trees"] == 4 and m["pairs"]["count"] > 0 and m["train"]["steps"] >= 1
        assert set(m["wall_s"]) == {"search", "pairs", "train", "eval"}
        trees = read_trees(run / f"iter-{i:03d}" / "trees.jsonl")
        # every terminal's score is what the sandbox says about that program now
        terminals = [(t.problem, t.steps(n.id), n.score) for t in trees for n in t.terminals() if n.score is not None]
        assert terminals and any(s == 1.0 for *_, s in terminals) and any(s < 1.0 for *_, s in terminals)
        assert env.score_many([(p, steps) for p, steps, _ in terminals]) == [s for *_, s in terminals]
        pairs = [json.loads(line) for line in (run / f"iter-{i:03d}" / "pairs.jsonl").read_text().splitlines()]
        assert pairs and all(p["chosen"] != p["rejected"] and p["prompt"].startswith("f(0)=") for p in pairs)
    # iteration 1 searched with the policy trained in iteration 0
    assert read_trees(run / "iter-001" / "trees.jsonl")[0].checkpoint == str((run / "iter-000" / "policy").resolve())


def test_code_loop_cli_json(tmp_path, code_policy_dir):
    """The CLI runs a code-tiny config (outcome pairs, RPO) and its --json line names the run."""
    cfg = code_config(code_policy_dir, iterations=1,
                      search={"algo": "best_of_n", "problems": 4, "config": {"n": 4, "max_depth": 4,
                                                                             "max_step_tokens": 10}},
                      pairs={"strategy": "outcome", "config": {}},
                      train={"loss": "rpo", "beta": 0.1, "lr": 1e-3, "epochs": 1, "batch_size": 4,
                             "max_length": 64})
    path = tmp_path / "code.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    res = subprocess.run([CLI, "run", str(path), "--out", str(out), "--json"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["run_dir"] == str(out)
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [r["iteration"] for r in rows] == [-1, 0] and all(r["greedy_acc"] is not None for r in rows)


def test_example_config_is_valid():
    cfg = load_config(ROOT / "examples" / "code-tiny.yaml")
    assert cfg.env.name == "code-tiny" and cfg.policy.path == "tiny" and cfg.iterations >= 3
    assert cfg.env.knobs.get("sandbox", "auto") != "none"
