"""Problem records from the files users bring: JSONL read line by line (errors name file:line), and
everything else through HF `datasets`: a `save_to_disk` directory (`load_from_disk`), parquet, JSON,
CSV or arrow files (`load_dataset(<format>, data_files=...)`; errors name the file and record index).

`datasets` is imported only when such a file is read; its cache goes to a temporary directory that is
removed afterwards (the records are kept in memory): reading a file leaves no cached copy behind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from envs.errors import UserError
from envs.io import iter_jsonl

# file suffix -> the `datasets` packaged builder that reads it
FORMATS = {".parquet": "parquet", ".json": "json", ".csv": "csv", ".arrow": "arrow"}


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _load_with_datasets(path: Path) -> Any:
    """A `datasets.Dataset` for a save_to_disk directory or a parquet/JSON/CSV/arrow file."""
    import datasets

    datasets.disable_progress_bars()
    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path), keep_in_memory=True)
        except Exception as e:  # any reason datasets gives (not a dataset dir, corrupt arrow file)
            raise UserError(f"{path}: not a `datasets` directory saved with save_to_disk ({_first_line(e)})") from None
        if isinstance(ds, datasets.DatasetDict):
            splits = [str(name) for name in ds]
            raise UserError(f"{path}: holds the splits {', '.join(splits)}; point the path at one of them, "
                            f"e.g. {path / splits[0]}")
        return ds
    builder = FORMATS.get(path.suffix.lower())
    if builder is None:
        raise UserError(f"{path}: unknown file type '{path.suffix}' (use .jsonl, .json, .parquet, .csv, "
                        ".arrow or a `datasets` directory)")
    with tempfile.TemporaryDirectory(prefix="selfimprove-datasets-") as cache:
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                         keep_in_memory=True)
        except Exception as e:  # any reason datasets gives (bad JSON, not parquet, ...)
            raise UserError(f"{path}: cannot be read as {builder} by `datasets` ({_first_line(e)})") from None


def iter_records(path: str, required: Sequence[str] = ()) -> Iterator[tuple[str, dict[str, int], dict[str, Any]]]:
    """Yield (where, place, record) for each record of `path`; `where` names it in error messages.

    JSONL: ``file:line`` and ``{"line": n}``; other files: ``file record i`` and ``{"record": i}`` (0-based).
    A record without a `required` field is a UserError naming the file (and line) and the field.
    """
    p = Path(path)
    if p.suffix.lower() == ".jsonl" or (p.is_file() and p.suffix.lower() not in FORMATS):
        for lineno, obj in iter_jsonl(p, required=required):
            yield f"{path}:{lineno}", {"line": lineno}, obj
        return
    if not p.exists():
        raise UserError(f"{path}: file not found")
    ds = _load_with_datasets(p)
    missing = [k for k in required if k not in ds.column_names]
    if missing:
        raise UserError(f"{path}: field '{missing[0]}' is missing (its fields: {', '.join(ds.column_names)})")
    for i, record in enumerate(ds):
        yield f"{path} record {i}", {"record": i}, dict(record)
