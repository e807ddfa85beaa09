"""Math and knobs the algorithms share: the base config, node estimates, selection scores, backups, voting.

Everything here works on plain `Node` records (no pydantic, no networkx) because it runs once per node per
simulation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from envs.errors import UserError
from search.tree import Node, Tree


class SearchConfig(BaseModel):
    """Knobs every algorithm has. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0, description="Sampling temperature of proposed steps (0 = greedy).")
    max_step_tokens: int = Field(48, ge=1, description="Longest step the policy may generate, in tokens.")
    max_depth: int = Field(16, ge=1, description="A node at this depth is terminal.")
    prior_alpha: float = Field(1.25, ge=0, description="Prior = exp(sum logprob / len^alpha), normalised.")
    verifier: bool = Field(True, description="The search may use the verifier's verdict on terminal nodes "
                                             "(training-time search with references); False at test time.")
    correct_value: float = Field(1.0, description="Value of a verified-correct terminal.")
    wrong_value: float = Field(-1.0, description="Value of a wrong terminal (MCTS-DPO: -1 or -0.5).")
    token_budget: int | None = Field(None, ge=1, description="Generated-token budget per problem.")
    wall_budget_s: float | None = Field(None, gt=0, description="Wall-time budget per problem, seconds.")


class ProcessCheckConfig(SearchConfig):
    """SearchConfig plus the env's process verifier, for the algorithms that act on a wrong step."""

    step_check: bool = Field(False, description="Check every new step with the env's process verifier "
                                                "(`check_step`, e.g. arithmetic's calculator check): a step "
                                                "it marks wrong is a dead end valued wrong_value, never "
                                                "expanded, and a rollout stops there. No effect on envs "
                                                "without a checker.")


def verdict_value(node: Any, cfg: SearchConfig) -> float:
    """+correct_value for a verified-correct terminal (score 1), wrong_value otherwise."""
    return cfg.correct_value if node.score is not None and node.score >= 1.0 else cfg.wrong_value


def prior_estimate(node: Node) -> float:
    """A value in (-1, 1] from the step's own likelihood, for when there is no value model: 2·p̄ − 1."""
    n = max(1, node.num_tokens)
    return 2.0 * math.exp(node.logprob / n) - 1.0


def estimate(node: Node, cfg: SearchConfig) -> float:
    """How good a node looks: the verdict (terminal, verifier on), else wrong_value for a step the env's
    check rejected, else the value model, else the prior."""
    if node.terminal and cfg.verifier and node.score is not None:
        return verdict_value(node, cfg)
    if node.check is False:
        return cfg.wrong_value
    if node.value is not None:
        return node.value
    return prior_estimate(node)


# --- selection --------------------------------------------------------------------------------------


def puct(q: float, prior: float, n_parent: float, n: float, w: float) -> float:
    """PUCT with a constant: Q + w · P · sqrt(N(parent)) / (1 + N)."""
    return q + w * prior * math.sqrt(n_parent) / (1.0 + n)


def alphazero_w(n_parent: float, c_init: float = 1.25, c_base: float = 19652.0) -> float:
    """AlphaZero's exploration weight: c_init + log((N(parent) + c_base + 1) / c_base)."""
    return c_init + math.log((n_parent + c_base + 1.0) / c_base)


def uct(q: float, n_parent: float, n: float, c: float) -> float:
    """UCT: Q + c · sqrt(ln N(parent) / N); +inf for an unvisited child."""
    if n <= 0:
        return math.inf
    return q + c * math.sqrt(math.log(max(n_parent, 1.0)) / n)


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
    kids_of = tree._kids
    for node in reversed(path):
        node.visits += 1
        s = n = 0.0
        for c in kids_of[node.id]:
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


# --- answers ----------------------------------------------------------------------------------------


def terminals_below(tree: Tree, i: int) -> list[Node]:
    """Terminal nodes in the subtree of `i` (inclusive), in id order."""
    out, stack, kids = [], [i], tree._kids
    while stack:
        j = stack.pop()
        node = tree._nodes[j]
        if node.terminal:
            out.append(node)
        stack.extend(c.id for c in kids[j])
    return sorted(out, key=lambda n: n.id)


def best_node(nodes: Iterable[Node], key, cfg: SearchConfig) -> Node | None:
    """The max of `nodes` by `key`, verified-correct first when the search may use the verifier."""
    nodes = list(nodes)
    if not nodes:
        return None
    if cfg.verifier:
        return max(nodes, key=lambda n: (n.correct, *key(n)))
    return max(nodes, key=key)


def vote(terminals: Sequence[Node], weights: Sequence[float]) -> Node | None:
    """Answer with the largest total weight (ties: first seen); returns its heaviest terminal node."""
    totals: dict[str, float] = {}
    heaviest: dict[str, tuple[float, Node]] = {}
    for node, w in zip(terminals, weights, strict=True):
        if node.answer is None:
            continue
        totals[node.answer] = totals.get(node.answer, 0.0) + w
        if node.answer not in heaviest or w > heaviest[node.answer][0]:
            heaviest[node.answer] = (w, node)
    if not totals:
        return None
    best = max(totals, key=lambda a: totals[a])  # max keeps the first of equal totals (insertion order)
    return heaviest[best][1]


def set_answer(tree: Tree, node: Node | None) -> None:
    tree.answer_node = None if node is None else node.id
    tree.answer = None if node is None else node.answer


def need_value(has_value: bool, why: str) -> None:
    if not has_value:
        raise UserError(f"{why} needs a value model (pass --value DIR / value_model=...)")
