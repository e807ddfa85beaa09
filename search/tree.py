"""Search trees: a `networkx.DiGraph` whose nodes carry a typed `Node` record, and their JSON form.

Node 0 is the root (the problem prompt, no step). Each other node is one step appended to its
parent's path. Children keep insertion order. One tree serialises to one JSON object (one line of
``trees.jsonl``) tagged with SCHEMA_VERSION, the problem, the search config and the policy checkpoint.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import networkx as nx

from envs.errors import UserError
from envs.io import atomic_write_text, iter_jsonl
from envs.types import SCHEMA_VERSION, Problem

ROOT = 0


@dataclass(slots=True)
class Node:
    """One step of a partial solution and its search statistics.

    visits (N), value_sum (sum of backed-up values; Q = value_sum / N), value (the value model's
    estimate V of the prefix ending here, None if never evaluated), reward (edge reward into this node),
    prior (normalised over siblings), logprob (summed token logprob of the step), score (verifier score
    in [0, 1] of a terminal node), answer (extracted answer of a terminal node), check (the env's
    per-step check of this step when the search asked for it: True/False, None = not checked or the env
    cannot tell).
    """

    id: int
    parent: int | None
    depth: int
    step: str = ""
    num_tokens: int = 0
    logprob: float = 0.0
    prior: float = 1.0
    visits: int = 0
    value_sum: float = 0.0
    value: float | None = None
    reward: float = 0.0
    terminal: bool = False
    score: float | None = None
    answer: str | None = None
    finish_reason: str | None = None
    checkpoint: str | None = None
    check: bool | None = None
    virtual_loss: int = field(default=0, metadata={"transient": True})

    @property
    def q(self) -> float:
        """Mean backed-up value; 0 for an unvisited node."""
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def correct(self) -> bool:
        return self.terminal and self.score is not None and self.score >= 1.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("virtual_loss")
        return d


_NODE_FIELDS = {f.name for f in fields(Node)} - {"virtual_loss"}


class Tree:
    """A search tree over steps for one problem."""

    def __init__(self, problem: Problem, *, config: dict[str, Any] | None = None,
                 checkpoint: str | None = None, tree_id: str | None = None, prompt: str | None = None):
        self.graph = nx.DiGraph()
        self.problem = problem
        self.prompt = prompt if prompt is not None else problem.prompt  # rendered text before step 1
        self.config = dict(config or {})
        self.checkpoint = checkpoint
        self.id = tree_id or uuid.uuid4().hex[:12]
        self.answer: str | None = None       # the answer the search algorithm chose
        self.answer_node: int | None = None  # the terminal node it came from, when there is one
        self.stats: dict[str, Any] = {}      # budgets used: tokens, simulations, wall time
        self._next_id = 0
        # Fast access for the search hot path (ids are 0..len-1): node records and child lists by id.
        self._nodes: list[Node] = []
        self._kids: list[list[Node]] = []
        self.add_node(None, checkpoint=checkpoint)

    # --- building -------------------------------------------------------------------------------
    def add_node(self, parent: int | None, **attrs: Any) -> Node:
        depth = 0 if parent is None else self._nodes[parent].depth + 1
        node = Node(id=self._next_id, parent=parent, depth=depth, **attrs)
        self._next_id += 1
        self.graph.add_node(node.id, node=node)
        self._nodes.append(node)
        self._kids.append([])
        if parent is not None:
            self.graph.add_edge(parent, node.id)
            self._kids[parent].append(node)
        return node

    def add_child(self, parent: int, step: str, **attrs: Any) -> Node:
        return self.add_node(parent, step=step, **attrs)

    # --- navigation -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes)

    @property
    def root(self) -> Node:
        return self.graph.nodes[ROOT]["node"]

    def node(self, i: int) -> Node:
        return self._nodes[i]

    def children(self, i: int) -> list[Node]:
        """Children of `i` in insertion order (the list is the tree's own: do not mutate it)."""
        return self._kids[i]

    def parent(self, i: int) -> Node | None:
        p = self.node(i).parent
        return None if p is None else self.node(p)

    def siblings(self, i: int) -> list[Node]:
        p = self.node(i).parent
        return [] if p is None else [c for c in self.children(p) if c.id != i]

    def path(self, i: int) -> list[Node]:
        """Nodes from the root to `i`, both included."""
        nodes = self._nodes
        out = []
        node: Node | None = nodes[i]
        while node is not None:
            out.append(node)
            node = None if node.parent is None else nodes[node.parent]
        return out[::-1]

    def steps(self, i: int) -> list[str]:
        """Step texts on the path to `i` (the root carries no step)."""
        return [n.step for n in self.path(i)[1:]]

    def leaves(self) -> list[Node]:
        return [n for n in self._nodes if not self._kids[n.id]]

    def terminals(self) -> list[Node]:
        return [n for n in self if n.terminal]

    def best_path(self, by: str = "visits") -> list[Node]:
        """Greedy descent from the root picking the child with most visits (ties: higher Q), or by "q".

        Stops at a leaf. The answer node, when the algorithm chose one, is what `answer_path` gives.
        """
        key = (lambda c: (c.visits, c.q)) if by == "visits" else (lambda c: (c.q, c.visits))
        path = [self.root]
        while True:
            kids = self.children(path[-1].id)
            if not kids:
                return path
            path.append(max(kids, key=key))

    def answer_path(self) -> list[Node]:
        """Path to the chosen answer node, or the best path when no node was chosen."""
        return self.path(self.answer_node) if self.answer_node is not None else self.best_path()

    def path_text(self, i: int, sep: str = "\n") -> str:
        return sep.join(self.steps(i))

    def subtree(self, i: int) -> list[Node]:
        return [self.node(j) for j in nx.dfs_preorder_nodes(self.graph, i)]

    def subtree_stats(self, i: int) -> dict[str, Any]:
        """Counts below `i` (inclusive): nodes, terminals, correct terminals, max depth, best score."""
        sub = self.subtree(i)
        terms = [n for n in sub if n.terminal]
        return {
            "nodes": len(sub),
            "terminals": len(terms),
            "correct": sum(n.correct for n in terms),
            "max_depth": max(n.depth for n in sub),
            "best_score": max((n.score or 0.0 for n in terms), default=None),
        }

    # --- serialisation --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "id": self.id,
            "problem": self.problem.model_dump(mode="json"),
            "prompt": self.prompt,
            "config": self.config,
            "checkpoint": self.checkpoint,
            "answer": self.answer,
            "answer_node": self.answer_node,
            "stats": self.stats,
            "nodes": [n.to_json() for n in self],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "tree") -> Tree:
        if d.get("schema") != SCHEMA_VERSION:
            raise UserError(f"{source}: schema '{d.get('schema')}' is not '{SCHEMA_VERSION}'")
        try:
            tree = cls(Problem(**d["problem"]), config=d.get("config"), checkpoint=d.get("checkpoint"),
                       tree_id=d["id"], prompt=d.get("prompt"))
            tree.graph.clear()
            nodes = sorted((Node(**{k: v for k, v in nd.items() if k in _NODE_FIELDS}) for nd in d["nodes"]),
                           key=lambda n: n.id)
            if [n.id for n in nodes] != list(range(len(nodes))):
                raise ValueError("node ids must be 0..n-1")
            tree._nodes = nodes
            tree._kids = [[] for _ in nodes]
            for node in nodes:
                tree.graph.add_node(node.id, node=node)
            for node in nodes:
                if node.parent is not None:
                    tree.graph.add_edge(node.parent, node.id)
                    tree._kids[node.parent].append(node)
            tree._next_id = len(nodes)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise UserError(f"{source}: malformed tree ({type(e).__name__}: {e})") from None
        tree.answer = d.get("answer")
        tree.answer_node = d.get("answer_node")
        tree.stats = d.get("stats", {})
        return tree


def write_trees(path: str | os.PathLike, trees: Iterable[Tree]) -> int:
    """Write trees atomically, one JSON object per line; returns the count."""
    lines = [json.dumps(t.to_json(), ensure_ascii=False) for t in trees]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_trees(path: str | os.PathLike) -> list[Tree]:
    """Read `trees.jsonl`; a malformed line is a UserError naming file:line."""
    return [Tree.from_json(obj, source=f"{path}:{lineno}") for lineno, obj in
            iter_jsonl(path, required=("schema", "id", "problem", "nodes"))]
