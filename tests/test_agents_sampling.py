"""On-device seeded sampling: the counter hash, the sampled distribution, top-p, batch independence."""

from __future__ import annotations

import math

import torch

from agents.sampling import counter_uniform, row_seed, sample_tokens

M64 = (1 << 64) - 1


def splitmix_reference(seed: int, step: int) -> float:
    """splitmix64 of the (step + 1)-th state after `seed`, written with Python's unbounded ints."""
    x = (seed + (step + 1) * 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return ((x >> 11) + 0.5) / 2**53


def test_counter_uniform_is_splitmix64_in_int64_arithmetic():
    seeds = [0, 1, 2**40 + 7, (1 << 63) - 1, row_seed(3, "Q: 1+2\n", 0, 5)]
    for step in (0, 1, 47, 10_000):
        got = counter_uniform(torch.tensor(seeds), step).tolist()
        assert got == [splitmix_reference(s, step) for s in seeds]
        assert all(0 < u < 1 for u in got)


def test_samples_follow_the_tempered_softmax():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    n = 40_000
    seeds = torch.tensor([row_seed(0, "p", 0, j) for j in range(n)])
    for temperature in (1.0, 0.5):
        tok = sample_tokens(logits.repeat(n, 1), seeds, 0, temperature)
        freq = torch.bincount(tok, minlength=4).double() / n
        p = torch.softmax(logits.double() / temperature, 0)
        # 5 standard errors of a binomial proportion: fails only if the sampler is biased
        assert torch.all((freq - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-9), (freq, p)


def test_top_p_keeps_the_smallest_nucleus_and_renormalises():
    logits = torch.log(torch.tensor([0.05, 0.6, 0.1, 0.25]))
    n = 20_000
    seeds = torch.tensor([row_seed(1, "p", 0, j) for j in range(n)])
    tok = sample_tokens(logits.repeat(n, 1), seeds, 3, 1.0, top_p=0.8)
    freq = torch.bincount(tok, minlength=4).double() / n
    assert freq[0] == 0 and freq[2] == 0  # outside {0.6, 0.25}, the smallest set reaching 0.8
    assert math.isclose(freq[1].item(), 0.6 / 0.85, abs_tol=0.02)


def test_a_row_draws_the_same_token_whatever_its_batch_mates_and_step_changes_it():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g)
    seeds = torch.tensor([row_seed(s, "x", 0, 0) for s in range(6)])
    full = sample_tokens(logits, seeds, 4, 1.0)
    alone = torch.cat([sample_tokens(logits[i:i + 1], seeds[i:i + 1], 4, 1.0) for i in range(6)])
    reordered = sample_tokens(logits.flip(0), seeds.flip(0), 4, 1.0).flip(0)
    assert torch.equal(full, alone) and torch.equal(full, reordered)
    steps = torch.stack([sample_tokens(logits, seeds, t, 1.0) for t in range(20)])
    assert (steps != steps[0]).any()  # a new position draws a new number
