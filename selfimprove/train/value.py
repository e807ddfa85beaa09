"""Value-model (process reward model) training from search trees: the examples, the loop, the report.

Each tree node becomes an example: its prefix text (``tree.prefix_text``: prompt + steps, each + the
tree's delimiter) and a target in [-1, 1] — by default the Monte-Carlo success of its subtree
(2·correct/terminals − 1; nodes with no terminal below are skipped), or its MCTS Q (`target="q"`) — with
how many outcomes back it (terminals below, or visits) as its confidence. The loss combines regression,
SVPO's sibling margin ranking and rStar-Math's sibling preference (Bradley–Terry) loss, each with its
weight (`value_losses.py`; defaults: MSE + margin ranking). Held-out trees (split by tree, so shared
prefixes do not leak) give AUROC and calibration (ECE), overall and by depth (`value_metrics.py`).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from envs.errors import UserError
from envs.io import atomic_dir, atomic_write_json
from envs.progress import SILENT, Progress
from search.tree import Tree, read_trees
from selfimprove.train.checkpoint import METRICS_FILE, peak_rss_mb
from selfimprove.train.config import ValueTrainConfig
from selfimprove.train.fit import fit
from selfimprove.train.runtime import Runtime, process_device
from selfimprove.train.value_losses import (
    combined_value_loss,
    confidence_weight,
    margin_rank_loss,
    value_counts,
)
from selfimprove.train.value_metrics import auroc, calibration_report

__all__ = ["ValueExample", "auroc", "evaluate", "fit_value", "predict", "train_value", "value_examples",
           "value_loss"]


@dataclass
class ValueExample:
    prefix: str
    target: float
    label: int | None   # 1: reaches a correct answer, 0: has answers below but none correct, None: unknown
    group: tuple[int, int | None]  # (tree index, parent id): siblings share a group
    support: int = 1    # outcomes behind the target: terminals below (mc) or visits (q)
    depth: int = 0


def value_examples(trees: Sequence[Tree], *, target: str = "mc", min_visits: int = 1) -> list[ValueExample]:
    """One example per node that has a target (see the module docstring)."""
    if target not in ("mc", "q"):
        raise UserError(f"value target '{target}' is not 'mc' or 'q'")
    out = []
    for t_idx, tree in enumerate(trees):
        counts = tree.outcome_counts()
        for node in sorted(tree, key=lambda n: n.id):
            terms, correct = counts[node.id]
            label = 1 if correct > 0 else (0 if terms > 0 else None)
            if target == "mc":
                if terms == 0:
                    continue
                y, support = 2.0 * correct / terms - 1.0, terms
            else:
                if node.visits < min_visits:
                    continue
                y, support = max(-1.0, min(1.0, node.q)), node.visits
            out.append(ValueExample(tree.prefix_text(node.id), y, label, (t_idx, node.parent), support, node.depth))
    return out


def _encode(tok, texts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tok(list(texts), padding=True, return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


@torch.no_grad()
def predict(model, tok, prefixes: Sequence[str], batch_size: int = 64) -> list[float]:
    """tanh(raw) for each prefix."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(prefixes), batch_size):
        out += torch.tanh(model(*_encode(tok, prefixes[i : i + batch_size], dev)).float()).tolist()
    model.train(was)
    return out


def evaluate(model, tok, examples: Sequence[ValueExample]) -> dict[str, Any]:
    """MSE against targets, AUROC on labelled examples, ECE, and both by depth (`calibration_report`)."""
    if not examples:
        return {"mse": None, "auroc": None, "ece": None, "pair_accuracy": None, "by_depth": {}}
    v = predict(model, tok, [e.prefix for e in examples])
    mse = sum((a - e.target) ** 2 for a, e in zip(v, examples, strict=True)) / len(v)
    rep = calibration_report(v, [e.target for e in examples], [e.label for e in examples],
                             [e.depth for e in examples], [e.group for e in examples])
    return {"mse": mse, **rep}


def value_loss(values: torch.Tensor, targets: torch.Tensor, groups: Sequence, *, rank_weight: float,
               rank_margin: float, rank_gap: float) -> tuple[torch.Tensor, int]:
    """MSE(values, targets) + rank_weight · mean sibling margin loss; also the number of ranked pairs."""
    loss = torch.nn.functional.mse_loss(values, targets)
    rank, n = margin_rank_loss(values, targets.tolist(), groups, margin=rank_margin, gap=rank_gap)
    if n and rank_weight > 0:
        loss = loss + rank_weight * rank
    return loss, n


def load_value_model(init_from: str | os.PathLike, *, device: str = "auto", dtype: str = "auto",
                     attn_implementation: str = "sdpa"):
    """A ValueHeadModel from a saved value directory, or a fresh head on a policy's trunk, placed to train
    (agents.devices; dtype "auto" = float32)."""
    from agents.devices import placement
    from agents.value import CONFIG_FILE, ValueHeadModel

    where = placement(device, dtype, attn_implementation, training=True)
    p = Path(init_from)
    kw = {"dtype": where.dtype, "attn_implementation": where.attn_implementation}
    model = ValueHeadModel.from_pretrained(str(p), **kw) if (p / CONFIG_FILE).is_file() else \
        ValueHeadModel.from_policy(str(p), **kw)
    if model.tokenizer.pad_token_id is None:
        model.tokenizer.pad_token = model.tokenizer.eos_token
    return model.to(process_device(where.device))


def wrap_trunk_lora(model, r: int, alpha: int) -> None:
    """Put a LoRA adapter on the value model's trunk (peft); the head stays fully trainable."""
    from peft import LoraConfig, get_peft_model

    for p in model.trunk.parameters():
        p.requires_grad_(False)
    model.trunk = get_peft_model(model.trunk, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                                         target_modules="all-linear"))


def fit_value(trees: Sequence[Tree] | str | os.PathLike, out_dir: str | os.PathLike,
              config: ValueTrainConfig | Mapping[str, Any] | None = None, *, init_from: str | os.PathLike,
              seed: int = 0, progress: Progress = SILENT, device: str = "auto", dtype: str = "auto",
              attn_implementation: str = "sdpa") -> dict[str, Any]:
    """Train a value model on tree nodes and write it into `out_dir`; return metrics (also saved there).
    device / dtype / attn_implementation: where the model trains (agents.devices, checked first).

    Metrics include heldout_auroc_before / heldout_auroc (after), heldout_mse_before / heldout_mse,
    heldout_ece_before / heldout_ece and heldout_by_depth ({depth: {examples, auroc, ece}}).
    """
    from agents.devices import placement

    cfg = ValueTrainConfig.parse(config, "value training config")
    placement(device, dtype, attn_implementation, training=True)  # a bad device fails before any work
    if isinstance(trees, (str, os.PathLike)):
        trees = read_trees(trees)
    trees = list(trees)
    rng = random.Random(seed)
    order = list(range(len(trees)))
    rng.shuffle(order)
    n_held = min(len(trees) - 1, max(1, round(cfg.heldout_fraction * len(trees)))) if cfg.heldout_fraction > 0 \
        else 0
    held_idx = set(order[:n_held])
    train_trees = [t for i, t in enumerate(trees) if i not in held_idx]
    held_trees = [t for i, t in enumerate(trees) if i in held_idx]
    train = value_examples(train_trees, target=cfg.target)
    held = value_examples(held_trees, target=cfg.target)
    if not train:
        raise UserError("no value-training examples: the trees have no terminal nodes (target 'mc') "
                        "or no visited nodes (target 'q')")
    torch.manual_seed(seed)
    model = load_value_model(init_from, device=device, dtype=dtype, attn_implementation=attn_implementation)
    tok = model.tokenizer
    n_long = sum(len(tok(e.prefix).input_ids) > cfg.max_length for e in train)
    train = [e for e in train if len(tok(e.prefix).input_ids) <= cfg.max_length]
    held = [e for e in held if len(tok(e.prefix).input_ids) <= cfg.max_length]
    before = evaluate(model, tok, held)
    if cfg.lora:
        wrap_trunk_lora(model, cfg.lora_r, cfg.lora_alpha)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rt = Runtime.of(cfg)
    scorer, opt = rt.prepare(model, opt)
    dev = next(model.parameters()).device
    groups: dict[tuple, list[ValueExample]] = {}
    for e in train:
        groups.setdefault(e.group, []).append(e)

    def epochs() -> Iterator[list[ValueExample]]:
        """Sibling groups stay together (the ranking term needs them in one batch); group order is shuffled."""
        for _ in range(cfg.epochs):
            buckets = list(groups.values())
            rng.shuffle(buckets)
            flat = [e for b in buckets for e in b]
            for i in range(0, len(flat), cfg.batch_size):
                yield flat[i : i + cfg.batch_size]

    def weights_of(batch: list[ValueExample]) -> list[float] | None:
        return [confidence_weight(e.support, cfg.confidence_k) for e in batch] if cfg.confidence_k > 0 else None

    def loss_fn(batch: list[ValueExample], norm: dict[str, float] | None = None) -> tuple[torch.Tensor, dict]:
        raw = scorer(*_encode(tok, [e.prefix for e in batch], dev)).float()
        loss, parts = combined_value_loss(
            raw, [e.target for e in batch], [e.label for e in batch], [e.group for e in batch], weights_of(batch),
            regression=cfg.regression, regression_weight=cfg.regression_weight, rank_weight=cfg.rank_weight,
            rank_margin=cfg.rank_margin, rank_gap=cfg.rank_gap, bt_weight=cfg.bt_weight, norm=norm)
        return loss, parts

    def counts(batch: list[ValueExample]) -> dict[str, float]:
        """The loss's normalisers (`fit`'s count_fn). Sibling pairs are ranked within a micro-batch."""
        return value_counts([e.target for e in batch], [e.label for e in batch], [e.group for e in batch],
                            weights_of(batch), cfg.rank_gap)

    t0 = time.perf_counter()
    total = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    history = fit(params, opt, epochs(), loss_fn, total=total, grad_clip=1.0, progress=progress, runtime=rt,
                  count_fn=counts, model=scorer)
    wall = time.perf_counter() - t0
    after = evaluate(model, tok, held)
    metrics = {
        "trees": len(trees), "train_trees": len(train_trees), "heldout_trees": len(held_trees),
        "train_examples": len(train), "heldout_examples": len(held), "skipped_long": n_long,
        "heldout_labelled": sum(e.label is not None for e in held), "target": cfg.target, "epochs": cfg.epochs,
        "lr": cfg.lr, "steps": len(history), "rank_pairs": sum(row["rank_pairs"] for row in history),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None, "train_s": wall,
        "heldout_mse_before": before["mse"], "heldout_mse": after["mse"],
        "heldout_auroc_before": before["auroc"], "heldout_auroc": after["auroc"],
        "heldout_ece_before": before["ece"], "heldout_ece": after["ece"], "heldout_by_depth": after["by_depth"],
        "heldout_pair_accuracy": after.get("pair_accuracy"),
        "losses": {"regression": cfg.regression, "regression_weight": cfg.regression_weight,
                   "rank_weight": cfg.rank_weight, "bt_weight": cfg.bt_weight, "confidence_k": cfg.confidence_k},
        "bt_pairs": sum(row.get("bt_pairs", 0) for row in history),
        "peak_rss_mb": peak_rss_mb(), "init_from": str(init_from), "lora": cfg.lora,
        "trainable_params": sum(p.numel() for p in params), "history": history,
    }
    if cfg.lora:
        model.trunk = model.trunk.merge_and_unload()
    if rt.is_main:
        model.save_pretrained(str(out_dir))
        atomic_write_json(Path(out_dir) / METRICS_FILE, metrics)
    rt.wait()
    return metrics


def train_value(trees: Sequence[Tree] | str | os.PathLike, out_dir: str | os.PathLike,
                config: ValueTrainConfig | Mapping[str, Any] | None = None, *, init_from: str | os.PathLike,
                seed: int = 0, progress: Progress = SILENT, overwrite: bool = False, device: str = "auto",
                dtype: str = "auto", attn_implementation: str = "sdpa") -> dict[str, Any]:
    """`fit_value` into a temp directory swapped in for `out_dir` whole (nothing half-written); an
    existing `out_dir` is replaced only when selfimprove saved it and `overwrite` is set."""
    cfg = ValueTrainConfig.parse(config, "value training config")
    with atomic_dir(out_dir, kind="value model", replace="ours" if overwrite else "never") as tmp:
        return fit_value(trees, tmp, cfg, init_from=init_from, seed=seed, progress=progress, device=device,
                         dtype=dtype, attn_implementation=attn_implementation)
