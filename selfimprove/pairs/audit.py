"""Label precision of preference data, judged by the environment's own per-step check.

A pair says "chosen is a better continuation than rejected". Where the environment can check a step
(``Environment.check_step``: arithmetic's calculator check, countdown's), each side is judged: a
completion is *right* when every one of its steps checks True, *wrong* when one checks False before
any the env cannot judge, *unknown* otherwise. A pair is then

    right-vs-wrong   chosen right, rejected wrong (the label is correct)
    inverted         chosen wrong, rejected right (the label is backwards)
    both wrong       neither continuation is right (e.g. the chosen step reached the right answer by
                     two cancelling errors)
    both right       both continuations are right (a preference between equals)
    unknown          a side the env cannot judge, or the pair's problem is not among the trees

A ranked list (TPO) is judged as its best item against its worst. The problem and the prefix steps come
from the trees the records were extracted from (matched by ``tree_id``, else by ``problem_id``): the
record's prompt is the tree's prompt followed by the prefix steps, each + the record's delimiter.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from envs.base import Environment
from envs.types import Problem
from search.tree import Tree
from selfimprove.pairs.records import PreferencePair, Record

LABELS = ("right-vs-wrong", "inverted", "both wrong", "both right", "unknown")
_SHORT = {"right-vs-wrong": "right>wrong", "inverted": "inverted", "both wrong": "both ✗",
          "both right": "both ✓", "unknown": "unknown"}


def has_step_check(env: Environment) -> bool:
    """Whether `env` overrides the optional per-step check (the base class's says None to everything)."""
    return type(env).check_step is not Environment.check_step


def split_steps(text: str, delimiter: str) -> list[str]:
    """Steps of a completion or prefix written as step + delimiter each; "" → []."""
    if not text:
        return []
    if delimiter and text.endswith(delimiter):
        text = text[: -len(delimiter)]
    return text.split(delimiter) if delimiter else [text]


def judge(env: Environment, problem: Problem, prefix: Sequence[str], steps: Sequence[str]) -> bool | None:
    """True when every step of `steps` checks right after `prefix`, False at the first wrong one
    (before any unknown), None when the env cannot tell (or there are no steps)."""
    done = list(prefix)
    for step in steps:
        verdict = env.check_step(problem, done, step.strip())
        if verdict is not True:
            return verdict
        done.append(step)
    return True if steps else None


def label(chosen_ok: bool | None, rejected_ok: bool | None) -> str:
    if chosen_ok is None or rejected_ok is None:
        return "unknown"
    if chosen_ok:
        return "both right" if rejected_ok else "right-vs-wrong"
    return "inverted" if rejected_ok else "both wrong"


@dataclass(frozen=True, slots=True)
class PairAudit:
    """One record's verdict; node ids are -1 when the record does not name them."""

    strategy: str
    depth: int
    tree_id: str
    problem_id: str
    chosen_node: int
    rejected_node: int
    chosen_ok: bool | None
    rejected_ok: bool | None
    label: str
    chosen: str
    rejected: str
    margin: float
    weight: float


class TreeIndex:
    """Trees by id and by problem id (the first tree of a problem wins)."""

    def __init__(self, trees: Iterable[Tree]):
        self.by_id: dict[str, Tree] = {}
        self.by_problem: dict[str, Tree] = {}
        for t in trees:
            self.by_id.setdefault(t.id, t)
            self.by_problem.setdefault(t.problem.id, t)

    def find(self, tree_id: str, problem_id: str) -> Tree | None:
        return self.by_id.get(tree_id) or self.by_problem.get(problem_id)


def audit_record(rec: Record, index: TreeIndex, env: Environment) -> PairAudit:
    """Judge one pair (or a ranked list's best vs worst item)."""
    if isinstance(rec, PreferencePair):
        chosen, rejected = rec.chosen, rec.rejected
        c_node, r_node, margin = rec.chosen_node, rec.rejected_node, rec.margin
    else:
        chosen, rejected = rec.completions[0], rec.completions[-1]
        c_node, r_node, margin = rec.node_ids[0], rec.node_ids[-1], rec.scores[0] - rec.scores[-1]
    tree = index.find(rec.tree_id, rec.problem_id)
    c_ok = r_ok = None
    if tree is not None and rec.prompt.startswith(tree.prompt):
        prefix = split_steps(rec.prompt[len(tree.prompt):], rec.delimiter)
        c_ok = judge(env, tree.problem, prefix, split_steps(chosen, rec.delimiter))
        r_ok = judge(env, tree.problem, prefix, split_steps(rejected, rec.delimiter))
    return PairAudit(rec.strategy, rec.depth, rec.tree_id, rec.problem_id, c_node, r_node, c_ok, r_ok,
                     label(c_ok, r_ok), chosen, rejected, margin, rec.weight)


def audit_records(records: Iterable[Record], trees: Iterable[Tree], env: Environment) -> list[PairAudit]:
    index = TreeIndex(trees)
    return [audit_record(r, index, env) for r in records]


def _counts(audits: Sequence[PairAudit]) -> dict[str, Any]:
    c = Counter(a.label for a in audits)
    n = len(audits)
    judged = n - c["unknown"]
    return {
        "pairs": n,
        "counts": {k: c[k] for k in LABELS},
        "shares": {k: (c[k] / n if n else None) for k in LABELS},
        # of the pairs the env could judge, the share whose label is right
        "precision": c["right-vs-wrong"] / judged if judged else None,
    }


def summarize(audits: Sequence[PairAudit], *, examples: int = 3) -> dict[str, Any]:
    """Counts and shares of each label, overall, by strategy and by depth; the first inverted pairs."""
    out = _counts(audits)
    out["by_strategy"] = {s: _counts([a for a in audits if a.strategy == s])
                          for s in sorted({a.strategy for a in audits})}
    out["by_depth"] = {str(d): _counts([a for a in audits if a.depth == d])
                       for d in sorted({a.depth for a in audits})}
    out["inverted_examples"] = [
        {"problem_id": a.problem_id, "tree_id": a.tree_id, "depth": a.depth, "chosen": a.chosen,
         "rejected": a.rejected, "margin": a.margin, "chosen_node": a.chosen_node, "rejected_node": a.rejected_node}
        for a in audits if a.label == "inverted"][:examples]
    return out


def audit_summary(records: Iterable[Record], trees: Iterable[Tree], env: Environment,
                  *, examples: int = 3) -> dict[str, Any]:
    """`summarize(audit_records(...))`: what `pairs audit --json` prints and the loop records."""
    return summarize(audit_records(records, trees, env), examples=examples)


# --- rendering ------------------------------------------------------------------------------------
def _one_line(text: str, width: int = 32) -> str:
    text = text.strip().replace("\n", " ⏎ ")
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def render_audit(summary: dict[str, Any], title: str) -> Group:
    """A rich table (fits 80 columns): one row overall, then per strategy, then per depth; % of pairs."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("pairs of", no_wrap=True)
    table.add_column("n", justify="right")
    for k in LABELS:
        table.add_column(_SHORT[k], justify="right")
    table.add_column("prec", justify="right")

    def row(name: str, c: dict[str, Any], end: bool = False) -> None:
        table.add_row(name, str(c["pairs"]), *(_pct(c["shares"][k]) for k in LABELS), _pct(c["precision"]),
                      end_section=end)

    row("all", summary, end=True)
    strategies = summary["by_strategy"]
    for s, c in strategies.items():
        row(s, c, end=s == list(strategies)[-1])
    for d, c in summary["by_depth"].items():
        row(f"depth {d}", c)
    table.caption = ("% of pairs; prec = right>wrong among the pairs the step check could judge; "
                     "both ✗ / both ✓ = neither / both continuations right")
    parts: list[Any] = [table]
    for ex in summary.get("inverted_examples", []):
        parts.append(Text(f"inverted  {ex['problem_id']}  depth {ex['depth']}  margin {ex['margin']:.2f}\n"
                          f"  chosen {_one_line(ex['chosen'])}  over  {_one_line(ex['rejected'])}"))
    return Group(*parts)


def render_audit_text(summary: dict[str, Any], title: str, width: int = 80) -> str:
    """Plain text of `render_audit` (no colour), as the snapshot tests store it."""
    console = Console(width=width, record=True, no_color=True, color_system=None, file=io.StringIO())
    console.print(render_audit(summary, title))
    return console.export_text()
