"""Policy training: prefix-shared logps equal the naive ones, both trainers move margins the right way,
LoRA works, output is an atomic HF directory, bad data gets one sentence."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from envs.errors import UserError
from envs.io import write_marker
from selfimprove.pairs import PreferenceList, PreferencePair, write_records
from selfimprove.train import losses as L
from selfimprove.train import train_policy
from selfimprove.train.data import collate, tokenize
from selfimprove.train.logps import naive_logps, shared_logps


def arith_pairs(n: int, seed: int) -> list[PreferencePair]:
    """Step pairs in the fixture's format: the correct product step vs one off by a little."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, c = rng.randint(1, 11), rng.randint(1, 7), rng.randint(1, 5)
        good = f"{b}*{c}={b * c}\n"
        bad = f"{b}*{c}={b * c + rng.choice([1, 2, 10])}\n"
        out.append(PreferencePair(strategy="test", prompt=f"Q: {a}+{b}*{c}\n", chosen=good, rejected=bad,
                                  margin=1.0))
    return out


def arith_lists(n: int, seed: int) -> list[PreferenceList]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, c = rng.randint(1, 11), rng.randint(1, 7), rng.randint(1, 5)
        items = [[f"{b}*{c}={b * c}", f"{a}+{b * c}={a + b * c}"],
                 [f"{b}*{c}={b * c + 1}", f"{a}+{b * c + 1}={a + b * c + 1}"],
                 [f"{a}+{b}={a + b}", f"{a + b}*{c}={(a + b) * c}"]]
        out.append(PreferenceList(strategy="test", prompt=f"Q: {a}+{b}*{c}\n", completions=[
            "".join(s + "\n" for s in it) for it in items], steps=items, scores=[1.0, 0.0, -1.0],
            step_rewards=[[1, 1], [0, 0], [-1, -1]], node_ids=[1, 2, 3]))
    return out


@pytest.fixture(scope="module")
def model_tok(tiny_policy_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_policy_dir).eval(), AutoTokenizer.from_pretrained(tiny_policy_dir)


def test_shared_prefix_logps_and_losses_equal_naive(model_tok):
    model, tok = model_tok
    pairs = arith_pairs(6, 0)
    pairs += [p.model_copy(update={"rejected": "0\n"}) for p in pairs[:3]]  # same prompts: merged groups
    lists = arith_lists(3, 1)
    for recs, as_lists in ((pairs, False), (lists, True)):
        exs = tokenize(recs, tok, max_length=256, as_lists=as_lists)
        b = collate(exs, tok.pad_token_id)
        assert b.packed.input_ids.shape[0] < sum(len(e.items) for e in exs)  # prompts really shared
        comp, steps = shared_logps(model, b.packed)
        prompts = [e.prompt for e in exs for _ in e.items]
        items = [c for e in exs for c in e.items]
        naive = naive_logps(model, prompts, items, tok.pad_token_id)
        got = torch.stack([comp[i] for ii in b.item_index for i in ii])
        assert torch.allclose(got, naive, atol=1e-4), (got - naive).abs().max()
        # per-step sums add up to the completion, and the first step scores as it would alone
        for e, ii, si in zip(b.examples, b.item_index, b.step_index, strict=True):
            first = naive_logps(model, [e.prompt] * len(ii), [c[: k[0]] for c, k in zip(e.items, e.item_steps,
                                                                                        strict=True)],
                                tok.pad_token_id)
            for j, (c, s) in enumerate(zip(ii, si, strict=True)):
                assert steps[s].sum().item() == pytest.approx(comp[c].item(), abs=1e-4)
                assert steps[s[0]].item() == pytest.approx(first[j].item(), abs=1e-4)
        unshared = collate(exs, tok.pad_token_id, share_prefix=False)
        comp2, _ = shared_logps(model, unshared.packed)
        got2 = torch.stack([comp2[i] for ii in unshared.item_index for i in ii])
        assert torch.allclose(got2, naive, atol=1e-4)
    # the per-pair loss from shared logps equals the loss from naive logps
    exs = tokenize(pairs, tok, max_length=256, as_lists=False)
    b = collate(exs, tok.pad_token_id)
    comp, _ = shared_logps(model, b.packed)
    naive = naive_logps(model, [e.prompt for e in exs for _ in e.items], [c for e in exs for c in e.items],
                        tok.pad_token_id).view(-1, 2)
    ref = naive.detach() - 0.3
    ci = [ii[0] for ii in b.item_index]
    ri = [ii[1] for ii in b.item_index]
    shared_loss = L.dpo(comp[ci] - ref[:, 0], comp[ri] - ref[:, 1], 0.1)
    naive_loss = L.dpo(naive[:, 0] - ref[:, 0], naive[:, 1] - ref[:, 1], 0.1)
    assert torch.allclose(shared_loss, naive_loss, atol=1e-4)


def test_full_forward_fallback_matches_head_only_path(model_tok):
    model, tok = model_tok
    b = collate(tokenize(arith_lists(2, 4), tok, max_length=256, as_lists=True), tok.pad_token_id)
    fast, fast_steps = shared_logps(model, b.packed)
    model.config.logit_scale = 1.0  # a model that scales its logits takes the full-forward path
    try:
        full, full_steps = shared_logps(model, b.packed)
    finally:
        del model.config.logit_scale
    assert torch.allclose(fast, full, atol=1e-5) and torch.allclose(fast_steps, full_steps, atol=1e-5)


@pytest.mark.parametrize("loss", ["step-dpo", "cdpo", "ipo", "rpo", "tpo"])
def test_compact_trainer_raises_heldout_margin(tiny_policy_dir, tmp_path, loss):
    train = arith_lists(24, 2) if loss == "tpo" else arith_pairs(48, 2)
    # TPO's held-out check compares each held-out list's best item with its worst
    held = [PreferencePair(strategy="x", prompt=r.prompt, chosen=r.completions[0], rejected=r.completions[2])
            for r in arith_lists(16, 3)] if loss == "tpo" else arith_pairs(16, 3)
    # rpo: on a random policy a full-weight NLL term swamps the preference term, so weigh it down
    m = train_policy(tiny_policy_dir, train, tmp_path / "out", {"loss": loss, "beta": 0.5, "lr": 3e-3, "epochs": 1,
                     "batch_size": 8, "alpha": 0.05}, eval_records=held, seed=0)
    assert m["steps"] == 3 if loss == "tpo" else m["steps"] == 6
    assert abs(m["eval_margin_before"]) < 1e-4
    assert m["eval_margin_after"] > 0.05, m
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "training_metrics.json").read_text())["loss"] == loss
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dirs left behind
    assert saved.config.vocab_size <= 1000


def test_tpo_moves_a_three_item_list_toward_its_order(tiny_policy_dir, tmp_path, model_tok):
    ref, tok = model_tok
    lst = arith_lists(1, 5)
    train_policy(tiny_policy_dir, lst * 4, tmp_path / "tpo", {"loss": "tpo", "beta": 0.5, "lr": 3e-3, "batch_size": 4,
                 "epochs": 2})
    new = AutoModelForCausalLM.from_pretrained(tmp_path / "tpo").eval()
    ex = tokenize(lst, tok, max_length=256, as_lists=True)[0]
    with torch.no_grad():
        r = naive_logps(new, [ex.prompt] * 3, ex.items, tok.pad_token_id) - \
            naive_logps(ref, [ex.prompt] * 3, ex.items, tok.pad_token_id)
    assert r[0] > r[1] > r[2], r


def test_trl_backend_and_lora(tiny_policy_dir, tmp_path):
    train, held = arith_pairs(48, 2), arith_pairs(16, 3)
    m = train_policy(tiny_policy_dir, train, tmp_path / "trl", {"loss": "dpo", "beta": 0.5, "lr": 3e-3, "batch_size": 8,
                     "backend": "trl"}, eval_records=held)
    assert m["backend"] == "trl" and m["steps"] == 6 and m["eval_margin_after"] > 0.05, m
    m = train_policy(tiny_policy_dir, train, tmp_path / "lora", {"loss": "step-dpo", "beta": 0.5, "lr": 1e-2,
                     "batch_size": 8, "lora": True, "epochs": 2}, eval_records=held)
    assert m["lora"] and m["eval_margin_after"] > 0.05, m
    # the saved LoRA model is a plain, merged HF model that differs from the start
    base = AutoModelForCausalLM.from_pretrained(tiny_policy_dir).state_dict()
    new = AutoModelForCausalLM.from_pretrained(tmp_path / "lora").state_dict()
    assert set(base) == set(new)
    assert any(not torch.equal(base[k], new[k]) for k in base)
    m = train_policy(tiny_policy_dir, train[:8], tmp_path / "trl-lora", {"loss": "rpo", "lr": 1e-2, "batch_size": 8,
                     "lora": True, "backend": "trl"})
    assert m["steps"] == 1 and (tmp_path / "trl-lora" / "model.safetensors").is_file()


@pytest.mark.parametrize("backend", ["compact", "trl"])
def test_first_step_loss_matches_hand_value_on_both_backends(tiny_policy_dir, tmp_path, backend):
    # At the first step the policy equals the reference (h = 0): DPO = log 2, IPO = (1/(2β))².
    pairs = arith_pairs(8, 0)
    dpo = train_policy(tiny_policy_dir, pairs, tmp_path / "d", {"loss": "dpo", "beta": 0.5, "lr": 1e-3,
                                                                "backend": backend})
    ipo = train_policy(tiny_policy_dir, pairs, tmp_path / "i", {"loss": "ipo", "beta": 0.25, "lr": 1e-3,
                                                                "backend": backend})
    assert dpo["first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert ipo["first_loss"] == pytest.approx(4.0, abs=1e-3)


def test_out_dir_replaced_atomically_only_when_ours(tiny_policy_dir, tmp_path):
    out = tmp_path / "policy"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(UserError, match="selfimprove did not write"):  # not ours: refused, untouched
        train_policy(tiny_policy_dir, arith_pairs(4, 0), out, {"loss": "dpo", "lr": 1e-3}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["stale.txt"]
    write_marker(out, "policy")  # as if selfimprove had saved it
    train_policy(tiny_policy_dir, arith_pairs(4, 0), out, {"loss": "dpo", "lr": 1e-3}, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_bad_data_one_sentence(tiny_policy_dir, tmp_path):
    p = tmp_path / "pairs.jsonl"
    write_records(p, [*arith_pairs(2, 0), PreferencePair(strategy="x", prompt="Q: " + "1+2*3 " * 200,
                                                         chosen="a\n", rejected="b\n")])
    long = [PreferencePair(strategy="x", prompt="Q: " + "1+2*3 " * 200, chosen="a\n", rejected="b\n")]
    with pytest.raises(UserError, match=r"field 'train.max_length': all 1 records are longer than 16 tokens"):
        train_policy(tiny_policy_dir, long, tmp_path / "o", {"max_length": 16, "overlong": "skip"})
    with pytest.raises(UserError, match="unknown loss 'kto'"):
        train_policy(tiny_policy_dir, p, tmp_path / "o", {"loss": "kto"})
    with pytest.raises(UserError, match="loss 'cdpo' is not available through TRL"):
        train_policy(tiny_policy_dir, arith_pairs(2, 0), tmp_path / "o", {"loss": "cdpo", "backend": "trl"})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="no preference records"):
        train_policy(tiny_policy_dir, empty, tmp_path / "o")
    with pytest.raises(UserError, match="does not exist"):
        train_policy(tmp_path / "nowhere", arith_pairs(2, 0), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_cli_train(tiny_policy_dir, tmp_path, capsys):
    from selfimprove.cli import main

    data = tmp_path / "pairs.jsonl"
    write_records(data, arith_pairs(8, 0))
    rc = main(["train", "--policy", tiny_policy_dir, "--data", str(data), "--loss", "cdpo", "--out",
               str(tmp_path / "pol"), "--lr", "1e-3", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["loss"] == "cdpo" and summary["steps"] == 1 and Path(summary["out"]).is_dir()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "pair", "strategy": "x", "prompt": "Q", "chosen": ""}\n')
    assert main(["train", "--policy", tiny_policy_dir, "--data", str(bad), "--out", str(tmp_path / "x")]) == 1
    assert "bad.jsonl:1: field 'chosen' is empty" in capsys.readouterr().err.replace("\n", "")


@pytest.mark.parametrize("overlong", ["truncate", "skip"])
def test_overlong_records_counted_not_fatal(tiny_policy_dir, tmp_path, overlong):
    """A record longer than max_length no longer aborts the stage: its prompt is cut from the left (the
    completion intact), or it is skipped; the metrics count it."""
    long = PreferencePair(strategy="x", prompt="Q: " + "1+2*3 " * 200 + "\n", chosen="2*3=6\n", rejected="2*3=7\n")
    m = train_policy(tiny_policy_dir, [*arith_pairs(3, 0), long], tmp_path / "o",
                     {"loss": "dpo", "lr": 1e-3, "max_length": 64, "overlong": overlong}, device="cpu")
    assert m["truncated_records"] == (overlong == "truncate") and m["skipped_records"] == (overlong == "skip")
    assert m["examples"] == (4 if overlong == "truncate" else 3)


def test_fit_length_keeps_completion_and_prompt_end():
    from selfimprove.train.data import fit_length

    assert fit_length([1, 2, 3], [[4, 5]], 5) is None
    # 10-token prompt, 3-token completion, limit 8: the prompt keeps BOS and its last 4 tokens.
    assert fit_length([0, *range(10, 19)], [[7, 8, 9], [7]], 8, keep_first=True) == ([0, 15, 16, 17, 18], [[7, 8, 9], [7]])
    assert fit_length(list(range(10)), [[7, 8, 9]], 8) == ([5, 6, 7, 8, 9], [[7, 8, 9]])
    # A completion longer than the limit keeps its start and one prompt token of context.
    assert fit_length([1, 2], [list(range(20))], 5) == ([2], [[0, 1, 2, 3]])


def test_trl_options_pass_through_and_unknown_rejected():
    from selfimprove.train.config import PolicyTrainConfig
    from selfimprove.train.dpo_trl import dpo_options

    cfg = PolicyTrainConfig.parse({"backend": "trl", "loss": "dpo", "trl": {"bf16": True, "gradient_checkpointing": True,
                                                                              "max_grad_norm": 0.5}}, "train")
    opts = dpo_options(cfg, seed=0, use_cpu=True)
    assert opts["bf16"] is True and opts["gradient_checkpointing"] is True and opts["max_grad_norm"] == 0.5
    with pytest.raises(UserError, match="field 'trl': 'bf17' is not a field of trl's DPOConfig"):
        PolicyTrainConfig.parse({"trl": {"bf17": True}}, "train")
    with pytest.raises(UserError, match="'output_dir' is set by the trainer itself"):
        PolicyTrainConfig.parse({"trl": {"output_dir": "x"}}, "train")
