"""Our preference trainer: every pair loss and TPO, per-record weight and eps, prefix sharing.

The reference log-probs are computed once up front (the reference is the policy at the start, or
`ref_dir`); each shared prompt is encoded once per batch (see `logps`). AdamW (betas 0.9/0.95, no weight
decay) with linear warm-up and decay, stepped by the shared loop in `fit`.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import torch

import selfimprove.train.losses as L
from envs.errors import UserError
from envs.progress import SILENT, Progress
from selfimprove.pairs.records import Record
from selfimprove.train.checkpoint import load_trainable, merged_for_saving, peak_rss_mb, save_trained
from selfimprove.train.config import PolicyTrainConfig
from selfimprove.train.data import Batch, Example, batches, collate, tokenize
from selfimprove.train.fit import fit, linear_schedule
from selfimprove.train.logps import TokenScorer, shared_logps
from selfimprove.train.reference import attach_reference, mean_margin, reference_items
from selfimprove.train.runtime import Runtime


def batch_loss(model, batch: Batch, loss: str, beta: float, alpha: float,
               asr: bool = True, norm: dict[str, float] | None = None) -> tuple[torch.Tensor, dict]:
    """Weighted mean loss of a batch, plus margin / accuracy of the implicit rewards.

    model: the policy or its TokenScorer. asr: TPO's Adaptive Step Reward (step similarity weighting);
    off = every step weighs 1. norm: {"weight": the records' total weight over the whole optimiser step}
    when the step is split across processes or micro-batches (default: this batch's own total).
    """
    comp, steps = shared_logps(model, batch.packed)
    dev = comp.device
    if loss == "tpo":
        per, margins = [], []
        for ex, ii, si in zip(batch.examples, batch.item_index, batch.step_index, strict=True):
            n, K = len(ii), max(len(s) for s in si)
            d = comp.new_zeros(n, K)
            mask = comp.new_zeros(n, K)
            for i, s in enumerate(si):
                if s:
                    d[i, : len(s)] = steps[s] - ex.ref_steps[i].to(dev)
                    mask[i, : len(s)] = 1.0
            sim = ex.similarity.to(dev) if asr and ex.similarity is not None else None
            per.append(L.tpo(d, mask, torch.tensor(ex.scores, device=dev), beta, sim))
            total = (d * mask).sum(-1)
            margins.append(beta * (total[0] - total[1:].mean()))
        w = torch.tensor([ex.weight for ex in batch.examples], device=dev)
        value = (torch.stack(per) * w).sum() / _normaliser(w, norm)
        m = torch.stack(margins).detach()
        return value, {"margin": m.mean().item(), "accuracy": (m > 0).float().mean().item()}
    ci = torch.tensor([ii[0] for ii in batch.item_index], device=dev)
    ri = torch.tensor([ii[1] for ii in batch.item_index], device=dev)
    ref = torch.stack([reference_items(ex) for ex in batch.examples]).to(dev)
    chosen, rejected = comp[ci] - ref[:, 0], comp[ri] - ref[:, 1]
    lens = batch.packed.completion_lengths.to(dev).to(comp.dtype)
    per = L.pair_loss(loss, chosen=chosen, rejected=rejected, beta=beta,
                      eps=torch.tensor([ex.eps for ex in batch.examples], device=dev),
                      chosen_logps=comp[ci], chosen_len=lens[ci], rejected_len=lens[ri], alpha=alpha)
    w = torch.tensor([ex.weight for ex in batch.examples], device=dev)
    value = (per * w).sum() / _normaliser(w, norm)
    h = (chosen - rejected).detach()
    return value, {"margin": (beta * h).mean().item(), "accuracy": (h > 0).float().mean().item()}


def _normaliser(w: torch.Tensor, norm: dict[str, float] | None) -> torch.Tensor | float:
    return w.sum().clamp(min=1e-12) if norm is None else max(norm["weight"], 1e-12)


def record_weights(examples: list[Example]) -> dict[str, float]:
    """What a batch's loss is normalised by (`fit`'s count_fn): the records' total weight."""
    return {"weight": float(sum(ex.weight for ex in examples))}


def wrap_lora(model, r: int, alpha: int):
    """The model with a LoRA adapter on every linear layer (peft)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))


def train_compact(policy_dir: str | os.PathLike, records: list[Record], out_dir: str | os.PathLike,
                  cfg: PolicyTrainConfig, *, ref_dir: str | os.PathLike | None, seed: int,
                  eval_records: list[Record] | None, progress: Progress = SILENT, device: str = "auto",
                  dtype: str = "auto", attn_implementation: str = "sdpa") -> dict[str, Any]:
    """Train on `records` and write the new policy into `out_dir`; returns the metrics (also saved there).

    flash_attention_2 is not used here: the packed rows carry a block mask (`logps.pack`), which only
    SDPA / eager take, so the trainer loads with SDPA instead (metrics["attn_implementation"])."""
    torch.manual_seed(seed)
    attn = "sdpa" if attn_implementation == "flash_attention_2" else attn_implementation
    load: dict[str, Any] = {"device": device, "dtype": dtype, "attn_implementation": attn}
    model: Any
    model, tok = load_trainable(policy_dir, **load, qlora=cfg.qlora)
    loss = cfg.loss
    counts: dict[str, int] = {}
    examples = tokenize(records, tok, max_length=cfg.max_length, as_lists=loss == "tpo", overlong=cfg.overlong,
                        counts=counts)
    if not examples:
        raise UserError(f"field 'train.max_length': all {counts['skipped']} records are longer than "
                        f"{cfg.max_length} tokens (overlong: skip)")
    evals = tokenize(eval_records, tok, max_length=cfg.max_length, as_lists=False) if eval_records else []
    pad = tok.pad_token_id
    t_ref = time.perf_counter()
    same = ref_dir is None or Path(ref_dir).resolve() == Path(policy_dir).resolve()
    ref_model = model if same or ref_dir is None else load_trainable(ref_dir, **load)[0]
    attach_reference(ref_model, examples + evals, pad, max(cfg.batch_size, 32))
    if ref_model is not model:
        del ref_model
    ref_s = time.perf_counter() - t_ref
    eval_before = mean_margin(model, evals, pad, cfg.beta) if evals else None
    if cfg.lora or cfg.qlora:
        model = wrap_lora(model, cfg.lora_r, cfg.lora_alpha)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rt = Runtime.of(cfg)
    scorer, opt = rt.prepare(TokenScorer(model), opt)
    rng = random.Random(seed)
    plan = [batches(examples, cfg.batch_size, rng) for _ in range(cfg.epochs)]
    total = sum(len(p) for p in plan)
    count = {"packed": 0}

    # The collated batch stays alive until the next one is built, as in the loop this trainer had before
    # the shared one: the float results here depend on tensor lifetimes (allocator reuse), and with this
    # the demo's step-DPO reproduces bit for bit. (TPO varies ~1e-7 even between two identical runs.)
    held: dict[str, Batch] = {}

    def step_loss(exs: list[Example], norm: dict[str, float] | None = None) -> tuple[torch.Tensor, dict]:
        held["batch"] = b = collate(exs, pad, share_prefix=cfg.share_prefix)
        value, stats = batch_loss(scorer, b, loss, cfg.beta, cfg.alpha, asr=cfg.tpo_asr, norm=norm)
        count["packed"] += int(b.packed.input_ids.ne(pad).sum()) if cfg.share_prefix else 0
        return value, stats

    t0 = time.perf_counter()
    history = fit(params, opt, (exs for epoch in plan for exs in epoch), step_loss, total=total,
                  grad_clip=cfg.grad_clip, scheduler=linear_schedule(opt, cfg.warmup_steps, total), progress=progress,
                  runtime=rt, count_fn=record_weights, model=scorer)
    wall = time.perf_counter() - t0
    state = rt.state_dict(scorer)
    if cfg.lora or cfg.qlora:
        model = merged_for_saving(model, policy_dir, qlora=cfg.qlora)
    tokens = sum(ex.num_tokens for epoch in plan for exs in epoch for ex in exs)
    # Packed tokens over every process (a process whose part of a step is empty scores one record, times 0).
    count["packed"] = int(rt.sum(torch.tensor([count["packed"]], dtype=torch.float64)).item())
    metrics = {
        "backend": "compact", "loss": loss, "beta": cfg.beta, "lr": cfg.lr, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "lora": cfg.lora, "qlora": cfg.qlora, "examples": len(examples),
        "steps": len(history), "truncated_records": counts["truncated"], "skipped_records": counts["skipped"],
        "device": str(next(model.parameters()).device), "dtype": str(next(model.parameters()).dtype),
        "attn_implementation": attn,
        "share_prefix": cfg.share_prefix, "tpo_asr": cfg.tpo_asr, "processes": rt.world,
        "mixed_precision": cfg.mixed_precision, "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "final_loss": history[-1]["loss"] if history else None,
        "first_loss": history[0]["loss"] if history else None,
        "train_margin": history[-1]["margin"] if history else None,
        "train_accuracy": history[-1]["accuracy"] if history else None,
        "tokens": tokens, "packed_tokens": count["packed"], "train_s": wall, "reference_s": ref_s,
        "tokens_per_s": tokens / wall if wall > 0 else None, "peak_rss_mb": peak_rss_mb(), "history": history,
    }
    if eval_before is not None:
        after = mean_margin(model, evals, pad, cfg.beta)
        metrics.update(eval_margin_before=eval_before["margin"], eval_margin_after=after["margin"],
                       eval_accuracy_before=eval_before["accuracy"], eval_accuracy_after=after["accuracy"])
    if rt.is_main:
        save_trained(model, tok, out_dir, metrics, state_dict=None if cfg.lora or cfg.qlora else _lm_state(state))
    rt.wait()
    return metrics


def _lm_state(state: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """The LM's own state dict from the (gathered) TokenScorer's: its keys lose the `model.` prefix."""
    if state is None:
        return None
    return {k.removeprefix("model."): v for k, v in state.items()}
