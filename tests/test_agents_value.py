"""Value model: outputs in [-1, 1], padding-independent, save/load round-trip, clear load errors."""

from __future__ import annotations

import pytest
import torch

from agents.value import HFValueModel, ValueHeadModel
from envs.errors import UserError

PREFIXES = ["Q: 3+4*2\n", "Q: 10+1*5\n1*5=5\n10+5=15\n", "Q: 7"]


@pytest.fixture(scope="module")
def model(tiny_policy_dir):
    m = ValueHeadModel.from_policy(tiny_policy_dir)
    torch.manual_seed(0)
    torch.nn.init.normal_(m.head.weight, std=0.05)
    return m


def test_zero_head_starts_at_zero(tiny_policy_dir):
    vm = HFValueModel(ValueHeadModel.from_policy(tiny_policy_dir))
    assert vm.value(PREFIXES) == [0.0, 0.0, 0.0]


def test_values_in_range_and_batch_independent(model):
    vm = HFValueModel(model, max_batch=8)
    vals = vm.value(PREFIXES)
    assert len(vals) == 3 and all(-1 <= v <= 1 for v in vals)
    assert len(set(vals)) == 3
    alone = [vm.value([p])[0] for p in PREFIXES]
    assert vals == pytest.approx(alone, abs=1e-5)
    assert vm.value([]) == []


def test_forward_reads_last_real_token_left_or_right_padded(model):
    tok = model.tokenizer
    ids = tok(PREFIXES[0])["input_ids"]
    pad = tok.pad_token_id
    right = torch.tensor([[*ids, pad, pad]]), torch.tensor([[1] * len(ids) + [0, 0]])
    left = torch.tensor([[pad, pad, *ids]]), torch.tensor([[0, 0] + [1] * len(ids)])
    plain = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    with torch.no_grad():
        assert model(*right).item() == pytest.approx(plain.item(), abs=1e-5)
        assert model(*left).item() == pytest.approx(plain.item(), abs=1e-5)


def test_save_load_round_trip(model, tmp_path):
    out = tmp_path / "value"
    model.save_pretrained(str(out))
    model.save_pretrained(str(out))  # overwriting an existing directory works
    assert {"config.json", "model.safetensors", "value_head.safetensors", "value_config.json"} <= {
        p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    assert HFValueModel(str(out)).value(PREFIXES) == HFValueModel(model).value(PREFIXES)


def test_load_errors_are_one_sentence(tmp_path, tiny_policy_dir):
    with pytest.raises(UserError, match="does not exist"):
        HFValueModel(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="not a saved value model"):
        ValueHeadModel.from_pretrained(tiny_policy_dir)
    with pytest.raises(UserError, match="does not exist"):
        ValueHeadModel.from_policy(str(tmp_path / "missing"))
