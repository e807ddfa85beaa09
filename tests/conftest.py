"""Shared fixtures: a tiny random policy directory (vocab ≤ 1k) built offline once per session, and the
sandbox modes to run code tests in."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [f"Q: {a}+{b}*{c}\n{b}*{c}={b * c}\n{a}+{b * c}={a + b * c}\nA: {a + b * c}\n"
          for a in range(1, 12) for b in range(1, 8) for c in range(1, 6)]


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    """A randomly initialised tiny Llama + BPE tokenizer saved as an HF directory."""
    from agents.tiny import build_llama, train_tokenizer

    out = tmp_path_factory.mktemp("tiny_policy")
    tok = train_tokenizer(CORPUS, vocab_size=300)
    model = build_llama(tok, hidden=64, layers=2, heads=4, intermediate=128)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(params=["bwrap", "fallback"])
def sandbox_mode(request):
    """Each real sandbox mode in turn. Skips only when the mode's program (or root, for the fallback) is
    absent; a mode that is present but broken fails."""
    from envs.sandbox import available, missing_prerequisite

    missing = missing_prerequisite(request.param)
    if missing is not None:
        pytest.skip(missing)
    why = available(request.param)
    assert why is None, why
    return request.param
