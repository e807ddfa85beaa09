"""`SearchContext`: what an algorithm sees of its problem while it searches (tree, env, config, budgets, rng)."""

from __future__ import annotations

import time
from typing import Generic, TypeVar, cast

import numpy as np

from envs.base import Environment
from envs.types import Problem
from search.tree import Tree
from search.types import ProcessCheckConfig, SearchConfig

C = TypeVar("C", bound=SearchConfig)


class SearchContext(Generic[C]):
    """One problem's search: the tree, the env, its config, budgets, and a seeded rng.

    Plain attributes only (read in the hot path; `max_depth`, `prior_alpha`, the budgets and `step_check`
    are the config's, copied once). `tokens` and `simulations` are what the problem used;
    `out_of_budget()` says when the token or wall-time budget is spent (the current round may overshoot
    by the tokens it already asked for). Without a config (tests driving the scheduler by hand) the
    knobs are `SearchConfig`'s defaults.
    """

    __slots__ = (
        "_rng",
        "checkpoint",
        "config",
        "env",
        "has_value",
        "index",
        "log_mass",
        "max_depth",
        "prior_alpha",
        "problem",
        "round",
        "seed",
        "simulations",
        "start",
        "step_check",
        "token_budget",
        "tokens",
        "tree",
        "wall_budget_s",
    )

    def __init__(self, index: int, problem: Problem, tree: Tree, env: Environment, config: C | None = None,
                 *, seed: int = 0, has_value: bool = False, checkpoint: str | None = None):
        knobs = config if config is not None else cast(C, SearchConfig.model_validate({}))
        self.index = index
        self.problem = problem
        self.tree = tree
        self.env = env
        self.config: C = knobs
        self.seed = seed
        self.has_value = has_value
        self.checkpoint = checkpoint
        self._rng: np.random.Generator | None = None
        self.max_depth = knobs.max_depth
        self.prior_alpha = knobs.prior_alpha
        self.token_budget = knobs.token_budget
        self.wall_budget_s = knobs.wall_budget_s
        self.step_check = isinstance(knobs, ProcessCheckConfig) and knobs.step_check
        self.tokens = 0
        self.simulations = 0
        self.round = 0
        self.start = time.perf_counter()
        self.log_mass: dict[int, float] = {}  # unnormalised log prior mass per child (merged duplicates summed)

    @property
    def rng(self) -> np.random.Generator:
        """numpy Generator seeded from (search seed, problem index); made on first use (it costs ~0.3 ms)."""
        if self._rng is None:
            self._rng = np.random.default_rng([self.seed, self.index])
        return self._rng

    def out_of_budget(self) -> bool:
        if self.token_budget is not None and self.tokens >= self.token_budget:
            return True
        return self.wall_budget_s is not None and time.perf_counter() - self.start >= self.wall_budget_s
