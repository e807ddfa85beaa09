"""The shared plumbing: `envs.io.atomic_dir` (the one way directory artifacts are written) and the one
`--set key.sub=value` parser (run-config overrides and every command's knob options)."""

from __future__ import annotations

import pytest

from envs.errors import UserError
from envs.io import MARKER, atomic_dir, marker_kind
from selfimprove.overrides import apply_overrides, parse_sets, parse_value


def test_atomic_dir_swaps_in_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir() and not out.exists()
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1" and marker_kind(out) == "model"
    with pytest.raises(RuntimeError, match="half way"), atomic_dir(out, replace="ours") as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("half way")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.txt"]  # the old directory, untouched
    with atomic_dir(out, replace="ours") as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "c.txt"]  # replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp directory left


@pytest.mark.parametrize(("text", "value"), [
    ("3", 3), ("0.5", 0.5), ("true", True), ("null", None), ("~", None), ("[1, 2]", [1, 2]),
    ("{max_ops: 2}", {"max_ops": 2}), ("+-*", "+-*"), ("*+", "*+"), ("'3'", "3"), ("", ""),
    ("2024-01-01", "2024-01-01"), ("#x", "#x"), ("/tmp/a b.jsonl", "/tmp/a b.jsonl"),
])
def test_values_read_as_yaml_unless_yaml_would_change_the_text(text, value):
    assert parse_value(text) == value


def test_dotted_keys_reach_into_sections_and_bad_items_are_one_sentence():
    raw = {"train": {"beta": 0.1}}
    assert apply_overrides(raw, ["train.beta=0.2", "env.knobs.max_ops=3"]) == {
        "train": {"beta": 0.2}, "env": {"knobs": {"max_ops": 3}}}
    assert raw == {"train": {"beta": 0.1}}
    assert parse_sets(["max_ops=3", "ops=+-"]) == {"max_ops": 3, "ops": "+-"}
    with pytest.raises(UserError, match=r"^--knob 'max_ops': expected key=value$"):
        parse_sets(["max_ops"], option="--knob")
    with pytest.raises(UserError, match=r"'train\.beta' is not a section"):
        apply_overrides(raw, ["train.beta.x=1"])
