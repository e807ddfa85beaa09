"""`tree browse`: an interactive browser of search trees (textual), made for an 80×24 terminal over ssh.

One screen: a title line (iteration, problem, returned answer), the tree (textual's `Tree`: arrows move,
enter / space / click expand and collapse, → / ← too) beside a panel with the highlighted node's full step
text, every number (`tree_info.node_fields`) and the preference records comparing it. `/` finds a problem
by id or text and filters by verdict or inverted pairs; `s` puts the same problem from another iteration
beside it (what grew, root entropy, which answer won). Everything shown is computed by `tree_info` and
`tree_sources`, shared with `tree show` and the HTML export.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Static
from textual.widgets import Tree as TreeWidget
from textual.widgets.tree import TreeNode

from search.tree import Node, Tree
from selfimprove.tree_find import FindScreen, matches, verdict_mark_of
from selfimprove.tree_info import (
    PairRef,
    answer_ids,
    answer_summary,
    describe_pair,
    marks_of,
    node_fields,
    step_check,
)
from selfimprove.tree_sources import Iteration, Sources, compare


def node_label(tree: Tree, node: Node, marks: dict[int, str], best: set[int], env) -> Text:
    """One line of the tree: pair mark, step, N, Q, verdict (✗ also for a step the step check rejects)."""
    step = "(root)" if node.parent is None else node.step.replace("\n", "⏎")
    if len(step) > 40:
        step = step[:39] + "…"
    mark = marks.get(node.id)
    t = Text(no_wrap=True, overflow="ellipsis")
    if mark:
        t.append(mark + " ", style="bold green" if mark == "+" else "bold red" if mark == "-" else "bold yellow")
    t.append(step, style="bold green" if node.id in best else "")
    q = f"{node.q:+.2f}" if node.visits else "-"
    t.append(f"  N={node.visits} Q={q}", style="dim")
    if node.terminal:
        t.append(" ✓" if node.correct else " ✗", style="green" if node.correct else "red")
    elif step_check(tree, node, env)[0] is False:
        t.append(" ✗", style="red")
    return t


class SearchTree(TreeWidget[int]):
    """textual's Tree over one search tree; node data = the search node's id. → expands, ← collapses
    (or goes to the parent)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right", "expand_here", "expand", show=False),
        Binding("left", "collapse_here", "collapse", show=False),
    ]

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.search_tree: Tree | None = None
        self.by_id: dict[int, TreeNode[int]] = {}

    def show(self, tree: Tree, overlay: dict[int, list[PairRef]], env) -> None:
        """Replace the content with `tree`; the answer path starts expanded."""
        self.search_tree = tree
        marks, best = marks_of(overlay), answer_ids(tree)
        self.clear()
        self.by_id = {0: self.root}
        self.root.set_label(node_label(tree, tree.root, marks, best, env))
        self.root.data = 0
        stack: list[tuple[TreeNode[int], Node]] = [(self.root, tree.root)]
        while stack:
            parent, node = stack.pop()
            kids = sorted(tree.children(node.id), key=lambda c: (-c.visits, -c.q, c.id))
            for kid in kids:
                label = node_label(tree, kid, marks, best, env)
                if tree.children(kid.id):
                    child = parent.add(label, data=kid.id, expand=kid.id in best)
                    stack.append((child, kid))
                else:
                    child = parent.add_leaf(label, data=kid.id)
                self.by_id[kid.id] = child
        self.root.expand()
        self.move_cursor(self.root)

    def action_expand_here(self) -> None:
        if self.cursor_node is not None and self.cursor_node.allow_expand:
            self.cursor_node.expand()

    def action_collapse_here(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.is_expanded and node.allow_expand:
            node.collapse()
        elif node.parent is not None:
            self.move_cursor(node.parent)

    def show_answer_path(self) -> None:
        """Collapse everything, then expand the path to the returned answer and put the cursor on it."""
        if self.search_tree is None:
            return
        self.root.collapse_all()
        path = self.search_tree.answer_path()
        for n in path:
            self.by_id[n.id].expand()
        self.move_cursor(self.by_id[path[-1].id])


class TreeBrowser(App[None]):
    """The browser. `sources` holds the iterations; `problem` opens that problem id first."""

    TITLE = "selfimprove tree browse"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { layout: vertical; }
    #title { height: 1; background: $panel; color: $text; text-style: bold; }
    #compare { height: auto; max-height: 5; display: none; background: $boost; }
    #main { height: 1fr; }
    SearchTree { width: 1fr; border: none; padding: 0; }
    #other { display: none; border-left: solid $accent; }
    #detail { width: 34; border-left: solid $accent; padding: 0 0 0 1; }
    .compare #other { display: block; }
    .compare #detail { display: none; }
    .compare #compare { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("slash,f", "find", "find"),
        Binding("n", "step_problem(1)", "next"),
        Binding("p", "step_problem(-1)", "prev"),
        Binding("i", "step_iteration(1)", "iter"),
        Binding("s", "side_by_side", "side"),
        Binding("o", "other_iteration", "other", show=False),
        Binding("a", "answer_path", "answer"),
        Binding("e", "expand_all", "all", show=False),
        Binding("c", "collapse_all", "none", show=False),
        Binding("question_mark", "keys", "keys"),
    ]
    KEYS = ("↑/↓ move · enter/space/click toggle · →/← expand/collapse (← again: parent) · a answer path · "
            "e expand all · c collapse all · / find (is:wrong is:correct is:unanswered is:inverted) · n/p next/"
            "prev match · i next iteration · s side by side · o other iteration · tab switch pane · q quit")

    def __init__(self, sources: Sources, problem: str | None = None):
        super().__init__()
        self.sources = sources
        self.it_index = 0
        self.tree_index = 0
        self.other_index: int | None = None   # iteration shown beside, in side-by-side mode
        self.find_query = ""                   # the last find query: n / p walk the problems it matches
        if problem is not None:
            for i, it in enumerate(sources.iterations):
                for j, t in enumerate(it.trees):
                    if t.problem.id == problem:
                        self.it_index, self.tree_index = i, j
                        break
                else:
                    continue
                break
            else:
                from envs.errors import UserError

                raise UserError(f"--problem: no tree for problem '{problem}' in "
                                f"{', '.join(str(it.path) for it in sources.iterations)}")

    # --- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield Static(id="compare")
        with Horizontal(id="main"):
            yield SearchTree("(root)", id="tree")
            yield SearchTree("(root)", id="other")
            with VerticalScroll(id="detail"):
                yield Static(id="detail-text")
        yield Footer()

    def on_mount(self) -> None:
        self.load_tree()
        self.query_one("#tree", SearchTree).focus()

    # --- state ----------------------------------------------------------------------------------
    @property
    def iteration(self) -> Iteration:
        return self.sources.iterations[self.it_index]

    @property
    def tree(self) -> Tree:
        return self.iteration.trees[self.tree_index]

    def load_tree(self) -> None:
        it, tree = self.iteration, self.tree
        self.query_one("#tree", SearchTree).show(tree, it.overlay(tree), self.sources.env)
        s = answer_summary(tree)
        inv = it.inverted(tree)
        title = Text(f" {it.name} · {self.tree_index + 1}/{len(it.trees)} · {tree.problem.id} · answer "
                     f"{s['answer']} {verdict_mark_of(s)} (ref {s['reference']})", no_wrap=True, overflow="ellipsis")
        if inv:
            title.append(f" · {inv} inverted", style="bold red")
        title.append(f" · {tree.prompt.strip()}", style="dim")
        self.query_one("#title", Static).update(title)
        self.show_detail(tree, tree.root)
        if self.has_class("compare"):
            self.load_other()

    def show_detail(self, tree: Tree, node: Node) -> None:
        it, env = self.iteration, self.sources.env
        out = Text()
        if node.parent is None:
            s = answer_summary(tree)
            out.append("problem ", style="dim")
            out.append(f"{tree.problem.id}\n")
            out.append(tree.prompt.rstrip() + "\n", style="bold")
            out.append(f"answer {s['answer']} {s['verdict']} (reference {s['reference']})\n",
                       style="green" if s["verdict"] == "correct" else "red")
            out.append("answer path: ", style="dim")
            out.append(" → ".join(n.step.strip() for n in tree.answer_path()[1:]) + "\n")
            ent = s["root_entropy"]
            out.append(f"nodes {s['nodes']}  terminals {s['terminals']}  correct {s['correct']}\n"
                       f"depth {s['max_depth']}  tokens {s['tokens']}\n"
                       f"root entropy {'-' if ent is None else f'{ent:.2f} bits'}\n\n", style="dim")
        else:
            out.append(node.step + "\n\n", style="bold")
        refs = it.overlay(tree).get(node.id, [])
        for ref in refs:  # the pairs first: they are what a 24-line terminal must not hide
            style = "bold red" if ref.label == "inverted" else "green" if ref.role == "chosen" else "red"
            out.append(f"{ref.mark} " + describe_pair(tree, ref, width=24) + "\n", style=style)
        if refs:
            out.append("\n")
        for k, v in node_fields(tree, node, env):
            if k == "checkpoint" and len(v) > 22:  # the directory's name is what tells checkpoints apart
                v = "…/" + v.rstrip("/").rsplit("/", 1)[-1]
            out.append(f"{k:<11}", style="dim")
            out.append(f"{v}\n")
        self.query_one("#detail-text", Static).update(out)

    # --- side by side ---------------------------------------------------------------------------
    def _others(self) -> list[int]:
        """Iterations (other than the current) holding the current problem, the next ones first."""
        n = len(self.sources.iterations)
        order = [(self.it_index + k) % n for k in range(1, n)]
        return [i for i in order if self.sources.iterations[i].find(self.tree) is not None]

    def load_other(self) -> None:
        others = self._others()
        if not others:
            self.remove_class("compare")
            self.notify(f"{self.tree.problem.id} is in no other iteration", severity="warning")
            return
        if self.other_index not in others:
            self.other_index = others[0]
        other_it = self.sources.iterations[self.other_index]
        other = other_it.find(self.tree)
        assert other is not None
        self.query_one("#other", SearchTree).show(other, other_it.overlay(other), self.sources.env)
        c = compare(self.tree, other)
        a, b, g = c["a"], c["b"], c["grew"]

        def ent(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f}"

        won = ("same answer" if c["same_answer"] else "answer changed")
        text = Text()
        text.append(f"{self.iteration.name} → {other_it.name}: ", style="bold")
        text.append(f"nodes {a['nodes']}→{b['nodes']} ({g['nodes']:+d})  correct leaves {a['correct']}→{b['correct']}"
                    f"  depth {a['max_depth']}→{b['max_depth']}\n")
        text.append(f"root entropy {ent(a['root_entropy'])}→{ent(b['root_entropy'])} bits  "
                    f"top first step {a['top_first_step']} → {b['top_first_step']}\n")
        text.append(f"answer {a['answer']} {a['verdict']} → {b['answer']} {b['verdict']} ({won})",
                    style="green" if b["verdict"] == "correct" else "red")
        self.query_one("#compare", Static).update(text)

    # --- actions --------------------------------------------------------------------------------
    def on_tree_node_highlighted(self, event: TreeWidget.NodeHighlighted) -> None:
        widget = event.control
        if not isinstance(widget, SearchTree) or widget.search_tree is None or event.node.data is None:
            return
        if widget.id == "tree":
            self.show_detail(widget.search_tree, widget.search_tree.node(event.node.data))

    def action_find(self) -> None:
        screen = FindScreen(self.iteration, self.find_query)

        def picked(index: int | None) -> None:
            if index is not None:
                self.find_query = screen.query_text
                self.tree_index = index
                self.load_tree()

        self.push_screen(screen, picked)

    def action_step_problem(self, delta: int) -> None:
        """The next / previous problem (of those the last find query matched)."""
        it = self.iteration
        shown = [i for i, t in enumerate(it.trees) if matches(self.find_query, it, t)] or [self.tree_index]
        later = [i for i in shown if (i - self.tree_index) * delta > 0]
        if later:
            self.tree_index = later[0] if delta > 0 else later[-1]
        else:  # wrap around
            self.tree_index = shown[0] if delta > 0 else shown[-1]
        self.load_tree()

    def action_step_iteration(self, delta: int) -> None:
        if len(self.sources.iterations) < 2:
            self.notify("only one iteration loaded", severity="warning")
            return
        current = self.tree
        self.it_index = (self.it_index + delta) % len(self.sources.iterations)
        same = self.iteration.find(current)
        self.tree_index = self.iteration.trees.index(same) if same is not None else 0
        if same is None:
            self.notify(f"{current.problem.id} is not in {self.iteration.name}; showing its first problem")
        self.other_index = None
        self.load_tree()

    def action_side_by_side(self) -> None:
        if self.has_class("compare"):
            self.remove_class("compare")
            return
        self.add_class("compare")
        self.load_other()

    def action_other_iteration(self) -> None:
        others = self._others()
        if self.has_class("compare") and len(others) > 1 and self.other_index in others:
            self.other_index = others[(others.index(self.other_index) + 1) % len(others)]
            self.load_other()

    def action_keys(self) -> None:
        self.notify(self.KEYS, title="keys", timeout=12)

    def _focused_tree(self) -> SearchTree:
        w = self.focused
        return w if isinstance(w, SearchTree) else self.query_one("#tree", SearchTree)

    def action_answer_path(self) -> None:
        self._focused_tree().show_answer_path()

    def action_expand_all(self) -> None:
        self._focused_tree().root.expand_all()

    def action_collapse_all(self) -> None:
        t = self._focused_tree()
        t.root.collapse_all()
        t.root.expand()
        t.move_cursor(t.root)
