"""Search algorithms by name, each with its pydantic config class."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from envs.errors import UserError, pydantic_message
from search.algorithms.beam import BeamConfig, beam
from search.algorithms.best_of_n import BestOfNConfig, best_of_n
from search.algorithms.common import SearchConfig
from search.algorithms.dfs import DFSConfig, dfs
from search.algorithms.greedy import GreedyConfig, greedy
from search.algorithms.mcts import MCTSConfig, mcts
from search.scheduler import Search, SearchContext

Algorithm = Callable[[SearchContext], Search]

ALGORITHMS: dict[str, tuple[type[SearchConfig], Algorithm]] = {
    "mcts": (MCTSConfig, mcts),
    "beam": (BeamConfig, beam),
    "dfs": (DFSConfig, dfs),
    "best_of_n": (BestOfNConfig, best_of_n),
    "greedy": (GreedyConfig, greedy),
}


def get_algorithm(name: str) -> tuple[type[SearchConfig], Algorithm]:
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, list(ALGORITHMS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown search algorithm '{name}'{hint}; known: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def make_config(name: str, config: dict[str, Any] | BaseModel | None = None) -> SearchConfig:
    """Validate `config` (a dict, or the algorithm's config object) for algorithm `name`."""
    cls, _ = get_algorithm(name)
    if isinstance(config, cls):
        return config
    if isinstance(config, BaseModel):
        config = config.model_dump()
    try:
        return cls(**(config or {}))
    except ValidationError as e:
        raise UserError(pydantic_message(e, f"search config for '{name}'")) from None
