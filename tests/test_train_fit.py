"""The one training loop (`selfimprove.train.fit`) against a hand computation, and every trainer —
step-DPO, SFT, the value model, the tiny-policy builder — stepping through it."""

from __future__ import annotations

import pytest
import torch

from envs.errors import UserError
from envs.progress import Progress
from selfimprove.train.fit import fit, linear_schedule


class Record(Progress):
    def __init__(self):
        self.updates: list[tuple[int, int | None, dict]] = []

    def update(self, done, total=None, **info):
        self.updates.append((done, total, info))


def quadratic(w: torch.nn.Parameter):
    """loss (w − 3)², gradient 2(w − 3)."""
    return lambda _batch: ((w - 3.0) ** 2, {"w": w.item()})


def test_steps_match_a_hand_computation():
    # SGD lr 0.1 from w = 0: loss 9, grad −6 → w 0.6; loss 5.76, grad −4.8 → w 1.08.
    w = torch.nn.Parameter(torch.tensor(0.0))
    rec = Record()
    hist = fit([w], torch.optim.SGD([w], lr=0.1), range(2), quadratic(w), total=2, grad_clip=0.0, progress=rec)
    assert [h["step"] for h in hist] == [1, 2]
    assert [h["loss"] for h in hist] == pytest.approx([9.0, 5.76])
    assert w.item() == pytest.approx(1.08)
    assert [(d, t, i["loss"]) for d, t, i in rec.updates] == [(1, 2, pytest.approx(9.0)), (2, 2, pytest.approx(5.76))]
    # The gradient norm clipped to 1: each step moves w by lr · 1 = 0.1.
    w = torch.nn.Parameter(torch.tensor(0.0))
    hist = fit([w], torch.optim.SGD([w], lr=0.1), range(2), quadratic(w), total=2, grad_clip=1.0)
    assert [h["loss"] for h in hist] == pytest.approx([9.0, 2.9 ** 2]) and w.item() == pytest.approx(0.2)


def test_linear_schedule_warms_up_then_decays():
    # factor(s) = min(1, (s+1)/(warmup+1)) · max(0, 1 − s/total): warmup 1, total 4 → 0.5, 0.75, 0.5, 0.25.
    w = torch.nn.Parameter(torch.tensor(0.0))
    opt = torch.optim.SGD([w], lr=1.0)
    sched = linear_schedule(opt, 1, 4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 0.75, 0.5, 0.25])


def test_divergence_is_one_sentence():
    w = torch.nn.Parameter(torch.tensor(0.0))
    with pytest.raises(UserError, match="training diverged at step 1"):
        fit([w], torch.optim.SGD([w], lr=0.1), range(3), lambda _b: (w * float("nan"), {}), total=3)


def test_every_trainer_steps_through_fit(tiny_policy_dir, tmp_path, monkeypatch):
    from envs.types import Problem
    from search.tree import Tree
    from selfimprove.pairs import PreferencePair
    from selfimprove.train import compact, sft, tiny_policy, train_policy, train_value, value

    calls: list[str] = []

    def spying(name):
        def spy(*args, **kwargs):
            calls.append(name)
            return fit(*args, **kwargs)
        return spy

    for module in (compact, sft, value, tiny_policy):
        monkeypatch.setattr(module, "fit", spying(module.__name__.rsplit(".", 1)[1]))
    pairs = [PreferencePair(strategy="t", prompt=f"Q: {a}+1\n", chosen=f"{a}+1={a + 1}\n", rejected=f"{a}+1={a}\n")
             for a in range(4)]
    train_policy(tiny_policy_dir, pairs, tmp_path / "dpo", {"loss": "step-dpo", "lr": 1e-3})
    train_policy(tiny_policy_dir, [{"prompt": p.prompt, "completion": p.chosen} for p in pairs], tmp_path / "sft",
                 {"loss": "sft", "lr": 1e-3})
    trees = []
    for a in range(4):
        t = Tree(Problem(id=f"p{a}", prompt=f"{a}+1"), prompt=f"Q: {a}+1\n")
        t.add_child(0, f"A: {a + 1}", terminal=True, score=1.0, visits=1, value_sum=1.0)
        t.add_child(0, f"A: {a}", terminal=True, score=0.0, visits=1, value_sum=-1.0)
        trees.append(t)
    train_value(trees, tmp_path / "value", {"epochs": 1}, init_from=tiny_policy_dir)
    tiny_policy.build_tiny_policy("arithmetic", tmp_path / "tiny", steps=2, eval_problems=2)
    assert calls == ["compact", "sft", "value", "tiny_policy"]
