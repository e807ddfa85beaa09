"""Countdown: reach a target by combining given numbers, one operation per step.

Problems come from reasoning-gym's countdown generator. Layout::

    Q: Make 97 from 25, 4, 3 using each number exactly once with + - * /.
    25*4=100
    100-3=97
    A: 25*4-3

A step is one operation ``a op b = c`` on two of the numbers still available (the given numbers, minus
those used, plus the results so far); the result must be an exact integer (division only when it
divides). The final step ``A: <expression>`` states the whole solution as one expression.

A solution scores 1 when every step is legal, the steps end with the target as the only number left,
and reasoning-gym's own countdown scorer accepts the answer expression (all numbers used once, value
equals the target). The expression is checked to be plain arithmetic before that scorer (which parses
it with sympy) sees it.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from functools import cached_property

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from envs.answers import answer_text, is_answer_step, normalize_minus
from envs.base import EnvConfig, Environment, Split
from envs.errors import UserError
from envs.splits import held_out
from envs.types import Problem

_MAX_TRIES = 1000
SOLVER_BUDGET = 200_000  # search nodes before the solver gives up

_STEP_RE = re.compile(r"^\s*(-?\d+)\s*([+\-*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_SAFE_EXPR_RE = re.compile(r"^[\d\s+\-*/()]+$")


class CountdownConfig(EnvConfig):
    """Difficulty knobs, passed to reasoning-gym's generator."""

    model_config = ConfigDict(validate_default=True)  # cross-field checks see defaults too

    min_numbers: int = Field(3, ge=2, le=8, description="fewest numbers given")
    max_numbers: int = Field(4, ge=2, le=8, description="most numbers given")
    min_value: int = Field(1, ge=1, le=10**4, description="smallest given number")
    max_value: int = Field(25, ge=1, le=10**4, description="largest given number")
    min_target: int = Field(10, ge=1, le=10**6, description="smallest target")
    max_target: int = Field(100, ge=1, le=10**6, description="largest target")
    operators: str = Field("+-*/", min_length=1, description="operators to draw from, a subset of '+-*/'")

    @field_validator("max_numbers", "max_value", "max_target")
    @classmethod
    def _range(cls, v: int, info: ValidationInfo) -> int:
        lo_name = "min_" + (info.field_name or "").removeprefix("max_")
        lo = info.data.get(lo_name)
        if lo is not None and v < lo:
            raise ValueError(f"{info.field_name} ({v}) must be >= {lo_name} ({lo})")
        steps = info.data.get("max_steps")
        if info.field_name == "max_numbers" and steps is not None and steps < v:
            raise ValueError(f"max_numbers ({v}) needs max_steps >= {v} (one step per operation plus the answer)")
        return v

    @field_validator("operators")
    @classmethod
    def _ops_chars(cls, v: str) -> str:
        bad = sorted(set(v) - set("+-*/"))
        if bad:
            raise ValueError(f"operators may only contain '+', '-', '*' and '/', got {''.join(bad)!r}")
        return v


def _apply(a: int, op: str, b: int) -> int | None:
    """`a op b` when it is an exact integer, else None."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0 or a % b:
        return None
    return a // b


def parse_step(step: str) -> tuple[int, str, int, int] | None:
    """``"25*4=100"`` -> ``(25, "*", 4, 100)``; None when the step is not one operation."""
    m = _STEP_RE.match(normalize_minus(step))
    if not m:
        return None
    return int(m[1]), m[2], int(m[3]), int(m[4])


def evaluate(expr: str) -> tuple[Fraction, list[int]] | None:
    """Exact value of a plain arithmetic expression and the numbers it uses; None if it is anything else."""
    expr = normalize_minus(expr)
    if not _SAFE_EXPR_RE.match(expr) or len(expr) > 500:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None
    used: list[int] = []

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if b == 0:
                raise ZeroDivisionError
            return a / b
        raise ValueError("not plain arithmetic")

    try:
        return ev(tree.body), used
    except (ValueError, ZeroDivisionError):
        return None


# --- solver ---------------------------------------------------------------------------------------
# An item is (value, text, precedence): precedence 3 atom, 2 * and /, 1 + and -.
_Item = tuple[int, str, int]
_Ops = list[tuple[int, str, int, int]]


def _combine(x: _Item, op: str, y: _Item) -> _Item | None:
    value = _apply(x[0], op, y[0])
    if value is None:
        return None

    def wrap(item: _Item, below: int) -> str:
        return f"({item[1]})" if item[2] <= below else item[1]

    if op == "+":
        return value, f"{x[1]}+{y[1]}", 1
    if op == "-":
        return value, f"{x[1]}-{wrap(y, 1)}", 1
    if op == "*":
        return value, f"{wrap(x, 1)}*{wrap(y, 1)}", 2
    return value, f"{wrap(x, 1)}/{wrap(y, 2)}", 2


def solve(numbers: Sequence[int], target: int, operators: str = "+-*/",
          budget: int = SOLVER_BUDGET) -> tuple[list[tuple[int, str, int, int]], str] | None:
    """Operations using every number once that end at `target`, and the matching expression.

    Depth-first over pairs of the remaining numbers, remembering dead multisets; None when there is
    no solution or the node budget runs out.
    """
    dead: set[tuple[int, ...]] = set()
    nodes = 0
    def dfs(items: list[_Item]) -> tuple[_Ops, str] | None:
        nonlocal nodes
        if len(items) == 1:
            return ([], items[0][1]) if items[0][0] == target else None
        key = tuple(sorted(v for v, _, _ in items))
        if key in dead or nodes >= budget:
            return None
        nodes += 1
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                rest = items[:i] + items[i + 1:j] + items[j + 1:]
                x, y = (items[i], items[j]) if items[i][0] >= items[j][0] else (items[j], items[i])
                for a, op, b in ((x, "*", y), (x, "+", y), (x, "-", y), (x, "/", y), (y, "/", x), (y, "-", x)):
                    if op not in operators:
                        continue
                    new = _combine(a, op, b)
                    if new is None:
                        continue
                    found = dfs([*rest, new])
                    if found is not None:
                        found[0].insert(0, (a[0], op, b[0], new[0]))
                        return found
        if nodes < budget:  # only a fully searched multiset is known dead
            dead.add(key)
        return None

    return dfs([(n, str(n), 3) for n in numbers])


def split_of(numbers: Sequence[int], target: int) -> Split:
    return "test" if held_out(f"{sorted(numbers)}->{target}") else "train"


class CountdownEnv(Environment):
    """Countdown from reasoning-gym, one operation per step, verified step by step and by its scorer."""

    name = "countdown"
    kind = "math"
    description = "reach a target from given numbers, one operation 'a op b = c' per step, then 'A: <expression>'"
    Config = CountdownConfig
    config: CountdownConfig

    @cached_property
    def _dataset(self):
        from reasoning_gym.games.countdown import CountdownConfig as GymConfig
        from reasoning_gym.games.countdown import CountdownDataset

        c = self.config
        return CountdownDataset(GymConfig(
            min_numbers=c.min_numbers, max_numbers=c.max_numbers, min_value=c.min_value,
            max_value=c.max_value, min_target=c.min_target, max_target=c.max_target,
            operators=tuple(c.operators), shuffle=True, seed=0, size=1,
        ))

    # --- problems -------------------------------------------------------------------------------
    def problem(self, split: Split, seed: int, index: int) -> Problem:
        """Problem `index` of `split` for `seed`; independent of how many are loaded."""
        if split not in ("train", "test"):
            raise UserError(f"environment 'countdown': unknown split '{split}' (use 'train' or 'test')")
        failures = 0
        for attempt in range(_MAX_TRIES):
            key = f"countdown:{split}:{seed}:{index}:{attempt}".encode()
            gym_index = int.from_bytes(hashlib.sha256(key).digest()[:7], "big")
            try:
                entry = self._dataset[gym_index]
            except ValueError:  # the generator found no expression in the target range
                failures += 1
                if failures >= 5:
                    raise UserError("environment 'countdown': field 'min_target': the generator cannot reach "
                                    "targets in min_target..max_target with these numbers; widen the ranges"
                                    ) from None
                continue
            numbers, target = list(entry["metadata"]["numbers"]), int(entry["metadata"]["target"])
            if split_of(numbers, target) == split:
                break
        else:
            raise UserError(f"environment 'countdown': the knobs allow too few distinct problems to fill "
                            f"the '{split}' split; widen the number, value or target ranges")
        listed = ", ".join(map(str, numbers))
        return Problem(
            id=f"countdown-{split}-{seed}-{index}",
            prompt=f"Make {target} from {listed} using each number exactly once with + - * /.",
            answer=entry["answer"],
            metadata={"numbers": numbers, "target": target, "expression": entry["answer"],
                      "split": split, "seed": seed, "index": index},
        )

    def load(self, split: Split, count: int, seed: int = 0) -> list[Problem]:
        return [self.problem(split, seed, i) for i in range(count)]

    def reference_steps(self, problem: Problem) -> list[str] | None:
        found = solve(problem.metadata["numbers"], problem.metadata["target"], self.config.operators)
        if found is None:
            return None
        ops, expr = found
        return [f"{a}{op}{b}={c}" for a, op, b, c in ops] + [f"A: {expr}"]

    # --- text layout ----------------------------------------------------------------------------
    def prompt(self, problem: Problem) -> str:
        return f"Q: {problem.prompt}\n"

    # --- verification ---------------------------------------------------------------------------
    def is_terminal(self, problem: Problem, steps: Sequence[str]) -> bool:
        return bool(steps) and (is_answer_step(steps[-1]) or len(steps) >= self.config.max_steps)

    def extract_answer(self, problem: Problem, steps: Sequence[str]) -> str | None:
        """The answer expression with spaces removed, when it is plain arithmetic; else None."""
        text = answer_text(steps)
        if text is None or evaluate(text) is None:
            return None
        return re.sub(r"\s+", "", normalize_minus(text))

    def _legal(self, available: Counter, step: str) -> tuple[bool, str]:
        """Apply one operation step to `available` in place; (ok, why-not)."""
        parsed = parse_step(step)
        if parsed is None:
            return False, f"not an operation: {step.strip()!r}"
        a, op, b, c = parsed
        if op not in self.config.operators:
            return False, f"operator {op} not allowed"
        need = Counter([a, b])
        if any(available[n] < k for n, k in need.items()):
            return False, f"{step.strip()} uses a number that is not available"
        if _apply(a, op, b) != c:
            return False, f"{step.strip()} is wrong arithmetic"
        available.subtract(need)
        available[c] += 1
        return True, ""

    def _check(self, problem: Problem, steps: Sequence[str]) -> str:
        """'' when the solution is verified correct, else the reason it is not."""
        if not steps or not is_answer_step(steps[-1]):
            return "no answer"
        if sum(is_answer_step(s) for s in steps) > 1:
            return "more than one answer"
        available = Counter(problem.metadata["numbers"])
        for step in steps[:-1]:
            ok, why = self._legal(available, step)
            if not ok:
                return why
        target = problem.metadata["target"]
        left = sorted(available.elements())
        if left != [target]:
            return f"steps end with {left}, not the target {target}"
        expr = self.extract_answer(problem, steps)
        if expr is None:
            return "malformed answer"
        entry = {"metadata": {"numbers": problem.metadata["numbers"], "target": target}}
        if self._dataset.score_answer(expr, entry) < 1.0:
            return f"answer {expr} rejected (must use every number once and equal {target})"
        return ""

    def score(self, problem: Problem, steps: Sequence[str]) -> float:
        return 1.0 if self._check(problem, steps) == "" else 0.0

    def check_step(self, problem: Problem, steps: Sequence[str], step: str) -> bool | None:
        """True iff `step` is a legal operation on the numbers left (or a correct answer expression)."""
        available = Counter(problem.metadata["numbers"])
        for prior in steps:
            if not self._legal(available, prior)[0]:
                available = None
                break
        if is_answer_step(step):
            return self.score(problem, [*steps, step]) == 1.0 if available is not None else None
        if available is None:
            parsed = parse_step(step)
            return None if parsed is None else _apply(parsed[0], parsed[1], parsed[2]) == parsed[3]
        if parse_step(step) is None:
            return None
        return self._legal(available, step)[0]

    def verdict(self, problem: Problem, steps: Sequence[str]) -> str:
        return self._check(problem, steps) or "correct"
