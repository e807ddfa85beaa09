"""The one training loop (nanoGPT's `train.py` in a function): every trainer here runs its steps through it.

step-DPO / DPO / cDPO / IPO / RPO / TPO (`compact`), SFT (`sft`), the value model (`value`) and the
tiny-policy builder (`tiny_policy`) differ only in their batches, their loss and their optimiser; the
step itself — loss, backward, clip, optimiser and schedule step, log, report — is this one. TRL's
`DPOTrainer` (backend "trl") brings its own loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch

from envs.errors import UserError
from envs.progress import SILENT, Progress

B = TypeVar("B")


def fit(params: Sequence[torch.nn.Parameter], optimizer: torch.optim.Optimizer, batches: Iterable[B],
        loss_fn: Callable[[B], tuple[torch.Tensor, dict[str, Any]]], *, total: int, grad_clip: float = 1.0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        progress: Progress = SILENT) -> list[dict[str, Any]]:
    """One optimiser step per batch; returns the history, one row per step: {step, loss, **stats}.

    loss_fn(batch) -> (loss to minimise, stats to log beside it). grad_clip > 0 clips the gradient norm
    of `params`. A loss that is not finite stops training with a UserError (the learning rate is the
    usual cause). Reports progress.update(step, total, loss=..., **stats) after every step.
    """
    history: list[dict[str, Any]] = []
    for step, batch in enumerate(batches, 1):
        loss, stats = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        row = {"step": step, "loss": loss.item(), **stats}
        if not math.isfinite(row["loss"]):
            raise UserError(f"training diverged at step {step} (loss {row['loss']}); lower the learning rate")
        history.append(row)
        progress.update(step, total, **{k: v for k, v in row.items() if k != "step"})
    return history


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then linear decay to 0 at `total` steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)) * max(0.0, 1.0 - s / max(1, total)))
