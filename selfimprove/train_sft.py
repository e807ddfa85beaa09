"""Rejection-sampling fine-tuning (SFT on verified solutions): the baseline step-level preferences are
compared against. Records are {prompt, completion}; the loss is the mean NLL of completion tokens only.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from envs.errors import UserError
from envs.io import read_jsonl
from search.tree import Tree


def verified_solutions(trees: Iterable[Tree], *, iteration: int = 0) -> list[dict]:
    """One record per distinct verified-correct solution in each tree: prompt, completion (steps, each
    followed by the tree's delimiter)."""
    out = []
    for tree in trees:
        seen: set[str] = set()
        for node in tree:
            if not node.correct:
                continue
            completion = tree.steps_text(tree.steps(node.id))
            if completion in seen:
                continue
            seen.add(completion)
            out.append({"kind": "sft", "prompt": tree.prompt, "completion": completion, "tree_id": tree.id,
                        "problem_id": tree.problem.id, "node": node.id, "iteration": iteration})
    return out


def _encode(tok, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    full = tok(prompt + completion, add_special_tokens=True)["input_ids"]
    if full[: len(p)] == p and len(full) > len(p):
        return p, full[len(p):]
    return p, tok(completion, add_special_tokens=False)["input_ids"]


def train_sft(policy_dir: str | os.PathLike, records: list[dict] | str | os.PathLike, out_dir: str | os.PathLike,
              *, lr: float = 1e-4, epochs: int = 1, batch_size: int = 8, seed: int = 0, max_length: int = 256,
              progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Fine-tune the policy at `policy_dir` on the completions of `records`; save to `out_dir`.

    Returns {loss (mean over the last epoch), steps, examples, tokens, seconds}.
    """
    import torch

    from agents.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from selfimprove.train.logps import naive_logps

    if not isinstance(records, list):
        records = read_jsonl(records, required=("prompt", "completion"))
    if not records:
        raise UserError("SFT: no verified solutions to train on")
    src = resolve_model_path(policy_dir, what="policy")
    tok = load_tokenizer(src)
    model = load_causal_lm(src, device="cpu", dtype="float32")
    model.train()
    examples = []
    for r in records:
        p, c = _encode(tok, r["prompt"], r["completion"])
        if len(p) + len(c) > max_length:
            raise UserError(f"SFT record for problem '{r.get('problem_id', '?')}' is {len(p) + len(c)} tokens, "
                            f"over max_length {max_length}")
        examples.append((p, c))
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    total = epochs * ((len(examples) + batch_size - 1) // batch_size)
    steps = tokens = 0
    t0 = time.time()
    last_losses: list[float] = []
    for _ in range(epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        last_losses = []
        for start in range(0, len(order), batch_size):
            batch = [examples[i] for i in order[start:start + batch_size]]
            logps = naive_logps(model, [b[0] for b in batch], [b[1] for b in batch], tok.pad_token_id)
            n_tok = sum(len(b[1]) for b in batch)
            loss = -logps.sum() / n_tok
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            steps += 1
            tokens += n_tok
            last_losses.append(loss.item())
            if progress:
                progress(steps, total)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return {"loss": sum(last_losses) / len(last_losses), "steps": steps, "examples": len(examples),
            "tokens": tokens, "seconds": time.time() - t0}
