"""Prompting per model and environment: chat template or plain text, a system prompt, few-shot examples
drawn from the environment's reference solutions, or a full template with a ``{question}`` slot.

`PromptConfig` is the run config's `prompt` section (and the `--chat/--system/--shots/--template` options of
`search` and `eval`); `Prompter` renders the text before the first step. With the defaults and a tokenizer
without a chat template (the embedded tiny policy) it gives exactly `env.prompt(problem)`, so plain
layouts do not move. The chat template itself is the model's (`tokenizer.apply_chat_template`), passed in
as a function so that `envs` stays free of `transformers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from envs.errors import UserError
from envs.types import Problem

if TYPE_CHECKING:
    from envs.base import Environment

QUESTION = "{question}"
# messages -> the text the model reads, ending with the assistant's generation prompt
ChatTemplate = Callable[[list[dict[str, str]]], str]


class PromptConfig(BaseModel):
    """How the text before the first step is built. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    chat: Literal["auto", "on", "off"] = Field(
        default="auto", description="Use the tokenizer's chat template: 'auto' = when the model has one.")
    system: str | None = Field(default=None, description="System prompt (a system turn in chat mode, the first "
                                                          "paragraph otherwise).")
    shots: int = Field(default=0, ge=0, le=64, description="Worked examples from the env's reference solutions "
                                                          "(train split), as chat turns in chat mode.")
    shots_seed: int = Field(default=0, description="Which training problems become the examples.")
    template: str | None = Field(default=None, description="The question's text with a '{question}' slot: the "
                                                            "user turn in chat mode, the whole text before the "
                                                            "first step otherwise (default: the env's layout).")

    @field_validator("chat", mode="before")
    @classmethod
    def _yaml_bool(cls, v: object) -> object:
        """YAML reads an unquoted `on`/`off` as a boolean: take it as meant."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("template")
    @classmethod
    def _has_slot(cls, v: str | None) -> str | None:
        if v is not None and QUESTION not in v:
            raise ValueError("the template must contain the question slot '{question}'")
        return v

    def is_default(self) -> bool:
        return self == PromptConfig()


class Prompter:
    """Renders `env`'s problems per `config`; `chat_template` is the model's (None when it has none).

    `names` says how error messages name the settings (the run config's fields by default; the CLI passes
    its options).
    """

    def __init__(self, env: Environment, config: PromptConfig, chat_template: ChatTemplate | None, *,
                 names: dict[str, str] | None = None):
        self.env = env
        self.config = config
        self.names = {"chat": "field 'prompt.chat'", "shots": "field 'prompt.shots'", **(names or {})}
        if config.chat == "on" and chat_template is None:
            raise UserError(f"{self.names['chat']} is 'on' but the policy's tokenizer has no chat template "
                            f"(use 'auto' or 'off')")
        self.chat = chat_template if config.chat != "off" else None
        self.shots = self._draw_shots() if config.shots else []
        self._cache: dict[str, str] = {}  # problem id -> prompt (the scheduler renders prefixes often)

    def _draw_shots(self) -> list[tuple[Problem, list[str]]]:
        env, k = self.env, self.config.shots
        out: list[tuple[Problem, list[str]]] = []
        for p in env.load("train", k + 1, seed=self.config.shots_seed):  # a spare: a shot never asks itself
            steps = env.reference_steps(p)
            if steps is None:
                raise UserError(f"{self.names['shots']}: environment '{env.name}' has no reference solutions to "
                                f"draw examples from (use 0 shots)")
            out.append((p, steps))
        return out

    # --- pieces ---------------------------------------------------------------------------------
    def question(self, problem: Problem) -> str:
        """The question as asked: the template filled in, else the env's layout (stripped in chat mode)."""
        t = self.config.template
        if t is not None:
            return t.replace(QUESTION, problem.prompt)
        text = self.env.prompt(problem)
        return text.strip() if self.chat is not None else text

    def solution(self, steps: list[str]) -> str:
        """A worked solution as the policy writes it: each step followed by the delimiter."""
        d = self.env.step_delimiter
        return "".join(s + d for s in steps)

    def shots_for(self, problem: Problem) -> list[tuple[Problem, list[str]]]:
        """The examples shown before `problem`: never the problem itself (same id or same question)."""
        return [s for s in self.shots if s[0].id != problem.id and s[0].prompt != problem.prompt][: self.config.shots]

    # --- the prompt ------------------------------------------------------------------------------
    def __call__(self, problem: Problem) -> str:
        text = self._cache.get(problem.id)
        if text is None:
            text = self._cache[problem.id] = self.render(problem)
        return text

    def render(self, problem: Problem) -> str:
        c = self.config
        if self.chat is not None:
            messages = [{"role": "system", "content": c.system}] if c.system else []
            for p, steps in self.shots_for(problem):
                messages += [{"role": "user", "content": self.question(p)},
                             {"role": "assistant", "content": self.solution(steps).rstrip("\n")}]
            messages.append({"role": "user", "content": self.question(problem)})
            return self.chat(messages)
        head = f"{c.system.rstrip()}\n\n" if c.system else ""
        shots = "".join(self.question(p) + self.solution(steps) + "\n" for p, steps in self.shots_for(problem))
        return head + shots + self.question(problem)
