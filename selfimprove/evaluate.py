"""Held-out evaluation of a policy: greedy accuracy, maj@k, pass@k (verifier), search accuracy, diversity.

Everything goes through `search.api.run_search`, so evaluation batches like search does: `greedy` is one
path at temperature 0; `best-of-n` draws k full solutions per problem, from which maj@k (majority answer
correct), pass@k (any sample verified correct, the oracle) and the diversity figures (distinct first steps, distinct
answers per problem) are read; the run's own search algorithm (optionally with the value model) gives
search accuracy (with the verifier hidden from the answer choice).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from envs.base import Environment
from envs.progress import SILENT, Progress, Staged
from envs.types import Problem
from search.tree import Tree
from search.types import SearchConfig


def answer_correct(tree: Tree) -> bool:
    """Whether the answer the search chose is verified correct."""
    if tree.answer_node is not None:
        return tree.node(tree.answer_node).correct
    if tree.answer is None:
        return False
    return any(n.correct for n in tree.terminals() if n.answer == tree.answer)


def diversity(tree: Tree) -> tuple[int, int]:
    """(distinct first steps, distinct final answers) among a tree's samples."""
    first = {c.step.strip() for c in tree.children(0)}
    answers = {n.answer for n in tree.terminals() if n.answer is not None}
    return len(first), len(answers)


def tree_tokens(trees: Sequence[Tree]) -> int:
    """Tokens generated to grow these trees (every non-root node's step tokens)."""
    return sum(n.num_tokens for t in trees for n in t if n.parent is not None)


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def evaluate(env: Environment, problems: list[Problem], policy, *, k: int = 8, temperature: float = 1.0,
             seed: int = 0, max_batch: int = 256, value_model=None, search_algo: str | None = None,
             search_config: SearchConfig | Mapping[str, Any] | None = None,
             progress: Progress = SILENT, runner: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Accuracy figures of `policy` on `problems` (all fractions in [0, 1]) and the compute they took.

    Progress reports carry stage "greedy", "best-of-k", then "search". runner: what searches (default
    `search.api.run_search`; a `selfimprove.ray_search.SearchPool.run_search` fans out over Ray workers).
    """
    from search.api import run_search as local_search
    from search.registry import make_config

    run_search = runner or local_search

    out: dict[str, Any] = {"problems": len(problems), "k": k}
    t0 = time.perf_counter()
    greedy = run_search(env, problems, policy, None, algo="greedy", config={}, seed=seed, max_batch=max_batch,
                        progress=Staged(progress, "greedy")).trees
    out["greedy_acc"] = _mean([answer_correct(t) for t in greedy])
    out["greedy_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sampled = run_search(env, problems, policy, None, algo="best_of_n",
                         config={"n": k, "temperature": temperature, "vote": "majority"}, seed=seed,
                         max_batch=max_batch,
                         progress=Staged(progress, "best-of-k")).trees
    out["maj_acc"] = _mean([answer_correct(t) for t in sampled])  # the majority vote's answer
    out["pass_acc"] = _mean([any(n.correct for n in t.terminals()) for t in sampled])
    div = [diversity(t) for t in sampled]
    out["distinct_first_steps"] = _mean([d[0] for d in div])
    out["distinct_answers"] = _mean([d[1] for d in div])
    out["sample_s"] = time.perf_counter() - t0
    tokens = tree_tokens(greedy) + tree_tokens(sampled)

    out["search_acc"] = None
    if search_algo is not None:
        t0 = time.perf_counter()
        # Held-out: the answer is chosen blind.
        config = make_config(search_algo, search_config).model_copy(update={"verifier": False})
        searched = run_search(env, problems, policy, value_model, algo=search_algo, config=config,
                              seed=seed, max_batch=max_batch, progress=Staged(progress, "search")).trees
        out["search_acc"] = _mean([answer_correct(t) for t in searched])
        out["search_s"] = time.perf_counter() - t0
        tokens += tree_tokens(searched)
    out["tokens"] = tokens
    return out
