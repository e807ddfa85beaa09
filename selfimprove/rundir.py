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

Ownership and exclusion: a run directory carries `envs.io.MARKER` (kind "run") from its first moment, and
only a directory with it is ever resumed or started over (`--overwrite`); any other non-empty directory
is refused. A running process holds an exclusive `fcntl.flock` on ``.selfimprove.lock`` (which records
its pid, host and start time), so a second process on the same run is refused naming the holder; the
kernel drops the lock when its holder dies, so a dead run's lock is simply taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from envs.errors import UserError
from envs.io import MARKER, atomic_dir, atomic_write_json, marker_kind, write_failure, write_marker

LOCK = ".selfimprove.lock"
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
        """Whether a run lives here: our marker (or, for runs written before markers, a `.state/`)."""
        return marker_kind(self.root) == "run" or (self.state.is_dir() and marker_kind(self.root) is None)

    def check_ours(self) -> None:
        """Refuse (UserError) a path that is neither free (absent, empty) nor a run directory we wrote."""
        root = self.root
        if root.is_symlink() and not root.exists():
            raise UserError(f"{root}: is a dangling symbolic link; choose another run directory")
        if not root.exists() or self.is_started():
            return
        if not root.is_dir():
            raise UserError(f"{root}: is a file, not a run directory; choose another --out (nothing was changed)")
        kind = marker_kind(root)
        if kind is not None:
            raise UserError(f"{root}: holds a {kind} selfimprove wrote, not a run; choose another name/--out")
        if any(p.name != LOCK for p in root.iterdir()):
            raise UserError(f"{root}: is a directory selfimprove did not write (it has files and no {MARKER} "
                            f"run marker); choose another name/--out (nothing was changed)")

    # --- one process per run --------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's exclusive lock for the block; a UserError naming the holder when another has it."""
        path = self.root / LOCK
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_failure(path, e) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{self.root}: another selfimprove process is running this run "
                                f"({_holder(path)}); wait for it to finish or stop it") from None
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the flock

    @contextmanager
    def claim(self, *, resume: bool = False, overwrite: bool = False) -> Iterator[None]:
        """Hold the run directory for the block: ownership checked, lock taken, then a new run, a resumed
        one (`resume`) or ours started over (`overwrite`: everything in it removed)."""
        if resume and overwrite:
            raise UserError("--resume continues a run and --overwrite starts it over; give one")
        self.check_ours()
        if resume and not self.is_started():
            self.check_new_or_resume(resume)  # refused before anything is created
        with self.lock():
            self.check_ours()  # unchanged while we waited for nothing: checked again under the lock
            if overwrite and self.is_started():
                for p in self.root.iterdir():
                    if p.name != LOCK:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            else:
                self.check_new_or_resume(resume)
            if marker_kind(self.root) is None:
                write_marker(self.root, "run")
            yield

    # --- atomic directories ---------------------------------------------------------------------
    @contextmanager
    def atomic_dir(self, final: Path) -> Iterator[Path]:
        """`envs.io.atomic_dir(final)`, after removing the temp directories a killed run left beside it.

        The stage fills the temp directory it is given; an old `final` is replaced whole on success.
        """
        for stale in final.parent.glob(f".{final.name}.tmp*"):  # left by a killed run
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        with atomic_dir(final, kind=final.name, replace="any") as tmp:  # inside our own locked run dir
            yield tmp

    def check_new_or_resume(self, resume: bool) -> None:
        """A started run needs --resume; --resume needs a started run."""
        if self.is_started() and not resume:
            raise UserError(f"{self.root}: a run already lives here; pass --resume to continue it, "
                            f"--overwrite to start it over, or choose another name/--out")
        if resume and not self.is_started():
            raise UserError(f"{self.root}: nothing to resume (no run was started there)")


def _holder(lock_file: Path) -> str:
    """Who holds a run's lock, from what it wrote into the lock file: "pid 12, host h, since ..."."""
    try:
        d = json.loads(lock_file.read_text(encoding="utf-8"))
        return f"pid {d['pid']} on host {d['host']}, started {d['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid is not recorded yet"


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
