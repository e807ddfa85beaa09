"""dpo / step-dpo / ipo / rpo through TRL's `DPOTrainer`, on the same tokenization as our trainer.

`StepDPOTrainer` only replaces dataset preparation: TRL appends EOS to every plain-text completion,
which is wrong for step completions (a step ends with the step delimiter, not the sequence), so we
tokenize prompt and completion ourselves exactly as the compact trainer does. TRL's `sigmoid` loss
ignores per-pair weights and label smoothing: use the compact backend for cdpo, tpo and weighted pairs.
From the config, grad_clip and warmup_steps apply here too; share_prefix and tpo_asr are the compact
trainer's.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import torch
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback
from trl.trainer.dpo_config import DPOConfig
from trl.trainer.dpo_trainer import DPOTrainer

from envs.errors import UserError
from envs.progress import SILENT, Progress
from selfimprove.pairs.records import Record
from selfimprove.train.checkpoint import load_trainable, merged_for_saving, peak_rss_mb, save_trained
from selfimprove.train.config import TRL_LOSS_TYPES, PolicyTrainConfig, unknown_trl_option
from selfimprove.train.data import list_to_pairs, tokenize
from selfimprove.train.reference import attach_reference, mean_margin


class StepDPOTrainer(DPOTrainer):
    """DPOTrainer whose datasets arrive already tokenized (prompt_ids, chosen_ids, rejected_ids)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


class _Report(TrainerCallback):
    """Collects TRL's per-step logs as our history rows and reports them as progress."""

    def __init__(self, progress: Progress):
        self.progress, self.history = progress, []

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            row = {"step": state.global_step, "loss": float(logs["loss"]),
                   "margin": float(logs.get("rewards/margins", 0.0)),
                   "accuracy": float(logs.get("rewards/accuracies", 0.0))}
            self.history.append(row)
            self.progress.update(state.global_step, state.max_steps,
                                 **{k: v for k, v in row.items() if k != "step"})


def pairs_dataset(records: list[Record], tokenizer, max_length: int, *, overlong: str = "truncate",
                  counts: dict[str, int] | None = None) -> tuple[Dataset, int]:
    """Token-id dataset for DPOTrainer, and the token count a one-sequence-per-completion pass sees."""
    flat: list[Record] = []
    for r in records:
        flat.extend(list_to_pairs(r) if r.kind == "list" else [r])
    exs = tokenize(flat, tokenizer, max_length=max_length, as_lists=False, overlong=overlong, counts=counts)
    if not exs:
        raise UserError(f"field 'train.max_length': every record is longer than {max_length} tokens (overlong: skip)")
    ds = Dataset.from_dict({"prompt_ids": [e.prompt for e in exs], "chosen_ids": [e.items[0] for e in exs],
                            "rejected_ids": [e.items[1] for e in exs]})
    return ds, sum(e.num_tokens for e in exs)


def dpo_options(cfg: PolicyTrainConfig, *, seed: int, use_cpu: bool) -> dict[str, Any]:
    """DPOConfig keyword arguments for `cfg`: ours first, then the config's precision / accumulation /
    checkpointing fields (when this config has them), then `cfg.trl` as given (it wins)."""
    loss_type, weighted = TRL_LOSS_TYPES[cfg.loss]
    mixed = getattr(cfg, "mixed_precision", "no")
    accum = int(cfg.trl.get("gradient_accumulation_steps", getattr(cfg, "gradient_accumulation_steps", 1)))
    opts: dict[str, Any] = dict(
        loss_type=loss_type, loss_weights=[1.0, cfg.alpha] if weighted else None, beta=cfg.beta,
        learning_rate=cfg.lr, num_train_epochs=cfg.epochs, per_device_train_batch_size=max(1, cfg.batch_size // accum),
        gradient_accumulation_steps=accum, max_length=cfg.max_length, seed=seed, data_seed=seed, report_to=[],
        save_strategy="no", logging_steps=1, disable_tqdm=True, bf16=mixed == "bf16", fp16=mixed == "fp16",
        gradient_checkpointing=bool(getattr(cfg, "gradient_checkpointing", False)), use_cpu=use_cpu,
        dataloader_num_workers=0, lr_scheduler_type="linear", warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.grad_clip, adam_beta2=0.95, weight_decay=0.0, pad_to_multiple_of=None,
    )
    opts.update(cfg.trl)
    return opts


def train_trl(policy_dir: str | os.PathLike, records: list[Record], out_dir: str | os.PathLike,
              cfg: PolicyTrainConfig, *, ref_dir: str | os.PathLike | None, seed: int,
              eval_records: list[Record] | None = None, progress: Progress = SILENT, device: str = "auto",
              dtype: str = "auto", attn_implementation: str = "sdpa") -> dict[str, Any]:
    """Train on `records` with trl.DPOTrainer and write the new policy into `out_dir`; returns the metrics.

    DPOConfig is built from the config (loss, β, lr, schedule, clipping; mixed precision, accumulation and
    checkpointing when the config has them), then `cfg.trl` is laid over it as given."""
    loss, beta, lr, epochs, batch_size, max_length = (cfg.loss, cfg.beta, cfg.lr, cfg.epochs, cfg.batch_size,
                                                       cfg.max_length)
    bad = unknown_trl_option(cfg.trl)
    if bad is not None:
        raise UserError(f"field 'train.trl': {bad}")
    torch.manual_seed(seed)
    load: dict[str, Any] = {"device": device, "dtype": dtype, "attn_implementation": attn_implementation}
    model, tok = load_trainable(policy_dir, **load, qlora=cfg.qlora)
    counts: dict[str, int] = {}
    ds, tokens = pairs_dataset(records, tok, max_length, overlong=cfg.overlong, counts=counts)
    evals = tokenize(eval_records, tok, max_length=max_length, as_lists=False) if eval_records else []
    before = None
    if evals:
        attach_reference(load_trainable(ref_dir, **load)[0] if ref_dir else model, evals, tok.pad_token_id, 32)
        before = mean_margin(model, evals, tok.pad_token_id, beta)
    peft_config = None
    ref_model = None
    if cfg.lora or cfg.qlora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    else:
        ref_model = load_trainable(ref_dir or policy_dir, **load)[0]
    on_cpu = next(model.parameters()).device.type == "cpu"
    with tempfile.TemporaryDirectory(prefix="selfimprove-trl-") as scratch:
        args = DPOConfig(output_dir=scratch, **dpo_options(cfg, seed=seed, use_cpu=on_cpu))
        cb = _Report(progress)
        trainer = StepDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=ds,
                                 processing_class=tok, peft_config=peft_config, callbacks=[cb])
        trainer.remove_callback(PrinterCallback)  # our progress callback reports instead of printing dicts
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    trained: Any = trainer.model
    if cfg.lora or cfg.qlora:
        trained = merged_for_saving(trained, policy_dir, qlora=cfg.qlora)
    hist = cb.history
    metrics = {
        "backend": "trl", "loss": loss, "beta": beta, "lr": lr, "epochs": epochs, "batch_size": batch_size,
        "lora": cfg.lora, "qlora": cfg.qlora, "examples": len(ds), "steps": trainer.state.global_step,
        "truncated_records": counts["truncated"], "skipped_records": counts["skipped"],
        "trl_options": dict(cfg.trl),
        "final_loss": hist[-1]["loss"] if hist else None, "first_loss": hist[0]["loss"] if hist else None,
        "train_margin": hist[-1]["margin"] if hist else None,
        "train_accuracy": hist[-1]["accuracy"] if hist else None,
        "tokens": tokens * epochs, "train_s": wall, "tokens_per_s": tokens * epochs / wall if wall > 0 else None,
        "peak_rss_mb": peak_rss_mb(), "history": hist,
    }
    if before is not None:
        after = mean_margin(trained, evals, tok.pad_token_id, beta)
        metrics.update(eval_margin_before=before["margin"], eval_margin_after=after["margin"],
                       eval_accuracy_before=before["accuracy"], eval_accuracy_after=after["accuracy"])
    save_trained(trained, tok, out_dir, metrics)
    return metrics
