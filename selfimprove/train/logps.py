"""Per-sequence and per-step log-probabilities of completions, with the shared prompt computed once.

A *group* is one prompt with several completions (a pair's chosen and rejected, every pair under the
same decision point, or a TPO list). The prefix-shared path packs a group into one row,
``[prompt][completion 1][completion 2]...``, with a block attention mask (each completion sees the
prompt and itself, causally) and position ids that restart after the prompt for every completion, so
the prompt is encoded once and every completion scores exactly as if it followed the prompt alone. The
LM head runs only at positions that predict completion tokens. `naive_logps` is the plain
one-sequence-per-completion computation the shared path is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class Group:
    """A tokenized prompt and its completions; `steps[c]` are token counts of completion c's steps."""

    prompt: list[int]
    completions: list[list[int]]
    steps: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        if not self.steps:
            self.steps = [[len(c)] for c in self.completions]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + sum(len(c) for c in self.completions)


@dataclass
class Packed:
    """Tensors for one forward over many groups (one row per group) and where each logp belongs."""

    input_ids: torch.Tensor       # [R, L]
    position_ids: torch.Tensor    # [R, L]
    attention_mask: torch.Tensor  # [R, 1, L, L] additive float mask
    rows: torch.Tensor            # [T] row of each scored token
    cols: torch.Tensor            # [T] position whose hidden state predicts it
    labels: torch.Tensor          # [T] the token
    completion_of: torch.Tensor   # [T] global completion index
    step_of: torch.Tensor         # [T] global step index
    num_completions: int
    num_steps: int
    completion_lengths: torch.Tensor  # [C]


def pack(groups: Sequence[Group], pad_id: int, dtype: torch.dtype = torch.float32) -> Packed:
    """Lay groups out one per row, right-padded; build the block mask and the gather indices."""
    L = max(g.num_tokens for g in groups)
    R = len(groups)
    ids = torch.full((R, L), pad_id, dtype=torch.long)
    pos = torch.zeros((R, L), dtype=torch.long)
    allowed = torch.zeros((R, L, L), dtype=torch.bool)
    rows, cols, labels, comp_of, step_of, lens = [], [], [], [], [], []
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    c_idx = s_idx = 0
    for r, g in enumerate(groups):
        P = len(g.prompt)
        ids[r, :P] = torch.tensor(g.prompt, dtype=torch.long)
        pos[r, :P] = torch.arange(P)
        allowed[r, :P, :P] = causal[:P, :P]
        start = P
        for comp, step_lens in zip(g.completions, g.steps, strict=True):
            n = len(comp)
            end = start + n
            ids[r, start:end] = torch.tensor(comp, dtype=torch.long)
            pos[r, start:end] = torch.arange(P, P + n)
            allowed[r, start:end, :P] = True
            allowed[r, start:end, start:end] = causal[:n, :n]
            rows.extend([r] * n)
            cols.extend([P - 1, *range(start, end - 1)])
            labels.extend(comp)
            comp_of.extend([c_idx] * n)
            for k in step_lens:
                step_of.extend([s_idx] * k)
                s_idx += 1
            lens.append(n)
            c_idx += 1
            start = end
        for q in range(start, L):  # padding attends to itself only (keeps softmax finite)
            allowed[r, q, q] = True
    mask = torch.zeros((R, 1, L, L), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return Packed(ids, pos, mask, t(rows), t(cols), t(labels), t(comp_of), t(step_of), c_idx, s_idx,
                  t(lens))


def trunk_and_head(model):
    """(decoder stack, LM head) of a causal LM whose logits are exactly head(hidden), else None.

    Goes through a peft wrapper. Models that scale or soft-cap their logits get None (full forward).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    if getattr(cfg, "final_logit_softcapping", None) is not None or getattr(cfg, "logit_scale", None) is not None:
        return None
    try:
        return base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None


def token_logps(model, packed: Packed) -> torch.Tensor:
    """log π(token) for every scored token of a packed batch, shape [T].

    The LM head runs only on the hidden states that predict a scored token (when the model allows it).
    """
    dev = next(model.parameters()).device
    kw = dict(input_ids=packed.input_ids.to(dev), position_ids=packed.position_ids.to(dev),
              attention_mask=packed.attention_mask.to(dev, hidden_dtype(model)), use_cache=False)
    rows, cols = packed.rows.to(dev), packed.cols.to(dev)
    parts = trunk_and_head(model)
    if parts is None:
        logits = model(**kw).logits[rows, cols].float()
    else:
        trunk, head = parts
        logits = head(trunk(**kw).last_hidden_state[rows, cols]).float()
    return logits.log_softmax(-1).gather(-1, packed.labels.to(dev)[:, None]).squeeze(-1)


def hidden_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


class TokenScorer(torch.nn.Module):
    """`token_logps` as a module's forward. The trunk + head pass bypasses the LM's own forward, so a
    DDP / FSDP / DeepSpeed wrapper (which syncs gradients through forward) must wrap this module instead."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, packed: Packed) -> torch.Tensor:
        return token_logps(self.model, packed)


def shared_logps(model, packed: Packed) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-completion summed logps [C], per-step summed logps [S]) through the prefix-shared path.

    model: a causal LM, or a TokenScorer (possibly wrapped by accelerate's `prepare`)."""
    inner = getattr(model, "module", model)
    tok = model(packed) if isinstance(inner, TokenScorer) else token_logps(model, packed)
    comp = tok.new_zeros(packed.num_completions).index_add(0, packed.completion_of.to(tok.device), tok)
    steps = tok.new_zeros(packed.num_steps).index_add(0, packed.step_of.to(tok.device), tok)
    return comp, steps


def naive_logps(model, prompts: Sequence[list[int]], completions: Sequence[list[int]],
                pad_id: int) -> torch.Tensor:
    """Summed log π(completion | prompt), one full sequence per completion (right padding)."""
    seqs = [p + c for p, c in zip(prompts, completions, strict=True)]
    L = max(len(s) for s in seqs)
    dev = next(model.parameters()).device
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
    logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev), use_cache=False).logits.float()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:].to(dev)[..., None]).squeeze(-1)
    out = []
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        out.append(logp[i, len(p) - 1 : len(p) - 1 + len(c)].sum())
    return torch.stack(out)
