"""Preference records written by the strategies and read by the trainers: pairs and ranked lists.

One JSON object per line, tagged with SCHEMA_VERSION and `kind` ("pair" or "list"), flat enough for
`datasets.load_dataset("json", data_files=...)`. A completion is step text plus the env's step delimiter
(stored in `delimiter`), so the trained text is exactly what search renders.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from envs.errors import UserError, pydantic_message
from envs.io import atomic_write_jsonl, iter_jsonl
from envs.types import SCHEMA_VERSION


class _Record(BaseModel):
    """Fields every record carries: where it came from (provenance) and how it was made."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(default=SCHEMA_VERSION, alias="schema")
    strategy: str
    prompt: str = Field(min_length=1, description="Problem prompt + shared prefix steps (each + delimiter).")
    delimiter: str = "\n"
    tree_id: str = ""
    problem_id: str = ""
    prefix_node: int = Field(default=0, description="Tree node whose path the prompt renders.")
    iteration: int = 0
    checkpoint: str | None = None
    depth: int = Field(default=0, description="Depth of the compared step(s) in the tree (root = 0).")
    _source: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """"file:line" when the record was read from a file, else ""."""
        return self._source


class PreferencePair(_Record):
    """`chosen` is preferred to `rejected` as the continuation of `prompt`.

    margin: the score gap behind the preference (e.g. Q gap); weight: per-pair loss weight; eps: label
    smoothing for conservative DPO (visit-count smoothing), in [0, 0.5].
    """

    kind: Literal["pair"] = "pair"
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    margin: float = 0.0
    weight: float = Field(default=1.0, ge=0.0)
    eps: float = Field(default=0.0, ge=0.0, le=0.5)
    chosen_node: int = -1
    rejected_node: int = -1

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.prompt, self.chosen, self.rejected)


class PreferenceList(_Record):
    """Continuations of `prompt` ranked best first, for list-wise losses (TPO).

    completions[i] = "".join(s + delimiter for s in steps[i]); scores are non-increasing; step_rewards[i]
    are the tree's values (Q) of each step of item i, kept for inspection and step-level weighting.
    """

    kind: Literal["list"] = "list"
    completions: list[str] = Field(min_length=2)
    steps: list[list[str]]
    scores: list[float]
    step_rewards: list[list[float]]
    node_ids: list[int]
    weight: float = Field(default=1.0, ge=0.0)

    @model_validator(mode="after")
    def _consistent(self) -> PreferenceList:
        n = len(self.completions)
        for name in ("steps", "scores", "step_rewards", "node_ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"'{name}' has {len(getattr(self, name))} items but 'completions' has {n}")
        for i, (c, st) in enumerate(zip(self.completions, self.steps, strict=True)):
            if not c:
                raise ValueError(f"completion {i} is empty")
            if "".join(s + self.delimiter for s in st) != c:
                raise ValueError(f"completion {i} is not its steps joined with the delimiter")
        if any(a < b for a, b in zip(self.scores, self.scores[1:], strict=False)):
            raise ValueError("scores must be sorted best first")
        return self

    @property
    def key(self) -> tuple:
        return (self.prompt, *self.completions)


Record = PreferencePair | PreferenceList


def write_records(path: str | os.PathLike, records: Iterable[Record]) -> int:
    """Write records atomically as JSONL (one object per line); returns the count."""
    return atomic_write_jsonl(path, [r.model_dump(mode="json", by_alias=True) for r in records])


def read_records(path: str | os.PathLike, *, max_prompt_chars: int | None = None) -> list[Record]:
    """Read and validate a preference JSONL file; any bad line is a UserError naming file:line and field."""
    out: list[Record] = []
    path = Path(path)
    for lineno, obj in iter_jsonl(path):
        src = f"{path}:{lineno}"
        if obj.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise UserError(f"{src}: schema '{obj.get('schema')}' is not '{SCHEMA_VERSION}'")
        kind = obj.get("kind", "pair")
        cls = {"pair": PreferencePair, "list": PreferenceList}.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise UserError(f"{src}: field 'kind': '{kind}' is not 'pair' or 'list'")
        try:
            rec = cls.model_validate(obj)
        except ValidationError as e:
            first = e.errors()[0]
            if first.get("type") == "missing":
                raise UserError(f"{src}: field '{'.'.join(map(str, first['loc']))}' is missing") from None
            if first.get("type") == "string_too_short":
                raise UserError(f"{src}: field '{'.'.join(map(str, first['loc']))}' is empty") from None
            raise UserError(pydantic_message(e, src)) from None
        if max_prompt_chars is not None and len(rec.prompt) > max_prompt_chars:
            raise UserError(f"{src}: prompt is {len(rec.prompt)} characters, over the maximum {max_prompt_chars}")
        rec._source = src
        out.append(rec)
    return out
