"""How the algorithms settle on an answer: the best node, a vote over terminals, recording the choice."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from envs.errors import UserError
from search.tree import Node, Tree
from search.types import SearchConfig


def best_node(nodes: Iterable[Node], key: Callable[[Node], tuple], cfg: SearchConfig) -> Node | None:
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
    """Record `node` (or none) as the search's answer."""
    tree.answer_node = None if node is None else node.id
    tree.answer = None if node is None else node.answer


def need_value(has_value: bool, why: str) -> None:
    """A UserError when a knob that needs a value model is used without one."""
    if not has_value:
        raise UserError(f"{why} needs a value model (pass --value DIR / value_model=...)")
