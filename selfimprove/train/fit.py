"""The one training loop (nanoGPT's `train.py` in a function): every trainer here runs its steps through it.

step-DPO / DPO / cDPO / IPO / RPO / TPO (`compact`), SFT (`sft`), the value model (`value`) and the
tiny-policy builder (`tiny_policy`) differ only in their batches, their loss and their optimiser; the
step itself — loss, backward, clip, optimiser and schedule step, log, report — is this one. TRL's
`DPOTrainer` (backend "trl") brings its own loop.

Across processes and accumulation micro-batches (`runtime.Runtime`) a loss is a sum of terms, each
normalised by its count over the whole step: `count_fn(part)` gives a part's counts without a forward
pass (pair weights, tokens, examples), `fit` sums them over the step's parts and processes, and
`loss_fn(part, counts)` returns Σ term_sum / count. Each process backpropagates its parts' losses ×
the number of processes (DDP averages gradients), so the update is the one-process update on the
whole batch. A plain run (one process, no accumulation, fp32) calls `loss_fn(batch)` as always.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch

from envs.errors import UserError
from envs.progress import SILENT, Progress
from selfimprove.train.runtime import Runtime

B = TypeVar("B")
Counts = dict[str, float]


def fit(params: Sequence[torch.nn.Parameter], optimizer: torch.optim.Optimizer, batches: Iterable[Any],
        loss_fn: Callable[..., tuple[torch.Tensor, dict[str, Any]]], *, total: int, grad_clip: float = 1.0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        progress: Progress = SILENT, runtime: Runtime | None = None,
        count_fn: Callable[[Any], Counts] | None = None, model: torch.nn.Module | None = None) -> list[dict[str, Any]]:
    """One optimiser step per batch; returns the history, one row per step: {step, loss, **stats}.

    loss_fn(batch) -> (loss to minimise, stats to log beside it); under a runtime that splits steps
    (several processes or accumulation), batches are sequences of records and loss_fn(part, counts)
    normalises by the step's counts (see the module docstring; count_fn is then required). grad_clip > 0
    clips the gradient norm of `params`. `model`: the prepared model (DDP's no_sync between micro-batches).
    A loss that is not finite stops training with a UserError (the learning rate is the usual cause).
    Reports progress.update(step, total, loss=..., **stats) after every step (on the main process).
    """
    rt = runtime or Runtime()
    split = rt.splits > 1
    if split and count_fn is None:
        raise ValueError("this trainer cannot split a step across processes or micro-batches (no count_fn)")
    history: list[dict[str, Any]] = []
    for step, batch in enumerate(batches, 1):
        optimizer.zero_grad(set_to_none=True)
        if split:
            value, stats = _split_step(rt, batch, loss_fn, count_fn, model)  # type: ignore[arg-type]
        else:
            loss, stats = loss_fn(batch)
            rt.backward(loss)
            value = loss.item()
        if grad_clip > 0:
            rt.clip(params, grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        row = {"step": step, "loss": value, **stats}
        if not math.isfinite(row["loss"]):
            raise UserError(f"training diverged at step {step} (loss {row['loss']}); lower the learning rate")
        history.append(row)
        if rt.is_main:
            progress.update(step, total, **{k: v for k, v in row.items() if k != "step"})
    return history


def _split_step(rt: Runtime, batch: Sequence[Any], loss_fn, count_fn: Callable[[Any], Counts],
                model) -> tuple[float, dict[str, Any]]:
    """Backpropagate this process's micro-batches of one step; the step's loss and stats over all processes."""
    parts = rt.micro_batches(batch)
    names = sorted({k for p in parts if p for k in count_fn(p)} | set(count_fn(batch[:1]) if batch else ()))
    local = torch.zeros(len(names), dtype=torch.float64)
    for p in parts:
        if p:
            c = count_fn(p)
            local += torch.tensor([float(c.get(k, 0.0)) for k in names], dtype=torch.float64)
    totals = rt.sum(local).cpu()
    counts = {k: float(v) for k, v in zip(names, totals.tolist(), strict=True)}
    loss_sum = torch.zeros((), dtype=torch.float64)
    keys: list[str] = []
    ints: set[str] = set()
    acc: torch.Tensor | None = None
    for j, p in enumerate(parts):
        empty = not p
        with rt.no_sync(model, j < len(parts) - 1):
            # An empty part still runs forward and backward (on one record, times 0): every DDP process
            # must take part in every gradient all-reduce.
            loss, stats = loss_fn(batch[:1] if empty else p, counts)
            rt.backward(loss * (0.0 if empty else float(rt.world)))
        if not empty:
            loss_sum += loss.detach().double().cpu()
        if acc is None:
            keys = sorted(k for k, v in stats.items() if isinstance(v, (int, float)))
            ints = {k for k in keys if isinstance(stats[k], int)}
        w = 0.0 if empty else float(len(p))
        # Integer stats (counts) are summed over the step; float stats are means weighted by part size.
        row = [float(stats.get(k, 0.0)) * (float(not empty) if k in ints else w) for k in keys]
        part = torch.tensor([*row, w], dtype=torch.float64)
        acc = part if acc is None else acc + part
    assert acc is not None
    reduced = rt.sum(torch.cat([loss_sum.reshape(1), acc])).cpu().tolist()
    weight = reduced[-1] or 1.0
    stats_out: dict[str, Any] = {k: round(v) if k in ints else v / weight
                                 for k, v in zip(keys, reduced[1:-1], strict=True)}
    return reduced[0], stats_out


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then linear decay to 0 at `total` steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)) * max(0.0, 1.0 - s / max(1, total)))
