"""How good a value model is on held-out tree prefixes: AUROC, calibration (ECE), and both by depth.

A value v in [-1, 1] reads as the probability ``p = (1 + v) / 2`` that the prefix reaches a verified answer.
AUROC asks whether prefixes that reach a correct answer (label 1) rank above prefixes whose subtree has
answers but none correct (label 0). ECE (expected calibration error, equal-width bins over p) compares each
bin's mean p with its mean Monte-Carlo success rate (correct / terminals below the prefix): the frequency
the value is trained to predict. No torch here: numbers in, numbers out.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any


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


def ece(probs: Sequence[float], freqs: Sequence[float], bins: int = 10) -> float | None:
    """Σ_b |B_b|/n · |mean p − mean frequency| over `bins` equal-width bins of p in [0, 1]."""
    if not probs:
        return None
    sums: dict[int, list[float]] = {}
    for p, f in zip(probs, freqs, strict=True):
        b = min(bins - 1, max(0, int(p * bins)))
        s = sums.setdefault(b, [0.0, 0.0, 0.0])
        s[0] += p
        s[1] += f
        s[2] += 1
    n = len(probs)
    return sum(abs(sp - sf) / c * (c / n) for sp, sf, c in sums.values())


def pair_accuracy(values: Sequence[float], labels: Sequence[int | None], groups: Sequence[Hashable]
                  ) -> float | None:
    """Share of sibling pairs (same group, labels 1 and 0) the values order right (ties count half): what a
    step verifier trained on sibling preferences is asked to do."""
    by: dict[Hashable, tuple[list[float], list[float]]] = {}
    for v, y, g in zip(values, labels, groups, strict=True):
        if y is not None:
            by.setdefault(g, ([], []))[0 if y == 1 else 1].append(v)
    right = total = 0.0
    for pos, neg in by.values():
        for a in pos:
            for b in neg:
                right += 1.0 if a > b else 0.5 if a == b else 0.0
                total += 1
    return right / total if total else None


def calibration_report(values: Sequence[float], targets: Sequence[float], labels: Sequence[int | None],
                       depths: Sequence[int], groups: Sequence[Hashable] | None = None,
                       bins: int = 10) -> dict[str, Any]:
    """{auroc, ece, examples, pair_accuracy, by_depth: {depth: {examples, auroc, ece}}} for values in
    [-1, 1] against Monte-Carlo targets in [-1, 1] and reach-correct labels (None: unlabelled, left out of
    AUROC); pair_accuracy (sibling pairs, `groups`) is None without groups."""

    def one(idx: list[int]) -> dict[str, Any]:
        lab = [i for i in idx if labels[i] is not None]
        return {"examples": len(idx),
                "auroc": auroc([values[i] for i in lab], [int(labels[i] or 0) for i in lab]) if lab else None,
                "ece": ece([(1 + values[i]) / 2 for i in idx], [(1 + targets[i]) / 2 for i in idx], bins)}

    out = one(list(range(len(values))))
    out["pair_accuracy"] = pair_accuracy(values, labels, groups) if groups is not None else None
    by: dict[int, list[int]] = {}
    for i, d in enumerate(depths):
        by.setdefault(int(d), []).append(i)
    out["by_depth"] = {str(d): one(idx) for d, idx in sorted(by.items())}
    return out
