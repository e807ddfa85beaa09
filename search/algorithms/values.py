"""Node values and their backup: one function says how good a node looks, the backups carry leaf values up.

`node_value` is the only place a node's evidence (verdict, step check, value model, prior) becomes a
number; what differs between its uses (beam and DFS ranking, MCTS's unvisited children, MCTS's leaves) are
keyword arguments, bound once per search with `node_estimator` (a `functools.partial`). Everything here
works on plain `Node` records because it runs once per node per simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

from search.tree import Node, Tree
from search.types import SearchConfig


class Scored(Protocol):
    """A tree node or an off-tree rollout step: anything the verifier scored."""

    @property
    def score(self) -> float | None: ...


def verdict_value(node: Scored, cfg: SearchConfig) -> float:
    """+correct_value for a verified-correct terminal (score 1), wrong_value otherwise."""
    return cfg.correct_value if node.score is not None and node.score >= 1.0 else cfg.wrong_value


def prior_estimate(node: Node) -> float:
    """A value in (-1, 1] from the step's own likelihood, for when there is no value model: 2·p̄ − 1."""
    n = max(1, node.num_tokens)
    return 2.0 * math.exp(node.logprob / n) - 1.0


def node_value(node: Node, *, verifier: bool, correct_value: float, wrong_value: float, use_value: bool = True,
               default: float | None = None, open_terminal: float | None = None) -> float:
    """How good `node` looks, from the first evidence that applies:

    1. a terminal's verdict (correct_value / wrong_value), when the verifier may be used and it was scored;
    2. with `open_terminal` set, any other terminal: its value estimate, else `open_terminal`;
    3. wrong_value for a step the env's check rejected;
    4. its value-model estimate, when `use_value` and it has one;
    5. `default`, or (None) its prior estimate 2·p̄ − 1.
    """
    if node.terminal:
        if verifier and node.score is not None:
            return correct_value if node.score >= 1.0 else wrong_value
        if open_terminal is not None:
            return node.value if node.value is not None else open_terminal
    if node.check is False:
        return wrong_value
    if use_value and node.value is not None:
        return node.value
    return prior_estimate(node) if default is None else default


def node_estimator(cfg: SearchConfig, *, use_value: bool = True, default: float | None = None,
                   open_terminal: float | None = None) -> Callable[[Node], float]:
    """`node_value` with the config's verdict values and these knobs bound (see `node_value`)."""
    return partial(node_value, verifier=cfg.verifier, correct_value=cfg.correct_value,
                   wrong_value=cfg.wrong_value, use_value=use_value, default=default, open_terminal=open_terminal)


# --- backup -----------------------------------------------------------------------------------------


def backup_mean(path: Sequence[Node], v: float) -> None:
    """Running mean: every node on the path gets one more visit and the leaf value added to its sum."""
    for node in path:
        node.visits += 1
        node.value_sum += v


def backup_mcts_dpo(tree: Tree, path: Sequence[Node], v: float, v0: dict[int, float], gamma: float) -> None:
    """MCTS-DPO backup. v0[node] is the node's own value (its leaf value at first visit).

    Edge reward r(c) = v0(c) − v0(parent); Q(c) = r(c) + gamma · V(c); V(node) = visit-weighted mean of
    its visited children's Q, or v0(node) while it has none. Q is stored as value_sum = Q · visits so
    `node.q` reads it; the reward goes to `node.reward`.
    """
    leaf = path[-1]
    v0.setdefault(leaf.id, v)
    children = tree.children
    for node in reversed(path):
        node.visits += 1
        s = n = 0.0
        for c in children(node.id):
            if c.visits:
                s += c.value_sum
                n += c.visits
        big_v = s / n if n else v0[node.id]
        if node.parent is None:
            node.value_sum = big_v * node.visits
        else:
            r = v0[node.id] - v0.get(node.parent, 0.0)
            node.reward = r
            node.value_sum = (r + gamma * big_v) * node.visits
