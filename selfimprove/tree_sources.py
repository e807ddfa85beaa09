"""What `tree browse` (and `tree export --format html`) read: trees files or run directories as a list of
iterations, each with its trees, the preference records taken from them and their audit labels, and the
same problem looked up in another iteration.

A run directory gives one iteration per `iter-NNN/trees.jsonl` with the `pairs.jsonl` beside it and the
run's environment (config.yaml); a trees file gives one iteration, with the records of `--pairs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.base import Environment
from envs.errors import UserError
from search.tree import Tree, read_trees
from selfimprove.pairs import Record, read_records
from selfimprove.pairs.audit import audit_records, has_step_check
from selfimprove.tree_info import PairRef, pair_overlay


@dataclass
class Iteration:
    """One trees file and what was taken from it."""

    name: str
    path: Path
    trees: list[Tree]
    records: list[Record] = field(default_factory=list)
    labels: list[str | None] | None = None   # audit label of each record (env with a step check)
    _overlays: dict[str, dict[int, list[PairRef]]] = field(default_factory=dict, repr=False)
    _by_tree: dict[str, list[int]] | None = field(default=None, repr=False)

    def overlay(self, tree: Tree) -> dict[int, list[PairRef]]:
        """Node id → the records comparing it, for one of this iteration's trees (cached)."""
        if tree.id not in self._overlays:
            if self._by_tree is None:
                self._by_tree = {}
                for i, r in enumerate(self.records):
                    self._by_tree.setdefault(r.tree_id, []).append(i)
            idx = self._by_tree.get(tree.id, [])
            labels = None if self.labels is None else [self.labels[i] for i in idx]
            self._overlays[tree.id] = pair_overlay([self.records[i] for i in idx], tree.id, labels)
        return self._overlays[tree.id]

    def inverted(self, tree: Tree) -> int:
        """How many of this tree's records the audit found inverted (wrong step preferred)."""
        return sum(r.label == "inverted" and r.role == "chosen" for refs in self.overlay(tree).values()
                   for r in refs)

    def find(self, tree: Tree) -> Tree | None:
        """This iteration's tree for the problem of `tree` (by problem id, else by prompt text)."""
        for t in self.trees:
            if t.problem.id == tree.problem.id:
                return t
        for t in self.trees:
            if t.prompt == tree.prompt:
                return t
        return None


@dataclass
class Sources:
    iterations: list[Iteration]
    env: Environment | None


def _trees_files(path: Path) -> list[tuple[str, Path, Path | None]]:
    """(name, trees file, pairs file beside it in a run) for a run dir, an iter dir or a trees file."""
    if path.is_dir():
        if (path / "trees.jsonl").is_file():
            pairs = path / "pairs.jsonl"
            return [(path.name, path / "trees.jsonl", pairs if pairs.is_file() else None)]
        found = sorted(path.glob("iter-*/trees.jsonl"))
        if not found:
            raise UserError(f"{path}: no iter-*/trees.jsonl in this directory (a run directory or a trees file)")
        return [(f.parent.name, f, (f.parent / "pairs.jsonl") if (f.parent / "pairs.jsonl").is_file() else None)
                for f in found]
    if not path.is_file():
        raise UserError(f"{path}: no such file or directory")
    if path.parent.name.startswith("iter-"):  # a run's trees file: its pairs lie beside it
        beside = path.parent / "pairs.jsonl"
        return [(path.parent.name, path, beside if beside.is_file() else None)]
    return [(path.name, path, None)]


def _pair_records(path: Path) -> list[Record]:
    """The pairs / ranked lists of a run's pairs.jsonl; none for an SFT run's (verified solutions)."""
    from envs.io import iter_jsonl

    first = next(iter(iter_jsonl(path)), None)
    if first is not None and first[1].get("kind") == "sft":
        return []
    return read_records(path)


def load_sources(paths: list[Path], pairs: list[Path] | None = None, env: Environment | None = None) -> Sources:
    """Iterations from `paths` (run dirs, iter dirs or trees files), in order; `pairs` are pooled and
    overlaid on every iteration's trees (matched by tree id). Records are audited when `env` has a step
    check."""
    extra: list[Record] = [r for p in (pairs or []) for r in read_records(p)]
    iterations: list[Iteration] = []
    seen: set[str] = set()
    for path in paths:
        for name, trees_file, beside in _trees_files(Path(path)):
            trees = read_trees(trees_file)
            if not trees:
                raise UserError(f"{trees_file}: no trees in the file")
            records = [*(_pair_records(beside) if beside is not None and not pairs else []), *extra]
            label = name if name not in seen else f"{name} ({trees_file})"
            seen.add(label)
            it = Iteration(label, trees_file, trees, records)
            if env is not None and has_step_check(env) and records:
                it.labels = [a.label for a in audit_records(records, trees, env)]
            iterations.append(it)
    return Sources(iterations, env)


def compare(a: Tree, b: Tree) -> dict[str, Any]:
    """The same problem in two trees: sizes, root entropy, first steps and the answer each returned."""
    from selfimprove.tree_info import answer_summary

    sa, sb = answer_summary(a), answer_summary(b)

    def top(t: Tree) -> str | None:
        kids = t.children(0)
        return max(kids, key=lambda c: (c.visits, c.q)).step.strip() if kids else None

    def firsts(t: Tree) -> set[str]:
        return {c.step.strip() for c in t.children(0)}

    keys = ("nodes", "terminals", "correct", "max_depth", "tokens")
    return {
        "a": {**{k: sa[k] for k in (*keys, "answer", "verdict", "root_entropy")}, "top_first_step": top(a)},
        "b": {**{k: sb[k] for k in (*keys, "answer", "verdict", "root_entropy")}, "top_first_step": top(b)},
        "grew": {k: sb[k] - sa[k] for k in keys},
        "new_first_steps": sorted(firsts(b) - firsts(a)),
        "gone_first_steps": sorted(firsts(a) - firsts(b)),
        "same_answer": sa["answer"] == sb["answer"],
    }
