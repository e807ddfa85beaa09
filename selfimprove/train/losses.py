"""Preference losses as pure functions of per-sequence (or per-step) log-probabilities.

Notation: a log-ratio is ``D(y) = log π(y|x) − log π_ref(y|x)`` summed over completion tokens, and
``h = D(y_w) − D(y_l)``. Every pair function returns the per-pair loss (shape [B]); the trainer takes a
weighted mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfimprove.train.config import PAIR_LOSSES  # the loss names live in one list, in the trainer's config

__all__ = ["PAIR_LOSSES", "cdpo", "dpo", "ipo", "lambda_weights", "pair_loss", "rpo", "tpo"]


def dpo(chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (and step-DPO, which is DPO with the prompt = problem + correct prefix): −log σ(β h)."""
    return -F.logsigmoid(beta * (chosen - rejected))


def cdpo(chosen: torch.Tensor, rejected: torch.Tensor, beta: float, eps: torch.Tensor | float) -> torch.Tensor:
    """Conservative DPO with per-pair label smoothing eps: −(1−eps) log σ(β h) − eps log σ(−β h).

    eps = 0 is DPO; eps = 0.5 makes the loss symmetric in h, minimal (zero gradient) at h = 0.
    """
    z = beta * (chosen - rejected)
    return -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def ipo(chosen: torch.Tensor, rejected: torch.Tensor, chosen_len: torch.Tensor, rejected_len: torch.Tensor,
        beta: float) -> torch.Tensor:
    """IPO with length-normalised log-ratios: (D_w/|y_w| − D_l/|y_l| − 1/(2β))²."""
    h = chosen / chosen_len.clamp(min=1) - rejected / rejected_len.clamp(min=1)
    return (h - 1.0 / (2.0 * beta)) ** 2


def rpo(chosen: torch.Tensor, rejected: torch.Tensor, beta: float, chosen_logps: torch.Tensor,
        chosen_len: torch.Tensor, alpha: float) -> torch.Tensor:
    """DPO + NLL (Iterative RPO): −log σ(β h) + α · (−log π(y_w|x) / |y_w|), the NLL length-normalised."""
    return dpo(chosen, rejected, beta) + alpha * (-chosen_logps / chosen_len.clamp(min=1))


def lambda_weights(scores: torch.Tensor) -> torch.Tensor:
    """LambdaRank / LiPO-λ pair weights λ_ij = |G_i − G_j| · |1/D(τ_i) − 1/D(τ_j)| for score_i > score_j.

    Gain G = the score itself; τ = 1-based rank by score (best first, ties in list order);
    D(τ) = log2(1 + τ). λ_ij = 0 unless score_i > score_j. Returns [n, n].
    """
    n = scores.shape[0]
    order = torch.argsort(-scores, stable=True)
    rank = torch.empty(n, dtype=scores.dtype, device=scores.device)
    rank[order] = torch.arange(1, n + 1, dtype=scores.dtype, device=scores.device)
    inv_disc = 1.0 / torch.log2(1.0 + rank)
    lam = (scores[:, None] - scores[None, :]).abs() * (inv_disc[:, None] - inv_disc[None, :]).abs()
    return lam * (scores[:, None] > scores[None, :])


def tpo(step_logratios: torch.Tensor, step_mask: torch.Tensor, scores: torch.Tensor, beta: float,
        step_similarity: torch.Tensor | None = None) -> torch.Tensor:
    """TPO for one ranked list (Tree Preference Optimization, arXiv 2410.12854): a scalar loss.

    Inputs: step_logratios [n, K] — item i's step-k log-ratio D_i^k (summed over the step's tokens);
    step_mask [n, K] — 1 where item i has a step k; scores [n]; step_similarity [n, n, K] — sim(i, j, k)
    in [0, 1] between step k of item i and step k of item j (0 where either lacks step k; None = all 0).

    Adaptive Step Reward (paper Sec. 3.3: a step's reward is scaled down by its semantic similarity to the
    corresponding step it is compared with, so shared steps count less and discriminative steps more): in
    the comparison of items i and j, step k is weighted w_ijk = 1 − sim(i, j, k), giving the implicit
    reward margin

        m_ij = β · Σ_k w_ijk · (mask_ik · D_i^k − mask_jk · D_j^k).

    Preference List Ranking (LambdaRank-style): with λ_ij from `lambda_weights`,

        L = Σ_{i,j: s_i > s_j} λ_ij · (−log σ(m_ij)) / Σ λ_ij,

    minimised by raising better items' log-ratios over worse ones (the authors' public code flips this
    sign; the tests check the direction).
    """
    d = step_logratios * step_mask
    if step_similarity is None:
        w = torch.ones(d.shape[0], d.shape[0], d.shape[1], dtype=d.dtype, device=d.device)
    else:
        w = 1.0 - step_similarity.to(d.dtype)
    margins = beta * (w * (d[:, None, :] - d[None, :, :])).sum(-1)  # [n, n]: m_ij
    lam = lambda_weights(scores.to(d.dtype))
    total = lam.sum()
    if total <= 0:
        return d.sum() * 0.0
    return (lam * -F.logsigmoid(margins)).sum() / total


def pair_loss(name: str, *, chosen: torch.Tensor, rejected: torch.Tensor, beta: float,
              eps: torch.Tensor | None = None, chosen_logps: torch.Tensor | None = None,
              chosen_len: torch.Tensor | None = None, rejected_len: torch.Tensor | None = None,
              alpha: float = 1.0) -> torch.Tensor:
    """Dispatch a pair loss by name (see PAIR_LOSSES); returns per-pair losses."""
    if name in ("dpo", "step-dpo"):
        return dpo(chosen, rejected, beta)
    if name == "cdpo":
        return cdpo(chosen, rejected, beta, eps if eps is not None else 0.0)
    if name == "ipo":
        if chosen_len is None or rejected_len is None:
            raise ValueError("ipo needs chosen_len and rejected_len")
        return ipo(chosen, rejected, chosen_len, rejected_len, beta)
    if name == "rpo":
        if chosen_logps is None or chosen_len is None:
            raise ValueError("rpo needs chosen_logps and chosen_len")
        return rpo(chosen, rejected, beta, chosen_logps, chosen_len, alpha)
    raise ValueError(f"unknown pair loss '{name}'")

