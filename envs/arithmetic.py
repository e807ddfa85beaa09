"""Chain arithmetic: integer expressions such as ``3+4*2-5`` solved one operation per step.

Layout (fixed; the tiny policy and its tokenizer are built on it)::

    Q: 3+4*2-5
    4*2=8
    3+8=11
    11-5=6
    A: 6

Operations are done in precedence order: every ``*`` first, left to right, then ``+``/``-`` left to
right. Problems are generated deterministically from (split, seed, index); a stable hash of the
expression string assigns each expression to exactly one split, so train and test never share one.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import cast

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from envs.answers import answer_text, is_answer_step, normalize_minus, parse_int
from envs.base import EnvConfig, Environment, Split
from envs.errors import UserError
from envs.splits import held_out
from envs.types import Problem

_MAX_TRIES = 1000

_STEP_RE = re.compile(r"^\s*(-?\d+)\s*([+\-*])\s*(\d+)\s*=\s*(-?\d+)\s*$")


class ArithmeticConfig(EnvConfig):
    """Difficulty knobs: operations per problem, operand range, which operators appear."""

    model_config = ConfigDict(validate_default=True)  # cross-field checks see defaults too

    min_ops: int = Field(2, ge=1, le=20, description="fewest operations in an expression")
    max_ops: int = Field(4, ge=1, le=20, description="most operations in an expression")
    operand_min: int = Field(1, ge=0, le=10**6, description="smallest operand")
    operand_max: int = Field(20, ge=0, le=10**6, description="largest operand")
    ops: str = Field("+-*", min_length=1, description="operators to draw from, a subset of '+-*'")

    @field_validator("max_ops")
    @classmethod
    def _ops_range(cls, v: int, info: ValidationInfo) -> int:
        lo = info.data.get("min_ops")
        if lo is not None and v < lo:
            raise ValueError(f"max_ops ({v}) must be >= min_ops ({lo})")
        steps = info.data.get("max_steps")
        if steps is not None and steps < v + 1:
            raise ValueError(f"max_ops ({v}) needs max_steps >= {v + 1} (one step per operation plus the answer)")
        return v

    @field_validator("operand_max")
    @classmethod
    def _operand_range(cls, v: int, info: ValidationInfo) -> int:
        lo = info.data.get("operand_min")
        if lo is not None and v < lo:
            raise ValueError(f"operand_max ({v}) must be >= operand_min ({lo})")
        return v

    @field_validator("ops")
    @classmethod
    def _ops_chars(cls, v: str) -> str:
        bad = sorted(set(v) - set("+-*"))
        if bad:
            raise ValueError(f"ops may only contain '+', '-' and '*', got {''.join(bad)!r}")
        return v


def tokenize(expr: str) -> list[int | str]:
    """``"3+4*2"`` -> ``[3, "+", 4, "*", 2]`` (operands are non-negative integers)."""
    parts = re.findall(r"\d+|[+\-*]", expr)
    return [int(p) if p.isdigit() else p for p in parts]


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def next_operation(tokens: Sequence[int | str]) -> int | None:
    """Index of the operator done next in precedence order, or None when `tokens` is one number."""
    if len(tokens) < 3:
        return None
    for k in range(1, len(tokens), 2):
        if tokens[k] == "*":
            return k
    return 1


def operation(tokens: Sequence[int | str], k: int) -> tuple[int, str, int]:
    """The operation ``(a, op, b)`` around operator index `k` (see `next_operation`)."""
    return cast(int, tokens[k - 1]), cast(str, tokens[k]), cast(int, tokens[k + 1])


def reduce_once(tokens: Sequence[int | str], k: int, value: int) -> list[int | str]:
    """Replace ``a op b`` at operator index `k` by `value`."""
    return [*tokens[: k - 1], value, *tokens[k + 2:]]


def solve(expr: str) -> tuple[list[tuple[int, str, int, int]], int]:
    """The operations (a, op, b, result) in precedence order and the final value."""
    tokens = tokenize(expr)
    ops = []
    while (k := next_operation(tokens)) is not None:
        a, op, b = operation(tokens, k)
        c = _apply(a, op, b)
        ops.append((a, op, b, c))
        tokens = reduce_once(tokens, k, c)
    return ops, cast(int, tokens[0])


def split_of(expr: str) -> Split:
    """The split an expression belongs to, from a stable hash (same on every machine and run)."""
    return "test" if held_out(expr) else "train"


def parse_step(step: str) -> tuple[int, str, int, int] | None:
    """``"4*2=8"`` -> ``(4, "*", 2, 8)``; None when the step is not one operation."""
    m = _STEP_RE.match(normalize_minus(step))
    if not m:
        return None
    return int(m[1]), m[2], int(m[3]), int(m[4])


class ArithmeticEnv(Environment):
    """Integer chain arithmetic, one operation per step, generated from a seed."""

    name = "arithmetic"
    kind = "math"
    description = "integer expressions (+ - *) solved one operation per step, e.g. 7*3=21, then 'A: n'"
    Config = ArithmeticConfig
    config: ArithmeticConfig

    # --- problems -------------------------------------------------------------------------------
    def _expression(self, rng: random.Random) -> str:
        c = self.config
        n = rng.randint(c.min_ops, c.max_ops)
        parts = [str(rng.randint(c.operand_min, c.operand_max))]
        for _ in range(n):
            parts += [rng.choice(c.ops), str(rng.randint(c.operand_min, c.operand_max))]
        return "".join(parts)

    def problem(self, split: Split, seed: int, index: int) -> Problem:
        """Problem `index` of `split` for `seed`; independent of how many are loaded."""
        if split not in ("train", "test"):
            raise UserError(f"environment 'arithmetic': unknown split '{split}' (use 'train' or 'test')")
        rng = random.Random(f"arithmetic:{split}:{seed}:{index}")
        for _ in range(_MAX_TRIES):
            expr = self._expression(rng)
            if split_of(expr) == split:
                break
        else:
            raise UserError(
                f"environment 'arithmetic': the knobs allow too few distinct expressions to fill the "
                f"'{split}' split; widen operand_min..operand_max, min_ops..max_ops or ops")
        _, value = solve(expr)
        return Problem(
            id=f"arith-{split}-{seed}-{index}",
            prompt=expr,
            answer=str(value),
            metadata={"expression": expr, "split": split, "seed": seed, "index": index},
        )

    def load(self, split: Split, count: int, seed: int = 0) -> list[Problem]:
        return [self.problem(split, seed, i) for i in range(count)]

    def reference_steps(self, problem: Problem) -> list[str]:
        ops, value = solve(self.expression(problem))
        return [f"{a}{op}{b}={c}" for a, op, b, c in ops] + [f"A: {value}"]

    # --- text layout ----------------------------------------------------------------------------
    @staticmethod
    def expression(problem: Problem) -> str:
        """The expression text of `problem` (metadata 'expression', else the prompt)."""
        return problem.metadata.get("expression", problem.prompt)

    def prompt(self, problem: Problem) -> str:
        return f"Q: {self.expression(problem)}\n"

    # --- verification ---------------------------------------------------------------------------
    def is_terminal(self, problem: Problem, steps: Sequence[str]) -> bool:
        return bool(steps) and (is_answer_step(steps[-1]) or len(steps) >= self.config.max_steps)

    def extract_answer(self, problem: Problem, steps: Sequence[str]) -> str | None:
        value = parse_int(answer_text(steps))
        return None if value is None else str(value)

    def score(self, problem: Problem, steps: Sequence[str]) -> float:
        answer = self.extract_answer(problem, steps)
        return 1.0 if answer is not None and answer == problem.answer else 0.0

    def _state(self, problem: Problem, steps: Sequence[str]) -> list[int | str] | None:
        """The expression left after `steps` (wrong results carried forward); None if untrackable."""
        tokens = tokenize(self.expression(problem))
        for step in steps:
            parsed = parse_step(step)
            k = next_operation(tokens)
            if parsed is None or k is None or (parsed[0], parsed[1], parsed[2]) != tuple(tokens[k - 1:k + 2]):
                return None
            tokens = reduce_once(tokens, k, parsed[3])
        return tokens

    def check_step(self, problem: Problem, steps: Sequence[str], step: str) -> bool | None:
        """True iff `step` is the right next operation with the right result (or the right answer)."""
        state = self._state(problem, steps)
        if is_answer_step(step):
            value = parse_int(step.lstrip()[2:])
            if value is None:
                return False
            if state is None:
                return None
            return len(state) == 1 and value == state[0]
        parsed = parse_step(step)
        if parsed is None:
            return None
        a, op, b, c = parsed
        if _apply(a, op, b) != c:
            return False
        if state is None:
            return True
        k = next_operation(state)
        return k is not None and (a, op, b) == tuple(state[k - 1:k + 2])

    def verdict(self, problem: Problem, steps: Sequence[str]) -> str:
        if not any(is_answer_step(s) for s in steps):
            return "no answer"
        answer = self.extract_answer(problem, steps)
        if answer is None:
            return "malformed answer"
        if answer == problem.answer:
            return "correct"
        return f"wrong answer {answer} (expected {problem.answer})"
