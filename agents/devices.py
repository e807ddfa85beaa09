"""Where a model runs and in what precision: `device` (auto / cpu / cuda / cuda:N / mps), `dtype`
(auto / bfloat16 / float16 / float32) and the attention kernel, resolved and checked before any model loads.

Every command and stage that loads a model resolves its settings here once, so a device that does not
exist or a dtype the device cannot run is one sentence naming the field (`policy.device`, `--dtype`, ...),
raised before a weight is read. "auto" means: the first CUDA GPU, else Apple's MPS, else the CPU; for
inference bfloat16 on a GPU that has it (float16 otherwise, float32 on CPU); for training float32 master
weights (bf16 compute then comes from the trainer's mixed precision), an explicit dtype loads the weights
in it (pure bf16 training halves weight and optimizer memory).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from envs.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = ("auto", "bfloat16", "float16", "float32")
ATTENTION = ("sdpa", "eager", "flash_attention_2")
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _fail(field: str, msg: str) -> UserError:
    """`--device: ...` for a command-line option, `field 'policy.device': ...` for a config field."""
    return UserError(f"{field}: {msg}" if field.startswith("--") else f"field '{field}': {msg}")


def resolve_device(name: str, *, field: str = "device") -> str:
    """The concrete device for `name` ("auto" → cuda / mps / cpu); a UserError when it does not exist here."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise _fail(field, "device 'mps' does not exist here (no Apple GPU visible to torch)")
        return "mps"
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m is None:
        raise _fail(field, f"unknown device '{name}' (use one of: {', '.join(DEVICES)})")
    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise _fail(field, f"device '{name}' does not exist here ({why}); use 'cpu' or 'auto'")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise _fail(field, f"device '{name}' does not exist here ({torch.cuda.device_count()} CUDA device(s))")
    return name


def resolve_dtype(name: str, device: str, *, training: bool = False, field: str = "dtype") -> str:
    """The concrete dtype for `name` on `device` (see the module docstring for "auto"); a UserError for a
    dtype the device cannot run (bfloat16 on a GPU without it)."""
    name = (name or "auto").strip().lower()
    if name not in DTYPES:
        raise _fail(field, f"unknown dtype '{name}' (use one of: {', '.join(DTYPES)})")
    import torch

    if name == "auto":
        if training or device == "cpu":
            return "float32"
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"
        return "float16"  # mps
    if name == "bfloat16" and device.startswith("cuda"):
        with torch.cuda.device(device):
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        if not ok:
            gpu = torch.cuda.get_device_name(device)
            raise _fail(field, f"dtype 'bfloat16' is not supported by {gpu} (use float16 or float32)")
    return name


def check_attention(name: str, device: str, dtype: str, *, field: str = "attn_implementation") -> str:
    """The attention kernel transformers should use: SDPA by default; flash-attention-2 only when asked,
    installed, on CUDA and in a 16-bit dtype (its own requirements, checked here instead of at load)."""
    if name not in ATTENTION:
        raise _fail(field, f"unknown attention implementation '{name}' (use one of: {', '.join(ATTENTION)})")
    if name == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            raise _fail(field, "flash_attention_2 needs the flash-attn package (pip install flash-attn)")
        if not device.startswith("cuda"):
            raise _fail(field, f"flash_attention_2 runs on CUDA only, not on '{device}'")
        if dtype not in ("bfloat16", "float16"):
            raise _fail(field, f"flash_attention_2 needs dtype bfloat16 or float16, not {dtype}")
    return name


@dataclass(frozen=True)
class Placement:
    """A resolved (device, dtype, attention kernel) for one model."""

    device: str = "cpu"
    dtype: str = "float32"
    attn_implementation: str = "sdpa"


def placement(device: str = "auto", dtype: str = "auto", attn_implementation: str = "sdpa", *,
              training: bool = False, prefix: str = "") -> Placement:
    """Resolve and check all three; errors name `prefix` + the field (e.g. prefix "policy." or "--")."""
    dev = resolve_device(device, field=f"{prefix}device")
    dt = resolve_dtype(dtype, dev, training=training, field=f"{prefix}dtype")
    attn = check_attention(attn_implementation, dev, dt,
                           field=f"{prefix}attn_implementation" if prefix != "--" else "--attn")
    return Placement(dev, dt, attn)


def device_memory_bytes(device: str) -> int | None:
    """Total memory of `device` (a CUDA GPU's, or this machine's RAM for cpu); None when unknown."""
    import os

    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory)
    if device == "cpu":
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return None
    return None
