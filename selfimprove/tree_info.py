"""What every view of a search tree shows, computed once: `tree show` (rich), `tree export --format html`
and `tree browse` (textual) all draw from here.

The answer the search returned and its verdict, a tree's counts and root entropy, every number of one
node, each node's step check (recorded by the search, else the environment's when one is given), and the
preference records overlaid on the nodes they compare (chosen / rejected, margin, weight, audit label).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from envs.base import Environment
from envs.errors import UserError
from search.tree import Node, Tree


def verdict_mark(node: Node) -> str:
    """✓ / ✗ for a terminal's verifier verdict, ✗ for a step the step check rejected, else a space."""
    if node.terminal:
        return "✓" if node.correct else "✗"
    return "✗" if node.check is False else " "


def answer_summary(tree: Tree) -> dict[str, Any]:
    """The returned answer, its verdict ("correct" / "wrong" / "no answer"), the reference and counts."""
    chosen = tree.node(tree.answer_node) if tree.answer_node is not None else None
    if tree.answer is None:
        verdict = "no answer"
    elif chosen is not None and chosen.terminal:
        verdict = "correct" if chosen.correct else "wrong"
    else:
        verdict = "correct" if str(tree.answer) == str(tree.problem.answer) else "wrong"
    return {"answer": tree.answer, "verdict": verdict, "reference": tree.problem.answer,
            "answer_node": tree.answer_node, **tree.subtree_stats(0),
            "root_entropy": root_entropy(tree), "tokens": tree_tokens(tree)}


def answer_ids(tree: Tree) -> set[int]:
    """Node ids on the path to the returned answer (the best path when none was chosen)."""
    return {n.id for n in tree.answer_path()}


def root_entropy(tree: Tree) -> float | None:
    """Entropy (bits) of the search's choice at the root: its children's visit shares (priors when no
    child was visited); None for a root with fewer than one child. 0 = one first step took everything."""
    kids = tree.children(0)
    if not kids:
        return None
    weights = [c.visits for c in kids]
    if not any(weights):
        weights = [c.prior for c in kids]
    total = sum(weights)
    if total <= 0:
        return None
    return -sum(w / total * math.log2(w / total) for w in weights if w > 0) + 0.0


def tree_tokens(tree: Tree) -> int:
    """Tokens the policy generated for this tree (the steps of every node)."""
    return sum(n.num_tokens for n in tree)


def step_check(tree: Tree, node: Node, env: Environment | None = None) -> tuple[bool | None, str]:
    """(verdict, source) of the node's step check: what the search recorded, else `env`'s own check,
    else (None, "")."""
    if node.check is not None:
        return node.check, "recorded"
    if env is None or node.parent is None:
        return None, ""
    return env.check_step(tree.problem, tree.steps(node.parent), node.step.strip()), env.name


def _fmt(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def node_fields(tree: Tree, node: Node, env: Environment | None = None) -> list[tuple[str, str]]:
    """Every number of one node, as (name, text) rows, in the order the views print them."""
    check, source = step_check(tree, node, env)
    rows = [
        ("node", f"#{node.id}, depth {node.depth}, {len(tree.children(node.id))} children"),
        ("N visits", str(node.visits)),
        ("Q mean", _fmt(node.q if node.visits else None, "+.3f")),
        ("V value", _fmt(node.value, "+.3f")),
        ("prior", f"{node.prior:.3f}"),
        ("logprob", f"{node.logprob:.3f}"),
        ("reward", f"{node.reward:+.3f}"),
        ("verdict", ("correct" if node.correct else "wrong") + f" (score {_fmt(node.score, '.2f')}, answer "
                    f"{node.answer})" if node.terminal else "-"),
        ("step check", "-" if check is None and not source else
         ("right" if check else "wrong" if check is False else "cannot tell") + f" ({source})"),
        ("tokens", str(node.num_tokens)),
        ("finish", node.finish_reason or "-"),
        ("checkpoint", node.checkpoint or tree.checkpoint or "-"),
    ]
    return rows


# --- pairs overlaid on nodes ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PairRef:
    """One preference record seen from one of the nodes it compares."""

    role: str            # "chosen" | "rejected"
    other: int           # the node on the other side (-1 when the record does not name it)
    margin: float | None
    weight: float | None
    strategy: str
    label: str | None    # the audit label (`pairs.audit`) when the records were judged, else None

    @property
    def mark(self) -> str:
        return "+" if self.role == "chosen" else "-"


def _flat(rec: Any, src: str) -> dict[str, Any]:
    """A record's fields with its provenance folded in; a provenance that is not an object is a UserError."""
    d = rec if isinstance(rec, dict) else rec.model_dump(mode="json")
    prov = d.get("provenance") or {}
    if not isinstance(prov, dict):
        raise UserError(f"{src}: field 'provenance': expected an object")
    return {**prov, **d}


def _node_id(value: Any, src: str, key: str) -> int:
    """A record's node id (-1 when absent); anything but an integer is a UserError naming the record."""
    if value is None:
        return -1
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"{src}: field '{key}': expected a node id (an integer), got {json.dumps(value)[:40]}")
    return value


def pair_overlay(records: Iterable[Any], tree_id: str, labels: Sequence[str | None] | None = None,
                 sources: Sequence[str] | None = None) -> dict[int, list[PairRef]]:
    """Node id → the records comparing it, for one tree.

    Records are dicts (a JSONL line; provenance may sit under a `provenance` key) or pydantic records.
    Pairs name `chosen_node` / `rejected_node`; ranked lists name `node_ids` best first (the first counts
    as chosen, the last as rejected). `labels[i]` is record i's audit label, when known. A node id that is
    not an integer is a UserError naming the record (`sources[i]`, e.g. "file:line", else "pairs record i+1").
    """
    out: dict[int, list[PairRef]] = {}
    for i, raw in enumerate(records):
        src = sources[i] if sources is not None else f"pairs record {i + 1}"
        rec = _flat(raw, src)
        if str(rec.get("tree_id")) != str(tree_id):
            continue
        lab = labels[i] if labels is not None else None
        if "chosen_node" in rec or "rejected_node" in rec:
            c = _node_id(rec.get("chosen_node"), src, "chosen_node")
            r = _node_id(rec.get("rejected_node"), src, "rejected_node")
            margin = rec.get("margin")
        elif ids := rec.get("node_ids"):
            if not isinstance(ids, list):
                raise UserError(f"{src}: field 'node_ids': expected a list of node ids")
            c, r = _node_id(ids[0], src, "node_ids"), _node_id(ids[-1], src, "node_ids")
            scores = rec.get("scores") or []
            margin = scores[0] - scores[-1] if scores and isinstance(scores, list) else None
        else:
            continue
        strategy, weight = str(rec.get("strategy", "")), rec.get("weight")
        if c >= 0:
            out.setdefault(c, []).append(PairRef("chosen", r, margin, weight, strategy, lab))
        if r >= 0:
            out.setdefault(r, []).append(PairRef("rejected", c, margin, weight, strategy, lab))
    return out


def marks_of(overlay: dict[int, list[PairRef]]) -> dict[int, str]:
    """Node id → "+" (chosen) / "-" (rejected) / "±" (both, in different records)."""
    return {nid: refs[0].mark if len({r.mark for r in refs}) == 1 else "±" for nid, refs in overlay.items()}


def describe_pair(tree: Tree, ref: PairRef, width: int = 40) -> str:
    """One line: "chosen over #5 '3+8=12'  margin 0.80  weight 1.00  q-gap  [inverted]"."""
    other = "?" if ref.other < 0 or ref.other >= len(tree) else f"#{ref.other} {tree.node(ref.other).step.strip()!r}"
    if len(other) > width:
        other = other[: width - 1] + "…"
    word = "over" if ref.role == "chosen" else "under"
    parts = [f"{ref.role} {word} {other}", f"margin {_fmt(ref.margin, '.2f')}",
             f"weight {_fmt(ref.weight, '.2f')}", ref.strategy]
    if ref.label:
        parts.append(f"[{ref.label}]")
    return "  ".join(p for p in parts if p)
