"""Value-model training from trees: targets, AUROC, the loss by hand, and a real training run."""

from __future__ import annotations

import json
import math
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
# --- the loss terms and the calibration report, by hand ------------------------------------------------


def test_regression_terms_by_hand():
    from selfimprove.train.value_losses import confidence_weight, regression_loss

    raw = torch.tensor([math.atanh(0.5), 0.0])
    t = torch.tensor([1.0, 0.0])
    assert regression_loss(raw, t).item() == pytest.approx((0.25 + 0.0) / 2)
    # weights 3 : 1 -> (3·0.25 + 0)/4
    assert regression_loss(raw, t, torch.tensor([3.0, 1.0])).item() == pytest.approx(0.1875)
    # BCE: raw 0 -> p = sigmoid(0) = 0.5; target 1 (y=1): log 2; target 0 (y=0.5): also log 2
    assert regression_loss(torch.zeros(2), t, kind="bce").item() == pytest.approx(math.log(2))
    # raw = atanh(0.5) -> p = sigmoid(2·atanh(0.5)) = 0.75 = (1 + tanh)/2; y = 1 -> -log 0.75
    assert regression_loss(raw[:1], t[:1], kind="bce").item() == pytest.approx(-math.log(0.75))
    assert (confidence_weight(3, 1.0), confidence_weight(3, 0.0)) == (0.75, 1.0)


def test_bradley_terry_by_hand_and_its_gradient():
    from selfimprove.train.value_losses import bradley_terry_loss, preference_pairs

    raw = torch.tensor([1.0, 0.0, -1.0, 0.5, 0.2], requires_grad=True)
    labels = [1, 0, 0, 1, None]
    groups = ["a", "a", "a", "b", "b"]  # group b has no (1, 0) pair; None is unlabelled
    assert preference_pairs(labels, groups) == ([0, 0], [1, 2], [0.5, 0.5], 1)
    loss, n = bradley_terry_loss(raw, labels, groups)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731  -log sigmoid(d) = softplus(-d)
    assert n == 2 and loss.item() == pytest.approx((sp(-1.0) + sp(-2.0)) / 2)
    loss.backward()
    assert raw.grad is not None
    g = raw.grad.tolist()
    assert g[0] < 0 and g[1] > 0 and g[2] > 0 and g[3] == g[4] == 0.0  # descent raises the good step
    # two groups with pairs: each group counts once (weights 1/(n_pos·n_neg), then / groups)
    loss2, n2 = bradley_terry_loss(torch.tensor([0.0, 0.0, 2.0, 0.0]), [1, 0, 1, 0], ["a", "a", "b", "b"])
    assert n2 == 2 and loss2.item() == pytest.approx((math.log(2) + sp(-2.0)) / 2)


def test_margin_rank_and_combined_by_hand():
    from selfimprove.train.value_losses import combined_value_loss, margin_rank_loss

    v = torch.tensor([-0.2, 0.5])
    loss, n = margin_rank_loss(v, [1.0, -1.0], ["g", "g"], margin=0.1, gap=0.1)
    assert n == 1 and loss.item() == pytest.approx(0.8)  # relu(0.1 − (−0.2 − 0.5))
    raw = torch.atanh(v)
    loss, parts = combined_value_loss(raw, [1.0, -1.0], [1, 0], ["g", "g"], regression_weight=0.5,
                                      rank_weight=2.0, bt_weight=1.0)
    mse = ((-0.2 - 1) ** 2 + (0.5 + 1) ** 2) / 2
    bt = math.log1p(math.exp(-(math.atanh(-0.2) - math.atanh(0.5))))
    assert parts["regression"] == pytest.approx(mse) and parts["bt"] == pytest.approx(bt, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * mse + 2.0 * 0.8 + bt, rel=1e-5)
    assert (parts["rank_pairs"], parts["bt_pairs"]) == (1, 1)


def test_calibration_report_by_hand():
    from selfimprove.train.value_metrics import calibration_report, ece

    # bins of 0.1: [0.1, 0.15] -> mean p 0.125 vs freq 0.25; [0.9] -> 0.9 vs 1.0
    assert ece([0.1, 0.15, 0.9], [0.0, 0.5, 1.0]) == pytest.approx((2 * 0.125 + 0.1) / 3)
    rep = calibration_report([0.8, -0.8, 0.6, 0.0], [1.0, -1.0, 0.2, -1.0], [1, 0, 1, 0], [1, 1, 2, 2])
    assert rep["auroc"] == 1.0 and rep["examples"] == 4 and rep["pair_accuracy"] is None
    assert rep["by_depth"]["1"] == {"examples": 2, "auroc": 1.0, "ece": pytest.approx(0.1)}
    # depth 2: p 0.8 vs 0.6 (bin 8), p 0.5 vs 0 (bin 5) -> (0.2 + 0.5)/2
    assert rep["by_depth"]["2"]["ece"] == pytest.approx(0.35)
    # sibling pairs (labels 1 over 0 in one group): g: 0.8 > -0.8 right; h: 0.6 vs 0.7 wrong, 0.6 vs 0.6 a tie
    rep = calibration_report([0.8, -0.8, 0.6, 0.7, 0.6], [1, -1, 1, -1, -1], [1, 0, 1, 0, 0], [1] * 5,
                             ["g", "g", "h", "h", "h"])
    assert rep["pair_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)


def test_value_examples_carry_support_and_depth():
    a = read_trees(FIX)[0]
    exs = value_examples([a])
    counts = a.outcome_counts()
    kept = [n for n in sorted(a, key=lambda n: n.id) if counts[n.id][0] > 0]
    assert [(e.support, e.depth) for e in exs] == [(counts[n.id][0], n.depth) for n in kept]


def test_value_config_needs_a_loss():
    from selfimprove.train.config import ValueTrainConfig

    with pytest.raises(UserError, match="all 0: nothing to train"):
        ValueTrainConfig.parse({"regression_weight": 0, "rank_weight": 0}, "value")
    assert ValueTrainConfig.parse({"regression_weight": 0, "rank_weight": 0, "bt_weight": 1}, "v").bt_weight == 1


def test_step_verifier_from_preferences_alone_learns(tiny_policy_dir, tmp_path):
    # Tree-PLV-style: only the sibling Bradley–Terry term; the report has calibration by depth.
    from selfimprove.train import train_value

    m = train_value(arith_trees(40, 0), tmp_path / "v", {"epochs": 4, "lr": 3e-3, "heldout_fraction": 0.25,
                                                          "batch_size": 16, "regression_weight": 0,
                                                          "rank_weight": 0, "bt_weight": 1},
                    init_from=tiny_policy_dir, seed=0)
    assert m["bt_pairs"] > 0 and m["rank_pairs"] == 0 and m["heldout_auroc"] > 0.75, m
    assert set(m["heldout_by_depth"]) == {"0", "1", "2"} and m["heldout_ece"] is not None
    assert m["heldout_pair_accuracy"] > 0.75


def test_combined_loss_split_by_step_counts_adds_up_to_the_whole():
    """A step cut into parts (processes / micro-batches), each term divided by its count over the whole step
    (value_counts summed), gives the whole batch's loss when sibling groups stay within one part."""
    from selfimprove.train.value_losses import combined_value_loss, value_counts

    raw = torch.tensor([0.3, -0.2, 0.9, 0.1, -0.7, 0.4])
    targets = [1.0, -1.0, 0.5, 1.0, -1.0, -0.2]
    labels = [1, 0, 1, 1, 0, None]
    groups = ["a", "a", "a", "b", "b", "c"]
    weights = [0.5, 1.0, 0.75, 1.0, 0.25, 1.0]
    def loss(p: slice, norm=None) -> torch.Tensor:
        return combined_value_loss(raw[p], targets[p], labels[p], groups[p], weights[p], regression_weight=0.7,
                                   rank_weight=1.3, bt_weight=0.9, rank_gap=0.1, norm=norm)[0]

    whole = loss(slice(0, 6))
    parts = [slice(0, 3), slice(3, 6)]
    counts = [value_counts(targets[p], labels[p], groups[p], weights[p], 0.1) for p in parts]
    norm = {k: sum(c[k] for c in counts) for k in counts[0]}
    assert norm == {"weight": 4.5, "rank_pairs": 4.0, "bt_groups": 2.0}  # a: 3 ranked pairs, b: 1
    split = sum(loss(p, norm) for p in parts)
    assert float(split) == pytest.approx(float(whole), rel=1e-6)
