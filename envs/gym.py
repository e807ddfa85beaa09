"""`gym:<task>`: any reasoning-gym task by name, verified on the whole answer with the task's scorer.

Layout: the prompt is the task's question; a step is one line of reasoning; the solution ends with a
line ``A: <answer>`` (single-line answers only, so tasks whose answers are grids cannot be solved;
unicode minus signs become ASCII '-'). Score is 1 only when the task's own ``score_answer`` gives full
marks (its partial credit, e.g. for an answer that merely contains the right one, counts 0). Tasks
with no oracle answer (``answer`` None) are still scored by their scorer.

Problems: the dataset is created with a seed derived from (task, seed) and read in order; each
question goes to train or test by a stable hash of its text, so the splits never share a question.
Reference steps: tasks whose items carry a worked solution in GSM8K layout (``metadata.answer_cot``,
e.g. ``gsm_symbolic``) give its lines (`envs.solutions.gsm8k_steps`) and ``A: <answer>``; others have none.

Problem metadata stores where the item came from (task, gym seed, index, task config), so a problem
read back from a tree file is scored against the very same item.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from functools import cache
from typing import Any, ClassVar

from pydantic import Field

from envs.answers import answer_text, is_answer_step, normalize_minus
from envs.base import EnvConfig, Environment, Split
from envs.errors import UserError
from envs.solutions import gsm8k_steps
from envs.splits import held_out
from envs.types import Problem

SCAN_FACTOR = 20
CANARY = "28 or 29 (selfimprove canary: no scorer should accept this)"  # read at most this many items per problem asked for before giving up


@cache
def gym_task_names() -> list[str]:
    """Names of every task reasoning-gym registers (imports reasoning-gym, ≈1 s)."""
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


class GymConfig(EnvConfig):
    """Knobs: the task's own configuration, passed to ``reasoning_gym.create_dataset``."""

    task_config: dict[str, Any] = Field(default_factory=dict,
                                        description="keyword arguments for the task's reasoning-gym config")


def _split_of(question: str) -> Split:
    return "test" if held_out(question) else "train"


def _gym_seed(task: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"gym:{task}:{seed}".encode()).digest()[:4], "big")


class GymEnv(Environment):
    """Base of the per-task classes `gym_env_class` makes; `task` names the reasoning-gym dataset."""

    kind = "math"
    Config = GymConfig
    config: GymConfig
    task: ClassVar[str]

    def __init__(self, config=None, **knobs):
        super().__init__(config, **knobs)
        self._datasets: dict[tuple[int, str], Any] = {}

    def _dataset(self, gym_seed: int, size: int, task_config: dict[str, Any] | None = None):
        """The reasoning-gym dataset for (seed, task config), holding at least `size` items; cached."""
        task_config = self.config.task_config if task_config is None else task_config
        key = (gym_seed, json.dumps(task_config, sort_keys=True))
        ds = self._datasets.get(key)
        if ds is not None and len(ds) >= size:
            return ds
        import reasoning_gym

        try:
            ds = reasoning_gym.create_dataset(self.task, **task_config, seed=gym_seed, size=size)
        except (TypeError, ValueError, AssertionError) as e:
            raise UserError(f"environment '{self.name}': field 'task_config': {e}") from None
        self._datasets[key] = ds
        return ds

    # --- problems -------------------------------------------------------------------------------
    def load(self, split: Split, count: int, seed: int = 0) -> list[Problem]:
        if split not in ("train", "test"):
            raise UserError(f"environment '{self.name}': unknown split '{split}' (use 'train' or 'test')")
        gym_seed = _gym_seed(self.task, seed)
        size = SCAN_FACTOR * count + 50
        ds = self._dataset(gym_seed, size)
        out: list[Problem] = []
        seen: set[str] = set()
        for index in range(size):
            if len(out) == count:
                break
            try:
                entry = ds[index]
            except IndexError:  # a task with a finite pool
                break
            question = entry["question"]
            if _split_of(question) != split or question in seen:
                continue
            seen.add(question)
            out.append(Problem(
                id=f"gym-{self.task}-{split}-{seed}-{len(out)}",
                prompt=question,
                answer=None if entry.get("answer") is None else str(entry["answer"]),
                metadata={"task": self.task, "gym_seed": gym_seed, "gym_index": index,
                          "task_config": json.loads(json.dumps(self.config.task_config)),
                          "split": split, "seed": seed},
            ))
        if len(out) < count:
            raise UserError(f"environment '{self.name}': found only {len(out)} distinct '{split}' problems "
                            f"(asked for {count}); ask for fewer or change task_config")
        return out

    def _entry(self, problem: Problem) -> dict[str, Any]:
        m = problem.metadata
        if m.get("task") != self.task:
            raise UserError(f"environment '{self.name}': problem '{problem.id}' comes from task "
                            f"'{m.get('task')}', not '{self.task}'")
        index = int(m["gym_index"])
        return self._dataset(int(m["gym_seed"]), index + 1, m.get("task_config") or {})[index]

    def reference_steps(self, problem: Problem) -> list[str] | None:
        """The item's worked solution (``metadata.answer_cot``, GSM8K layout) as steps, when it has one."""
        cot = (self._entry(problem).get("metadata") or {}).get("answer_cot")
        if not isinstance(cot, str) or problem.answer is None:
            return None
        return gsm8k_steps(cot.rsplit("####", 1)[0], problem.answer)

    # --- text layout ----------------------------------------------------------------------------
    def prompt(self, problem: Problem) -> str:
        return (f"Q: {problem.prompt}\nThink step by step, one step per line, "
                f"and give the final answer on a last line that starts with 'A: '.\n")

    # --- verification ---------------------------------------------------------------------------
    def is_terminal(self, problem: Problem, steps: Sequence[str]) -> bool:
        return bool(steps) and (is_answer_step(steps[-1]) or len(steps) >= self.config.max_steps)

    def extract_answer(self, problem: Problem, steps: Sequence[str]) -> str | None:
        text = answer_text(steps)
        return normalize_minus(text) if text else None

    def gym_score(self, problem: Problem, steps: Sequence[str]) -> float:
        """The task scorer's raw score of the stated answer (0 when there is none)."""
        answer = self.extract_answer(problem, steps)
        if answer is None:
            return 0.0
        entry = self._entry(problem)
        ds = self._dataset(int(problem.metadata["gym_seed"]), 1, problem.metadata.get("task_config") or {})

        def scorer(text: str) -> float:
            try:
                return float(ds.score_answer(text, entry))
            except Exception:  # a scorer that chokes on a strange answer has not verified it
                return 0.0

        raw = scorer(answer)
        if raw >= 1.0 and scorer(CANARY) >= 1.0:
            # This task's scorer accepts anything here (e.g. it tests bool(answer)): fall back to an
            # exact match with the oracle answer, or no verification at all.
            oracle = entry.get("answer")
            return 1.0 if oracle is not None and answer.strip() == str(oracle).strip() else 0.0
        return raw

    def score(self, problem: Problem, steps: Sequence[str]) -> float:
        return 1.0 if self.gym_score(problem, steps) >= 1.0 else 0.0

    def verdict(self, problem: Problem, steps: Sequence[str]) -> str:
        if not any(is_answer_step(s) for s in steps):
            return "no answer"
        if self.extract_answer(problem, steps) is None:
            return "malformed answer"
        raw = self.gym_score(problem, steps)
        return "correct" if raw >= 1.0 else f"wrong (task score {raw:.2f})"


@cache
def gym_env_class(task: str) -> type[GymEnv]:
    """The environment class for reasoning-gym task `task`; unknown names are a UserError."""
    names = gym_task_names()
    if task not in names:
        close = difflib.get_close_matches(task, names, n=3)
        hint = f"; did you mean {', '.join('gym:' + c for c in close)}?" if close else \
            "; `selfimprove envs list` shows them all"
        raise UserError(f"unknown reasoning-gym task '{task}'{hint}")
    return type(f"Gym_{task}", (GymEnv,), {
        "name": f"gym:{task}",
        "task": task,
        "description": f"reasoning-gym task '{task}', one step per line, whole-answer scoring",
    })
