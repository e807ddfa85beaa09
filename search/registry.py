"""Search algorithms by name, each with its pydantic config class; the one place a name is checked."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from envs.errors import UserError, pydantic_message
from search.algorithms.beam import BeamConfig, beam
from search.algorithms.best_of_n import BestOfNConfig, best_of_n
from search.algorithms.dfs import DFSConfig, dfs
from search.algorithms.greedy import GreedyConfig, greedy
from search.algorithms.mcts import MCTSConfig, mcts
from search.context import SearchContext
from search.types import Search, SearchConfig

Algorithm = Callable[[SearchContext[Any]], Search]

ALGORITHMS: dict[str, tuple[type[SearchConfig], Algorithm]] = {
    "mcts": (MCTSConfig, mcts),
    "beam": (BeamConfig, beam),
    "dfs": (DFSConfig, dfs),
    "best_of_n": (BestOfNConfig, best_of_n),
    "greedy": (GreedyConfig, greedy),
}


def unknown_algorithm(name: str, noun: str = "search algorithm") -> str | None:
    """None when `name` is a registered algorithm; else why not, naming the closest one and all known."""
    if name in ALGORITHMS:
        return None
    close = difflib.get_close_matches(name, list(ALGORITHMS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {noun} '{name}'{hint}; known: {', '.join(ALGORITHMS)}"


def get_algorithm(name: str) -> tuple[type[SearchConfig], Algorithm]:
    """The config class and function of algorithm `name`; an unknown name is a UserError."""
    why = unknown_algorithm(name)
    if why is not None:
        raise UserError(why)
    return ALGORITHMS[name]


def make_config(name: str, config: Mapping[str, Any] | BaseModel | None = None) -> SearchConfig:
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
