"""`selfimprove run CONFIG --dry-run`: validates, prints the plan and per-stage memory estimates from a
config.json alone (no weights), and fails in one sentence when a stage will not fit the device."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from envs.errors import UserError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_parameter_count_from_config_alone_is_exact(tiny_policy_dir, tmp_path):
    """The count built on the meta device equals the real model's, from a directory holding only config.json."""
    from transformers import AutoModelForCausalLM

    from selfimprove.config import parse_config
    from selfimprove.plan import model_shape

    only = tmp_path / "cfg-only"
    only.mkdir()
    shutil.copy(Path(tiny_policy_dir) / "config.json", only / "config.json")
    shape = model_shape(parse_config({"policy": {"path": str(only)}}, "run.yaml"))
    real = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
    assert shape.params == sum(p.numel() for p in real.parameters())
    assert shape.layers == real.config.num_hidden_layers and shape.vocab == real.config.vocab_size


def test_memory_parts_by_hand(tmp_path):
    """Qwen2.5-1.5B (the example's config.json): weights, KV cache and LoRA's optimizer state by hand."""
    from selfimprove.config import parse_config
    from selfimprove.plan import build_plan, lora_params, model_shape

    cfg = parse_config({"policy": {"path": str(EXAMPLES / "models/qwen2.5-1.5b-instruct"), "device": "cpu"},
                        "search": {"max_batch": 64, "config": {"max_step_tokens": 64}},
                        "train": {"lora": True, "lora_r": 16, "max_length": 512, "batch_size": 1}}, "run.yaml")
    shape = model_shape(cfg)
    assert 1.50e9 < shape.params < 1.56e9  # Qwen2.5-1.5B: 1.54 B with tied embeddings
    plan = build_plan(cfg, gpu_gib=80)
    search = next(s for s in plan["stages"] if s["name"] == "search")
    assert search["parts"]["weights"] == shape.params * 2  # bf16 on the planned GPU
    assert search["parts"]["kv_cache"] == 2 * 28 * 2 * 128 * 64 * (512 + 64) * 2
    train = next(s for s in plan["stages"] if s["name"] == "train")
    r = lora_params(shape, 16)
    assert r == 16 * 28 * ((1536 + 1536) + 2 * (1536 + 256) + (1536 + 1536) + 2 * (1536 + 8960) + (8960 + 1536))
    assert train["parts"]["optimizer (AdamW)"] == 2 * r * 4 and train["parts"]["weights"] == shape.params * 4


def test_dry_run_cli_loads_nothing(capsys, monkeypatch):
    import agents.loading
    from selfimprove.cli import main

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(agents.loading, "load_causal_lm", boom)
    assert main(["run", str(EXAMPLES / "qwen-gsm8k-gpu.yaml"), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["name"] for s in plan["stages"]] == ["baseline eval", "search", "train", "eval"]
    assert plan["backend"] == "vllm" and plan["vllm"]["gpu_memory_utilization"] == 0.35
    assert all(s["total"] > 0 for s in plan["stages"])
    assert main(["run", str(EXAMPLES / "qwen-gsm8k-gpu.yaml"), "--dry-run", "--gpu", "80"]) == 0
    out = capsys.readouterr().out
    assert "estimated peak memory per stage" in out and "train" in out


def test_too_big_is_one_sentence_naming_a_field(capsys):
    from selfimprove.cli import main

    rc = main(["run", str(EXAMPLES / "qwen-gsm8k-gpu.yaml"), "--dry-run", "--gpu", "16",
               "--set", "train.trl.gradient_checkpointing=false"])
    assert rc == 1
    err = capsys.readouterr().err.replace("\n", " ")
    assert "qwen-gsm8k-gpu.yaml: field 'train." in err and "GiB" in err and "Traceback" not in err
    assert main(["run", str(EXAMPLES / "qwen-gsm8k-gpu.yaml"), "--dry-run", "--gpu", "8",
                 "--set", "policy.vllm.gpu_memory_utilization=0.3"]) == 1
    assert "field 'policy.vllm.gpu_memory_utilization'" in capsys.readouterr().err.replace("\n", " ")


def test_vllm_section_rejects_unknown_and_duplicate_options():
    from selfimprove.config import parse_config

    with pytest.raises(UserError, match=r"field 'policy.vllm.tensor_parallel_sise': unknown key"):
        parse_config({"policy": {"vllm": {"tensor_parallel_sise": 2}}}, "run.yaml")
    with pytest.raises(UserError, match=r"field 'policy.vllm.extra': 'seed' has its own field"):
        parse_config({"policy": {"vllm": {"extra": {"seed": 1}}}}, "run.yaml")
    cfg = parse_config({"policy": {"vllm": {"gpu_memory_utilization": 0.4, "max_model_len": 512,
                                            "extra": {"swap_space": 2}}}}, "run.yaml")
    kw = cfg.policy.vllm.engine_kwargs(run_seed=7)
    assert kw["gpu_memory_utilization"] == 0.4 and kw["max_model_len"] == 512 and kw["swap_space"] == 2
    assert kw["seed"] == 7 and kw["in_place_reload"] is None and kw["sleep_level"] == 1
