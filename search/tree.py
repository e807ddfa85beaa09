"""Search trees: typed `Node` records in one store (node and child lists by id), and their JSON form.

Node 0 is the root (the problem prompt, no step). Each other node is one step appended to its
parent's path; ids are creation order, so a parent's id is below its children's. Children keep
insertion order. The tree records the prompt its steps follow and the step delimiter that joins them, so
the text of any prefix is the tree's to give. A `networkx.DiGraph` view is built on demand
(`to_networkx`) for export and analysis. One tree serialises to one JSON object (one line of
``trees.jsonl``) tagged with SCHEMA_VERSION, the problem, the search config and the policy checkpoint.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Required

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from envs.errors import UserError, pydantic_message
from envs.io import atomic_write_text, iter_jsonl
from envs.types import SCHEMA_VERSION, Problem

if TYPE_CHECKING:
    import networkx as nx

ROOT = 0
DELIMITER = "\n"  # the step delimiter of trees written before trees recorded theirs


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




class Tree:
    """A search tree over steps for one problem.

    One store: `_nodes[i]` is node i, `_kids[i]` its children in insertion order. Everything outside
    this module goes through the methods below (the search hot path included: they are list lookups).
    """

    def __init__(self, problem: Problem, *, config: dict[str, Any] | None = None,
                 checkpoint: str | None = None, tree_id: str | None = None, prompt: str | None = None,
                 delimiter: str = DELIMITER):
        self.problem = problem
        self.prompt = prompt if prompt is not None else problem.prompt  # rendered text before step 1
        self.delimiter = delimiter           # what follows every step in the rendered text (the env's)
        self.config = dict(config or {})
        self.checkpoint = checkpoint
        self.id = tree_id or uuid.uuid4().hex[:12]
        self.answer: str | None = None       # the answer the search algorithm chose
        self.answer_node: int | None = None  # the terminal node it came from, when there is one
        self.stats: dict[str, Any] = {}      # budgets used: tokens, simulations, wall time
        self._nodes: list[Node] = []
        self._kids: list[list[Node]] = []
        self.add_node(None, checkpoint=checkpoint)

    # --- building -------------------------------------------------------------------------------
    def add_node(self, parent: int | None, **attrs: Any) -> Node:
        depth = 0 if parent is None else self._nodes[parent].depth + 1
        node = Node(id=len(self._nodes), parent=parent, depth=depth, **attrs)
        self._nodes.append(node)
        self._kids.append([])
        if parent is not None:
            self._kids[parent].append(node)
        return node

    def add_child(self, parent: int, step: str, **attrs: Any) -> Node:
        return self.add_node(parent, step=step, **attrs)

    # --- navigation -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        """Every node, in id (creation) order."""
        return iter(self._nodes)

    @property
    def root(self) -> Node:
        return self._nodes[ROOT]

    def node(self, i: int) -> Node:
        return self._nodes[i]

    def children(self, i: int) -> list[Node]:
        """Children of `i` in insertion order (the list is the tree's own: do not mutate it)."""
        return self._kids[i]

    def parent(self, i: int) -> Node | None:
        p = self._nodes[i].parent
        return None if p is None else self._nodes[p]

    def siblings(self, i: int) -> list[Node]:
        p = self._nodes[i].parent
        return [] if p is None else [c for c in self._kids[p] if c.id != i]

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
        return [n for n in self._nodes if n.terminal]

    def best_path(self, by: str = "visits") -> list[Node]:
        """Greedy descent from the root picking the child with most visits (ties: higher Q), or by "q".

        Stops at a leaf. The answer node, when the algorithm chose one, is what `answer_path` gives.
        """
        key = (lambda c: (c.visits, c.q)) if by == "visits" else (lambda c: (c.q, c.visits))
        path = [self.root]
        while True:
            kids = self._kids[path[-1].id]
            if not kids:
                return path
            path.append(max(kids, key=key))

    def answer_path(self) -> list[Node]:
        """Path to the chosen answer node, or the best path when no node was chosen."""
        return self.path(self.answer_node) if self.answer_node is not None else self.best_path()

    # --- text -----------------------------------------------------------------------------------
    def path_text(self, i: int, sep: str | None = None) -> str:
        """The steps to `i` joined by `sep` (default: the tree's delimiter), nothing after the last."""
        return (self.delimiter if sep is None else sep).join(self.steps(i))

    def steps_text(self, steps: Iterable[str]) -> str:
        """Steps as the policy reads and writes them: each followed by the tree's delimiter."""
        d = self.delimiter
        return "".join(s + d for s in steps)

    def nodes_text(self, nodes: Iterable[Node]) -> str:
        """Steps of `nodes` as the policy wrote them: each followed by the delimiter, except a step cut at
        max_step_tokens (finish "length"), which the policy never ended (no delimiter is faked onto it)."""
        d = self.delimiter
        return "".join(n.step if n.finish_reason == "length" else n.step + d for n in nodes)

    def prefix_text(self, i: int) -> str:
        """The full text before the next step after `i`: the prompt, then each step + delimiter."""
        return self.prompt + self.steps_text(self.steps(i))

    # --- subtrees -------------------------------------------------------------------------------
    def subtree(self, i: int) -> list[Node]:
        """`i` and every node below it, depth-first in preorder (children in insertion order)."""
        kids = self._kids
        out: list[Node] = []
        stack = [self._nodes[i]]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(kids[node.id]))
        return out

    def terminals_below(self, i: int) -> list[Node]:
        """Terminal nodes in the subtree of `i` (inclusive), in id order."""
        return sorted((n for n in self.subtree(i) if n.terminal), key=lambda n: n.id)

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

    def outcome_counts(self) -> dict[int, tuple[int, int]]:
        """(terminals, correct terminals) in each node's subtree, for every node, in one bottom-up pass."""
        counts: dict[int, tuple[int, int]] = {}
        kids = self._kids
        for n in reversed(self.subtree(ROOT)):  # reversed preorder: every node after all its descendants
            t, c = (1, int(n.correct)) if n.terminal else (0, 0)
            for child in kids[n.id]:
                ct, cc = counts[child.id]
                t, c = t + ct, c + cc
            counts[n.id] = (t, c)
        return counts

    # --- views and serialisation ----------------------------------------------------------------
    def edges(self) -> list[tuple[int, int]]:
        """(parent, child) id pairs: each node's children in insertion order, nodes in id order."""
        return [(n.id, c.id) for n in self._nodes for c in self._kids[n.id]]

    def to_networkx(self, *, missing: Any = None) -> nx.DiGraph:
        """A `networkx.DiGraph` copy, built on demand: node attributes are the node's JSON fields plus
        `q`; graph attributes the tree id, problem id and answer; None values become `missing` (GraphML
        has no null: pass ""). Later changes to the tree do not show."""
        import networkx as nx

        def put(attrs: dict[str, Any]) -> dict[str, Any]:
            return {k: missing if v is None else v for k, v in attrs.items()}

        g = nx.DiGraph(**put({"tree_id": self.id, "problem_id": self.problem.id, "answer": self.answer}))
        for node in self._nodes:
            g.add_node(node.id, **put({**node.to_json(), "q": node.q}))
        g.add_edges_from(self.edges())
        return g

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "id": self.id,
            "problem": self.problem.model_dump(mode="json"),
            "prompt": self.prompt,
            "delimiter": self.delimiter,
            "config": self.config,
            "checkpoint": self.checkpoint,
            "answer": self.answer,
            "answer_node": self.answer_node,
            "stats": self.stats,
            "nodes": [n.to_json() for n in self._nodes],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "tree") -> Tree:
        """A tree from its JSON object; anything malformed (a field of the wrong type, a node whose parent
        is not an earlier node, so no cycle can load) is a UserError naming `source` and the field."""
        if d.get("schema") != SCHEMA_VERSION:
            raise UserError(f"{source}: schema '{d.get('schema')}' is not '{SCHEMA_VERSION}'")
        try:
            rec = _TREE_RECORD.validate_python(d)
        except ValidationError as e:
            raise UserError(pydantic_message(e, source)) from None
        try:
            problem = Problem(**rec["problem"])
        except ValidationError as e:
            raise UserError(pydantic_message(e, source, prefix="problem")) from None
        except TypeError as e:
            raise UserError(f"{source}: field 'problem': {e}") from None
        tree = cls(problem, config=rec.get("config"), checkpoint=rec.get("checkpoint"), tree_id=rec["id"],
                   prompt=rec.get("prompt"), delimiter=rec.get("delimiter", DELIMITER))
        nodes = sorted((Node(**nd) for nd in rec["nodes"]), key=lambda n: n.id)
        if [n.id for n in nodes] != list(range(len(nodes))):
            raise UserError(f"{source}: field 'nodes': node ids must be 0..{len(nodes) - 1}, each once")
        if not nodes or nodes[0].parent is not None or nodes[0].depth != 0:
            raise UserError(f"{source}: field 'nodes': node 0 must be the root (no parent, depth 0)")
        kids: list[list[Node]] = [[] for _ in nodes]
        for node in nodes[1:]:
            if node.parent is None or not 0 <= node.parent < node.id:
                raise UserError(f"{source}: field 'nodes.{node.id}.parent': must be an earlier node "
                                f"(got {node.parent}; a parent cycle or a second root is not a tree)")
            if node.depth != nodes[node.parent].depth + 1:
                raise UserError(f"{source}: field 'nodes.{node.id}.depth': {node.depth} is not its parent's "
                                f"depth + 1")
            kids[node.parent].append(node)
        answer_node = rec.get("answer_node")
        if answer_node is not None and not 0 <= answer_node < len(nodes):
            raise UserError(f"{source}: field 'answer_node': {answer_node} is not a node of the tree")
        tree._nodes, tree._kids = nodes, kids
        tree.answer = rec.get("answer")
        tree.answer_node = answer_node
        tree.stats = rec.get("stats", {})
        return tree


class _NodeRecord(TypedDict, total=False):
    """A node's JSON fields and their types, checked strictly on read (no "3" for 3, no null depth)."""

    __pydantic_config__ = ConfigDict(strict=True, extra="ignore")  # type: ignore[misc]
    id: Required[int]
    parent: Required[int | None]
    depth: Required[int]
    step: str
    num_tokens: int
    logprob: float
    prior: float
    visits: int
    value_sum: float
    value: float | None
    reward: float
    terminal: bool
    score: float | None
    answer: str | None
    finish_reason: str | None
    checkpoint: str | None
    check: bool | None


class _TreeRecord(TypedDict, total=False):
    """One line of trees.jsonl, typed (the problem is checked by its own model)."""

    __pydantic_config__ = ConfigDict(strict=True, extra="ignore")  # type: ignore[misc]
    schema: Required[str]
    id: Required[str]
    problem: Required[dict[str, Any]]
    prompt: str | None
    delimiter: str
    config: dict[str, Any] | None
    checkpoint: str | None
    answer: str | None
    answer_node: int | None
    stats: dict[str, Any]
    nodes: Required[list[_NodeRecord]]


_TREE_RECORD = TypeAdapter(_TreeRecord)


def write_trees(path: str | os.PathLike, trees: Iterable[Tree]) -> int:
    """Write trees atomically, one JSON object per line; returns the count."""
    lines = [json.dumps(t.to_json(), ensure_ascii=False) for t in trees]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_trees(path: str | os.PathLike) -> list[Tree]:
    """Read `trees.jsonl`; a malformed line is a UserError naming file:line."""
    return [Tree.from_json(obj, source=f"{path}:{lineno}") for lineno, obj in
            iter_jsonl(path, required=("schema", "id", "problem", "nodes"))]
