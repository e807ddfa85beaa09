"""A deterministic scripted backend and a toy environment, for tests and the bookkeeping benchmark.

`ScriptedPolicy` answers `propose` from a script: a table or a function mapping the prefix to candidate
steps with their logprobs; it samples among them (probability ∝ exp(logprob / temperature)) with one
`random.Random` per prefix seeded from the request, so results never depend on batch composition (or,
with `cycle=True`, returns the candidates in turn, for trees small enough to compute by hand). It
records every call (batch size, n, temperature). `ScriptedValue` does the same for values. `ToyEnv` is a
chain-sum task ("Q: 3+4+5" → "3+4=7", "7+5=12", "A: 12"); `chain_sum_policy` / `chain_sum_value` script
a policy that often forgets a carry (so greedy fails where search can recover) and a value model that
knows whether the steps so far are right.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents.base import MAX_STEP_TOKENS, FinishReason, Policy, Sample, ValueModel
from envs.base import EnvConfig, Environment, Split
from envs.types import Problem
from search.scheduler import mix_seed


@dataclass(frozen=True)
class Candidate:
    """One step the scripted policy can propose: its text, per-token logprobs, and why it ends."""

    text: str
    token_logprobs: tuple[float, ...]
    finish_reason: FinishReason = "stop"

    @property
    def logprob(self) -> float:
        return sum(self.token_logprobs)


def cand(text: str, logprob: float = 0.0, tokens: int | None = None, finish: FinishReason = "stop") -> Candidate:
    """A candidate whose total `logprob` is spread evenly over `tokens` tokens (default: one per char)."""
    k = max(1, len(text) if tokens is None else tokens)
    return Candidate(text, (logprob / k,) * k, finish)


Script = Mapping[str, Sequence[Candidate]] | Callable[[str], Sequence[Candidate]]


class ScriptedPolicy(Policy):
    """A policy defined by a script (prefix → candidates). Deterministic; optionally sleeps like a model."""

    def __init__(self, script: Script, *, default: Sequence[Candidate] | None = None, cycle: bool = False,
                 delay_s: float = 0.0, delay_per_seq_s: float = 0.0, checkpoint: str = "scripted"):
        self.script = script
        self.cycle = cycle  # sample j of a prefix is candidate j mod k (hand-checkable trees)
        self.default = default
        self.delay_s = delay_s
        self.delay_per_seq_s = delay_per_seq_s
        self.checkpoint = checkpoint
        self.calls: list[dict[str, Any]] = []

    def candidates(self, prefix: str) -> Sequence[Candidate]:
        if callable(self.script):
            return self.script(prefix)
        if prefix in self.script:
            return self.script[prefix]
        if self.default is not None:
            return self.default
        raise KeyError(f"scripted policy has no entry for prefix {prefix!r}")

    def propose(self, prefixes, n=1, *, stop=("\n",), temperature=1.0, top_p=1.0, max_step_tokens=MAX_STEP_TOKENS,
                seed=None):
        self.calls.append({"batch": len(prefixes), "n": n, "temperature": temperature})
        if self.delay_s or self.delay_per_seq_s:
            time.sleep(self.delay_s + self.delay_per_seq_s * len(prefixes) * n)
        out = []
        for i, prefix in enumerate(prefixes):
            s = seed[i] if isinstance(seed, Sequence) else mix_seed(seed or 0, i)
            cands = list(self.candidates(prefix))
            if self.cycle and temperature > 0:
                picks = [cands[j % len(cands)] for j in range(n)]
            elif temperature <= 0:
                top = max(range(len(cands)), key=lambda j: (cands[j].logprob, -j))
                picks = [cands[top]] * n
            else:
                top = max(c.logprob for c in cands)
                w = [math.exp((c.logprob - top) / temperature) for c in cands]
                picks = random.Random(s).choices(cands, weights=w, k=n)
            out.append([Sample(c.text, list(range(len(c.token_logprobs)))[:max_step_tokens],
                               list(c.token_logprobs)[:max_step_tokens], c.finish_reason) for c in picks])
        return out

    def score(self, prefixes, continuations):
        out = []
        for p, c in zip(prefixes, continuations, strict=True):
            match = [x for x in self.candidates(p) if x.text == c]
            out.append(match[0].logprob if match else -100.0)
        return out


class ScriptedValue(ValueModel):
    """A value model defined by a table or function of the prefix; records call batch sizes."""

    def __init__(self, script: Mapping[str, float] | Callable[[str], float], *, default: float | None = 0.0,
                 delay_s: float = 0.0, checkpoint: str = "scripted-value"):
        self.script = script
        self.default = default
        self.delay_s = delay_s
        self.checkpoint = checkpoint
        self.calls: list[int] = []

    def value(self, prefixes):
        self.calls.append(len(prefixes))
        if self.delay_s:
            time.sleep(self.delay_s)
        if callable(self.script):
            return [float(self.script(p)) for p in prefixes]
        out = []
        for p in prefixes:
            v = self.script.get(p, self.default)
            if v is None:
                raise KeyError(f"scripted value has no entry for prefix {p!r}")
            out.append(float(v))
        return out


# --- a one-problem case small enough to check by hand ----------------------------------------------

# "5+7": the likeliest first step forgets the carry ("5+7=2"), "5+7=13" is a slip, "5+7=12" is right;
# each then only states its answer. CARRY_VALUES is a value table that ranks them right.
CARRY_PROBLEM = Problem(id="p", prompt="5+7", answer="12")
_CQ = "Q: 5+7\n"
CARRY_SCRIPT = {_CQ: [cand("5+7=2", math.log(0.5)), cand("5+7=12", math.log(0.3)), cand("5+7=13", math.log(0.2))],
                _CQ + "5+7=2\n": [cand("A: 2")], _CQ + "5+7=12\n": [cand("A: 12")],
                _CQ + "5+7=13\n": [cand("A: 13")]}
CARRY_VALUES = {_CQ: 0.0, _CQ + "5+7=2\n": -0.5, _CQ + "5+7=12\n": 0.8, _CQ + "5+7=13\n": 0.1,
                _CQ + "5+7=2\nA: 2\n": -0.6, _CQ + "5+7=12\nA: 12\n": 0.9, _CQ + "5+7=13\nA: 13\n": 0.2}


# --- the toy chain-sum task -------------------------------------------------------------------------


class ToyEnv(Environment):
    """Chain sums: prompt "Q: 3+4+5", steps "3+4=7", "7+5=12", final "A: 12"; score 1 iff the answer is right."""

    name = "toy"
    kind = "math"
    description = "chain sums for search tests (scripted policies)"
    Config = EnvConfig

    def load(self, split: Split, count: int, seed: int = 0) -> list[Problem]:
        rng = random.Random(f"{split}-{seed}")
        out = []
        for i in range(count):
            nums = [rng.randint(1, 19) for _ in range(rng.randint(2, 4))]
            out.append(Problem(id=f"toy-{split}-{seed}-{i}", prompt="+".join(map(str, nums)),
                               answer=str(sum(nums))))
        return out

    def prompt(self, problem: Problem) -> str:
        return f"Q: {problem.prompt}\n"

    def is_terminal(self, problem, steps) -> bool:
        return bool(steps) and (steps[-1].startswith("A:") or len(steps) >= self.config.max_steps)

    def extract_answer(self, problem, steps) -> str | None:
        if steps and steps[-1].startswith("A:"):
            return steps[-1][2:].strip()
        return None

    def score(self, problem, steps) -> float:
        return 1.0 if problem.answer is not None and self.extract_answer(problem, steps) == problem.answer else 0.0

    def check_step(self, problem, steps, step) -> bool | None:
        """True iff `step` adds the next number to the running total as written (errors carried forward),
        or states that total once every number is used."""
        nums = [int(x) for x in problem.prompt.split("+")]
        total, used, _ = _state(nums, list(steps))
        if step.startswith("A:"):
            return used >= len(nums) and step[2:].strip() == str(total)
        if used >= len(nums):
            return False
        return step == f"{total}+{nums[used]}={total + nums[used]}"


def _parse(prefix: str) -> tuple[list[int], list[str]]:
    lines = prefix.split("\n")
    return [int(x) for x in lines[0][3:].split("+")], [ln for ln in lines[1:] if ln]


def _state(nums: list[int], steps: list[str]) -> tuple[int, int, bool]:
    """(running total as written, numbers consumed, all steps right so far)."""
    total, ok = nums[0], True
    for k, st in enumerate(steps):
        if st.startswith("A:"):
            return total, len(nums), ok and st[2:].strip() == str(total)
        _lhs, _, rhs = st.partition("=")
        want = total + nums[k + 1] if k + 1 < len(nums) else None
        try:
            total = int(rhs)
        except ValueError:
            return total, len(nums), False
        ok = ok and want is not None and total == want
    return total, len(steps) + 1, ok


def chain_sum_policy(easy: float = 0.7, carry: float = 0.35, forget: float = 0.45) -> Callable[[str], list[Candidate]]:
    """Script for ToyEnv: the right step with prob `easy` (or `carry` when the sum carries, where the
    carry is forgotten with prob `forget` — so greedy goes wrong there); the rest is ±1 slips."""

    def script(prefix: str) -> list[Candidate]:
        nums, steps = _parse(prefix)
        total, used, _ = _state(nums, steps)
        if used >= len(nums):
            return [cand(f"A: {total}", -0.01)]
        x = nums[used]
        right = total + x
        opts = [(right, carry), (right - 10, forget)] if total % 10 + x % 10 >= 10 else [(right, easy)]
        rest = (1.0 - sum(p for _, p in opts)) / 2
        opts += [(right + 1, rest), (right - 1, rest)]
        return [cand(f"{total}+{x}={v}", math.log(p)) for v, p in opts]

    return script


def chain_sum_value(noise: float = 0.3) -> Callable[[str], float]:
    """Value for ToyEnv prefixes: +0.6 if every step so far is right, −0.6 otherwise, plus a fixed
    pseudo-random perturbation in ±noise (a hash of the prefix), clipped to [-1, 1]."""

    def value(prefix: str) -> float:
        nums, steps = _parse(prefix)
        _, _, ok = _state(nums, steps)
        jitter = (zlib.crc32(prefix.encode()) / 0xFFFFFFFF * 2 - 1) * noise
        return max(-1.0, min(1.0, (0.6 if ok else -0.6) + jitter))

    return value
