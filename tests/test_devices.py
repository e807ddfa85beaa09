"""Device, dtype and attention-kernel settings: resolved once, and a bad one is one sentence naming the field
(config field or command-line option) before any model loads. This machine has no GPU, so CUDA settings
are the bad-input cases here."""

from __future__ import annotations

import pytest
import torch

from agents.devices import check_attention, placement, resolve_device, resolve_dtype
from envs.errors import UserError

NO_CUDA = not torch.cuda.is_available()


def test_auto_on_cpu_is_fp32_and_sdpa():
    if not NO_CUDA:
        pytest.skip("auto means the GPU on a CUDA machine")
    where = placement("auto", "auto")
    assert (where.device, where.dtype, where.attn_implementation) == ("cpu", "float32", "sdpa")
    assert placement("cpu", "bfloat16").dtype == "bfloat16"  # bf16 runs on CPU (slowly); it is allowed
    assert resolve_dtype("auto", "cpu", training=True) == "float32"


@pytest.mark.skipif(not NO_CUDA, reason="CUDA exists here")
def test_missing_devices_name_the_field():
    with pytest.raises(UserError, match=r"^field 'policy.device': device 'cuda' does not exist here"):
        resolve_device("cuda", field="policy.device")
    with pytest.raises(UserError, match=r"^--device: device 'cuda:1' does not exist here"):
        resolve_device("cuda:1", field="--device")
    with pytest.raises(UserError, match=r"unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.backends.mps.is_available():
        with pytest.raises(UserError, match="device 'mps' does not exist here"):
            resolve_device("mps")


def test_bad_dtype_and_attention():
    with pytest.raises(UserError, match=r"^field 'policy.dtype': unknown dtype 'fp8'"):
        placement("cpu", "fp8", prefix="policy.")
    with pytest.raises(UserError, match="unknown attention implementation 'flash'"):
        check_attention("flash", "cpu", "float32")
    with pytest.raises(UserError, match="flash_attention_2"):
        check_attention("flash_attention_2", "cpu", "bfloat16")  # not installed, or not CUDA


def test_float16_runs_on_cpu(tiny_policy_dir):
    """float16 on CPU is allowed because it works: the HF backend proposes and scores in it."""
    from agents.hf import HFPolicy

    pol = HFPolicy(tiny_policy_dir, device="cpu", dtype="float16")
    assert next(pol.model.parameters()).dtype == torch.float16
    out = pol.propose(["Q: 3+4\n"], n=2, temperature=1.0, max_step_tokens=6, seed=1)
    assert all(len(s.token_ids) == len(s.token_logprobs) > 0 for s in out[0])


def test_run_config_checks_placement_before_loading(tmp_path):
    from selfimprove.config import load_config

    cfg = tmp_path / "run.yaml"
    cfg.write_text("policy: {path: tiny, device: cuda:3}\n")
    if NO_CUDA:
        with pytest.raises(UserError, match=r"^run.yaml: field 'policy.device': device 'cuda:3' does not exist"):
            load_config(cfg)
    cfg.write_text("policy: {path: tiny, dtype: float8}\n")
    with pytest.raises(UserError, match=r"^run.yaml: field 'policy.dtype': unknown dtype 'float8'"):
        load_config(cfg)
    cfg.write_text("policy: {path: tiny, device: cpu}\ntrain: {qlora: true}\n")
    with pytest.raises(UserError, match=r"^run.yaml: field 'train.qlora': QLoRA .* CUDA only, not on 'cpu'"):
        load_config(cfg)


def test_cli_rejects_missing_device(tiny_policy_dir, tmp_path, capsys):
    from selfimprove.cli import main

    if not NO_CUDA:
        pytest.skip("CUDA exists here")
    for cmd in (["search", "--policy", tiny_policy_dir, "--env", "arithmetic", "--out", str(tmp_path / "t.jsonl")],
                ["eval", "--policy", tiny_policy_dir],
                ["train", "--policy", tiny_policy_dir, "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")],
                ["train-value", "--trees", str(tmp_path / "none.jsonl"), "--init", tiny_policy_dir,
                 "--out", str(tmp_path / "v")]):
        assert main([*cmd, "--device", "cuda"]) == 1
        err = capsys.readouterr().err.replace("\n", " ")
        assert "--device: device 'cuda' does not exist here" in err, (cmd[0], err)
    assert main(["eval", "--policy", tiny_policy_dir, "--dtype", "half-ish"]) == 1
    assert "--dtype: unknown dtype 'half-ish'" in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "o").exists() and not (tmp_path / "v").exists()
