"""The run directory: where each artifact lives, atomic directory writes, and stage-completion markers.

Layout (../shared/DESIGN.md)::

    runs/<name>/config.yaml            the resolved config
    runs/<name>/iter-000/trees.jsonl   search trees
    runs/<name>/iter-000/pairs.jsonl   preference data (SFT runs: verified solutions)
    runs/<name>/iter-000/policy/       HF checkpoint after training (value/ likewise)
    runs/<name>/iter-000/metrics.json  accuracy, pair stats, value-model quality, compute used
    runs/<name>/summary.json           one row per iteration (iteration -1 = the base policy), summary.png

Stage markers live apart, in ``runs/<name>/.state/<stage>.json`` (what the stage reported: counts,
timings). A marker is written only after the stage's artifact is complete, so on `--resume` a stage
with a marker is skipped and one without is redone from scratch (its half-written temp files removed).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from envs.errors import UserError
from envs.io import atomic_dir, atomic_write_json

STAGES = ("search", "pairs", "value", "train", "eval")


class RunDir:
    """Paths and markers of one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # --- paths ----------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def summary_png(self) -> Path:
        return self.root / "summary.png"

    @property
    def state(self) -> Path:
        return self.root / ".state"

    def iter_dir(self, i: int) -> Path:
        return self.root / f"iter-{i:03d}"

    def trees(self, i: int) -> Path:
        return self.iter_dir(i) / "trees.jsonl"

    def pairs(self, i: int) -> Path:
        return self.iter_dir(i) / "pairs.jsonl"

    def policy(self, i: int) -> Path:
        return self.iter_dir(i) / "policy"

    def value(self, i: int) -> Path:
        return self.iter_dir(i) / "value"

    def metrics(self, i: int) -> Path:
        return self.iter_dir(i) / "metrics.json"

    # --- markers --------------------------------------------------------------------------------
    @staticmethod
    def stage_key(stage: str, iteration: int | None = None) -> str:
        return stage if iteration is None else f"iter-{iteration:03d}.{stage}"

    def done(self, stage: str, iteration: int | None = None) -> dict[str, Any] | None:
        """What a finished stage recorded, or None when it has not finished."""
        path = self.state / f"{self.stage_key(stage, iteration)}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:  # cannot happen with atomic writes; treat as unfinished
            return None

    def mark(self, stage: str, iteration: int | None, info: dict[str, Any]) -> None:
        atomic_write_json(self.state / f"{self.stage_key(stage, iteration)}.json", info)

    def finished_iterations(self) -> list[int]:
        return sorted(int(p.parent.name[5:]) for p in self.root.glob("iter-*/metrics.json"))

    def is_started(self) -> bool:
        return self.config.is_file() or self.state.is_dir()

    # --- atomic directories ---------------------------------------------------------------------
    @contextmanager
    def atomic_dir(self, final: Path) -> Iterator[Path]:
        """`envs.io.atomic_dir(final)`, after removing the temp directories a killed run left beside it.

        The stage fills the temp directory it is given; an old `final` is replaced whole on success.
        """
        for stale in final.parent.glob(f".{final.name}.tmp*"):  # left by a killed run
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        with atomic_dir(final) as tmp:
            yield tmp

    def check_new_or_resume(self, resume: bool) -> None:
        """A started run needs --resume; --resume needs a started run."""
        if self.is_started() and not resume:
            raise UserError(f"{self.root}: a run already lives here; pass --resume to continue it "
                            f"or choose another name/--out")
        if resume and not self.is_started():
            raise UserError(f"{self.root}: nothing to resume (no run was started there)")


def run_root_of(path: str | os.PathLike) -> Path | None:
    """The run directory holding `path` (the run dir itself, an iter-NNN dir or a file in one), or None."""
    p = Path(path).resolve()
    for cand in (p, p.parent, p.parent.parent):
        if (cand / "config.yaml").is_file() and any(cand.glob("iter-*")):
            return cand
    return None


def run_env(path: str | os.PathLike) -> tuple[str, dict[str, Any]] | None:
    """(env name, knobs) from the config.yaml of the run holding `path`, or None outside a run."""
    root = run_root_of(path)
    if root is None:
        return None
    from selfimprove.config import load_config

    cfg = load_config(root / "config.yaml")
    return cfg.env.name, dict(cfg.env.knobs)
