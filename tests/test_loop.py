"""The whole loop on a tiny policy with tiny budgets: artifacts, summary, resume after SIGKILL.

The policy is the session's random tiny Llama warmed up for a few seconds by SFT on easy arithmetic
(one or two operations, operands 1–5), so search finds both right and wrong answers and every stage
(pairs, value model, step-DPO) has data to work on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from envs.progress import Progress
from envs.registry import make_env
from selfimprove.config import parse_config
from selfimprove.loop import run_loop

CLI = str(Path(sys.executable).parent / "selfimprove")
KNOBS = {"min_ops": 1, "max_ops": 2, "operand_min": 1, "operand_max": 5, "ops": "+*"}


@pytest.fixture(scope="session")
def warm_policy_dir(tiny_policy_dir, tmp_path_factory):
    """The random tiny policy after 150 SFT steps (≈3 s) on easy arithmetic: right sometimes, wrong often."""
    from selfimprove.train import train_policy

    env = make_env("arithmetic", KNOBS)
    records = [{"prompt": env.prompt(p), "completion": env.render(p, env.reference_steps(p) or [])[len(env.prompt(p)):]}
               for p in env.load("train", 160, seed=123)]
    out = tmp_path_factory.mktemp("warm_policy")
    train_policy(tiny_policy_dir, records, out, {"loss": "sft", "lr": 3e-3, "epochs": 15, "batch_size": 16,
                                                 "max_length": 256}, seed=0)
    return str(out)


class Reports(Progress):
    """Every update, with the phase it came in."""

    def __init__(self):
        self.phase_name, self.updates = "", []

    def phase(self, name, total=None):
        self.phase_name = name

    def update(self, done, total=None, **info):
        self.updates.append((self.phase_name, (done, total, info)))


def tiny_config(policy_dir: str, **over) -> dict:
    cfg = {
        "name": "smoke", "seed": 0, "iterations": 2,
        "env": {"name": "arithmetic", "knobs": KNOBS},
        "policy": {"path": policy_dir},
        "value": {"enabled": True, "training": {"epochs": 1, "heldout_fraction": 0.34}},
        "search": {"algo": "mcts", "problems": 3,
                   "config": {"simulations": 12, "expand_n": 3, "max_depth": 4, "max_step_tokens": 10,
                              "rollout_temperature": 1.0}},
        "pairs": {"strategy": "q-gap", "config": {"nodes": "all", "min_parent_visits": 1, "min_gap": 0.0}},
        "train": {"loss": "step-dpo", "beta": 0.1, "lr": 1e-3, "epochs": 1, "batch_size": 4, "max_length": 64},
        "eval": {"problems": 4, "k": 2},
    }
    for k, v in over.items():
        cfg[k] = v
    return cfg


ARTIFACTS = ["config.yaml", "summary.json", "summary.png"] + [
    f"iter-{i:03d}/{f}" for i in range(2)
    for f in ("trees.jsonl", "pairs.jsonl", "metrics.json", "policy/config.json", "value/config.json")]


def counts(run: Path) -> dict:
    """What must match between an uninterrupted and a resumed run."""
    summary = json.loads((run / "summary.json").read_text())
    out: dict[str | int, Any] = {"rows": [{k: r[k] for k in ("iteration", "greedy_acc", "maj_acc", "pass_acc",
                                                              "pairs", "tokens")}
                    for r in summary["rows"]]}
    for i in range(2):
        m = json.loads((run / f"iter-{i:03d}" / "metrics.json").read_text())
        out[i] = {"trees": m["search"]["trees"], "nodes": m["search"]["nodes"], "pairs": m["pairs"]["count"],
                  "search_tokens": m["search"]["tokens"], "train_steps": m["train"].get("steps"),
                  "value_examples": m["value"].get("train_examples")}
    return out


def test_loop_smoke(tmp_path, warm_policy_dir):
    from search.tree import read_trees
    from selfimprove.tree_view import render_text

    cfg = parse_config(tiny_config(warm_policy_dir), "smoke.yaml")
    run = tmp_path / "run"
    reports = Reports()
    summary = run_loop(cfg, run, progress=reports)
    for rel in ARTIFACTS:
        assert (run / rel).exists(), rel
    assert [r["iteration"] for r in summary["rows"]] == [-1, 0, 1]
    m0 = json.loads((run / "iter-000" / "metrics.json").read_text())
    assert m0["search"]["trees"] == 3 and m0["pairs"]["count"] > 0 and m0["train"]["steps"] >= 1
    assert 0.0 <= m0["eval"]["maj_acc"] <= m0["eval"]["pass_acc"] <= 1.0
    assert set(m0["wall_s"]) == {"search", "pairs", "value", "train", "eval"}
    # arithmetic has a step check: the pairs' labels are audited against it, and the table shows them
    audit = m0["pairs"]["audit"]
    assert audit["pairs"] == m0["pairs"]["count"] and sum(audit["counts"].values()) == audit["pairs"]
    assert summary["rows"][1]["pairs_right"] == audit["shares"]["right-vs-wrong"]
    # the value model: a calibration report every iteration, warm-started from the previous iteration's
    assert "ece" in m0["value"] and isinstance(m0["value"]["heldout_by_depth"], dict)
    m1 = json.loads((run / "iter-001" / "metrics.json").read_text())
    assert m1["value"]["init_from"].endswith("iter-000/value") and "ece" in m1["value"]
    assert yaml.safe_load((run / "config.yaml").read_text())["search"]["problems"] == 3
    # the next iteration searched with the policy trained in this one
    assert read_trees(run / "iter-001" / "trees.jsonl")[0].checkpoint == str((run / "iter-000" / "policy").resolve())
    assert not list(run.glob("iter-*/.*"))  # no temp directories left behind
    text = render_text(read_trees(run / "iter-000" / "trees.jsonl")[0])
    assert max(len(line) for line in text.splitlines()) <= 80
    # a finished run resumes to the same summary without redoing anything
    assert run_loop(cfg, run, resume=True)["rows"] == summary["rows"]
    # one progress protocol all the way down: search counts problems, training reports its loss per step,
    # evaluation tags its parts
    phases = [p for p, _ in reports.updates]
    assert phases[0] == "baseline" and "iter 0 search" in phases and "iter 1 train" in phases
    search = [(d, t) for p, (d, t, _) in reports.updates if p == "iter 0 search"]
    assert search[-1] == (3, 3)
    train = [i for p, (_, _, i) in reports.updates if p == "iter 0 train"]
    assert train and all(isinstance(i["loss"], float) for i in train)
    assert {i.get("stage") for p, (_, _, i) in reports.updates if p == "iter 0 eval"} == {"greedy", "best-of-k"}


# A loop run that SIGKILLs itself at the first progress report of one phase, i.e. in the middle of that stage.
KILL_AT = """
import os, signal, sys

from envs.progress import Progress
from selfimprove.config import load_config
from selfimprove.loop import run_loop


class KillAt(Progress):
    def __init__(self, target):
        self.target, self.current = target, None

    def phase(self, name, total=None):
        self.current = name

    def update(self, done, total=None, **info):
        if self.current == self.target:
            os.kill(os.getpid(), signal.SIGKILL)


cfg_path, out, target = sys.argv[1:]
run_loop(load_config(cfg_path), out, progress=KillAt(target))
"""


def _run(cfg_path: Path, out: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess:
    """`selfimprove run` on the config; with `kill` (a phase, e.g. "iter 0 search"), the loop killed there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    cmd = [sys.executable, "-c", KILL_AT, str(cfg_path), str(out), kill] if kill else \
        [CLI, "run", str(cfg_path), "--out", str(out), "--json", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_resume_after_sigkill(tmp_path, warm_policy_dir):
    cfg_path = tmp_path / "smoke.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(warm_policy_dir)))
    ref = _run(cfg_path, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    assert json.loads(ref.stdout.strip().splitlines()[-1])["run_dir"] == str(tmp_path / "ref")
    for stage in ("iter 0 search", "iter 1 train"):
        out = tmp_path / stage.replace(" ", "-")
        killed = _run(cfg_path, out, kill=stage)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert not (out / "summary.png").exists()
        if stage == "iter 1 train":
            again = _run(cfg_path, out)  # without --resume: refused, nothing touched
            assert again.returncode == 1 and "--resume" in again.stderr
        resumed = _run(cfg_path, out, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        for rel in ARTIFACTS:
            assert (out / rel).exists(), (stage, rel)
        assert not list(out.glob("iter-*/.*")), stage
        assert counts(out) == counts(tmp_path / "ref"), stage


def test_resume_refuses_a_changed_config(tmp_path, warm_policy_dir):
    cfg_path = tmp_path / "smoke.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(warm_policy_dir, iterations=1)))
    out = tmp_path / "run"
    killed = _run(cfg_path, out, kill="iter 0 search")
    assert killed.returncode == -signal.SIGKILL
    res = _run(cfg_path, out, "--resume", "--set", "train.beta=0.5")
    assert res.returncode == 1
    assert "field 'train.beta' differs from the config given" in res.stderr and "Traceback" not in res.stderr


def test_sft_loop_records_are_verified_solutions(tmp_path, warm_policy_dir):
    cfg = parse_config(tiny_config(warm_policy_dir, iterations=1, value={"enabled": False},
                                   train={"loss": "sft", "lr": 1e-3, "epochs": 1, "batch_size": 4}), "sft.yaml")
    run = tmp_path / "sft"
    run_loop(cfg, run)
    recs = [json.loads(line) for line in (run / "iter-000" / "pairs.jsonl").read_text().splitlines()]
    env = make_env("arithmetic", KNOBS)
    from envs.types import Problem
    from search.tree import read_trees

    problems = {t.problem.id: t.problem for t in read_trees(run / "iter-000" / "trees.jsonl")}
    assert recs, "the warm policy should solve some easy problems"
    for r in recs:
        p: Problem = problems[r["problem_id"]]
        assert env.score(p, r["completion"].rstrip("\n").split("\n")) == 1.0
    assert (run / "iter-000" / "policy" / "config.json").is_file()


def test_eval_cli(warm_policy_dir):
    res = subprocess.run([CLI, "eval", "--policy", warm_policy_dir, "--env", "arithmetic", "--problems", "3",
                          "--k", "2", "--json"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["problems"] == 3 and out["k"] == 2
    assert 0.0 <= out["maj_acc"] <= out["pass_acc"] <= 1.0 and out["tokens"] > 0
    bad = subprocess.run([CLI, "eval", "--policy", "/no/such/dir", "--problems", "1"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
