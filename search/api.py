"""`run_search`: search many problems with one policy (and optional value model), batched across problems."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from envs.base import Environment
from envs.progress import Progress
from envs.types import Problem
from search.context import SearchContext
from search.registry import get_algorithm, make_config
from search.scheduler import Scheduler
from search.tree import Tree
from search.types import Policy, ValueModel


@dataclass
class SearchResult:
    """The trees (answer chosen, config, checkpoint and budget use recorded on each) and run statistics."""

    trees: list[Tree]
    stats: dict[str, Any] = field(default_factory=dict)


def tree_score(tree: Tree) -> float:
    """Verifier score of the answer the search returned (0 when it returned none)."""
    if tree.answer_node is None:
        return 0.0
    return float(tree.node(tree.answer_node).score or 0.0)


def run_search(env: Environment, problems: Sequence[Problem], policy: Policy, value_model: ValueModel | None = None,
               *, algo: str = "mcts", config: Mapping[str, Any] | BaseModel | None = None, seed: int = 0,
               max_batch: int = 256, checkpoint: str | None = None,
               progress: Progress | None = None,
               max_active: int | None = None, indices: Sequence[int] | None = None) -> SearchResult:
    """Run algorithm `algo` on every problem; requests of all problems share backend calls.

    `config` is a dict or the algorithm's pydantic config (bad keys are UserErrors). Same seed, same
    trees. `max_active` bounds how many problems are searched at once (default: all). `indices`: each
    problem's position in the whole run when these are a share of it (tree ids and sampling seeds
    depend on it, so a share searched apart builds the trees the whole run would); default 0, 1, ...
    """
    _, fn = get_algorithm(algo)
    cfg = make_config(algo, config)
    checkpoint = checkpoint if checkpoint is not None else (getattr(policy, "checkpoint", "") or None)
    dump = {"algo": algo, **cfg.model_dump(mode="json")}
    searches = []
    trees = []
    positions = list(indices) if indices is not None else range(len(problems))
    if len(positions) != len(problems):
        raise ValueError(f"{len(positions)} indices for {len(problems)} problems")
    for i, p in zip(positions, problems, strict=True):
        tid = hashlib.sha1(f"{p.id}|{algo}|{seed}|{i}|{checkpoint}".encode()).hexdigest()[:12]
        tree = Tree(p, config=dump, checkpoint=checkpoint, tree_id=tid, prompt=env.model_prompt(p),
                    delimiter=env.step_delimiter)
        ctx = SearchContext(i, p, tree, env, cfg, seed=seed, has_value=value_model is not None,
                            checkpoint=checkpoint)
        trees.append(tree)
        searches.append((ctx, fn(ctx)))
    sched = Scheduler(env, policy, value_model, max_batch=max_batch, max_active=max_active,
                      max_step_tokens=cfg.max_step_tokens, progress=progress)
    flagged = env.tampering_count()
    t0 = time.perf_counter()
    sched.run(searches)
    wall = time.perf_counter() - t0
    s = sched.stats
    calls = s["policy_calls"] + s["value_calls"]
    scores = [tree_score(t) for t in trees]
    stats = {
        "algo": algo,
        "problems": len(trees),
        "accuracy": sum(sc >= 1.0 for sc in scores) / len(trees) if trees else 0.0,
        "answered": sum(t.answer is not None for t in trees),
        "nodes": sum(len(t) for t in trees),
        "simulations": sum(t.stats.get("simulations", 0) for t in trees),
        "expansions": s["expansions"],
        "backend_calls": calls,
        "policy_calls": s["policy_calls"],
        "value_calls": s["value_calls"],
        "mean_batch": (s["policy_sequences"] + s["value_sequences"]) / calls if calls else 0.0,
        "tokens": s["tokens"],
        "wall_s": wall,
        "model_s": s["model_s"],
        "score_s": s["score_s"],
        "model_share": s["model_s"] / wall if wall > 0 else 0.0,
        "tampering": env.tampering_count() - flagged,  # solutions the verifier flagged as gaming it
    }
    return SearchResult(trees, stats)
