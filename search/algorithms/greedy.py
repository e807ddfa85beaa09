"""Greedy decoding step by step: one path at temperature 0, the baseline every comparison includes."""

from __future__ import annotations

from search.algorithms.common import set_answer
from search.context import SearchContext
from search.types import Propose, Search, SearchConfig


class GreedyConfig(SearchConfig):
    temperature: float = 0.0


def greedy(ctx: SearchContext[GreedyConfig]) -> Search:
    """Extend the single path with the policy's top step until a terminal node (or a budget) is reached."""
    tree, cfg = ctx.tree, ctx.config
    node = tree.root
    node.visits = 1
    while not node.terminal and not ctx.out_of_budget():
        (ids,), = yield [Propose([node.id], 1, cfg.temperature)]
        node = tree.node(ids[0])
        node.visits += 1
        ctx.simulations += 1
    set_answer(tree, node if node.terminal else None)
