"""The one `--set key.sub=value` parser: run-config overrides and every command's knob options.

A value is read as YAML when that gives a number, a boolean, null (written `null` or `~`), a list, a
mapping or a (possibly quoted) string; anything else YAML would turn into another type (a date) or
cannot read (``*+``, an alias marker) stays as written. A dotted key reaches into sections.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from envs.errors import UserError

NULLS = ("null", "Null", "NULL", "~")


def parse_value(text: str) -> Any:
    """`3` → 3, `0.5` → 0.5, `true` → True, `[1, 2]` → [1, 2], `{a: 1}` → {"a": 1}, `+-*` → "+-*"."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None:  # `null`, or text YAML reads as nothing (empty, a comment): keep what was written
        return None if text.strip() in NULLS else text
    return value if isinstance(value, (str, bool, int, float, list, dict)) else text


def apply_overrides(raw: Mapping[str, Any], items: Iterable[str], *, option: str = "--set",
                    form: str = "key.sub=value") -> dict[str, Any]:
    """`key.sub=value` items set into a deep copy of `raw`; a malformed item is a UserError naming it
    (and the `form` the option takes)."""
    out = _deepcopy(dict(raw))
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"{option} '{item}': expected {form}")
        node = out
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise UserError(f"{option} '{item}': '{'.'.join(parts[:i + 1])}' is not a section")
            node = nxt
        node[parts[-1]] = parse_value(text)
    return out


def parse_sets(items: Iterable[str] | None, *, option: str = "--set") -> dict[str, Any]:
    """``["max_ops=3", "ops=+-"]`` → ``{"max_ops": 3, "ops": "+-"}``: a command's knob options as a mapping."""
    return apply_overrides({}, items or (), option=option, form="key=value")


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d
