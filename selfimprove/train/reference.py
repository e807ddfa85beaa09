"""The DPO reference: its log-probs, computed once per example, and the implicit-reward margin against it."""

from __future__ import annotations

import torch

from selfimprove.train.data import Example, collate
from selfimprove.train.logps import shared_logps


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


def reference_items(ex: Example) -> torch.Tensor:
    """The reference logps of an example's items (attach_reference must have run)."""
    if ex.ref_items is None:
        raise RuntimeError("attach_reference must run before the reference log-probs are read")
    return ex.ref_items


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
            d = comp[ii].cpu() - reference_items(ex)
            hs.append(float(d[0] - d[1:].mean()))
    model.train(was)
    return {"margin": beta * sum(hs) / max(1, len(hs)), "accuracy": sum(h > 0 for h in hs) / max(1, len(hs))}
