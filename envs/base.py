"""The environment contract: everything task-specific lives behind this class.

A solution is a list of step strings. The text the policy continues is
``env.render(problem, steps) = env.prompt(problem) + "".join(s + env.step_delimiter for s in steps)``;
the policy proposes the next step with ``stop=env.stop`` and returns it without the delimiter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from envs.errors import UserError, pydantic_message
from envs.types import Problem

Split = Literal["train", "test"]


class EnvConfig(BaseModel):
    """Knobs of an environment; subclasses add fields. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = 12


class Environment(ABC):
    """A task family: problem loading, prompt template, step delimiter, terminal rule, verifier."""

    name: ClassVar[str]
    kind: ClassVar[Literal["math", "code"]]
    description: ClassVar[str]
    Config: ClassVar[type[EnvConfig]] = EnvConfig
    step_delimiter: ClassVar[str] = "\n"

    def __init__(self, config: EnvConfig | dict[str, Any] | None = None, **knobs: Any):
        if isinstance(config, EnvConfig):
            self.config = config.model_copy(update=knobs)
        else:
            try:
                self.config = self.Config(**{**(config or {}), **knobs})
            except ValidationError as e:
                raise UserError(pydantic_message(e, f"environment '{self.name}'")) from None

    # --- problems -------------------------------------------------------------------------------
    @abstractmethod
    def load(self, split: Split, count: int, seed: int = 0) -> list[Problem]:
        """`count` problems of `split`, deterministic in `seed`; train and test never overlap."""

    def reference_steps(self, problem: Problem) -> list[str] | None:
        """A correct step-by-step solution (for SFT warm starts), or None when the env has none."""
        return None

    # --- text layout ----------------------------------------------------------------------------
    @abstractmethod
    def prompt(self, problem: Problem) -> str:
        """The text before the first step (the template applied to the problem)."""

    @property
    def stop(self) -> list[str]:
        return [self.step_delimiter]

    def render(self, problem: Problem, steps: Sequence[str]) -> str:
        return self.prompt(problem) + "".join(s + self.step_delimiter for s in steps)

    # --- verification ---------------------------------------------------------------------------
    @abstractmethod
    def is_terminal(self, problem: Problem, steps: Sequence[str]) -> bool:
        """True when `steps` is a finished solution (an answer was given, or max_steps reached)."""

    @abstractmethod
    def extract_answer(self, problem: Problem, steps: Sequence[str]) -> str | None:
        """The final answer stated by `steps`, normalised, or None when there is none (or it is ambiguous)."""

    @abstractmethod
    def score(self, problem: Problem, steps: Sequence[str]) -> float:
        """Verifier score in [0, 1]; 1.0 only for a verified-correct solution."""

    def score_many(self, items: Sequence[tuple[Problem, Sequence[str]]]) -> list[float]:
        """Score many solutions at once; code environments override this to use a sandbox pool."""
        return [self.score(p, s) for p, s in items]

    def check_step(self, problem: Problem, steps: Sequence[str], step: str) -> bool | None:
        """Optional per-step check: True/False when the env can tell if `step` is valid, else None."""
        return None

    def tampering_count(self) -> int:
        """Distinct solutions scored so far that the verifier flagged as tampering with it (reward
        hacking rather than solving); envs whose verifier can tell (code) override this."""
        return 0

    def verdict(self, problem: Problem, steps: Sequence[str]) -> str:
        """A short human-readable verdict for inspection (tree show); envs may say more."""
        return "correct" if self.score(problem, steps) >= 1.0 else "wrong"
