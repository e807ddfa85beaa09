"""Seeded, batch-independent token sampling computed on the model's device.

Every generated row (one sample of one prefix) has a 63-bit seed (`row_seed`: a hash of the call's seed
for that prefix, the prefix text, its occurrence in the batch and the sample index). At decoding step `t`
the row draws one uniform number from a counter-based hash of (row seed, t) — splitmix64 in int64 tensor
arithmetic, so it runs on whatever device the logits are on, with no per-row generator, no host round
trip and no noise tensor the size of the vocabulary — and picks its token by inverting the CDF of
softmax(logits / T) (restricted to the top-p nucleus). A sample therefore depends only on (seed, prefix,
sample index) and the model's logits, never on its batch-mates, chunking or device count.
"""

from __future__ import annotations

import hashlib

import torch

_MASK63 = (1 << 63) - 1
# splitmix64 constants as signed int64 (torch has no uint64 arithmetic; products wrap modulo 2**64).
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MUL1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MUL2 = 0x94D049BB133111EB - (1 << 64)


def row_seed(seed: int, prefix: str, occurrence: int, index: int) -> int:
    """The seed of one generated row: (call seed for the prefix, prefix text, its occurrence, sample index)."""
    digest = hashlib.blake2b(f"{seed}\x00{occurrence}\x00{index}\x00{prefix}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's >> is arithmetic: it copies the sign bit)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _wrap(v: int) -> int:
    """A Python int as the signed int64 with the same low 64 bits."""
    return ((v + (1 << 63)) % (1 << 64)) - (1 << 63)


def counter_uniform(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """One float64 uniform in (0, 1) per row: splitmix64 of (row seed, step), on `seeds`' device.

    seeds: int64 [B]. Equal (seed, step) give equal numbers on every device and in every batch.
    """
    x = seeds + _wrap((step + 1) * _GOLDEN)  # the splitmix64 counter: state = seed + k·golden (wrapping)
    x = (x ^ _shr(x, 30)) * _MUL1
    x = (x ^ _shr(x, 27)) * _MUL2
    x = x ^ _shr(x, 31)
    return (_shr(x, 11).to(torch.float64) + 0.5) / float(1 << 53)


def sample_tokens(logits: torch.Tensor, seeds: torch.Tensor, step: int, temperature: float,
                  top_p: float = 1.0) -> torch.Tensor:
    """Token ids [B] drawn from softmax(logits / temperature) within the top-p nucleus, by inverse CDF.

    logits: [B, V] (any float dtype, any device); seeds: int64 [B] row seeds on the same device.
    """
    scores = torch.log_softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_lp, idx = scores.sort(dim=-1, descending=True)
        probs = sorted_lp.exp()
        drop = (probs.cumsum(-1) - probs) >= top_p  # keep the smallest set reaching top_p
        scores = scores.scatter(1, idx, sorted_lp.masked_fill(drop, float("-inf")))
    cdf = scores.to(torch.float64).exp().cumsum(-1)
    u = counter_uniform(seeds, step) * cdf[:, -1]  # the nucleus's mass: no renormalisation needed
    tok = torch.searchsorted(cdf, u[:, None]).squeeze(1)
    return tok.clamp_(max=cdf.shape[-1] - 1)
