"""Loading a policy to train and saving what training made: the HF directory a trainer writes into.

A trainer writes into the directory it is given (model, tokenizer, `training_metrics.json`); making
that write atomic is the caller's job (`envs.io.atomic_dir`).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

import torch

from envs.io import atomic_write_json
from selfimprove.train.runtime import training_device

METRICS_FILE = "training_metrics.json"


def load_trainable(policy_dir: str | os.PathLike) -> tuple[Any, Any]:
    """(model, tokenizer) of a local HF directory or GGUF file, on this process's GPU when there is one, to train.

    Not a backend (agents.load_policy builds those, for search): the raw transformers model.
    A bad path is a UserError.
    """
    from agents.loading import load_causal_lm, load_tokenizer, resolve_model_path

    src = resolve_model_path(policy_dir, what="policy")
    tok = load_tokenizer(src)
    model = load_causal_lm(src, device=training_device())
    return model, tok


def save_trained(model, tokenizer, out_dir: str | os.PathLike, metrics: dict[str, Any], *,
                 state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write model + tokenizer + training_metrics.json into `out_dir` (created when missing).

    state_dict: the weights when they live elsewhere (gathered from FSDP / DeepSpeed shards)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if state_dict is None:
        model.save_pretrained(out)
    else:
        model.save_pretrained(out, state_dict=state_dict)
    tokenizer.save_pretrained(out)
    atomic_write_json(out / METRICS_FILE, metrics)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
