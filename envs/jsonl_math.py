"""`jsonl-math`: math word problems from JSONL files the user supplies (GSM8K format by default).

Each line is an object with a question and an answer; by default ``question`` and ``answer`` where the
answer ends in ``#### N`` (GSM8K). Other layouts set ``question_field``, ``answer_field`` and
``answer_regex`` (its first group is the final answer; empty means the whole field is the answer).

Layout: ``Q: <question>`` (``prompt_template``), one reasoning step per line, a last line ``A: <number>``.
Scoring compares numbers exactly: ``1,234`` == ``1234``, ``3/4`` == ``0.75``, ``−6`` == ``-6``.
When the answer field carries a worked solution before ``####`` (GSM8K), its lines (calculator
annotations ``<<...>>`` removed) are the reference steps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, field_validator

from envs.answers import answer_text, format_number, is_answer_step, parse_number
from envs.base import EnvConfig, Environment
from envs.errors import UserError
from envs.io import iter_jsonl
from envs.splits import FileSplits
from envs.types import Problem


class JsonlMathConfig(EnvConfig):
    """Where the problems are and how to read them."""

    train_path: str | None = Field(None, description="JSONL file of training problems")
    test_path: str | None = Field(None, description="JSONL file of test problems (default: 1/5 of train_path)")
    question_field: str = Field("question", min_length=1, description="key holding the question")
    answer_field: str = Field("answer", min_length=1, description="key holding the answer")
    answer_regex: str = Field(r"####\s*(.+?)\s*$",
                              description="regex whose first group is the final answer; '' = whole field")
    prompt_template: str = Field("Q: {question}\n", description="text before the first step")

    @field_validator("answer_regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        if v:
            try:
                groups = re.compile(v).groups
            except re.error as e:
                raise ValueError(f"not a valid regular expression ({e})") from None
            if groups < 1:
                raise ValueError("needs a group around the answer, e.g. '####\\s*(.+)$'")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("must contain '{question}'")
        return v


class JsonlMathEnv(FileSplits, Environment):
    """GSM8K-format JSONL math with exact numeric answer checking."""

    name = "jsonl-math"
    kind = "math"
    description = "math word problems from your JSONL files (GSM8K 'question'/'answer ... #### N'), numeric checking"
    Config = JsonlMathConfig
    config: JsonlMathConfig

    # --- problems (splits and loading: FileSplits) ----------------------------------------------
    def parse_file(self, path: str) -> list[Problem]:
        """Every problem in `path`, in file order; a malformed line is a UserError naming file:line."""
        c = self.config
        regex = re.compile(c.answer_regex, re.DOTALL) if c.answer_regex else None
        problems = []
        for lineno, obj in iter_jsonl(path, required=(c.question_field, c.answer_field)):
            where = f"{path}:{lineno}"
            question, raw = obj[c.question_field], obj[c.answer_field]
            if not isinstance(question, str) or not question.strip():
                raise UserError(f"{where}: field '{c.question_field}' must be a non-empty string")
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                raw = str(raw)
            if not isinstance(raw, str):
                raise UserError(f"{where}: field '{c.answer_field}' must be a string or a number")
            rationale, final = "", raw
            if regex is not None:
                m = regex.search(raw)
                if not m:
                    raise UserError(f"{where}: field '{c.answer_field}' does not match answer_regex "
                                    f"{c.answer_regex!r}")
                rationale, final = raw[: m.start()], m.group(1)
                if rationale and not rationale.endswith("\n"):  # the answer sits inside a sentence
                    rationale = ""
            value = parse_number(final)
            if value is None:
                raise UserError(f"{where}: field '{c.answer_field}': final answer {final.strip()!r} is not a number")
            problems.append(Problem(
                id=f"{Path(path).stem}-{lineno}",
                prompt=question.strip(),
                answer=format_number(value),
                metadata={"file": str(path), "line": lineno, "raw_answer": final.strip(), "rationale": rationale},
            ))
        return problems

    def reference_steps(self, problem: Problem) -> list[str] | None:
        lines = [re.sub(r"<<[^>]*>>", "", line).strip() for line in problem.metadata.get("rationale", "").splitlines()]
        lines = [line for line in lines if line]
        return [*lines, f"A: {problem.answer}"] if lines else None

    # --- text layout ----------------------------------------------------------------------------
    def prompt(self, problem: Problem) -> str:
        return self.config.prompt_template.replace("{question}", problem.prompt)

    # --- verification ---------------------------------------------------------------------------
    def is_terminal(self, problem: Problem, steps: Sequence[str]) -> bool:
        return bool(steps) and (is_answer_step(steps[-1]) or len(steps) >= self.config.max_steps)

    def extract_answer(self, problem: Problem, steps: Sequence[str]) -> str | None:
        value = parse_number(answer_text(steps))
        return None if value is None else format_number(value)

    def score(self, problem: Problem, steps: Sequence[str]) -> float:
        answer = self.extract_answer(problem, steps)
        return 1.0 if answer is not None and parse_number(answer) == parse_number(problem.answer) else 0.0

    def verdict(self, problem: Problem, steps: Sequence[str]) -> str:
        if not any(is_answer_step(s) for s in steps):
            return "no answer"
        answer = self.extract_answer(problem, steps)
        if answer is None:
            return "malformed answer"
        if self.score(problem, steps) == 1.0:
            return "correct"
        return f"wrong answer {answer} (expected {problem.answer})"
