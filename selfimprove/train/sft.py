"""Rejection-sampling fine-tuning (SFT on verified solutions): the baseline step-level preferences are
compared against. Records are {prompt, completion}; the loss is the mean NLL of completion tokens only.

AdamW (torch's default betas, no weight decay) at a constant learning rate, stepped by the shared loop
in `fit`. From the config it reads lr, epochs, batch_size, max_length and grad_clip.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from envs.errors import UserError
from envs.progress import SILENT, Progress
from search.tree import Tree
from selfimprove.train.checkpoint import load_trainable, save_trained
from selfimprove.train.config import PolicyTrainConfig
from selfimprove.train.data import fit_length
from selfimprove.train.fit import fit
from selfimprove.train.logps import naive_logps
from selfimprove.train.runtime import Runtime


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


def train_sft(policy_dir: str | os.PathLike, records: Sequence[dict], out_dir: str | os.PathLike,
              cfg: PolicyTrainConfig, *, seed: int, progress: Progress = SILENT, device: str = "auto",
              dtype: str = "auto", attn_implementation: str = "sdpa") -> dict[str, Any]:
    """Fine-tune the policy at `policy_dir` on the completions of `records`; write it into `out_dir`.

    Records longer than max_length are cut (prompt from the left) or skipped, per `cfg.overlong`.
    Returns {loss (mean over the last epoch), steps, examples, tokens, seconds, truncated / skipped
    record counts, history}.
    """
    if not records:
        raise UserError("SFT: no verified solutions to train on")
    model, tok = load_trainable(policy_dir, device=device, dtype=dtype, attn_implementation=attn_implementation)
    model.train()
    examples = []
    counts = {"truncated": 0, "skipped": 0}
    bos = tok.bos_token_id
    for r in records:
        p, c = _encode(tok, r["prompt"], r["completion"])
        cut = fit_length(p, [c], cfg.max_length, keep_first=bos is not None and bool(p) and p[0] == bos)
        if cut is not None:
            counts["skipped" if cfg.overlong == "skip" else "truncated"] += 1
            if cfg.overlong == "skip":
                continue
            p, c = cut[0], cut[1][0]
        examples.append((p, c))
    if not examples:
        raise UserError(f"field 'train.max_length': all {counts['skipped']} SFT records are longer than "
                        f"{cfg.max_length} tokens (overlong: skip)")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rt = Runtime.of(cfg)
    lm, opt = rt.prepare(model, opt)
    per_epoch = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
    token_count = [0]

    def epochs() -> Iterator[list[tuple[list[int], list[int]]]]:
        for _ in range(cfg.epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                yield [examples[i] for i in order[start:start + cfg.batch_size]]

    def nll(batch: list[tuple[list[int], list[int]]], norm: dict[str, float] | None = None
            ) -> tuple[torch.Tensor, dict]:
        """Mean NLL per completion token: of this batch, or (split steps) of the whole step's tokens."""
        logps = naive_logps(lm, [b[0] for b in batch], [b[1] for b in batch], tok.pad_token_id)
        return -logps.sum() / (completion_tokens(batch)["tokens"] if norm is None else norm["tokens"]), {}

    def counted() -> Iterator[list[tuple[list[int], list[int]]]]:
        for batch in epochs():
            token_count[0] += int(completion_tokens(batch)["tokens"])
            yield batch

    t0 = time.time()
    history = fit(params, opt, counted(), nll, total=cfg.epochs * per_epoch, grad_clip=cfg.grad_clip,
                  progress=progress, runtime=rt, count_fn=completion_tokens, model=lm)
    seconds = time.time() - t0
    last = [row["loss"] for row in history[-per_epoch:]]
    metrics = {"loss": sum(last) / len(last), "steps": len(history), "examples": len(examples),
               "tokens": token_count[0], "seconds": seconds, "truncated_records": counts["truncated"],
               "skipped_records": counts["skipped"], "history": history}
    state = rt.state_dict(lm)
    if rt.is_main:
        save_trained(model, tok, out_dir, metrics, state_dict=state)
    rt.wait()
    return metrics


def completion_tokens(batch: Sequence[tuple[list[int], list[int]]]) -> dict[str, float]:
    """What SFT's loss is normalised by (`fit`'s count_fn): the completion tokens."""
    return {"tokens": float(sum(len(c) for _, c in batch))}
