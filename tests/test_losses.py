"""Preference losses against hand computations: value, sign, and gradient direction."""

from __future__ import annotations

import math

import pytest
import torch

from selfimprove.train import losses as L


def ls(x: float) -> float:
    """log σ(x) by hand."""
    return -math.log(1.0 + math.exp(-x))


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_dpo_value_and_sign():
    # h = 1 − (−0.5) = 1.5, β = 0.5 → −log σ(0.75)
    assert L.dpo(t(1.0), t(-0.5), 0.5).item() == pytest.approx(-ls(0.75))
    assert L.dpo(t(0.0), t(0.0), 0.1).item() == pytest.approx(math.log(2))
    assert L.dpo(t(2.0), t(0.0), 0.1).item() < math.log(2) < L.dpo(t(0.0), t(2.0), 0.1).item()
    assert torch.equal(L.pair_loss("step-dpo", chosen=t(1.0), rejected=t(-0.5), beta=0.5), L.dpo(t(1.0), t(-0.5), 0.5))


def test_cdpo_value_and_limits():
    c, r = t(1.0, -2.0), t(-0.5, 0.5)
    eps = t(0.2, 0.1)
    want = [-(0.8) * ls(0.3 * 1.5) - 0.2 * ls(-0.3 * 1.5), -(0.9) * ls(0.3 * -2.5) - 0.1 * ls(0.3 * 2.5)]
    assert L.cdpo(c, r, 0.3, eps).tolist() == pytest.approx(want)
    assert torch.allclose(L.cdpo(c, r, 0.3, 0.0), L.dpo(c, r, 0.3))
    # eps = 0.5: dL/dz = σ(z) − 1/2, so zero gradient when policy = reference (h = 0) ...
    x = t(0.0, 0.0).requires_grad_()
    L.cdpo(x, t(0.0, 0.0), 0.1, 0.5).sum().backward()
    assert x.grad is not None and x.grad.abs().max().item() == 0.0
    # ... and in general the gradient on z is σ(z) − (1 − eps)
    z = t(0.7).requires_grad_()
    L.cdpo(z, t(0.0), 1.0, 0.2).sum().backward()
    assert z.grad is not None and z.grad.item() == pytest.approx(1 / (1 + math.exp(-0.7)) - 0.8)


def test_ipo_value():
    # D_w / |y_w| − D_l / |y_l| = 2/4 − (−1)/2 = 1.0; β = 0.25 → (1 − 2)² = 1
    assert L.ipo(t(2.0), t(-1.0), t(4.0), t(2.0), 0.25).item() == pytest.approx(1.0)
    assert L.ipo(t(4.0), t(0.0), t(2.0), t(3.0), 0.25).item() == pytest.approx(0.0)


def test_rpo_value():
    # DPO term −log σ(0.1·1.5) plus α · NLL(y_w)/|y_w| = 0.5 · 6/3
    got = L.rpo(t(1.0), t(-0.5), 0.1, chosen_logps=t(-6.0), chosen_len=t(3.0), alpha=0.5).item()
    assert got == pytest.approx(-ls(0.15) + 1.0)


def test_lambda_weights_by_hand():
    lam = L.lambda_weights(t(1.0, 0.5, -1.0))
    d = [1 / math.log2(2), 1 / math.log2(3), 1 / math.log2(4)]
    assert lam[0, 1].item() == pytest.approx(0.5 * (d[0] - d[1]))
    assert lam[0, 2].item() == pytest.approx(2.0 * (d[0] - d[2]))
    assert lam[1, 2].item() == pytest.approx(1.5 * (d[1] - d[2]))
    assert lam[1, 0].item() == 0 and lam[2, 0].item() == 0 and lam.diagonal().abs().sum().item() == 0


def test_tpo_value_by_hand():
    # items (best first) with step log-ratios; item 1 has only 1 step
    D = [[0.5, -0.2], [0.1, 0.0], [-0.3, 0.4]]
    mask = [[1, 1], [1, 0], [1, 1]]
    sim = torch.zeros(3, 3, 2, dtype=torch.float64)
    sim[0, 2, 1] = sim[2, 0, 1] = 0.75  # step 2 of items 0 and 2 nearly shared: weight 0.25
    beta = 2.0
    scores = [1.0, 0.5, -1.0]
    got = L.tpo(t(*D[0], *D[1], *D[2]).view(3, 2), t(*mask[0], *mask[1], *mask[2]).view(3, 2), t(*scores), beta,
                sim).item()
    m01 = beta * ((0.5 - 0.1) + (-0.2 - 0.0))
    m02 = beta * ((0.5 + 0.3) + 0.25 * (-0.2 - 0.4))
    m12 = beta * ((0.1 + 0.3) + (0.0 - 0.4))
    d = [1.0, 1 / math.log2(3), 0.5]
    lam = {"01": 0.5 * (d[0] - d[1]), "02": 2.0 * (d[0] - d[2]), "12": 1.5 * (d[1] - d[2])}
    want = -(lam["01"] * ls(m01) + lam["02"] * ls(m02) + lam["12"] * ls(m12)) / sum(lam.values())
    assert got == pytest.approx(want)
    # shared steps drop out: with sim = 1 on step 2 everywhere, only step 1 counts
    full = torch.ones(3, 3, 2, dtype=torch.float64)
    full[..., 0] = 0
    only1 = L.tpo(t(0.5, 9.0, 0.1, 0.0, -0.3, -9.0).view(3, 2), torch.ones(3, 2, dtype=torch.float64),
                  t(*scores), beta, full)
    first = L.tpo(t(0.5, 0.0, 0.1, 0.0, -0.3, 0.0).view(3, 2), torch.ones(3, 2, dtype=torch.float64),
                  t(*scores), beta, None)
    assert only1.item() == pytest.approx(first.item())


def _toy_policy(seed=0):
    """A 'policy' whose sequence log-prob is the sum of log-softmax of free logits per position."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(4, 6, generator=g, dtype=torch.float64))


def _logp(theta, seq):
    return theta.log_softmax(-1)[torch.arange(len(seq)), torch.tensor(seq)].sum()


@pytest.mark.parametrize("name", ["dpo", "step-dpo", "cdpo", "ipo", "rpo"])
def test_one_step_raises_chosen_minus_rejected(name):
    theta = _toy_policy()
    ref = theta.detach().clone()
    yw, yl = [1, 2, 3], [1, 4, 5, 0]
    opt = torch.optim.SGD([theta], lr=0.5)

    def h():
        return (_logp(theta, yw) - _logp(ref, yw)) - (_logp(theta, yl) - _logp(ref, yl))

    before = h().item()
    chosen, rejected = _logp(theta, yw) - _logp(ref, yw), _logp(theta, yl) - _logp(ref, yl)
    loss = L.pair_loss(name, chosen=chosen[None], rejected=rejected[None], beta=0.5, eps=t(0.1),
                       chosen_logps=_logp(theta, yw)[None], chosen_len=t(3.0), rejected_len=t(4.0), alpha=1.0)
    loss.sum().backward()
    opt.step()
    assert h().item() > before + 1e-6


def test_tpo_step_moves_list_toward_order():
    theta = _toy_policy(1)
    ref = theta.detach().clone()
    items = [[1, 2], [3, 4], [5, 0]]  # each item: two one-token steps
    scores = t(1.0, 0.0, -1.0)
    opt = torch.optim.SGD([theta], lr=1.0)

    def step_ratios():
        lp, lr_ = theta.log_softmax(-1), ref.log_softmax(-1)
        return torch.stack([torch.stack([lp[k, tok] - lr_[k, tok] for k, tok in enumerate(it)]) for it in items])

    def totals():
        return step_ratios().sum(-1).detach()

    loss = L.tpo(step_ratios(), torch.ones(3, 2, dtype=torch.float64), scores, 1.0, None)
    assert loss.item() == pytest.approx(math.log(2))  # all margins zero at the reference
    loss.backward()
    opt.step()
    r = totals()
    assert r[0] > r[1] > r[2]
