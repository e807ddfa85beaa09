"""Value / process-reward losses on tree prefixes, each a small function, combined by `combined_value_loss`.

A value model outputs a raw score per prefix; its value is ``tanh(raw)`` in [-1, 1], i.e. the probability
of reaching a correct answer is ``p = (1 + tanh(raw)) / 2 = sigmoid(2 · raw)``. The terms:

- regression onto the Monte-Carlo target (subtree success rate, or MCTS Q) in [-1, 1]: ``mse`` on
  ``tanh(raw)`` (AlphaMath) or ``bce`` of ``sigmoid(2 · raw)`` against ``(1 + target) / 2`` (a PRM);
  each example weighted by its confidence (how many outcomes its target averages, see `confidence_weight`);
- SVPO's margin ranking between sibling steps whose targets differ by more than a gap:
  ``relu(margin − (v_a − v_b))`` on values;
- rStar-Math's process preference loss (Bradley–Terry) on sibling steps: a step that reaches a verified
  answer (label 1) over a sibling that reaches only wrong ones (label 0), ``−log sigmoid(raw_pos − raw_neg)``,
  each pair weighted ``1 / (n_pos · n_neg)`` of its sibling group, so every group counts once.
  Tree-PLV's step verifier is this loss alone.

Each term is a mean over its own count (examples' weight, ranked pairs, sibling groups with pairs). When a
trainer splits one optimiser step across processes or accumulation micro-batches, it passes that count
over the whole step (`denom`, or `norm` to `combined_value_loss`; `value_counts` gives a part's counts):
the term is then this part's sum divided by the step's count, so the parts add up to the step's mean.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F


def confidence_weight(n: int, k: float) -> float:
    """n / (n + k): the weight of a target averaged over n outcomes (k = 0: every example weighs 1)."""
    return 1.0 if k <= 0 else n / (n + k)


def regression_loss(raw: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
                    kind: str = "mse", denom: float | None = None) -> torch.Tensor:
    """Weighted mean of MSE(tanh(raw), target) or BCE(sigmoid(2·raw), (1 + target)/2) per example
    (`denom`: the step's total weight, when this batch is part of a split step)."""
    if kind == "mse":
        per = (torch.tanh(raw) - targets) ** 2
    elif kind == "bce":
        per = F.binary_cross_entropy_with_logits(2.0 * raw, (1.0 + targets) / 2.0, reduction="none")
    else:
        raise ValueError(f"unknown regression '{kind}' (mse or bce)")
    if denom is not None:
        return (per if weights is None else per * weights).sum() / max(denom, 1e-12)
    if weights is None:
        return per.mean()
    return (per * weights).sum() / weights.sum().clamp_min(1e-12)


def margin_pairs(targets: Sequence[float], groups: Sequence[Hashable], gap: float) -> tuple[list[int], list[int]]:
    """(a, b) index lists: siblings (same group) whose targets differ by more than `gap`, a above b."""
    a_idx, b_idx = [], []
    for i in range(len(groups)):
        for j in range(len(groups)):
            if i != j and groups[i] == groups[j] and targets[i] > targets[j] + gap:
                a_idx.append(i)
                b_idx.append(j)
    return a_idx, b_idx


def margin_rank_loss(values: torch.Tensor, targets: Sequence[float], groups: Sequence[Hashable], *,
                     margin: float, gap: float, denom: float | None = None) -> tuple[torch.Tensor, int]:
    """SVPO: mean relu(margin − (v_a − v_b)) over ranked sibling pairs (`denom`: the step's pair count);
    also the pair count (0: loss 0)."""
    a_idx, b_idx = margin_pairs(targets, groups, gap)
    if not a_idx:
        return values.sum() * 0.0, 0
    hinge = torch.relu(margin - (values[a_idx] - values[b_idx]))
    return (hinge.mean() if denom is None else hinge.sum() / max(denom, 1.0)), len(a_idx)


def preference_pairs(labels: Sequence[int | None], groups: Sequence[Hashable]
                     ) -> tuple[list[int], list[int], list[float], int]:
    """rStar-Math's pairs: (pos, neg, weight) for every sibling pair with labels (1, 0), weight
    1/(n_pos·n_neg) of its group; also the number of groups that have pairs."""
    by: dict[Hashable, tuple[list[int], list[int]]] = {}
    for i, (y, g) in enumerate(zip(labels, groups, strict=True)):
        if y is not None:
            by.setdefault(g, ([], []))[0 if y == 1 else 1].append(i)
    pos, neg, w = [], [], []
    n_groups = 0
    for p, n in by.values():
        if not p or not n:
            continue
        n_groups += 1
        for i in p:
            for j in n:
                pos.append(i)
                neg.append(j)
                w.append(1.0 / (len(p) * len(n)))
    return pos, neg, w, n_groups


def bradley_terry_loss(raw: torch.Tensor, labels: Sequence[int | None], groups: Sequence[Hashable],
                       denom: float | None = None) -> tuple[torch.Tensor, int]:
    """rStar-Math PPM: Σ w · −log sigmoid(raw_pos − raw_neg) / groups with pairs (`denom`: the step's
    groups with pairs); also the pair count."""
    pos, neg, w, n_groups = preference_pairs(labels, groups)
    if not pos:
        return raw.sum() * 0.0, 0
    wt = torch.tensor(w, dtype=raw.dtype, device=raw.device)
    return (wt * -F.logsigmoid(raw[pos] - raw[neg])).sum() / max(denom if denom is not None else n_groups, 1.0), \
        len(pos)


def combined_value_loss(raw: torch.Tensor, targets: Sequence[float], labels: Sequence[int | None],
                        groups: Sequence[Hashable], weights: Sequence[float] | None = None, *,
                        regression: str = "mse", regression_weight: float = 1.0, rank_weight: float = 0.0,
                        rank_margin: float = 0.1, rank_gap: float = 0.1, bt_weight: float = 0.0,
                        norm: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """regression_weight · regression + rank_weight · margin ranking + bt_weight · Bradley–Terry.

    norm: `value_counts` summed over the whole optimiser step when this batch is one part of it.
    Returns the loss and its parts (`regression`, `rank`, `bt`, `rank_pairs`, `bt_pairs`) for the log.
    """
    t = torch.tensor(list(targets), dtype=raw.dtype, device=raw.device)
    w = None if weights is None else torch.tensor(list(weights), dtype=raw.dtype, device=raw.device)
    zero = raw.sum() * 0.0
    n = norm or {}
    reg = regression_loss(raw, t, w, regression, denom=n.get("weight")) if regression_weight > 0 else zero
    rank, n_rank = margin_rank_loss(torch.tanh(raw), list(targets), groups, margin=rank_margin, gap=rank_gap,
                                    denom=n.get("rank_pairs")) if rank_weight > 0 else (zero, 0)
    bt, n_bt = bradley_terry_loss(raw, labels, groups, denom=n.get("bt_groups")) if bt_weight > 0 else (zero, 0)
    loss = regression_weight * reg + rank_weight * rank + bt_weight * bt
    return loss, {"regression": reg.item(), "rank": rank.item(), "bt": bt.item(), "rank_pairs": n_rank,
                  "bt_pairs": n_bt}


def value_counts(targets: Sequence[float], labels: Sequence[int | None], groups: Sequence[Hashable],
                 weights: Sequence[float] | None, rank_gap: float) -> dict[str, float]:
    """One batch's normalisers for `combined_value_loss(norm=...)`: total example weight, ranked sibling
    pairs, sibling groups with preference pairs. Pairs form within a batch, as in the loss."""
    return {"weight": float(sum(weights)) if weights is not None else float(len(targets)),
            "rank_pairs": float(len(margin_pairs(targets, groups, rank_gap)[0])),
            "bt_groups": float(preference_pairs(labels, groups)[3])}
