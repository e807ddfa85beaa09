"""Step-level beam search / ToT-BFS: keep the top-k partial solutions by value at each depth.

Each round every beam proposes `expand_n` steps; the new non-terminal children are ranked by the value
model (or, without one, by their own likelihood) and the best `beam_width` continue (with `step_check`,
steps the env's process verifier rejects are dropped). Terminal children are collected; the search stops
when `beam_width` of them are finished, when the verifier (if allowed) confirms one, or when no beam is
left. The answer is the best finished node by value.
"""

from __future__ import annotations

from pydantic import Field

from search.algorithms.common import best_node, set_answer
from search.algorithms.values import node_estimator
from search.context import SearchContext
from search.types import Evaluate, ProcessCheckConfig, Propose, Search


class BeamConfig(ProcessCheckConfig):
    beam_width: int = Field(default=4, ge=1, description="Partial solutions kept per depth (k).")
    expand_n: int = Field(default=4, ge=1, description="Steps proposed per beam.")


def beam(ctx: SearchContext[BeamConfig]) -> Search:
    tree, cfg = ctx.tree, ctx.config
    estimate = node_estimator(cfg)
    beams = [tree.root]
    finished = []
    while beams and not ctx.out_of_budget():
        for b in beams:
            b.visits += 1
        (res,) = yield [Propose([b.id for b in beams], cfg.expand_n, cfg.temperature)]
        ctx.simulations += 1
        cands = [tree.node(i) for i in dict.fromkeys(i for ids in res for i in ids)]
        if ctx.has_value:
            todo = [c.id for c in cands if c.value is None and not (c.terminal and cfg.verifier)]
            if todo:
                yield [Evaluate(todo)]
        terms = [c for c in cands if c.terminal]
        for t in terms:
            t.visits += 1
        finished += terms
        if len(finished) >= cfg.beam_width or (cfg.verifier and any(t.correct for t in terms)):
            break
        live = (c for c in cands if not c.terminal and c.check is not False)
        open_ = sorted(live, key=lambda c: -estimate(c))
        beams = open_[:cfg.beam_width]
    set_answer(tree, best_node(finished, lambda n: (estimate(n),), cfg))
