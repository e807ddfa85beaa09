"""Value-model training from trees: targets, AUROC, the loss by hand, and a real training run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from envs.errors import UserError
from envs.types import Problem
from search.tree import Tree, read_trees, write_trees
from selfimprove.train.value import auroc, value_examples, value_loss

FIX = Path(__file__).parent / "fixtures" / "pairs_trees.jsonl"


def test_auroc_by_hand():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert auroc([0.9, 0.1, 0.2], [1, 0, 0]) == 1.0
    assert auroc([0.3, 0.2], [1, 1]) is None


def test_value_examples_mc_targets_on_golden_tree():
    a = read_trees(FIX)[0]
    exs = value_examples([a])
    # node: (terminals, correct) → 2·c/t − 1; node 9 has no terminal below and is skipped
    assert [e.target for e in exs] == pytest.approx([-1 / 3, 0, -1, 1, -1, 1, -1, -1, -1])
    assert [e.label for e in exs] == [1, 1, 0, 1, 0, 1, 0, 0, 0]
    assert exs[3].prefix == "Q: 2+3*4\n3*4=12\n2+12=14\n" and exs[3].group == (0, 1)
    q = value_examples([a], target="q")
    assert len(q) == 10 and q[1].target == pytest.approx(0.5)
    with pytest.raises(UserError, match="value target 'v' is not 'mc' or 'q'"):
        value_examples([a], target="v")


def test_value_loss_by_hand():
    g = [(0, 0), (0, 0)]
    loss, n = value_loss(torch.tensor([0.5, -0.2]), torch.tensor([1.0, -1.0]), g, rank_weight=1.0,
                         rank_margin=0.1, rank_gap=0.1)
    assert n == 1 and loss.item() == pytest.approx(0.445)
    loss, _ = value_loss(torch.tensor([-0.2, 0.5]), torch.tensor([1.0, -1.0]), g, rank_weight=1.0,
                         rank_margin=0.1, rank_gap=0.1)
    assert loss.item() == pytest.approx(1.845 + 0.8)
    loss, n = value_loss(torch.tensor([-0.2, 0.5]), torch.tensor([1.0, -1.0]), [(0, 0), (0, 1)], rank_weight=1.0,
                         rank_margin=0.1, rank_gap=0.1)
    assert n == 0 and loss.item() == pytest.approx(1.845)  # not siblings: no ranking term


def arith_trees(n: int, seed: int) -> list[Tree]:
    """Each problem: a right first step leading to a right answer, and a wrong one (×10) leading to a wrong one."""
    rng = random.Random(seed)
    trees = []
    for i in range(n):
        a, b, c = rng.randint(1, 11), rng.randint(1, 7), rng.randint(1, 5)
        t = Tree(Problem(id=f"p{i}", prompt=f"{a}+{b}*{c}", answer=str(a + b * c)), tree_id=f"t{i}",
                 prompt=f"Q: {a}+{b}*{c}\n")
        good = t.add_child(0, f"{b}*{c}={b * c}", visits=2, value_sum=2.0)
        bad = t.add_child(0, f"{b}*{c}={b * c * 10}", visits=2, value_sum=-2.0)
        t.add_child(good.id, f"A: {a + b * c}", terminal=True, score=1.0, visits=1, value_sum=1.0)
        t.add_child(bad.id, f"A: {a + b * c * 10}", terminal=True, score=0.0, visits=1, value_sum=-1.0)
        trees.append(t)
    return trees


def test_train_value_learns_and_reports_auroc(tiny_policy_dir, tmp_path):
    from agents.value import HFValueModel
    from selfimprove.train import train_value

    path = tmp_path / "trees.jsonl"
    write_trees(path, arith_trees(40, 0))
    m = train_value(path, tmp_path / "value", {"epochs": 4, "lr": 3e-3, "heldout_fraction": 0.25, "batch_size": 16},
                    init_from=tiny_policy_dir, seed=0)
    assert m["heldout_trees"] == 10 and m["train_examples"] == 30 * 5
    assert m["heldout_auroc_before"] == pytest.approx(0.5)  # zero-initialised head: every value is 0
    assert m["heldout_auroc"] > 0.75, m
    assert m["heldout_mse"] < m["heldout_mse_before"]
    assert m["rank_pairs"] > 0
    vm = HFValueModel(str(tmp_path / "value"))
    v = vm.value(["Q: 1+2*3\n2*3=6\n", "Q: 1+2*3\n2*3=60\n"])
    assert all(-1 <= x <= 1 for x in v)
    assert json.loads((tmp_path / "value" / "training_metrics.json").read_text())["steps"] == m["steps"]
    # continue from the saved value directory
    m2 = train_value(arith_trees(8, 1), tmp_path / "value2", {"epochs": 1, "lr": 1e-3}, init_from=tmp_path / "value")
    assert m2["heldout_auroc_before"] is not None and m2["heldout_auroc_before"] > 0.5


def test_train_value_errors(tiny_policy_dir, tmp_path):
    from selfimprove.train import train_value

    t = Tree(Problem(id="p", prompt="x"), prompt="Q: x\n")
    t.add_child(0, "step", visits=1, value_sum=0.5)
    with pytest.raises(UserError, match="no value-training examples"):
        train_value([t, t], tmp_path / "v", {"heldout_fraction": 0.0}, init_from=tiny_policy_dir)
    with pytest.raises(UserError, match="heldout_fraction must be in"):
        train_value([t], tmp_path / "v", {"heldout_fraction": 1.0}, init_from=tiny_policy_dir)


def test_cli_train_value(tiny_policy_dir, tmp_path, capsys):
    from selfimprove.cli import main

    path = tmp_path / "trees.jsonl"
    write_trees(path, arith_trees(10, 2))
    rc = main(["train-value", "--trees", str(path), "--out", str(tmp_path / "v"), "--init", tiny_policy_dir,
               "--epochs", "1", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["heldout_trees"] == 2 and "heldout_auroc" in s and (tmp_path / "v" / "value_config.json").is_file()


def test_value_lora_trains_adapter_and_saves_merged(tiny_policy_dir, tmp_path):
    """value.training.lora: only the adapter and the head train; the saved trunk is a plain HF model with
    the adapter merged, which loads and scores like any value model."""
    from agents.value import HFValueModel
    from selfimprove.train import train_value

    full = train_value(arith_trees(12, 0), tmp_path / "full", {"epochs": 1, "lr": 3e-3}, init_from=tiny_policy_dir,
                       device="cpu")
    m = train_value(arith_trees(12, 0), tmp_path / "lora", {"epochs": 3, "lr": 3e-3, "lora": True, "lora_r": 4},
                    init_from=tiny_policy_dir, device="cpu")
    assert m["lora"] and 0 < m["trainable_params"] < full["trainable_params"] / 4
    assert m["heldout_mse"] < m["heldout_mse_before"]
    assert not any("lora" in p.name for p in (tmp_path / "lora").iterdir())
    v = HFValueModel(str(tmp_path / "lora")).value(["Q: 1+2*3\n2*3=6\n", "Q: 1+2*3\n2*3=60\n"])
    assert v[0] != v[1]
