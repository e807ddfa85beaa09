"""Resolve and load model checkpoints: a local HF directory or a GGUF file, with one-sentence errors.

Also the small transformers-version shims the backends share (the main venv has transformers 5.x, the
vLLM venv an older 4.x/5.x: the KV-cache keyword was renamed from `past_key_values` to `cache`).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.errors import UserError

TORCH_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSource:
    """Where weights live: `directory` for from_pretrained, plus `gguf_file` (a name inside it) for GGUF."""

    directory: str
    gguf_file: str | None = None

    @property
    def checkpoint(self) -> str:
        return str(Path(self.directory) / self.gguf_file) if self.gguf_file else self.directory

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_model_path(path: str | os.PathLike, *, what: str = "model") -> ModelSource:
    """Check `path` is an HF model directory (with config.json) or a .gguf file; UserError otherwise.

    The name of an embedded pretrained model (`agents.embedded`, e.g. `smollm2-135m`) resolves to its
    cached HF directory (converted on first use).
    """
    from agents.embedded import embedded_dir, is_embedded

    if is_embedded(path) and not Path(path).exists():
        path = embedded_dir(str(path))
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{what} path '{path}' does not exist")
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise UserError(f"{what} path '{path}' is a file but not a .gguf file; give an HF model directory or a GGUF file")
        return ModelSource(str(p.parent.resolve()), p.name)
    if not (p / "config.json").is_file():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(str(p.resolve()), ggufs[0].name)
        raise UserError(f"{what} directory '{path}' has no config.json (not a saved HF model directory)")
    return ModelSource(str(p.resolve()))


def torch_dtype(name: str):
    import torch

    if name not in TORCH_DTYPES:
        raise UserError(f"dtype '{name}' is not one of {', '.join(TORCH_DTYPES)}")
    return getattr(torch, name)


def load_tokenizer(src: ModelSource):
    """The checkpoint's tokenizer, with a pad token (falls back to EOS) for batching."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src.directory, **src.kwargs())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer of '{src.checkpoint}': {str(e).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(src: ModelSource, *, device: str = "cpu", dtype: str = "float32",
                   attn_implementation: str = "sdpa", quantization_config: Any = None):
    """An AutoModelForCausalLM in eval mode on `device` (already resolved: agents.devices.placement).

    attn_implementation: "sdpa" (the default), "eager" or "flash_attention_2". quantization_config (a
    bitsandbytes config, QLoRA) loads the weights quantized straight onto the GPU.
    """
    from transformers import AutoModelForCausalLM

    kw: dict[str, Any] = {"attn_implementation": attn_implementation, **src.kwargs()}
    if quantization_config is not None:
        kw.update(quantization_config=quantization_config, device_map={"": device})
    model: Any  # transformers' own annotations of from_pretrained and .to() do not type-check
    try:
        model = AutoModelForCausalLM.from_pretrained(src.directory, dtype=torch_dtype(dtype), **kw)
    except TypeError:  # older transformers call it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(src.directory, torch_dtype=torch_dtype(dtype), **kw)
    except (OSError, ValueError, ImportError) as e:
        raise UserError(f"cannot load the model '{src.checkpoint}': {str(e).splitlines()[0]}") from None
    if quantization_config is None:
        model = model.to(device)
    return model.eval()


def cache_kwarg(model) -> str:
    """The forward() keyword that takes the KV cache: `cache` (transformers ≥ 5.2x) or `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out):
    """The KV cache returned by a forward pass, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
