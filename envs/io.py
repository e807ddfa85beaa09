"""Atomic file writes, guarded replacement of existing outputs, and JSONL reading with file:line errors;
every artifact goes through here.

Never destroy what the user did not ask to destroy: an output path is replaced only when selfimprove can
prove it wrote what is there (a directory holding `MARKER`, a file that starts with our schema tag), and a
directory it wrote only when the caller passes ``replace="ours"`` (the CLI's ``--overwrite``). A write that
fails (full disk, read-only file system, no permission) is a UserError naming the file, with the old
artifact left in place and no temp file left behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from envs.errors import UserError
from envs.types import SCHEMA_VERSION

MARKER = ".selfimprove.json"  # in every directory selfimprove writes whole (run dirs, models): proof it is ours
Replace = Literal["never", "ours", "any"]


# --- what selfimprove wrote --------------------------------------------------------------------------
def write_marker(directory: str | os.PathLike, kind: str) -> None:
    """Mark `directory` as written by selfimprove (`kind`: run, policy, value, tiny-policy, ...)."""
    atomic_write_json(Path(directory) / MARKER, {"kind": kind, "written_by": "selfimprove",
                                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def marker_kind(directory: str | os.PathLike) -> str | None:
    """The kind a directory's marker records, None when it has no (readable) marker."""
    try:
        d = json.loads((Path(directory) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(d.get("kind", "output")) if isinstance(d, dict) else None


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None


def check_dir_output(out: str | os.PathLike, replace: Replace = "never", *, option: str = "--out",
                     what: str = "output") -> None:
    """Refuse (UserError) to write directory `out` over anything selfimprove cannot prove it wrote.

    Absent or empty: fine. A file, a link, or a directory without `MARKER`: refused whatever `replace`
    says, unless `replace="any"` (the loop's own paths inside its own locked run directory). One with
    the marker: replaced only with `replace="ours"` (the CLI's --overwrite).
    """
    out = Path(out)
    if replace == "any" or not (out.exists() or out.is_symlink()) or _is_empty_dir(out):
        return
    if out.is_symlink():
        raise UserError(f"{option} '{out}' is a symbolic link; give the real directory path")
    if not out.is_dir():
        raise UserError(f"{option} '{out}' is a file, not a directory; choose another path (nothing was changed)")
    kind = marker_kind(out)
    if kind is None:
        raise UserError(f"{option} '{out}' is a directory selfimprove did not write (it has files and no "
                        f"{MARKER}); choose another path or empty it yourself (nothing was changed)")
    if replace != "ours":
        raise UserError(f"{option} '{out}' already holds a {kind} selfimprove wrote; pass --overwrite to "
                        f"replace it, or choose another path")


def written_by_us(path: Path) -> bool:
    """Whether file `path` looks like one selfimprove writes: our schema tag in its first or last 4 KiB
    (JSON(L) records carry it, exports a GraphML graph attribute or a DOT comment)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
            f.seek(max(0, path.stat().st_size - 4096))
            head += f.read(4096)
    except OSError:
        return False
    return f'"{SCHEMA_VERSION}"'.encode() in head or f">{SCHEMA_VERSION}<".encode() in head \
        or f"// {SCHEMA_VERSION}".encode() in head


def check_file_output(path: str | os.PathLike, *, option: str = "--out",
                      ours: Callable[[Path], bool] = written_by_us, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse (UserError) to write file `path` over a directory, over a file selfimprove did not write, or
    over one of the command's `inputs`.

    An absent or empty file, or one `ours` recognises (a trees/pairs JSONL or an export we wrote), is
    replaced as any `-o FILE` would be.
    """
    path = Path(path)
    for src in inputs:
        if path.exists() and Path(src).exists() and path.resolve() == Path(src).resolve():
            raise UserError(f"{option} '{path}' is also the command's input; choose another path")
    if path.is_dir():
        raise UserError(f"{option} '{path}' is a directory; give a file path (nothing was changed)")
    if path.is_symlink() and not path.exists():
        raise UserError(f"{option} '{path}' is a dangling symbolic link; give a real file path")
    if path.is_file() and path.stat().st_size > 0 and not ours(path):
        raise UserError(f"{option} '{path}' exists and is not a file selfimprove wrote; choose another path "
                        f"or remove it yourself (nothing was changed)")


def write_failure(path: str | os.PathLike, e: BaseException) -> UserError:
    """One sentence for an OSError (or a library's wrapped one) while writing `path`: which file, why."""
    text = str(e).strip()
    if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or "No space left" in text:
        reason = "no space left on device"
    elif isinstance(e, OSError) and e.strerror:
        reason = e.strerror
    else:
        reason = text.splitlines()[0][:200] if text else type(e).__name__
    return UserError(f"{path}: could not be written ({reason}); the previous version, if any, is unchanged "
                     f"and a rerun (--resume for a run) starts this step again")


def _is_write_failure(e: BaseException, tmp: Path) -> bool:
    """Whether `e`, raised while filling temp directory `tmp`, is the disk refusing a write there."""
    if isinstance(e, shutil.Error):  # copytree's list of (src, dst, why)
        rows = e.args[0] if e.args and isinstance(e.args[0], list) else []
        return any(isinstance(r, tuple) and len(r) == 3 and str(r[1]).startswith(str(tmp)) for r in rows)
    if isinstance(e, OSError):
        inside = e.filename is not None and Path(str(e.filename)).resolve().is_relative_to(tmp.resolve())
        return inside or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
    text = str(e)
    return "No space left" in text or "File too large" in text or "os error" in text.lower()


# --- atomic writes -----------------------------------------------------------------------------------
def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the whole new one, never a part.

    Callers that write a user-named path check it first (`check_file_output`); a failed write (full
    disk, ...) is a UserError naming the file, with no temp file left.
    """
    path = Path(path)
    tmp = None
    made = _missing_parents(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _remove_empty(made)
        if isinstance(e, OSError):
            raise write_failure(path, e) from None
        raise


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move directory `src` to `dst`, replacing an existing `dst` whole with at most a rename in between.

    Low level: callers decide first that `dst` may go (`check_dir_output`; `atomic_dir` does).
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if old.exists():  # our own leftover from a crash between the renames below
            shutil.rmtree(old)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _write_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a full disk raises from inside a save: OSError, and safetensors' own error type."""
    try:
        from safetensors import SafetensorError
    except ImportError:
        return (OSError,)
    return (OSError, SafetensorError)


@contextmanager
def atomic_dir(out: str | os.PathLike, *, kind: str = "model", replace: Replace = "never",
               option: str = "--out") -> Iterator[Path]:
    """A fresh temp directory beside `out` to fill; marked as ours (`MARKER`, `kind`) and swapped in whole
    when the block finishes, removed when it raises.

    The one way a directory artifact (a checkpoint, a value model, the tiny policy) is written: the
    caller opens it, the trainer writes into the directory it is given. What may be replaced is
    checked before the block runs (`check_dir_output`: nothing is trained only to be refused), and a
    failed write (full disk: OSError or SafetensorError) is a UserError naming `out`.
    """
    out = Path(out)
    check_dir_output(out, replace, option=option)
    made = _missing_parents(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    except OSError as e:
        _remove_empty(made)
        raise write_failure(out, e) from None
    try:
        yield tmp
        write_marker(tmp, kind)
        check_dir_output(out, replace, option=option)  # still ours to replace after the (long) block
        replace_dir(tmp, out)
    except _write_errors() as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        if _is_write_failure(e, tmp):
            raise write_failure(out, e) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, deepest first (what a failed write removes again)."""
    out = []
    p = path.parent
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first; one that is no longer empty stays
        try:
            d.rmdir()
        except OSError:
            return


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


# --- reading -----------------------------------------------------------------------------------------
def check_input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` as a Path when it is a readable file; a UserError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a {what}")
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    if not path.is_file():
        raise UserError(f"{path}: is not a regular file")
    return path


def iter_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a directory, bytes that are not UTF-8, bad
    JSON or a missing field is a UserError naming file:line."""
    path = check_input_file(path)
    required = tuple(required)
    try:
        f = path.open("rb")
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                f"{e.start + 1}); is this a binary file?") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:  # JSONDecodeError, or an integer too long to convert
                msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e).split(";")[0]
                raise UserError(f"{path}:{lineno}: not valid JSON ({msg})") from None
            except RecursionError:
                raise UserError(f"{path}:{lineno}: JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            for key in required:
                if key not in obj:
                    raise UserError(f"{path}:{lineno}: field '{key}' is missing")
            yield lineno, obj


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path, required)]
