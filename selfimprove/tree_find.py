"""The problem finder of `tree browse`: a query language (words match the problem id or prompt; is:correct,
is:wrong, is:unanswered, is:inverted filter) and the modal screen that lists the matching problems."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from search.tree import Tree
from selfimprove.tree_info import answer_summary
from selfimprove.tree_sources import Iteration

FILTERS = ("is:correct", "is:wrong", "is:unanswered", "is:inverted")


def matches(query: str, it: Iteration, tree: Tree) -> bool:
    """Whether `tree` passes a find query: words match the problem id or prompt (all of them);
    is:correct / is:wrong / is:unanswered filter by the returned answer, is:inverted by the pairs."""
    hay = f"{tree.problem.id} {tree.prompt}".lower()
    for word in query.lower().split():
        if word in ("is:correct", "is:wrong", "is:unanswered"):
            if answer_summary(tree)["verdict"] != {"is:correct": "correct", "is:wrong": "wrong",
                                                   "is:unanswered": "no answer"}[word]:
                return False
        elif word == "is:inverted":
            if not it.inverted(tree):
                return False
        elif word not in hay:
            return False
    return True


def verdict_mark_of(summary: dict[str, Any]) -> str:
    """✓ / ✗ / – for a tree's returned answer (correct / wrong / none)."""
    return {"correct": "✓", "wrong": "✗"}.get(summary["verdict"], "–")


class FindScreen(ModalScreen[int | None]):
    """Pick a problem of the current iteration: type to filter, arrows + enter to open, escape to cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "cancel")]
    DEFAULT_CSS = """
    FindScreen { align: center middle; }
    FindScreen > Vertical { width: 76; height: 20; border: round $accent; background: $surface; }
    FindScreen #find-help { color: $text-muted; height: 1; }
    """

    def __init__(self, it: Iteration, query: str = ""):
        super().__init__()
        self.it = it
        self.query_text = query
        self.shown: list[int] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Input(value=self.query_text, placeholder="problem id or text; is:wrong is:correct "
                        "is:unanswered is:inverted", id="find-input", compact=True)
            yield Static(f"{self.it.name}: enter opens, escape cancels", id="find-help")
            yield OptionList(id="find-list")

    def on_mount(self) -> None:
        self.refill(self.query_text)
        inp = self.query_one(Input)
        inp.focus()
        self.call_after_refresh(inp.action_select_all)  # typing replaces the last query

    def refill(self, query: str) -> None:
        ol = self.query_one(OptionList)
        ol.clear_options()
        self.shown = [i for i, t in enumerate(self.it.trees) if matches(query, self.it, t)]
        opts = []
        for i in self.shown[:500]:
            t = self.it.trees[i]
            s = answer_summary(t)
            inv = self.it.inverted(t)
            label = Text(no_wrap=True, overflow="ellipsis")
            label.append(f"{verdict_mark_of(s)} ", style="green" if s["verdict"] == "correct" else "red")
            label.append(f"{t.problem.id}  ")
            label.append(t.prompt.strip().replace("\n", " ⏎ "), style="dim")
            if inv:
                label.append(f"  {inv} inverted", style="bold red")
            opts.append(Option(label, id=str(i)))
        ol.add_options(opts)
        help_line = self.query_one("#find-help", Static)
        hint = "↓ to the list, enter opens, escape cancels"
        if "is:inverted" in query.lower() and self.it.labels is None:
            hint = "is:inverted needs audited pairs: --pairs, and --env with a step check"
        help_line.update(f"{self.it.name}: {len(self.shown)} of {len(self.it.trees)} problems · {hint}")
        if opts:
            ol.highlighted = 0

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self.refill(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value != self.query_text or not self.shown:  # typed faster than the list refilled
            self.query_text = event.value
            self.refill(event.value)
        ol = self.query_one(OptionList)
        if ol.highlighted is not None and self.shown:
            self.dismiss(self.shown[ol.highlighted])

    def on_key(self, event) -> None:
        if event.key == "down" and self.query_one(Input).has_focus:
            self.query_one(OptionList).focus()
            event.stop()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
