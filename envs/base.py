"""The environment contract: everything task-specific lives behind this class.

A solution is a list of step strings. The text the policy continues is
``env.render(problem, steps) = env.model_prompt(problem) + "".join(s + env.step_delimiter for s in steps)``;
the policy proposes the next step with ``stop=env.stop`` and returns it without the delimiter.
`model_prompt` is the env's own layout (`prompt`) unless a `Prompter` (chat template, system prompt,
few-shot examples: `envs.prompting`) was set with `set_prompting`.

Steps: the delimiter is a knob of every env (`step_delimiter`, e.g. "\n" or "\n\n"; `step_pattern`, a
regex, ends a step where it first matches instead). Backends never return an empty step: a stop string
that comes before any non-blank text is skipped (blank lines before a step are dropped).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from envs.errors import UserError, pydantic_message
from envs.types import Problem

Split = Literal["train", "test"]


class EnvConfig(BaseModel):
    """Knobs of an environment; subclasses add fields. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = 12
    step_delimiter: str | None = Field(default=None, min_length=1, description=(
        "Text after each step and the stop string that ends one, e.g. '\\n' or '\\n\\n' (default: the env's)."))
    step_pattern: str | None = Field(default=None, min_length=1, description=(
        "A regex that ends a step where it first matches (HF backend), e.g. '\\n\\s*\\n'; steps are still "
        "joined with step_delimiter."))

    @field_validator("step_delimiter")
    @classmethod
    def _unescape(cls, v: str | None) -> str | None:
        """`\\n` typed on a command line (`--knob step_delimiter='\\n\\n'`) means a newline."""
        if v is not None and "\\" in v:
            try:
                v = v.encode("latin-1", "backslashreplace").decode("unicode_escape")
            except UnicodeDecodeError as e:
                raise ValueError(f"bad escape sequence ({e.reason})") from None
        return v

    @field_validator("step_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression ({e})") from None
            if re.search(v, ""):
                raise ValueError("the pattern matches the empty string, so it would end every step at once")
        return v


class Environment(ABC):
    """A task family: problem loading, prompt template, step delimiter, terminal rule, verifier."""

    name: ClassVar[str]
    kind: ClassVar[Literal["math", "code"]]
    description: ClassVar[str]
    Config: ClassVar[type[EnvConfig]] = EnvConfig
    default_delimiter: ClassVar[str] = "\n"
    _prompting: Callable[[Problem], str] | None = None

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

    def set_prompting(self, prompting: Callable[[Problem], str] | None) -> None:
        """Render prompts with `prompting` (an `envs.prompting.Prompter`) from now on; None = `prompt`."""
        self._prompting = prompting

    def model_prompt(self, problem: Problem) -> str:
        """The text the model reads before the first step: the prompting set, else `prompt(problem)`."""
        return self._prompting(problem) if self._prompting is not None else self.prompt(problem)

    @property
    def step_delimiter(self) -> str:
        """What follows each step in the rendered text (the knob, else the env's default)."""
        return self.config.step_delimiter or self.default_delimiter

    @property
    def stop(self) -> list[str | re.Pattern[str]]:
        """What ends a step while it is generated: the delimiter, or the compiled `step_pattern`."""
        pattern = self.config.step_pattern
        return [re.compile(pattern)] if pattern else [self.step_delimiter]

    def render(self, problem: Problem, steps: Sequence[str]) -> str:
        return self.model_prompt(problem) + "".join(s + self.step_delimiter for s in steps)

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
