"""Preference data from search trees: records (pairs, ranked lists), strategies, and `extract`."""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from envs.base import Environment
from envs.errors import UserError, pydantic_message
from search.tree import Tree
from selfimprove.pairs.records import PreferenceList, PreferencePair, Record, read_records, write_records
from selfimprove.pairs.strategies import STRATEGIES, StrategyConfig

__all__ = ["STRATEGIES", "PreferenceList", "PreferencePair", "Record", "extract", "make_config",
           "read_records", "write_records"]


def make_config(strategy: str, config: StrategyConfig | dict[str, Any] | None = None) -> StrategyConfig:
    """The strategy's validated config; an unknown strategy or knob is a UserError."""
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy '{strategy}' (choose from: {', '.join(STRATEGIES)})")
    cls = STRATEGIES[strategy].config
    if isinstance(config, cls):
        return config
    if isinstance(config, StrategyConfig):
        config = config.model_dump()
    try:
        return cls(**(config or {}))
    except ValidationError as e:
        raise UserError(pydantic_message(e, f"strategy '{strategy}'")) from None


def extract(trees: Iterable[Tree], strategy: str = "q-gap", config: StrategyConfig | dict | None = None, *,
            iteration: int = 0, seed: int = 0, env: Environment | None = None) -> tuple[list[Record], dict[str, Any]]:
    """Records from every tree (deduplicated, in tree order) and their stats.

    env: the environment a strategy with a process verifier (step-check) judges steps with, unless its
    config names another. stats: strategy, trees, count, duplicates (dropped), mean_margin (pairs:
    margin; lists: best minus worst score), depth_histogram {depth: count}.
    """
    cfg = make_config(strategy, config)
    fn = STRATEGIES[strategy].fn
    if STRATEGIES[strategy].needs_env:
        fn = functools.partial(fn, env=_strategy_env(strategy, cfg, env))
    records: list[Record] = []
    seen: set[tuple] = set()
    n_trees = dups = 0
    for tree in trees:
        n_trees += 1
        # Sampling is seeded by the problem, not the tree id: ids hash the checkpoint path, which holds the
        # run's name, and renaming a run must not change its pairs.
        for rec in fn(tree, cfg, random.Random(f"{seed}:{tree.problem.id}")):
            if rec.key in seen:
                dups += 1
                continue
            seen.add(rec.key)
            rec.iteration = iteration
            records.append(rec)
    margins = [r.margin if isinstance(r, PreferencePair) else r.scores[0] - r.scores[-1] for r in records]
    depths = Counter(r.depth for r in records)
    stats = {
        "strategy": strategy,
        "trees": n_trees,
        "count": len(records),
        "duplicates": dups,
        "mean_margin": sum(margins) / len(margins) if margins else 0.0,
        "depth_histogram": {str(d): depths[d] for d in sorted(depths)},
    }
    return records, stats


def _strategy_env(strategy: str, cfg: StrategyConfig, env: Environment | None) -> Environment:
    """The environment the config names (built once per extract), else the one handed in."""
    name = getattr(cfg, "env", None)
    if name is not None:
        from envs.registry import make_env

        return make_env(name, getattr(cfg, "knobs", {}))
    if env is None:
        raise UserError(f"strategy '{strategy}': field 'env': an environment with check_step is needed")
    return env
