"""The one progress protocol: the loop, search, training, evaluation and the policy builder report
through it, and the CLI draws it as rich bars.

It lives at the bottom of the dependency chain (beside `envs.types` and `envs.io`) so that every
package can take a `Progress` without importing upward. The base class ignores every report; a
reporter overrides what it shows. Long work calls `update(done, total, **info)` as it advances:
`info` carries what a bar may show beside the count (a training step's `loss`) and, for work with
parts, `stage` (the builder's "train" then "eval", evaluation's "greedy" then "best-of-k"). Only the
orchestrator (the loop, or a CLI command) opens phases and logs lines.
"""

from __future__ import annotations

from typing import Any


class Progress:
    """Where long work says how far it got; this base class shows nothing (tests, --json runs)."""

    def phase(self, name: str, total: int | None = None) -> None:
        """A new phase starts (e.g. "iter 1 search"), with `total` units when known."""

    def update(self, done: int, total: int | None = None, **info: Any) -> None:
        """The current phase has finished `done` of `total` units; `info`: stage, loss and the like."""

    def log(self, message: str) -> None:
        """A line worth showing (a stage finished, a stage skipped on resume)."""


SILENT = Progress()  # the default reporter: shows nothing


class Staged(Progress):
    """Forwards to `inner`, tagging every update with `stage`: one part of a piece of work that has several."""

    def __init__(self, inner: Progress, stage: str):
        self.inner, self.stage = inner, stage

    def phase(self, name: str, total: int | None = None) -> None:
        self.inner.phase(name, total)

    def update(self, done: int, total: int | None = None, **info: Any) -> None:
        self.inner.update(done, total, **{**info, "stage": self.stage})

    def log(self, message: str) -> None:
        self.inner.log(message)
