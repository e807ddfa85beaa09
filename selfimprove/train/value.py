"""Value-model training from search trees: regression onto outcomes plus a sibling ranking loss.

Each tree node becomes an example: its prefix text (``tree.prefix_text``: prompt + steps, each + the
tree's delimiter) and a target in [-1, 1] — by default the Monte-Carlo success of its subtree (2·correct/terminals − 1, nodes
with no terminal below are skipped), or its MCTS Q (`target="q"`). The loss is
``MSE(tanh(raw), target) + rank_weight · mean relu(rank_margin − (tanh(raw_a) − tanh(raw_b)))`` over
sibling pairs whose targets differ by more than `rank_gap` (a above b; the SVPO-style step ranking).
Held-out trees (split by tree, so shared prefixes do not leak) give the AUROC of telling prefixes that
reach a verified-correct answer from prefixes whose subtree has answers but none correct.
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


@dataclass
class ValueExample:
    prefix: str
    target: float
    label: int | None   # 1: reaches a correct answer, 0: has answers below but none correct, None: unknown
    group: tuple[int, int | None]  # (tree index, parent id): siblings share a group


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve by the rank-sum (Mann–Whitney) formula, ties given average ranks."""
    pairs = sorted(zip(scores, labels, strict=True), key=lambda x: x[0])
    n_pos = sum(1 for _, y in pairs if y == 1)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        avg = (i + j) / 2 + 1  # 1-based average rank of the tie block
        rank_sum += avg * sum(1 for k in range(i, j + 1) if pairs[k][1] == 1)
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


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
                y = 2.0 * correct / terms - 1.0
            else:
                if node.visits < min_visits:
                    continue
                y = max(-1.0, min(1.0, node.q))
            out.append(ValueExample(tree.prefix_text(node.id), y, label, (t_idx, node.parent)))
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


def evaluate(model, tok, examples: Sequence[ValueExample]) -> dict[str, float | None]:
    """MSE against targets and AUROC on labelled examples."""
    if not examples:
        return {"mse": None, "auroc": None}
    v = predict(model, tok, [e.prefix for e in examples])
    mse = sum((a - e.target) ** 2 for a, e in zip(v, examples, strict=True)) / len(v)
    lab = [(a, e.label) for a, e in zip(v, examples, strict=True) if e.label is not None]
    return {"mse": mse, "auroc": auroc([a for a, _ in lab], [y for _, y in lab]) if lab else None}


def ranked_pairs(targets: Sequence[float], groups: Sequence, rank_gap: float) -> tuple[list[int], list[int]]:
    """(better, worse) indices of sibling pairs whose targets differ by more than rank_gap."""
    a_idx, b_idx = [], []
    for i in range(len(groups)):
        for j in range(len(groups)):
            if i != j and groups[i] == groups[j] and float(targets[i]) > float(targets[j]) + rank_gap:
                a_idx.append(i)
                b_idx.append(j)
    return a_idx, b_idx


def value_loss(values: torch.Tensor, targets: torch.Tensor, groups: Sequence, *, rank_weight: float,
               rank_margin: float, rank_gap: float, norm: Mapping[str, float] | None = None
               ) -> tuple[torch.Tensor, int]:
    """MSE(values, targets) + rank_weight · mean sibling margin loss; also the number of ranked pairs.

    norm: {"examples", "rank_pairs"} over the whole optimiser step when it is split across processes or
    micro-batches (the means become sums over this part divided by those counts)."""
    a_idx, b_idx = ranked_pairs(targets.tolist(), groups, rank_gap)
    if norm is None:
        loss = torch.nn.functional.mse_loss(values, targets)
    else:
        loss = (values - targets).pow(2).sum() / max(norm["examples"], 1.0)
    if a_idx and rank_weight > 0:
        margins = torch.relu(rank_margin - (values[a_idx] - values[b_idx]))
        ranked = margins.mean() if norm is None else margins.sum() / max(norm["rank_pairs"], 1.0)
        loss = loss + rank_weight * ranked
    return loss, len(a_idx)


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

    Metrics include heldout_auroc_before / heldout_auroc (after) and heldout_mse_before / heldout_mse.
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

    def loss_fn(batch: list[ValueExample], norm: dict[str, float] | None = None) -> tuple[torch.Tensor, dict]:
        raw = scorer(*_encode(tok, [e.prefix for e in batch], dev)).float()
        targets = torch.tensor([e.target for e in batch], device=dev)
        loss, n_rank = value_loss(torch.tanh(raw), targets, [e.group for e in batch], rank_weight=cfg.rank_weight,
                                  rank_margin=cfg.rank_margin, rank_gap=cfg.rank_gap, norm=norm)
        return loss, {"rank_pairs": n_rank}

    def counts(batch: list[ValueExample]) -> dict[str, float]:
        """The loss's normalisers (`fit`'s count_fn). Sibling pairs are ranked within a micro-batch."""
        return {"examples": float(len(batch)),
                "rank_pairs": float(len(ranked_pairs([e.target for e in batch], [e.group for e in batch],
                                                     cfg.rank_gap)[0]))}

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
