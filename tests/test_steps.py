"""Steps for free-form reasoning: blank lines never make a step, a step cut at max_step_tokens ends its
solution unfinished (no delimiter faked onto it), EOS ends a solution and its answer is still extracted,
and the delimiter is an env knob ("\\n", "\\n\\n", or a regex).

The HF backend is driven for real (tiny Llama, its BPE tokenizer, the real decode loop and KV cache) with
its next-token logits forced to a given text, so what the model "writes" is known; search bookkeeping is
tested with the scripted backend."""

from __future__ import annotations

import re

import pytest

from agents.hf import HFPolicy
from envs.arithmetic import ArithmeticEnv
from envs.errors import UserError
from search.api import run_search
from search.testing import ScriptedPolicy, ToyEnv, cand

EOS = object()


def forced(policy: HFPolicy, *pieces: str | object) -> None:
    """Make `policy`'s model write `pieces` (texts, or EOS) token by token, whatever the prompt."""
    import torch

    tok = policy.tokenizer
    seq: list[int] = []
    for p in pieces:
        seq += [tok.eos_token_id] if p is EOS else tok(p, add_special_tokens=False)["input_ids"]
    real = policy.model.forward
    state = {"t": 0}

    def forward(*args, **kw):
        out = real(*args, **kw)
        if kw["input_ids"].shape[1] > 1:  # a new prompt (prefill): start the text again
            state["t"] = 0
        t = min(state["t"], len(seq) - 1)
        state["t"] += 1
        logits = torch.full_like(out.logits, -1e4)
        logits[..., seq[t]] = 0.0
        out.logits = logits
        return out

    policy.model.forward = forward


@pytest.fixture
def policy(tiny_policy_dir):
    return HFPolicy(tiny_policy_dir, max_batch=4)


def _one(policy, stop=("\n",), max_step_tokens=24):
    return policy.propose(["Q: 1+2\n"], 1, stop=stop, temperature=0, max_step_tokens=max_step_tokens)[0][0]


def test_blank_lines_never_make_a_step(policy):
    forced(policy, "\n\n\n", "1+2=3", "\n", "A: 3\n")
    s = _one(policy)
    assert (s.text, s.finish_reason) == ("1+2=3", "stop")
    assert policy.tokenizer.decode(s.token_ids) == "\n\n\n1+2=3\n"  # the blank lines' tokens are paid for
    forced(policy, "\n\n", "1+2=3\n4", "\n\n", "x")
    s = _one(policy, stop=("\n\n",))
    assert (s.text, s.finish_reason) == ("1+2=3\n4", "stop")  # "\n\n" delimiter: lines inside a step stay


def test_regex_stop_ends_a_step_where_it_first_matches(policy):
    forced(policy, "\n1+2=3\n4", "\n \n", "A: 3")
    s = _one(policy, stop=(re.compile(r"\n\s*\n"),))
    assert (s.text, s.finish_reason) == ("1+2=3\n4", "stop")


def test_truncated_step_has_no_delimiter_and_eos_is_reported(policy):
    forced(policy, "1+2+1+2+1+2+1+2+1+2+1+2")
    s = _one(policy, max_step_tokens=5)
    assert s.finish_reason == "length" and len(s.token_ids) == 5 and "\n" not in s.text
    forced(policy, "A: 3", EOS)
    s = _one(policy)
    assert (s.text, s.finish_reason) == ("A: 3", "eos")
    forced(policy, "\n", EOS)
    s = _one(policy)
    assert (s.text, s.finish_reason) == ("", "eos")


def test_eos_after_a_step_ends_the_solution_there(policy):
    """Greedy through the scheduler with the real backend: `A: 3` then EOS; then a step then EOS with no
    answer line: the node before EOS is terminal and scored (no empty step, depth 1)."""
    env = ArithmeticEnv(min_ops=1, max_ops=1, operand_max=9)
    prob = env.load("test", 1, seed=0)[0]
    forced(policy, f"A: {prob.answer}", EOS)
    tree = run_search(env, [prob], policy, algo="greedy", config={}).trees[0]
    assert [n.step for n in tree][1:] == [f"A: {prob.answer}"] and tree.node(1).finish_reason == "eos"
    assert tree.node(1).correct and tree.answer == prob.answer


def _toy_tree(script, **config):
    env = ToyEnv()
    prob = env.load("test", 1, seed=0)[0]
    return env, prob, run_search(env, [prob], ScriptedPolicy(script), algo="greedy", config=config).trees[0]


def test_scheduler_eos_blank_makes_the_parent_terminal_and_scores_it():
    def script(prefix):
        return [cand("", finish="eos")] if prefix.count("\n") >= 3 else [cand(f"step{prefix.count(chr(10))}")]

    env, prob, tree = _toy_tree(script)
    steps = [n.step for n in tree][1:]
    assert all(s.strip() for s in steps) and len(steps) == 2  # no empty step was added
    last = tree.node(len(tree) - 1)
    assert last.terminal and last.finish_reason == "eos" and last.depth == 2
    assert last.score == env.score(prob, steps) and tree.answer_node == last.id


def test_scheduler_truncated_step_ends_unfinished_without_scoring():
    scored = []

    class Counting(ToyEnv):
        def score(self, problem, steps):
            scored.append(list(steps))
            return super().score(problem, steps)

    env = Counting()
    prob = env.load("test", 1, seed=0)[0]
    pol = ScriptedPolicy(lambda p: [cand(f"A: {prob.answer}", finish="length")])
    tree = run_search(env, [prob], pol, algo="greedy", config={}).trees[0]
    node = tree.node(1)
    assert node.terminal and node.finish_reason == "length" and node.score == 0.0 and not scored
    assert len(tree) == 2 and tree.answer_node == 1 and not tree.node(1).correct


def test_delimiter_knobs():
    env = ArithmeticEnv(step_delimiter="\n\n")
    p = env.load("test", 1, seed=0)[0]
    assert env.stop == ["\n\n"] and env.render(p, ["a", "b"]) == f"Q: {p.prompt}\na\n\nb\n\n"
    assert ArithmeticEnv(step_delimiter=r"\n\n").step_delimiter == "\n\n"  # as typed on a command line
    env = ArithmeticEnv(step_pattern=r"\n\s*\n")
    (pat,) = env.stop
    assert isinstance(pat, re.Pattern) and env.step_delimiter == "\n"
    with pytest.raises(UserError, match="step_pattern"):
        ArithmeticEnv(step_pattern="(")
    with pytest.raises(UserError, match="empty string"):
        ArithmeticEnv(step_pattern=r"\n*")


def test_pairs_fake_no_delimiter_onto_a_truncated_step():
    from selfimprove.pairs import PreferencePair, extract

    env = ToyEnv()
    prob = env.load("test", 1, seed=0)[0]
    right = env.score  # the toy env's own verifier decides which ending is right

    def script(prefix):
        return [cand(f"A: {prob.answer}", -0.1), cand("A: 1 and then a long ramble", -0.2, finish="length")]

    tree = run_search(env, [prob], ScriptedPolicy(script, cycle=True), algo="best_of_n",
                      config={"n": 2, "temperature": 1.0}).trees[0]
    assert right(prob, [f"A: {prob.answer}"]) == 1.0
    records, _ = extract([tree], "outcome", {}, env=env)
    (pair,) = records
    assert isinstance(pair, PreferencePair)
    assert pair.chosen == f"A: {prob.answer}\n" and pair.rejected == "A: 1 and then a long ramble"
