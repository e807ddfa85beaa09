"""`jsonl-math`: math problems from files the user supplies, in GSM8K or MATH layout, graded like the
math benchmarks grade them (`envs.grading`: math-verify after an exact numeric fast path).

Files: JSONL (errors name file:line), or through HF `datasets` a `save_to_disk` directory or a parquet,
JSON, CSV or arrow file (errors name the record index): `envs.datasets_io`.

Layouts (knob ``layout``):
- ``gsm8k`` (default): ``question`` and ``answer``, the answer ending in ``#### N`` (``answer_regex``: its
  first group is the final answer; empty means the whole field is the answer). The worked lines before
  ``####`` (calculator annotations removed) are the reference steps.
- ``math``: ``problem`` and ``solution`` whose last ``\\boxed{…}`` is the answer, unless an ``answer``
  field holds it. The solution's sentences are the reference steps (`envs.solutions.math_steps`).
``fields`` maps these names (question, answer, solution) to your records' keys, e.g.
``{question: problem, answer: final}``; ``question_field`` / ``answer_field`` are older spellings of it.

Gold answers may be numbers or LaTeX (``\\frac{3}{4}``, ``(1, 2)``, ``x^2+1``, ``\\text{Sunday}``); one
math-verify cannot read is a UserError naming the record and field (LaTeX ones are parsed when their
problem is loaded, not for the whole file: parsing costs ≈10-100 ms per answer). The solution's answer is the last
one it states (as benchmarks grade): ``\\boxed{…}``, ``#### …``, "the answer is …", or an ``A:`` /
``Answer:`` line; a solution is finished when its last step states one (or at max_steps). A solution that ended without
stating one (EOS, max_steps) is graded on the one number its last step ends on (``last_result``, on by
default: ``24 / 2 = 12 boys`` → 12; ``28 or 29`` → none).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from envs.answers import format_number
from envs.base import EnvConfig, Environment, Split
from envs.datasets_io import iter_records
from envs.errors import UserError
from envs.grading import (
    canonical_answer,
    clean_answer,
    find_answer,
    find_result,
    grade,
    is_math,
    last_boxed,
    numeric_value,
    parse_gold,
    precheck_gold,
)
from envs.solutions import gsm8k_steps, math_steps
from envs.splits import FileSplits
from envs.types import Problem

FIELD_NAMES = ("question", "answer", "solution")
DEFAULT_FIELDS = {"gsm8k": {"question": "question", "answer": "answer"},
                  "math": {"question": "problem", "answer": "answer", "solution": "solution"}}


class JsonlMathConfig(EnvConfig):
    """Where the problems are and how to read them."""

    train_path: str | None = Field(None, description="training problems: a JSONL/JSON/parquet/CSV file or a "
                                                     "`datasets` directory")
    test_path: str | None = Field(None, description="test problems, same kinds (default: 1/5 of train_path)")
    layout: Literal["gsm8k", "math"] = Field("gsm8k", description="'gsm8k': question + answer ending '#### N'; "
                                                                  "'math': problem + solution with \\boxed{} "
                                                                  "(+ optional answer)")
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="your record keys for question / answer / solution, "
                                               "e.g. {question: problem}")
    question_field: str | None = Field(None, min_length=1, description="same as fields.question")
    answer_field: str | None = Field(None, min_length=1, description="same as fields.answer")
    answer_regex: str = Field(r"####\s*(.+?)\s*$",
                              description="gsm8k layout: regex whose first group is the final answer; "
                                          "'' = whole field")
    prompt_template: str = Field("Q: {question}\n", description="text before the first step")
    last_result: bool = Field(True, description="when no step states an answer (the solution ended at EOS "
                                                "or max_steps), the last step's one result number counts")

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

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(FIELD_NAMES))
        if unknown:
            raise ValueError(f"unknown name '{unknown[0]}' (use {', '.join(FIELD_NAMES)})")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("must contain '{question}'")
        return v

    def key(self, name: str) -> str:
        """The record key holding `name` (question / answer / solution) for this layout and field map."""
        older = {"question": self.question_field, "answer": self.answer_field}.get(name)
        return self.fields.get(name) or older or DEFAULT_FIELDS[self.layout][name]


def _text(value: Any, where: str, key: str) -> str | None:
    """A record value as text (numbers allowed); None when absent or blank."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{key}' must be a string or a number")
    return value if value.strip() else None


def _gold_text(text: str, where: str, key: str, canonical: bool) -> str:
    """The problem's answer text: as written (cleaned), or with `canonical` a plain number in canonical
    form (GSM8K: ``2,468`` → ``2468``, ``3/4`` → ``0.75``). Only the cheap checks run here; a LaTeX gold
    answer is parsed by math-verify when its problem is loaded (`JsonlMathEnv.load`)."""
    number = precheck_gold(text, f"{where}: field '{key}'")
    return format_number(number) if canonical and number is not None else clean_answer(text)


class JsonlMathEnv(FileSplits, Environment):
    """GSM8K- or MATH-layout math from the user's files, math-verify answer checking."""

    name = "jsonl-math"
    kind = "math"
    description = ("math problems from your JSONL/parquet/`datasets` files (GSM8K or MATH layout), "
                   "graded with math-verify")
    Config = JsonlMathConfig
    config: JsonlMathConfig

    # --- problems (splits and loading: FileSplits) ----------------------------------------------
    def parse_file(self, path: str) -> list[Problem]:
        """Every problem in `path`, in file order; a malformed record is a UserError naming it and the field."""
        c = self.config
        qkey = c.key("question")
        required = (qkey, c.key("answer")) if c.layout == "gsm8k" else (qkey,)
        parse = self._parse_gsm8k if c.layout == "gsm8k" else self._parse_math
        problems = []
        for where, place, record in iter_records(path, required=required):
            question = record[qkey]
            if not isinstance(question, str) or not question.strip():
                raise UserError(f"{where}: field '{qkey}' must be a non-empty string")
            answer, metadata = parse(where, record)
            problems.append(Problem(
                id=f"{Path(path).stem}-{next(iter(place.values()))}",
                prompt=question.strip(),
                answer=answer,
                metadata={"file": str(path), **place, **metadata},
            ))
        return problems

    def _parse_gsm8k(self, where: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        c = self.config
        key = c.key("answer")
        raw = _text(record[key], where, key)
        if raw is None:
            raise UserError(f"{where}: field '{key}' is empty")
        rationale, final = "", raw
        if c.answer_regex:
            m = re.search(c.answer_regex, raw, re.DOTALL)
            if not m:
                raise UserError(f"{where}: field '{key}' does not match answer_regex {c.answer_regex!r}")
            rationale, final = raw[: m.start()], m.group(1)
            if rationale and not rationale.endswith("\n"):  # the answer sits inside a sentence
                rationale = ""
        return _gold_text(final, where, key, True), {"raw_answer": final.strip(), "answer_key": key,
                                                     "rationale": rationale}

    def _parse_math(self, where: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        c = self.config
        akey, skey = c.key("answer"), c.key("solution")
        solution = _text(record.get(skey), where, skey)
        final = _text(record.get(akey), where, akey)
        key = akey
        if final is None:
            if solution is None:
                raise UserError(f"{where}: field '{skey}' is missing and there is no '{akey}' field")
            final, key = last_boxed(solution), skey
            if final is None:
                raise UserError(f"{where}: field '{skey}' has no \\boxed{{...}} answer and there is no "
                                f"'{akey}' field")
        return _gold_text(final, where, key, False), {"raw_answer": final.strip(), "answer_key": key,
                                                      "solution": solution or ""}

    def load(self, split: Split, count: int, seed: int = 0) -> list[Problem]:
        """`FileSplits.load`, then every LaTeX gold answer among the problems parsed by math-verify (once
        per text: ≈10-100 ms each, so a 12k-problem MATH file is not parsed whole to use 64 of it)."""
        problems = super().load(split, count, seed)
        for p in problems:
            if p.answer is not None and numeric_value(p.answer) is None:
                m = p.metadata
                where = f"{m['file']}:{m['line']}" if "line" in m else f"{m['file']} record {m.get('record')}"
                parse_gold(p.answer, f"{where}: field '{m.get('answer_key', 'answer')}'")
        return problems

    def reference_steps(self, problem: Problem) -> list[str] | None:
        m = problem.metadata
        if "solution" in m:
            return math_steps(m["solution"], problem.answer) if m["solution"] else None
        return gsm8k_steps(m.get("rationale", ""), problem.answer)

    # --- text layout ----------------------------------------------------------------------------
    def prompt(self, problem: Problem) -> str:
        return self.config.prompt_template.replace("{question}", problem.prompt)

    # --- verification ---------------------------------------------------------------------------
    def _stated(self, steps: Sequence[str]) -> str | None:
        """The last answer the solution states (cleaned text), or with `last_result` the one number its
        last line ends on; None when there is neither. Blank steps are skipped."""
        texts = [s for s in steps if s.strip()]
        for text in reversed(texts):
            stated = find_answer(text)
            if stated is not None:
                return stated
        if texts and self.config.last_result:
            return find_result(texts[-1].strip().splitlines()[-1])
        return None

    def is_terminal(self, problem: Problem, steps: Sequence[str]) -> bool:
        return bool(steps) and (find_answer(steps[-1]) is not None or len(steps) >= self.config.max_steps)

    def extract_answer(self, problem: Problem, steps: Sequence[str]) -> str | None:
        stated = self._stated(steps)
        return canonical_answer(stated) if stated and is_math(stated) else None

    def score(self, problem: Problem, steps: Sequence[str]) -> float:
        if problem.answer is None:
            return 0.0
        return 1.0 if grade(clean_answer(problem.answer), self._stated(steps)) else 0.0

    def verdict(self, problem: Problem, steps: Sequence[str]) -> str:
        stated = self._stated(steps)
        if stated is None:
            return "no answer"
        if self.score(problem, steps) == 1.0:
            return "correct"
        answer = self.extract_answer(problem, steps)
        if answer is None:
            return "malformed answer"
        return f"wrong answer {answer} (expected {problem.answer})"
