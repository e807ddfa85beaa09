"""Best-of-N: N independent step-by-step samples from the root, then a vote.

The N paths share nodes where their steps coincide (identical siblings merge); `visits` counts how many of
the N samples pass through a node. Voting: `majority` (answers weighted by sample count), `value`
(weighted by count × (1 + V)/2 from the value model), `verifier` (a verified-correct answer if any sample
found one, else majority — the pass@N oracle, for training-time search), `rerank` (the sample the value
model — e.g. a Tree-PLV step verifier — rates highest: a test-time verifier without references).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from search.algorithms.common import best_node, need_value, set_answer, vote
from search.context import SearchContext
from search.types import Evaluate, Propose, Request, Search, SearchConfig


class BestOfNConfig(SearchConfig):
    n: int = Field(default=8, ge=1, description="Number of sampled solutions.")
    vote: Literal["majority", "value", "verifier", "rerank"] = "majority"


def best_of_n(ctx: SearchContext[BestOfNConfig]) -> Search:
    tree, cfg = ctx.tree, ctx.config
    if cfg.vote in ("value", "rerank"):
        need_value(ctx.has_value, f"best_of_n vote='{cfg.vote}'")
    streams: dict[int, int] = {tree.root.id: cfg.n}  # node id -> samples currently ending there
    tree.root.visits = cfg.n
    while streams and not ctx.out_of_budget():
        by_n: dict[int, list[int]] = {}
        for nid, k in streams.items():
            by_n.setdefault(k, []).append(nid)
        reqs: list[Request] = [Propose(ids, k, cfg.temperature) for k, ids in sorted(by_n.items())]
        results = yield reqs
        streams = {}
        for res in results:
            for child_ids in res:
                for cid in child_ids:
                    child = tree.node(cid)
                    child.visits += 1
                    if not child.terminal:
                        streams[cid] = streams.get(cid, 0) + 1
        ctx.simulations += 1
    terms = [n for n in tree.terminals() if n.visits]
    if cfg.vote in ("value", "rerank"):
        todo = [n.id for n in terms if n.value is None]
        if todo:
            yield [Evaluate(todo)]
        weights = [n.visits * (1.0 + (n.value or 0.0)) / 2.0 for n in terms]  # every value is in by now
    else:
        weights = [float(n.visits) for n in terms]
    if cfg.vote == "rerank":
        answered = [n for n in terms if n.answer is not None]  # a sample that never answered cannot win
        set_answer(tree, max(answered, key=lambda n: (n.value or 0.0, n.visits), default=None))
    elif cfg.vote == "verifier" and any(n.correct for n in terms):
        set_answer(tree, best_node([n for n in terms if n.correct], lambda n: (n.visits,), cfg))
    else:
        set_answer(tree, vote(terms, weights))
