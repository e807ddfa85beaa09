"""Depth-first search with backtracking (ToT-DFS): follow the best child, prune children valued below a
threshold (with `step_check`, steps the env's process verifier rejects are valued wrong_value), back up to
the next candidate when a branch is pruned or ends wrong.

Stops at the first acceptable terminal (verified correct when the verifier may be used, else valued at or
above `threshold`), or after `max_expansions` expansions; the answer is the best terminal seen.
"""

from __future__ import annotations

from pydantic import Field

from search.algorithms.common import best_node, set_answer
from search.algorithms.values import node_estimator
from search.context import SearchContext
from search.types import Evaluate, ProcessCheckConfig, Propose, Search


class DFSConfig(ProcessCheckConfig):
    expand_n: int = Field(default=4, ge=1, description="Steps proposed per expansion.")
    threshold: float = Field(default=0.0, description="Children valued below this are pruned (backtracking).")
    max_expansions: int = Field(default=32, ge=1, description="Expansion budget per problem.")


def dfs(ctx: SearchContext[DFSConfig]) -> Search:
    tree, cfg = ctx.tree, ctx.config
    estimate = node_estimator(cfg)
    stack = [tree.root]
    seen = []
    expansions = 0
    while stack and expansions < cfg.max_expansions and not ctx.out_of_budget():
        node = stack.pop()
        node.visits += 1
        if node.terminal:
            seen.append(node)
            if (node.correct if cfg.verifier else estimate(node) >= cfg.threshold):
                break
            continue
        (res,) = yield [Propose([node.id], cfg.expand_n, cfg.temperature)]
        expansions += 1
        ctx.simulations += 1
        kids = [tree.node(i) for i in dict.fromkeys(res[0])]
        if ctx.has_value:
            todo = [c.id for c in kids if c.value is None and not (c.terminal and cfg.verifier)]
            if todo:
                yield [Evaluate(todo)]
        for c in kids:
            if c.terminal and estimate(c) < cfg.threshold:
                seen.append(c)  # a wrong ending: recorded, not followed
        good = [c for c in kids if c.check is not False and estimate(c) >= cfg.threshold]
        stack.extend(sorted(good, key=estimate))  # best on top (stable for ties)
    set_answer(tree, best_node(seen, lambda n: (estimate(n),), cfg))
