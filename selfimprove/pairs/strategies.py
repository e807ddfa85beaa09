"""Strategies that turn search trees into preference records; each has a pydantic config.

Shared vocabulary: a *decision point* is a node whose children are compared; the record's prompt renders
the path to it (``tree.prefix_text``: the prompt + each step + the tree's delimiter) and a completion is
the compared child's step + delimiter (+ its best continuation by Q down to a leaf when ``continuation``
is on; ``tree.nodes_text``: no delimiter after a step cut at max_step_tokens). A node *reaches
correct* when its subtree holds a verified-correct terminal, and is *dead* when its subtree holds
terminals but none correct.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from envs.base import Environment
from search.tree import Node, Tree
from selfimprove.pairs.records import PreferenceList, PreferencePair, Record


class StrategyConfig(BaseModel):
    """Knobs every strategy has."""

    model_config = ConfigDict(extra="forbid")

    continuation: bool = Field(default=False, description="Append each compared step's best continuation (by Q).")
    min_visits: int = Field(default=1, ge=0, description="Compared children need at least this many visits.")


# --- tree helpers -----------------------------------------------------------------------------------
def _order(n: Node) -> tuple:
    """Sort key: best first by Q, then visits, then creation order (deterministic)."""
    return (-n.q, -n.visits, n.id)


def best_continuation(tree: Tree, node_id: int) -> list[Node]:
    """Greedy descent by Q (ties: visits, id) from below `node_id` to a leaf."""
    out: list[Node] = []
    kids = tree.children(node_id)
    while kids:
        out.append(min(kids, key=_order))
        kids = tree.children(out[-1].id)
    return out


def item_nodes(tree: Tree, node: Node, cfg: StrategyConfig) -> list[Node]:
    return [node, *best_continuation(tree, node.id)] if cfg.continuation else [node]


def completion(tree: Tree, node: Node, cfg: StrategyConfig) -> str:
    return tree.nodes_text(item_nodes(tree, node, cfg))


def decision_points(tree: Tree, where: str, min_parent_visits: int) -> list[Node]:
    """Nodes on the answer path (all but its last node), or every node with enough visits."""
    if where == "path":
        return tree.answer_path()[:-1]
    return [n for n in tree if len(tree.children(n.id)) > 1 and n.visits >= min_parent_visits]


def make_pair(tree: Tree, cfg: StrategyConfig, strategy: str, parent: int, chosen: Node, rejected: Node,
              *, margin: float, weight: float = 1.0, eps: float = 0.0) -> PreferencePair:
    return PreferencePair(
        strategy=strategy, prompt=tree.prefix_text(parent), delimiter=tree.delimiter,
        chosen=completion(tree, chosen, cfg), rejected=completion(tree, rejected, cfg),
        margin=margin, weight=weight, eps=eps, tree_id=tree.id, problem_id=tree.problem.id,
        prefix_node=parent, chosen_node=chosen.id, rejected_node=rejected.id, checkpoint=tree.checkpoint,
        depth=chosen.depth,
    )


def visit_eps(n_chosen: int, n_rejected: int) -> float:
    """Visit-count label smoothing: min(1 − 1/(1 + N_rejected / max(1, N_chosen)), 0.5)."""
    return min(1.0 - 1.0 / (1.0 + n_rejected / max(1, n_chosen)), 0.5)


# --- strategies -------------------------------------------------------------------------------------
class QGapConfig(StrategyConfig):
    """Sibling pairs by Q gap (MCTS-DPO)."""

    nodes: Literal["path", "all"] = Field("path", description="Decision points: answer path, or all nodes.")
    min_parent_visits: int = Field(4, ge=0, description="With nodes=all: decision points need this many visits.")
    rejected: Literal["second", "worst", "random"] = "second"
    min_gap: float = Field(0.1, ge=0.0, description="Keep pairs whose Q gap is at least this.")
    smoothing: bool = Field(True, description="Set eps from visit counts (else eps = 0).")


def q_gap(tree: Tree, cfg: QGapConfig, rng: random.Random) -> list[Record]:
    out: list[Record] = []
    for p in decision_points(tree, cfg.nodes, cfg.min_parent_visits):
        kids = sorted((c for c in tree.children(p.id) if c.visits >= cfg.min_visits), key=_order)
        if len(kids) < 2:
            continue
        best = kids[0]
        if cfg.rejected == "second":
            worse = kids[1]
        elif cfg.rejected == "worst":
            worse = kids[-1]
        else:
            worse = rng.choice(kids[1:])
        gap = best.q - worse.q
        if gap < cfg.min_gap or gap <= 0:
            continue
        eps = visit_eps(best.visits, worse.visits) if cfg.smoothing else 0.0
        out.append(make_pair(tree, cfg, "q-gap", p.id, best, worse, margin=gap, eps=eps))
    return out


class FirstErrorConfig(StrategyConfig):
    """First-error pairs (Step-DPO): the first wrong step of a wrong solution vs a correct sibling."""

    min_visits: int = 0
    judge: Literal["outcome", "q"] = Field(
        "outcome", description="outcome: a step is right when its subtree reaches a correct answer and wrong "
        "when its subtree has terminals but none correct; q: by Q thresholds.")
    good_q: float = Field(0.5, description="judge=q: a step with Q ≥ good_q is right.")
    bad_q: float = Field(0.0, description="judge=q: a step with Q ≤ bad_q is wrong.")


def first_error(tree: Tree, cfg: FirstErrorConfig, rng: random.Random) -> list[Record]:
    counts = tree.outcome_counts()
    if cfg.judge == "outcome":
        def good(n: Node) -> bool:
            return counts[n.id][1] > 0

        def bad(n: Node) -> bool:
            return counts[n.id][0] > 0 and counts[n.id][1] == 0
    else:
        def good(n: Node) -> bool:
            return n.visits >= max(1, cfg.min_visits) and n.q >= cfg.good_q

        def bad(n: Node) -> bool:
            return n.visits >= max(1, cfg.min_visits) and n.q <= cfg.bad_q

    out: list[Record] = []
    seen: set[int] = set()
    wrong = sorted((n for n in tree.terminals() if not n.correct and n.score is not None), key=lambda n: n.id)
    for leaf in wrong:
        err = next((n for n in tree.path(leaf.id)[1:] if bad(n)), None)
        if err is None or err.id in seen or err.parent is None:  # a step below the root has a parent
            continue
        seen.add(err.id)
        right = sorted((s for s in tree.siblings(err.id) if good(s) and s.visits >= cfg.min_visits), key=_order)
        if right:
            out.append(make_pair(tree, cfg, "first-error", err.parent, right[0], err, margin=right[0].q - err.q))
    return out


class SelectedVsPrunedConfig(StrategyConfig):
    """Selected vs pruned (CPO): each step of the selected path beats its siblings."""

    min_visits: int = 0
    require_correct: bool = Field(True, description="Only use trees whose selected answer is verified correct.")


def selected_vs_pruned(tree: Tree, cfg: SelectedVsPrunedConfig, rng: random.Random) -> list[Record]:
    path = tree.answer_path()
    if cfg.require_correct and not path[-1].correct:
        return []
    out: list[Record] = []
    for node in path[1:]:
        for sib in sorted(tree.siblings(node.id), key=lambda n: n.id):
            if sib.visits >= cfg.min_visits and node.parent is not None:  # below the root: it has one
                out.append(make_pair(tree, cfg, "selected-vs-pruned", node.parent, node, sib,
                                     margin=node.q - sib.q))
    return out


class SubtreeOutcomeConfig(StrategyConfig):
    """Process-preference pairs (rStar-Math): children reaching a correct answer vs children that cannot."""

    min_visits: int = 0
    top_k: int = Field(2, ge=1, description="Positives: top-k by Q; negatives: bottom-k by Q.")


def subtree_outcome(tree: Tree, cfg: SubtreeOutcomeConfig, rng: random.Random) -> list[Record]:
    counts = tree.outcome_counts()
    out: list[Record] = []
    for p in sorted(tree, key=lambda n: n.id):
        kids = [c for c in tree.children(p.id) if c.visits >= cfg.min_visits]
        pos = sorted((c for c in kids if counts[c.id][1] > 0), key=_order)[: cfg.top_k]
        neg = sorted((c for c in kids if counts[c.id][0] > 0 and counts[c.id][1] == 0), key=_order)
        neg = neg[::-1][: cfg.top_k]  # lowest Q first
        if not pos or not neg:
            continue
        w = 1.0 / (len(pos) * len(neg))
        for a, b in itertools.product(pos, neg):
            out.append(make_pair(tree, cfg, "subtree-outcome", p.id, a, b, margin=a.q - b.q, weight=w))
    return out


class RankedListConfig(StrategyConfig):
    """Ranked lists of continuations under a decision point (TPO)."""

    continuation: bool = True
    nodes: Literal["path", "all"] = "path"
    min_parent_visits: int = Field(4, ge=0)
    min_items: int = Field(2, ge=2)
    max_items: int = Field(8, ge=2)
    min_gap: float = Field(0.0, ge=0.0, description="Best minus worst score must exceed this.")


def ranked_list(tree: Tree, cfg: RankedListConfig, rng: random.Random) -> list[Record]:
    out: list[Record] = []
    for p in decision_points(tree, cfg.nodes, cfg.min_parent_visits):
        kids = sorted((c for c in tree.children(p.id) if c.visits >= cfg.min_visits), key=_order)
        kids = kids[: cfg.max_items]
        if len(kids) < cfg.min_items or kids[0].q - kids[-1].q <= cfg.min_gap:
            continue
        items = [item_nodes(tree, k, cfg) for k in kids]
        out.append(PreferenceList(
            strategy="ranked-list", prompt=tree.prefix_text(p.id), delimiter=tree.delimiter,
            completions=[tree.steps_text(n.step for n in it) for it in items],
            steps=[[n.step for n in it] for it in items], scores=[k.q for k in kids],
            step_rewards=[[n.q for n in it] for it in items], node_ids=[k.id for k in kids],
            tree_id=tree.id, problem_id=tree.problem.id, prefix_node=p.id, checkpoint=tree.checkpoint,
            depth=p.depth + 1,
        ))
    return out


class OutcomeConfig(StrategyConfig):
    """Whole solutions: verified-correct vs wrong terminals of the same problem (the baseline)."""

    min_visits: int = 0
    max_pairs_per_tree: int = Field(4, ge=1)


def outcome(tree: Tree, cfg: OutcomeConfig, rng: random.Random) -> list[Record]:
    terms = sorted((n for n in tree.terminals() if n.score is not None and n.visits >= cfg.min_visits),
                   key=lambda n: n.id)
    right = [n for n in terms if n.correct]
    wrong = [n for n in terms if not n.correct]
    combos = list(itertools.product(right, wrong))
    if len(combos) > cfg.max_pairs_per_tree:
        combos = sorted(rng.sample(combos, cfg.max_pairs_per_tree), key=lambda ab: (ab[0].id, ab[1].id))
    return [PreferencePair(
        strategy="outcome", prompt=tree.prompt, delimiter=tree.delimiter, chosen=tree.nodes_text(tree.path(a.id)[1:]),
        rejected=tree.nodes_text(tree.path(b.id)[1:]), margin=(a.score or 0.0) - (b.score or 0.0),
        tree_id=tree.id, problem_id=tree.problem.id, prefix_node=0, chosen_node=a.id, rejected_node=b.id,
        checkpoint=tree.checkpoint, depth=1,
    ) for a, b in combos]


class StepCheckConfig(StrategyConfig):
    """Sibling pairs judged by the environment's process verifier (``env.check_step``)."""

    min_visits: int = 0
    env: str | None = Field(None, description="Environment whose check_step judges steps (default: the env "
                            "`extract` is handed, the run's in the loop).")
    knobs: dict = Field(default_factory=dict, description="That environment's knobs.")
    max_pairs_per_node: int = Field(2, ge=1, description="Wrong siblings paired with the best right one.")


def step_check(tree: Tree, cfg: StepCheckConfig, rng: random.Random, env: Environment) -> list[Record]:
    """At every node with children, the best verified-right child (by Q) vs its verified-wrong siblings.

    A child is right when ``env.check_step`` says True, wrong when it says False; None (the checker cannot
    judge) leaves the child out. Wrong siblings: lowest Q first.
    """
    out: list[Record] = []
    for p in sorted(tree, key=lambda n: n.id):
        kids = [c for c in tree.children(p.id) if c.visits >= cfg.min_visits]
        if len(kids) < 2:
            continue
        prefix = tree.steps(p.id)
        verdicts = [env.check_step(tree.problem, prefix, c.step.strip()) for c in kids]
        good = sorted((c for c, v in zip(kids, verdicts, strict=True) if v is True), key=_order)
        bad = sorted((c for c, v in zip(kids, verdicts, strict=True) if v is False), key=lambda n: (n.q, n.id))
        if not good or not bad:
            continue
        for b in bad[: cfg.max_pairs_per_node]:
            out.append(make_pair(tree, cfg, "step-check", p.id, good[0], b, margin=1.0))
    return out


@dataclass(frozen=True)
class Strategy:
    """A strategy: its config class and its function fn(tree, config, rng) — with the environment as a
    fourth argument when `needs_env` (a process verifier judges the steps)."""

    name: str
    config: type[StrategyConfig]
    fn: Callable[..., list[Record]]
    description: str
    needs_env: bool = False


STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("q-gap", QGapConfig, q_gap, "sibling pairs by Q gap with visit-count smoothing (MCTS-DPO)"),
    Strategy("first-error", FirstErrorConfig, first_error, "first wrong step vs a correct sibling (Step-DPO)"),
    Strategy("selected-vs-pruned", SelectedVsPrunedConfig, selected_vs_pruned,
             "selected-path step vs its pruned siblings (CPO)"),
    Strategy("subtree-outcome", SubtreeOutcomeConfig, subtree_outcome,
             "children reaching a correct answer vs dead ones, weight 1/(n_pos·n_neg) (rStar-Math)"),
    Strategy("ranked-list", RankedListConfig, ranked_list, "ranked continuations per decision point (TPO)"),
    Strategy("outcome", OutcomeConfig, outcome, "correct vs wrong whole solutions (baseline)"),
    Strategy("step-check", StepCheckConfig, step_check,
             "verified-right step vs verified-wrong siblings, judged by the env's check_step (process verifier)",
             needs_env=True),
]}
