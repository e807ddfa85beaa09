"""Atomic file writes and JSONL reading with file:line errors; every artifact goes through here."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from envs.errors import UserError


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move directory `src` to `dst`, replacing an existing `dst` whole with at most a rename in between.

    Directory artifacts (checkpoints, value models) are built in a temp dir beside `dst`, then swapped in.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


@contextmanager
def atomic_dir(out: str | os.PathLike, **replace_kw: Any) -> Iterator[Path]:
    """A fresh temp directory beside `out` to fill; swapped in whole by `replace_dir` when the block
    finishes, removed when it raises. Keyword arguments go to `replace_dir`.

    The one way a directory artifact (a checkpoint, a value model, the tiny policy) is written: the
    caller opens it, the trainer writes into the directory it is given.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        replace_dir(tmp, out, **replace_kw)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write one JSON object per line (dicts, or pydantic models via model_dump); returns the count."""
    lines = []
    for r in records:
        if hasattr(r, "model_dump"):
            r = r.model_dump(mode="json")
        lines.append(json.dumps(r, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def iter_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; bad JSON or a missing field is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    required = tuple(required)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            for key in required:
                if key not in obj:
                    raise UserError(f"{path}:{lineno}: field '{key}' is missing")
            yield lineno, obj


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path, required)]
