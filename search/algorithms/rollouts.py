"""MCTS rollouts: from each leaf of a round, one step at a time until a verdict, for all leaves together.

A rollout ends at a terminal (its verdict) or at a step the env's check rejected (wrong_value). With
`keep` each step is a `Propose(n=1)` on the tree, so rollout steps become (unvisited) nodes and a correct
ending a rollout finds is an answer the search can return. Greedy rollouts (temperature 0) are
deterministic, so each node's greedy next step and the verdict reached from it are cached (`GreedyCache`,
one per search) and never generated twice. Without `keep` rollouts are off-tree (`Extend`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from search.algorithms.values import verdict_value
from search.tree import Node, Tree
from search.types import Extend, Propose, RolloutStep, SearchConfig


@dataclass
class GreedyCache:
    """What greedy (temperature-0) rollouts learnt: a node's next step, and the verdict reached from it."""

    next: dict[int, int] = field(default_factory=dict)
    verdict: dict[int, float] = field(default_factory=dict)


class Rollouts:
    """The rollouts of one round: `request()` the next step of every unfinished one, `receive()` the results
    (the scheduler's answer to that request), until `verdicts` holds every leaf's."""

    def __init__(self, tree: Tree, leaves: list[Node], cfg: SearchConfig, *, keep: bool, temperature: float,
                 cache: GreedyCache):
        self.tree = tree
        self.cfg = cfg
        self.keep = keep
        self.temperature = temperature
        self.greedy = temperature == 0
        self.cache = cache
        self.verdicts: dict[int, float] = {}
        self.cur: dict[int, int] = {leaf.id: leaf.id for leaf in leaves}         # keep: leaf -> node
        self.chain: dict[int, list[int]] = {leaf.id: [leaf.id] for leaf in leaves}
        self.off: dict[int, list[str]] = {} if keep else {leaf.id: tree.steps(leaf.id) for leaf in leaves}
        self.asked: list[int] = []

    def _ending(self, x: Node | RolloutStep) -> float | None:
        """The rollout's verdict if it ends at `x` (a tree node or an off-tree step): a terminal's verdict,
        wrong_value at a step the env's check rejected; None while it goes on."""
        if x.terminal:
            return verdict_value(x, self.cfg)
        return self.cfg.wrong_value if x.check is False else None

    def _done(self, lid: int, v: float) -> None:
        self.verdicts[lid] = v
        if self.keep and self.greedy:
            for i in self.chain[lid]:
                self.cache.verdict[i] = v
        self.cur.pop(lid, None)
        self.off.pop(lid, None)

    def request(self) -> Propose | Extend | None:
        """The next step of every unfinished rollout, or None when all have ended."""
        if not self.keep:
            self.asked = list(self.off)
            return Extend(list(self.off.values()), self.temperature) if self.off else None
        node, cache = self.tree.node, self.cache
        for lid in list(self.cur):  # walk what is already known without asking the model
            i = self.cur[lid]
            while True:
                v = self._ending(node(i))
                if v is not None:
                    self._done(lid, v)
                    break
                if self.greedy and i in cache.verdict:
                    self._done(lid, cache.verdict[i])
                    break
                nxt = cache.next.get(i) if self.greedy else None
                if nxt is None:
                    self.cur[lid] = i
                    break
                i = nxt
                self.chain[lid].append(i)
        self.asked = list(self.cur)
        if not self.asked:
            return None
        return Propose([self.cur[lid] for lid in self.asked], 1, self.temperature)

    def receive(self, res: list) -> None:
        """The scheduler's result for the last `request()`: child ids (kept) or RolloutSteps (off-tree)."""
        if not self.keep:
            for lid, step in zip(self.asked, res, strict=True):
                v = self._ending(step)
                if v is not None:
                    self._done(lid, v)
                else:
                    self.off[lid].append(step.text)
            return
        for lid, ids in zip(self.asked, res, strict=True):
            if self.greedy:
                self.cache.next[self.cur[lid]] = ids[0]
            self.cur[lid] = ids[0]
            self.chain[lid].append(ids[0])
            v = self._ending(self.tree.node(ids[0]))
            if v is not None:
                self._done(lid, v)
