"""Training that fits and spreads (accelerate): a step split into accumulation micro-batches or across
processes is the one-process step on the whole batch; bf16 autocast and gradient checkpointing; only the
main process writes; `python -m selfimprove.cli` works, so `accelerate launch -m selfimprove.cli` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selfimprove.pairs import PreferencePair, write_records
from selfimprove.train import train_policy, train_value
from selfimprove.train.runtime import Runtime, output_dir

# Uneven weights and shared prompts: a loss normalised per part instead of per step would differ.
PAIRS = [PreferencePair(strategy="t", prompt=f"Q: {a % 4}+1\n", chosen=f"{a}+1={a + 1}\n", rejected=f"{a}+1={a}\n",
                        weight=1.0 + a % 3) for a in range(10)]
BASE = {"loss": "step-dpo", "lr": 1e-3, "batch_size": 4}


def weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def losses(m: dict) -> list[float]:
    return [row["loss"] for row in m["history"]]


def test_micro_batches_cut_each_step_into_processes_times_accumulation(monkeypatch):
    rt = Runtime(gradient_accumulation_steps=2)
    assert rt.micro_batches(list(range(10))) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # one process: both parts
    rt.world, rt.rank = 2, 1
    # 10 records, 4 parts: [0,1] [2,3,4] [5,6] [7,8,9]; rank 1 takes parts 2 and 3.
    assert rt.micro_batches(list(range(10))) == [[5, 6], [7, 8, 9]]
    assert rt.micro_batches([0]) == [[], [0]]  # fewer records than parts: empty parts (fit runs them × 0)


@pytest.mark.parametrize("loss", ["step-dpo", "sft"])
def test_accumulation_takes_the_same_step(tiny_policy_dir, tmp_path, loss):
    data = PAIRS if loss != "sft" else [{"prompt": p.prompt, "completion": p.chosen} for p in PAIRS]
    one = train_policy(tiny_policy_dir, data, tmp_path / "one", {**BASE, "loss": loss})
    acc = train_policy(tiny_policy_dir, data, tmp_path / "acc", {**BASE, "loss": loss, "gradient_accumulation_steps": 2})
    assert acc["steps"] == one["steps"] == 3
    assert losses(acc) == pytest.approx(losses(one), abs=1e-6)
    moved = max_diff(weights(tmp_path / "one"), weights(Path(tiny_policy_dir)))
    assert moved > 1e-3 and max_diff(weights(tmp_path / "acc"), weights(tmp_path / "one")) < 1e-4


def test_accumulation_normalises_by_the_whole_steps_weight(tiny_policy_dir, tmp_path):
    """The loss of a split step is Σ w·ℓ / Σ w over the whole step: the mean of each part's own weighted
    mean would differ, since the parts' weights differ (1+2+3+1 vs 2+3)."""
    from selfimprove.train.compact import record_weights

    first = PAIRS[:4]
    assert record_weights([type("E", (), {"weight": p.weight})() for p in first]) == {"weight": 7.0}  # type: ignore[arg-type]
    a = train_policy(tiny_policy_dir, first, tmp_path / "a", {**BASE, "lr": 1e-9, "beta": 1.0})
    b = train_policy(tiny_policy_dir, first, tmp_path / "b", {**BASE, "lr": 1e-9, "beta": 1.0,
                                                                 "gradient_accumulation_steps": 4})
    assert losses(b) == pytest.approx(losses(a), abs=1e-6)


def test_tpo_lists_accumulate_to_the_same_step(tiny_policy_dir, tmp_path):
    from selfimprove.pairs.records import PreferenceList

    lists = []
    for a in range(6):
        steps = [[f"{a}+1={a + 1}", f"A: {a + 1}"], [f"{a}+1={a}", f"A: {a}"], [f"{a}+1={a + 2}", f"A: {a + 2}"]]
        lists.append(PreferenceList(strategy="t", prompt=f"Q: {a % 3}+1\n", delimiter="\n",
                                    completions=["".join(x + "\n" for x in st) for st in steps], steps=steps,
                                    scores=[1.0, 0.0, -0.5], step_rewards=[[1.0, 1.0], [0.0, 0.0], [-0.5, -0.5]],
                                    node_ids=[1, 2, 3], weight=1.0 + a % 2))
    cfg = {**BASE, "loss": "tpo"}
    one = train_policy(tiny_policy_dir, lists, tmp_path / "one", cfg)
    acc = train_policy(tiny_policy_dir, lists, tmp_path / "acc", {**cfg, "gradient_accumulation_steps": 3})
    assert losses(acc) == pytest.approx(losses(one), abs=1e-6)
    assert max_diff(weights(tmp_path / "acc"), weights(tmp_path / "one")) < 1e-4


def test_value_training_accumulates_with_both_terms(tiny_policy_dir, tmp_path):
    from envs.types import Problem
    from search.tree import Tree

    trees = []
    for a in range(6):
        t = Tree(Problem(id=f"p{a}", prompt=f"{a}+1"), prompt=f"Q: {a}+1\n")
        t.add_child(0, f"A: {a + 1}", terminal=True, score=1.0, visits=1, value_sum=1.0)
        t.add_child(0, f"A: {a}", terminal=True, score=0.0, visits=1, value_sum=-1.0)
        trees.append(t)
    cfg = {"epochs": 1, "batch_size": 4, "heldout_fraction": 0.0, "lr": 1e-3}
    one = train_value(trees, tmp_path / "v1", cfg, init_from=tiny_policy_dir)
    acc = train_value(trees, tmp_path / "v2", {**cfg, "gradient_accumulation_steps": 2}, init_from=tiny_policy_dir)
    # Sibling groups (2 nodes) stay whole in parts of 2, so the ranking pairs are the same ones.
    assert [r["rank_pairs"] for r in acc["history"]] == [r["rank_pairs"] for r in one["history"]]
    assert losses(acc) == pytest.approx(losses(one), abs=1e-6)


def test_bf16_autocast_and_checkpointing(tiny_policy_dir, tmp_path):
    fp32 = train_policy(tiny_policy_dir, PAIRS, tmp_path / "fp32", BASE)
    bf16 = train_policy(tiny_policy_dir, PAIRS, tmp_path / "bf16", {**BASE, "mixed_precision": "bf16"})
    assert bf16["mixed_precision"] == "bf16"
    # bf16 autocast rounds the forward: close to fp32 (the first loss is log 2 either way), not equal.
    assert losses(bf16) == pytest.approx(losses(fp32), abs=2e-2) and losses(bf16) != losses(fp32)
    ckpt = train_policy(tiny_policy_dir, PAIRS, tmp_path / "ckpt", {**BASE, "gradient_checkpointing": True})
    assert ckpt["gradient_checkpointing"] is True
    assert losses(ckpt) == pytest.approx(losses(fp32), abs=1e-6)
    assert max_diff(weights(tmp_path / "ckpt"), weights(tmp_path / "fp32")) < 1e-5


def test_only_the_main_process_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with output_dir(tmp_path / "out") as d:
        (d / "x").write_text("scratch")
    assert not (tmp_path / "out").exists() and not d.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    with output_dir(tmp_path / "out") as d:
        (d / "x").write_text("kept")
    assert (tmp_path / "out" / "x").read_text() == "kept"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "selfimprove.cli", "train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--data" in out.stdout


def _launch(args: list[str], nproc: int, port: int, cwd: Path) -> dict:
    """`accelerate launch` of the CLI on this CPU machine: --multi_gpu is accelerate's torchrun launcher
    (with no GPU the processes join over gloo); its --cpu flag runs several processes only through mpirun."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    head = [*launch, "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(port)] if nproc > 1 else \
        [*launch, "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*head, "-m", "selfimprove.cli", *args, "--json"], capture_output=True, text=True, cwd=cwd,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_processes_take_the_one_process_step(tiny_policy_dir, tmp_path):
    """2 CPU processes (gloo, DDP) under `accelerate launch` = 1 process on the combined batch: same losses,
    same update (within float error), one checkpoint written by rank 0."""
    write_records(tmp_path / "pairs.jsonl", PAIRS)
    common = ["train", "--policy", tiny_policy_dir, "--data", "pairs.jsonl", "--lr", "1e-3", "--batch-size", "4"]
    one = _launch([*common, "--out", "one"], 1, 0, tmp_path)
    two = _launch([*common, "--out", "two"], 2, 29531, tmp_path)
    assert (one["processes"], two["processes"]) == (1, 2)
    h1 = json.loads((tmp_path / "one" / "training_metrics.json").read_text())
    h2 = json.loads((tmp_path / "two" / "training_metrics.json").read_text())
    assert losses(h2) == pytest.approx(losses(h1), abs=1e-6)
    assert max_diff(weights(tmp_path / "one"), weights(Path(tiny_policy_dir))) > 1e-3
    assert max_diff(weights(tmp_path / "two"), weights(tmp_path / "one")) < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "pairs.jsonl", "two"]  # no leftovers
