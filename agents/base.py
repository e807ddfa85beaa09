"""The batched model interface that search calls and training updates.

Every call takes a batch. Text in, text out: a *prefix* is the full text the model continues
(``env.render(problem, steps)``); a proposed step comes back without its stop string.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "eos"]
# What ends a step: a stop string, or a compiled regex (HF backend only; vLLM takes strings).
Stop = str | re.Pattern[str]
_BLANK_LINES = re.compile(r"^(?:[ \t\r]*\n)+")
_NON_BLANK = re.compile(r"\S")
# The longest step a backend generates unless told otherwise; search's config defaults to it too.
MAX_STEP_TOKENS = 48


@dataclass(slots=True)
class Sample:
    """One proposed step: text (stop string removed), its tokens, per-token logprobs, why it ended.

    finish_reason: "stop" = hit a stop string, "eos" = the model ended the sequence, "length" = hit
    max_step_tokens.
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason = "stop"

    @property
    def logprob(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def content_start(text: str) -> int:
    """Index of the first non-whitespace character of `text`, or -1: a stop before it does not end a step."""
    m = _NON_BLANK.search(text)
    return m.start() if m is not None else -1


def strip_blank_lines(text: str) -> str:
    """`text` without the blank lines it starts with (indentation of its first line is kept)."""
    return _BLANK_LINES.sub("", text)


def check_propose_args(n: int, temperature: float, top_p: float, max_step_tokens: int) -> None:
    """Reject sampling arguments every backend would misread (a programming error, not user input)."""
    if n < 1 or temperature < 0 or not 0 < top_p <= 1 or max_step_tokens < 1:
        raise ValueError(f"bad propose arguments: n={n}, temperature={temperature}, top_p={top_p}, "
                         f"max_step_tokens={max_step_tokens}")


def prefix_seeds(seed: int | Sequence[int] | None, count: int, rng: random.Random) -> list[int]:
    """One seed per prefix: the caller's list, or the call's seed (drawn from `rng` when None) for all."""
    if seed is None:
        seed = rng.getrandbits(63)
    if isinstance(seed, int):
        return [seed] * count
    seeds = [int(x) for x in seed]
    if len(seeds) != count:
        raise ValueError(f"propose got {len(seeds)} seeds for {count} prefixes")
    return seeds


def split_continuations(encode, prefixes: Sequence[str], continuations: Sequence[str]):
    """Token ids of each prefix + continuation, and where its continuation starts (the BPE boundary rule).

    Prefix and prefix + continuation are tokenized separately (`encode`: texts -> id lists); the
    continuation starts after the longest run of leading tokens the joint text shares with the prefix's
    own tokens (normally all of them), and never at 0 (the first token has no context to be scored under).
    Returns (joint_ids, starts).
    """
    if len(prefixes) != len(continuations):
        raise ValueError(f"score: {len(prefixes)} prefixes but {len(continuations)} continuations")
    p_ids = encode(list(prefixes))
    j_ids = encode([p + c for p, c in zip(prefixes, continuations, strict=True)])
    starts = []
    for p, j in zip(p_ids, j_ids, strict=True):
        k = 0
        while k < min(len(p), len(j)) and p[k] == j[k]:
            k += 1
        starts.append(max(k, 1))
    return j_ids, starts


class Policy(ABC):
    """A step-proposing language model. `checkpoint` names the weights (a directory path or id)."""

    checkpoint: str = ""

    @abstractmethod
    def propose(
        self,
        prefixes: Sequence[str],
        n: int = 1,
        *,
        stop: Sequence[Stop] = ("\n",),
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_step_tokens: int = MAX_STEP_TOKENS,
        seed: int | Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """`n` samples per prefix: result[i][j] is sample j of prefixes[i]. temperature 0 = greedy.

        seed: one for the call, or one per prefix. Same seeds, same prefixes, same samples, whatever else
        shares the batch. Search passes per-prefix seeds drawn from its own state, so a prefix it samples
        again later (a re-expansion, a sampled rollout) gets fresh samples.
        """

    @abstractmethod
    def score(self, prefixes: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Summed log p(continuation | prefix) for each pair (natural log)."""

    def reload(self, checkpoint: str) -> None:
        """Point this backend at new weights (a directory written by training)."""
        raise NotImplementedError(f"{type(self).__name__} cannot reload weights")

    def sleep(self) -> None:  # noqa: B027  (optional hook: only engines that hold an accelerator need it)
        """Free accelerator memory while something else (training) runs; `reload()` brings it back."""

    def close(self) -> None:  # noqa: B027  (optional hook: most backends hold nothing to release)
        """Release engine resources (processes, GPU memory)."""


class ValueModel(ABC):
    """Estimates how promising a partial solution is: value(prefix) in [-1, 1] (1 = surely correct)."""

    checkpoint: str = ""

    @abstractmethod
    def value(self, prefixes: Sequence[str]) -> list[float]:
        """One value in [-1, 1] per prefix."""
