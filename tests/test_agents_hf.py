"""HFPolicy on a tiny random Llama: shapes, stop strings, determinism, batch invariance, logprob = score."""

from __future__ import annotations

import pytest

from agents.base import Sample
from agents.hf import HFPolicy
from envs.errors import UserError

PROMPTS = ["Q: 3+4*2\n", "Q: 10+1*5\n1*5=5\n", "Q: 7+7*7\n7*7=49\n7+49=56\n"]


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    return HFPolicy(tiny_policy_dir, max_batch=4)


def test_propose_shapes_and_types(policy):
    out = policy.propose(PROMPTS, n=3, temperature=1.0, max_step_tokens=8, seed=0)
    assert len(out) == len(PROMPTS) and all(len(row) == 3 for row in out)
    for row in out:
        for s in row:
            assert isinstance(s, Sample) and isinstance(s.text, str)
            assert len(s.token_ids) == len(s.token_logprobs) >= 1
            assert s.finish_reason in ("stop", "eos", "length")
            assert all(lp <= 0 for lp in s.token_logprobs)
            if s.finish_reason == "length":
                assert len(s.token_ids) == 8
    assert policy.propose([], n=2) == []


def test_stop_string_truncates(policy):
    # Every character is a stop string: each sample stops at its first non-empty token and its text
    # excludes the stop; with stop=() the same seed gives the untruncated text.
    stops = [chr(c) for c in range(32, 127)] + ["\n"]
    cut = policy.propose(PROMPTS, n=2, stop=stops, temperature=1.0, max_step_tokens=10, seed=5)
    full = policy.propose(PROMPTS, n=2, stop=(), temperature=1.0, max_step_tokens=10, seed=5)
    stopped = 0
    for rc, rf in zip(cut, full, strict=True):
        for c, f in zip(rc, rf, strict=True):
            assert f.token_ids[:len(c.token_ids)] == c.token_ids  # same sampling path until the stop
            if c.finish_reason == "stop":
                stopped += 1
                assert not any(s in c.text for s in stops)
                assert f.text.startswith(c.text) and len(f.text) > len(c.text)
    assert stopped > 0


def test_stop_string_multi_char(policy):
    full = policy.propose(PROMPTS[:1], n=4, stop=(), temperature=1.0, max_step_tokens=12, seed=9)[0]
    pairs = [(s.text, s.text[i:i + 2]) for s in full for i in range(len(s.text) - 1)
             if all(32 <= ord(ch) < 127 for ch in s.text[i:i + 2])]
    text, stop = pairs[0]
    cut = policy.propose(PROMPTS[:1], n=4, stop=(stop,), temperature=1.0, max_step_tokens=12, seed=9)[0]
    hit = next(c for c, f in zip(cut, full, strict=True) if f.text == text)
    assert hit.finish_reason == "stop" and hit.text == text[:text.find(stop)]


def test_greedy_deterministic_and_batch_invariant(policy):
    alone = [policy.propose([p], n=1, temperature=0, max_step_tokens=10)[0][0] for p in PROMPTS]
    batch = policy.propose([*PROMPTS[::-1], "Q: 1+1*1+1*1+1*1+1*1+1*1+1*1+1*1\n" * 3], n=2, temperature=0,
                           max_step_tokens=10)
    for i, s in enumerate(alone):
        for b in batch[len(PROMPTS) - 1 - i]:  # both greedy samples equal the lone one
            assert b.token_ids == s.token_ids and b.text == s.text and b.finish_reason == s.finish_reason
            assert b.token_logprobs == pytest.approx(s.token_logprobs, abs=1e-4)


def test_sampling_seeded_and_independent_of_batch(policy):
    a = policy.propose(PROMPTS, n=3, temperature=1.0, max_step_tokens=8, seed=123)
    b = policy.propose(PROMPTS, n=3, temperature=1.0, max_step_tokens=8, seed=123)
    c = policy.propose(PROMPTS[1:2], n=3, temperature=1.0, max_step_tokens=8, seed=123)
    d = policy.propose(PROMPTS, n=3, temperature=1.0, max_step_tokens=8, seed=124)
    ids = lambda rows: [[s.token_ids for s in row] for row in rows]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(c)[0] == ids(a)[1]
    assert ids(a) != ids(d)
    assert len({tuple(t) for t in ids(a)[0]}) > 1  # samples of one prefix differ
    dup = policy.propose([PROMPTS[0], PROMPTS[0]], n=1, temperature=1.0, max_step_tokens=8, seed=1)
    assert dup[0][0].token_ids != dup[1][0].token_ids  # a repeated prefix gets fresh samples


def test_per_prefix_seeds(policy):
    ids = lambda rows: [[s.token_ids for s in row] for row in rows]  # noqa: E731
    a = ids(policy.propose(PROMPTS, n=2, temperature=1.0, max_step_tokens=8, seed=[1, 2, 3]))
    assert ids(policy.propose(PROMPTS[1:2], n=2, temperature=1.0, max_step_tokens=8, seed=[2]))[0] == a[1]
    b = ids(policy.propose(PROMPTS, n=2, temperature=1.0, max_step_tokens=8, seed=[1, 5, 3]))
    assert (b[0], b[2]) == (a[0], a[2]) and b[1] != a[1]  # only the re-seeded prefix changes
    with pytest.raises(ValueError, match="2 seeds for 3 prefixes"):
        policy.propose(PROMPTS, n=1, seed=[1, 2])


def test_top_p_small_is_greedy(policy):
    g = policy.propose(PROMPTS, n=1, temperature=0, max_step_tokens=6)
    t = policy.propose(PROMPTS, n=2, temperature=1.0, top_p=1e-6, max_step_tokens=6, seed=3)
    for rg, rt in zip(g, t, strict=True):
        assert all(s.token_ids == rg[0].token_ids for s in rt)


def test_logprobs_equal_score(policy):
    out = policy.propose(PROMPTS, n=3, stop=(), temperature=1.0, max_step_tokens=8, seed=7)
    ctx = policy._encode(PROMPTS)
    for i, row in enumerate(out):
        per_tok = policy.score_tokens([ctx[i]] * len(row), [s.token_ids for s in row])
        for s, lps in zip(row, per_tok, strict=True):
            assert lps == pytest.approx(s.token_logprobs, abs=1e-4)
    # Text-level score on greedy continuations of real text, which re-tokenize the same way.
    conts = ["4*2=8\n", "10+5=15\n", "A: 56\n"]
    scores = policy.score(PROMPTS, conts)
    for p, c, sc in zip(PROMPTS, conts, scores, strict=True):
        j = policy._encode([p + c])[0]
        k = len(policy._encode([p])[0])
        assert sc == pytest.approx(sum(policy.score_tokens([j[:k]], [j[k:]])[0]), abs=1e-4)
        assert sc < 0
    assert policy.score([], []) == []


def test_reload_and_errors(policy, tiny_policy_dir, tmp_path):
    policy.reload(tiny_policy_dir)
    assert policy.checkpoint.endswith(tiny_policy_dir.rstrip("/").split("/")[-1])
    with pytest.raises(UserError, match="does not exist"):
        HFPolicy(str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"no config\.json"):
        HFPolicy(str(tmp_path))
    (tmp_path / "w.bin").write_text("x")
    with pytest.raises(UserError, match=r"not a \.gguf"):
        HFPolicy(str(tmp_path / "w.bin"))
