"""The value model: a scalar head on a causal-LM trunk, value(prefix) = tanh(head(h_last)) in [-1, 1].

A model of its own, initialised from the policy's weights (the trunk) with a zero head, so it starts at
value 0 everywhere. Saved as a directory: the trunk as a standard HF model (config.json + safetensors),
the tokenizer, `value_head.safetensors` and `value_config.json`. Training lives in selfimprove.train.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from agents.base import ValueModel
from agents.loading import load_tokenizer, resolve_model_path
from envs.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

HEAD_FILE = "value_head.safetensors"
CONFIG_FILE = "value_config.json"
FORMAT = "selfimprove-value/1"


class ValueHeadModel(nn.Module):
    """Trunk (the base transformer of a causal LM) + Linear(hidden, 1) read at the last non-pad token."""

    trunk: Any  # a transformers base model (nn.Module's own attribute typing would make it Tensor | Module)
    tokenizer: Any
    source_checkpoint: str | None = None

    def __init__(self, trunk: PreTrainedModel, tokenizer=None):
        super().__init__()
        self.trunk = trunk
        self.tokenizer = tokenizer
        hidden = trunk.config.get_text_config().hidden_size if hasattr(trunk.config, "get_text_config") \
            else trunk.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.head.to(next(trunk.parameters()).dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw scores (B,) at each row's last non-pad token (left or right padding); value = tanh(raw)."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids).last_hidden_state
        ar = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.long() * ar).argmax(dim=-1)
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1)

    # --- construction and persistence -------------------------------------------------------------
    @classmethod
    def from_policy(cls, policy_dir: str, *, dtype: str = "float32", attn_implementation: str = "sdpa") -> ValueHeadModel:
        """Trunk initialised from a policy checkpoint (directory or GGUF), head zero-initialised."""
        from transformers import AutoModel

        from agents.loading import torch_dtype

        src = resolve_model_path(policy_dir, what="policy")
        trunk = AutoModel.from_pretrained(src.directory, dtype=torch_dtype(dtype),
                                          attn_implementation=attn_implementation, **src.kwargs())
        model = cls(trunk, load_tokenizer(src))
        model.source_checkpoint = src.checkpoint
        return model

    @classmethod
    def from_pretrained(cls, path: str, *, dtype: str = "float32", attn_implementation: str = "sdpa") -> ValueHeadModel:
        """Load a directory written by save_pretrained."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        from agents.loading import torch_dtype

        p = Path(path)
        if not p.is_dir():
            raise UserError(f"value model directory '{path}' does not exist")
        if not (p / CONFIG_FILE).is_file() or not (p / HEAD_FILE).is_file():
            raise UserError(f"value model directory '{path}' lacks {CONFIG_FILE} or {HEAD_FILE} (not a saved value model)")
        trunk = AutoModel.from_pretrained(str(p), dtype=torch_dtype(dtype), attn_implementation=attn_implementation)
        model = cls(trunk, load_tokenizer(resolve_model_path(p, what="value model")))
        model.head.load_state_dict({k.removeprefix("head."): v for k, v in load_file(p / HEAD_FILE).items()})
        return model

    def save_pretrained(self, path: str) -> None:
        """Write the directory (created when missing), like transformers' save_pretrained: the trunk, the
        tokenizer, the head and value_config.json. Atomic replacement is the caller's (envs.io.atomic_dir)."""
        from safetensors.torch import save_file

        dest = Path(path)
        dest.mkdir(parents=True, exist_ok=True)
        self.trunk.save_pretrained(dest)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(dest)
        save_file({f"head.{k}": v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(dest / HEAD_FILE))
        cfg = {"format": FORMAT, "hidden_size": self.head.in_features, "activation": "tanh",
               "readout": "last non-pad token", "source_checkpoint": getattr(self, "source_checkpoint", None)}
        (dest / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")


class HFValueModel(ValueModel):
    """A ValueHeadModel (a saved directory or a module in memory) as a batched ValueModel."""

    def __init__(self, dir_or_module: str | ValueHeadModel, tokenizer=None, device: str = "cpu",
                 max_batch: int = 64, dtype: str = "float32", attn_implementation: str = "sdpa"):
        """device / dtype / attn_implementation: resolved already (agents.devices.placement); dtype and
        attn_implementation apply when loading a directory."""
        if isinstance(dir_or_module, ValueHeadModel):
            self.model = dir_or_module
            self.checkpoint = getattr(dir_or_module, "source_checkpoint", None) or ""
        else:
            self.model = ValueHeadModel.from_pretrained(str(dir_or_module), dtype=dtype,
                                                        attn_implementation=attn_implementation)
            self.checkpoint = str(dir_or_module)
        self.tokenizer = tokenizer or self.model.tokenizer
        if self.tokenizer is None:
            raise ValueError("HFValueModel needs a tokenizer (pass one, or a model that carries one)")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device, self.max_batch = device, max_batch
        self.model.to(device)

    def raw(self, prefixes: Sequence[str]) -> torch.Tensor:
        """Raw head outputs (before tanh) for a batch, right-padded; no gradient."""
        was_training = self.model.training
        self.model.eval()
        outs = []
        try:
            with torch.inference_mode():
                for i in range(0, len(prefixes), self.max_batch):
                    enc = self.tokenizer(list(prefixes[i:i + self.max_batch]), padding=True, return_tensors="pt")
                    outs.append(self.model(enc["input_ids"].to(self.device),
                                           enc["attention_mask"].to(self.device)).float().cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(outs) if outs else torch.zeros(0)

    def value(self, prefixes: Sequence[str]) -> list[float]:
        """tanh(raw) per prefix, in [-1, 1]."""
        return torch.tanh(self.raw(prefixes)).tolist()
