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
from selfimprove.train.runtime import process_device

METRICS_FILE = "training_metrics.json"


def load_trainable(policy_dir: str | os.PathLike, *, device: str = "auto", dtype: str = "auto",
                   attn_implementation: str = "sdpa", qlora: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of a local HF directory or GGUF file, placed to train.

    Not a backend (agents.load_policy builds those, for search): the raw transformers model. device
    "auto" is the GPU when there is one; dtype "auto" is float32 master weights (bf16 compute comes from
    mixed precision), an explicit dtype loads the weights in it. qlora: 4-bit NF4 weights through
    bitsandbytes (CUDA only), prepared for k-bit training. A bad path or setting is a UserError.
    """
    from agents.devices import placement
    from agents.loading import load_causal_lm, load_tokenizer, resolve_model_path

    where = placement(device, dtype, attn_implementation, training=True)
    quant = qlora_config(where.device, where.dtype) if qlora else None
    src = resolve_model_path(policy_dir, what="policy")
    tok = load_tokenizer(src)
    model = load_causal_lm(src, device=process_device(where.device), dtype=where.dtype,
                           attn_implementation=where.attn_implementation, quantization_config=quant)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, tok


def qlora_config(device: str, dtype: str):
    """bitsandbytes' 4-bit NF4 config (double quantization, 16-bit compute) for QLoRA; CUDA only."""
    from envs.errors import UserError

    if not device.startswith("cuda"):
        raise UserError(f"field 'train.qlora': QLoRA (bitsandbytes 4-bit) runs on CUDA only, not on '{device}'")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("field 'train.qlora': QLoRA needs the bitsandbytes package (pip install bitsandbytes)")
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if dtype in ("float32", "bfloat16") and torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def merged_for_saving(model, policy_dir: str | os.PathLike, *, qlora: bool):
    """A LoRA-wrapped model as a plain HF model: the adapter merged into the base weights. Under QLoRA the
    base is reloaded in 16 bits first (merging into 4-bit weights would round the update away)."""
    if not qlora:
        return model.merge_and_unload()
    import tempfile

    from peft import PeftModel

    from agents.loading import load_causal_lm, resolve_model_path

    compute = model.get_base_model().config.quantization_config.bnb_4bit_compute_dtype
    with tempfile.TemporaryDirectory(prefix="selfimprove-qlora-") as tmp:
        model.save_pretrained(tmp)
        base = load_causal_lm(resolve_model_path(policy_dir, what="policy"), device=str(model.device),
                              dtype=str(compute).removeprefix("torch."))
        return PeftModel.from_pretrained(base, tmp).merge_and_unload()


def save_trained(model, tokenizer, out_dir: str | os.PathLike, metrics: dict[str, Any], *,
                 state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write model + tokenizer + training_metrics.json into `out_dir` (created when missing), and the
    weights probe an inference engine checks an in-place reload against (agents.probe).

    state_dict: the weights when they live elsewhere (gathered from FSDP / DeepSpeed shards)."""
    from agents import probe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if state_dict is None:
        model.save_pretrained(out)
    else:
        model.save_pretrained(out, state_dict=state_dict)
    tokenizer.save_pretrained(out)
    probe.write(model, tokenizer, out)
    atomic_write_json(out / METRICS_FILE, metrics)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
