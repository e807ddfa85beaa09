"""A third-party environment: say whether a number is even or odd (answer step 'A: even')."""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import Field

from envs.base import EnvConfig, Environment
from envs.types import Problem


class ParityConfig(EnvConfig):
    max_value: int = Field(100, ge=1)


class ParityEnv(Environment):
    name = "parity"
    kind = "math"
    description = "plug-in test environment: is the number even or odd?"
    Config = ParityConfig
    config: ParityConfig

    def load(self, split, count, seed=0):
        rng = random.Random(f"parity:{split}:{seed}")
        # Even draws of the base stream go to train, odd draws to test: the splits never share an id.
        offset = 0 if split == "train" else 1
        out = []
        for i in range(count):
            n = rng.randint(1, self.config.max_value)
            out.append(Problem(id=f"parity-{split}-{seed}-{2 * i + offset}", prompt=f"Is {n} even or odd?",
                               answer="even" if n % 2 == 0 else "odd", metadata={"n": n}))
        return out

    def reference_steps(self, problem):
        n = problem.metadata["n"]
        return [f"{n} mod 2 = {n % 2}", f"A: {problem.answer}"]

    def prompt(self, problem):
        return f"Q: {problem.prompt}\n"

    def is_terminal(self, problem, steps: Sequence[str]):
        return bool(steps) and (steps[-1].startswith("A:") or len(steps) >= self.config.max_steps)

    def extract_answer(self, problem, steps):
        if not steps or not steps[-1].startswith("A:"):
            return None
        answer = steps[-1][2:].strip()
        return answer if answer in ("even", "odd") else None

    def score(self, problem, steps):
        return 1.0 if self.extract_answer(problem, steps) == problem.answer else 0.0


def describe() -> str:
    """Not an environment; the second entry point points here to exercise the registry's error path."""
    return ParityEnv.description
