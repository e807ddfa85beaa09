"""Train the next policy on preference records: our compact prefix-shared trainer, or TRL's DPOTrainer.

The compact trainer (nanoGPT-style: one loop, AdamW, linear decay) runs every loss in `losses.LOSSES`,
honours per-pair weights and eps, precomputes the reference log-probs once (the reference is the policy
at the start, or `ref_dir`), and encodes each shared prompt once per batch (see `logps`). The TRL path
(`backend="trl"`) runs dpo / step-dpo / ipo / rpo through `trl.DPOTrainer`. Both write a standard HF
directory atomically, with `training_metrics.json` inside.
"""

from __future__ import annotations

import math
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from envs.errors import UserError
from envs.io import atomic_write_json, replace_dir
from selfimprove.pairs.records import Record, read_records
from selfimprove.train import losses as L
from selfimprove.train.data import Batch, Example, batches, collate, tokenize
from selfimprove.train.logps import shared_logps

Progress = Callable[[int, int, dict[str, float]], None]


def load_records(records_or_path: Sequence[Record] | str | os.PathLike) -> list[Record]:
    if isinstance(records_or_path, (str, os.PathLike)):
        return read_records(records_or_path)
    return list(records_or_path)


def load_policy(policy_dir: str | os.PathLike):
    """(model, tokenizer) from a local HF directory or GGUF file; a bad path is a UserError."""
    from agents.loading import load_causal_lm, load_tokenizer, resolve_model_path

    src = resolve_model_path(policy_dir, what="policy")
    tok = load_tokenizer(src)
    model = load_causal_lm(src, device="cuda" if torch.cuda.is_available() else "cpu")
    return model, tok


def save_policy_dir(model, tokenizer, out_dir: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Write model + tokenizer + training_metrics.json to a temp dir beside `out_dir`, then rename it in."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "training_metrics.json", metrics)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- the compact trainer ------------------------------------------------------------------------------
@torch.no_grad()
def attach_reference(model, examples: list[Example], pad_id: int, batch_size: int) -> None:
    """Store the reference model's item and step logps on each example (computed once)."""
    was_training = model.training
    model.eval()
    for i in range(0, len(examples), batch_size):
        b = collate(examples[i : i + batch_size], pad_id)
        comp, steps = shared_logps(model, b.packed)
        comp, steps = comp.cpu(), steps.cpu()
        for ex, ii, si in zip(b.examples, b.item_index, b.step_index, strict=True):
            ex.ref_items = comp[ii]
            ex.ref_steps = [steps[s] for s in si]
    model.train(was_training)


def batch_loss(model, batch: Batch, loss: str, beta: float, alpha: float,
               asr: bool = True) -> tuple[torch.Tensor, dict]:
    """Weighted mean loss of a batch, plus margin / accuracy of the implicit rewards.

    asr: TPO's Adaptive Step Reward (step similarity weighting); off = every step weighs 1.
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
            sim = ex.similarity.to(dev) if asr else None
            per.append(L.tpo(d, mask, torch.tensor(ex.scores, device=dev), beta, sim))
            total = (d * mask).sum(-1)
            margins.append(beta * (total[0] - total[1:].mean()))
        w = torch.tensor([ex.weight for ex in batch.examples], device=dev)
        value = (torch.stack(per) * w).sum() / w.sum().clamp(min=1e-12)
        m = torch.stack(margins).detach()
        return value, {"margin": m.mean().item(), "accuracy": (m > 0).float().mean().item()}
    ci = torch.tensor([ii[0] for ii in batch.item_index], device=dev)
    ri = torch.tensor([ii[1] for ii in batch.item_index], device=dev)
    ref = torch.stack([ex.ref_items for ex in batch.examples]).to(dev)
    chosen, rejected = comp[ci] - ref[:, 0], comp[ri] - ref[:, 1]
    lens = batch.packed.completion_lengths.to(dev).to(comp.dtype)
    per = L.pair_loss(loss, chosen=chosen, rejected=rejected, beta=beta,
                      eps=torch.tensor([ex.eps for ex in batch.examples], device=dev),
                      chosen_logps=comp[ci], chosen_len=lens[ci], rejected_len=lens[ri], alpha=alpha)
    w = torch.tensor([ex.weight for ex in batch.examples], device=dev)
    value = (per * w).sum() / w.sum().clamp(min=1e-12)
    h = (chosen - rejected).detach()
    return value, {"margin": (beta * h).mean().item(), "accuracy": (h > 0).float().mean().item()}


@torch.no_grad()
def mean_margin(model, examples: list[Example], pad_id: int, beta: float, batch_size: int = 32) -> dict:
    """Mean implicit-reward margin β·(D_chosen − D_rejected) and accuracy over examples (pairs: item 0 vs 1)."""
    was = model.training
    model.eval()
    hs = []
    for i in range(0, len(examples), batch_size):
        b = collate(examples[i : i + batch_size], pad_id)
        comp, _ = shared_logps(model, b.packed)
        for ex, ii in zip(b.examples, b.item_index, strict=True):
            d = comp[ii].cpu() - ex.ref_items
            hs.append(float(d[0] - d[1:].mean()))
    model.train(was)
    return {"margin": beta * sum(hs) / max(1, len(hs)), "accuracy": sum(h > 0 for h in hs) / max(1, len(hs))}


def _wrap_lora(model, r: int, alpha: int):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))


def train_compact(policy_dir, records: list[Record], out_dir, *, loss: str, beta: float, lr: float,
                  epochs: int, batch_size: int, lora: bool, lora_r: int, lora_alpha: int, ref_dir,
                  seed: int, max_length: int, alpha: float, share_prefix: bool, grad_clip: float,
                  warmup_steps: int, eval_records: list[Record] | None, progress: Progress | None,
                  tpo_asr: bool = True) -> dict:
    torch.manual_seed(seed)
    model, tok = load_policy(policy_dir)
    as_lists = loss == "tpo"
    examples = tokenize(records, tok, max_length=max_length, as_lists=as_lists)
    evals = tokenize(eval_records, tok, max_length=max_length, as_lists=False) if eval_records else []
    pad = tok.pad_token_id
    t_ref = time.perf_counter()
    same = ref_dir is None or Path(ref_dir).resolve() == Path(policy_dir).resolve()
    ref_model = model if same else load_policy(ref_dir)[0]
    attach_reference(ref_model, examples + evals, pad, max(batch_size, 32))
    if ref_model is not model:
        del ref_model
    ref_s = time.perf_counter() - t_ref
    eval_before = mean_margin(model, evals, pad, beta) if evals else None
    if lora:
        model = _wrap_lora(model, lora_r, lora_alpha)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = random.Random(seed)
    plan = [batches(examples, batch_size, rng) for _ in range(epochs)]
    total = sum(len(p) for p in plan)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)) * max(0.0, 1.0 - s / max(1, total)))
    history, tokens, packed_tokens, step = [], 0, 0, 0
    t0 = time.perf_counter()
    for epoch_batches in plan:
        for exs in epoch_batches:
            b = collate(exs, pad, share_prefix=share_prefix)
            value, stats = batch_loss(model, b, loss, beta, alpha, asr=tpo_asr)
            opt.zero_grad(set_to_none=True)
            value.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            step += 1
            tokens += sum(ex.num_tokens for ex in exs)
            packed_tokens += int(b.packed.input_ids.ne(pad).sum()) if share_prefix else 0
            row = {"step": step, "loss": value.item(), **stats}
            if not math.isfinite(row["loss"]):
                raise UserError(f"training diverged at step {step} (loss {row['loss']}); lower --lr")
            history.append(row)
            if progress:
                progress(step, total, row)
    wall = time.perf_counter() - t0
    if lora:
        model = model.merge_and_unload()
    metrics = {
        "backend": "compact", "loss": loss, "beta": beta, "lr": lr, "epochs": epochs, "batch_size": batch_size,
        "lora": lora, "examples": len(examples), "steps": step, "share_prefix": share_prefix, "tpo_asr": tpo_asr,
        "final_loss": history[-1]["loss"] if history else None,
        "first_loss": history[0]["loss"] if history else None,
        "train_margin": history[-1]["margin"] if history else None,
        "train_accuracy": history[-1]["accuracy"] if history else None,
        "tokens": tokens, "packed_tokens": packed_tokens, "train_s": wall, "reference_s": ref_s,
        "tokens_per_s": tokens / wall if wall > 0 else None, "peak_rss_mb": peak_rss_mb(), "history": history,
    }
    if evals:
        after = mean_margin(model, evals, pad, beta)
        metrics.update(eval_margin_before=eval_before["margin"], eval_margin_after=after["margin"],
                       eval_accuracy_before=eval_before["accuracy"], eval_accuracy_after=after["accuracy"])
    save_policy_dir(model, tok, out_dir, metrics)
    return metrics


def train_policy(policy_dir: str | os.PathLike, records_or_path: Sequence[Record] | str | os.PathLike,
                 out_dir: str | os.PathLike, *, loss: str = "step-dpo", beta: float = 0.1, lr: float = 1e-5,
                 epochs: int = 1, batch_size: int = 8, lora: bool = False, lora_r: int = 8, lora_alpha: int = 16,
                 ref_dir: str | os.PathLike | None = None, seed: int = 0, max_length: int = 1024,
                 alpha: float = 1.0, backend: str = "compact", share_prefix: bool = True,
                 grad_clip: float = 1.0, warmup_steps: int = 0, eval_records: Sequence[Record] | None = None,
                 tpo_asr: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    """Train `policy_dir` on preference records; write the new policy to `out_dir`; return metrics.

    loss: dpo | step-dpo | cdpo | ipo | rpo | tpo. backend: "compact" (ours, all losses, per-pair weights
    and eps, prefix sharing) or "trl" (trl.DPOTrainer: dpo, step-dpo, ipo, rpo). alpha: the NLL weight of
    rpo. eval_records: pairs whose margin β·h is measured before and after (metrics eval_margin_*).
    tpo_asr: TPO's Adaptive Step Reward on (default) or off. share_prefix=False scores every completion
    in its own row (for comparison; same results, slower).
    """
    if loss not in L.LOSSES:
        raise UserError(f"unknown loss '{loss}' (choose from: {', '.join(L.LOSSES)})")
    if backend not in ("compact", "trl"):
        raise UserError(f"unknown backend '{backend}' (choose from: compact, trl)")
    for name, v in (("beta", beta), ("lr", lr), ("epochs", epochs), ("batch_size", batch_size),
                    ("max_length", max_length)):
        if not v > 0:
            raise UserError(f"{name} must be positive, got {v}")
    records = load_records(records_or_path)
    if not records:
        raise UserError(f"{records_or_path if isinstance(records_or_path, (str, os.PathLike)) else 'records'}: "
                        "no preference records to train on")
    evals = load_records(eval_records) if eval_records is not None else None
    kw = dict(loss=loss, beta=beta, lr=lr, epochs=epochs, batch_size=batch_size, lora=lora, lora_r=lora_r,
              lora_alpha=lora_alpha, ref_dir=ref_dir, seed=seed, max_length=max_length, alpha=alpha)
    if backend == "trl":
        from selfimprove.train.dpo_trl import train_trl

        return train_trl(policy_dir, records, out_dir, eval_records=evals, progress=progress, **kw)
    return train_compact(policy_dir, records, out_dir, share_prefix=share_prefix, grad_clip=grad_clip,
                         warmup_steps=warmup_steps, eval_records=evals, progress=progress, tpo_asr=tpo_asr, **kw)
