"""The CLI's `Progress`: rich bars on stderr (so --json output stays clean), one per phase or stage.

A phase (the loop's "iter 0 search") starts a bar, and the work inside it, whatever its stages, advances
that bar. Outside phases (a single command), each new `stage` in the updates (the builder's "train" then
"eval") starts a bar of its own. A `loss` in an update shows beside the count. Without a terminal,
phases are announced as lines.
"""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from envs.progress import Progress
from selfimprove.cli.app import err_console


class Bars(Progress):
    """Draws every report as rich bars. label: the first bar's name when work starts without a phase;
    stages: display names for stage keys; transient: bars vanish when done (commands), or stay (runs)."""

    def __init__(self, label: str = "working", *, stages: dict[str, str] | None = None, transient: bool = True,
                 quiet: bool = False):
        self.label, self.stages, self.quiet = label, dict(stages or {}), quiet
        self.bars = RichProgress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err_console,
                                 transient=transient, disable=quiet)
        self.task: TaskID | None = None
        self.stage: str | None = None
        self.phased = False  # a phase is open: stages advance its bar

    def __enter__(self) -> Bars:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.__exit__(*exc)

    def phase(self, name: str, total: int | None = None) -> None:
        self._finish()
        self.task, self.stage, self.phased = self.bars.add_task(name, total=total, info=""), None, True
        if not self.quiet and not self.bars.console.is_terminal:  # no live bars: say what starts
            self._say(f"{name} …")

    def update(self, done: int, total: int | None = None, **info: Any) -> None:
        stage = info.get("stage")
        if self.task is None or (not self.phased and stage != self.stage):
            self._finish()
            name = self.stages.get(stage, str(stage)) if stage else self.label
            self.task = self.bars.add_task(name, total=total, info="")
        self.stage = stage
        loss = info.get("loss")
        self.bars.update(self.task, completed=done, total=total,
                         info=f"loss {loss:.4f}" if isinstance(loss, float) else "")

    def log(self, message: str) -> None:
        if not self.quiet:
            self._say(message)

    def _finish(self) -> None:
        """Show the current bar as complete (its last report may have come before its last unit)."""
        if self.task is not None:
            total = self.bars.tasks[-1].total or 1
            self.bars.update(self.task, completed=total, total=total)

    def _say(self, message: str) -> None:
        self.bars.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)
