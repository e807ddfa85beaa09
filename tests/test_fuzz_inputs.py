"""Fuzzing the files users hand to the CLI: every malformed trees or pairs file is one UserError (one line),
never another exception and never a hang.

Hypothesis mutates valid files (a field set to a value of any JSON type, a key deleted, a parent pointed
anywhere, so cycles too; bytes truncated, inserted or replaced by binary) and the commands that read
such files run in-process through the console script's `main` (`pairs`, `tree show`, `tree export`),
plus the readers `train` uses. pytest-timeout bounds each test, so a hang fails it instead of stalling.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.errors import UserError
from selfimprove.cli import main
from selfimprove.pairs import read_records
from selfimprove.train.policy import read_sft
from selfimprove.tree_view import pair_marks_file

FIXTURES = Path(__file__).parent / "fixtures"
TREES = [json.loads(line) for line in (FIXTURES / "pairs_trees.jsonl").read_text().splitlines()]
PAIR = {"schema": "selfimprove/1", "kind": "pair", "strategy": "q-gap", "prompt": "Q: 2+3*4\n", "delimiter": "\n",
        "tree_id": "tree-a", "problem_id": "p-a", "prefix_node": 0, "iteration": 0, "checkpoint": "ckpt-0",
        "depth": 1, "chosen": "3*4=12\n", "rejected": "2+3=5\n", "margin": 0.5, "weight": 1.0, "eps": 0.0,
        "chosen_node": 1, "rejected_node": 2}
LIST = {"schema": "selfimprove/1", "kind": "list", "strategy": "ranked-list", "prompt": "Q: 1+1\n",
        "delimiter": "\n", "tree_id": "tree-b", "completions": ["1+1=2\n", "1+1=3\n"],
        "steps": [["1+1=2"], ["1+1=3"]], "scores": [1.0, 0.0], "step_rewards": [[1.0], [-1.0]],
        "node_ids": [1, 3], "weight": 1.0}
SFT = {"prompt": "Q: 1+1\n", "completion": "A: 2\n"}

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5)
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _slots(obj: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) inside a JSON value: where a mutation can land."""
    out: list[tuple[Any, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k))
            out += _slots(v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i))
            out += _slots(v)
    return out


@st.composite
def mutated(draw, records: list[dict]) -> bytes:
    """A JSONL file of `records` after a few structural mutations, then maybe byte-level damage."""
    recs = copy.deepcopy(records)
    for _ in range(draw(st.integers(1, 3))):
        container, key = draw(st.sampled_from(_slots(recs)))
        op = draw(st.sampled_from(["set", "set", "delete", "parent"]))
        if op == "delete" and isinstance(container, dict):
            del container[key]
        elif op == "parent" and isinstance(container, dict) and "parent" in container:
            container["parent"] = draw(st.integers(-2, 12))  # anywhere: itself, a descendant, nowhere
        else:
            container[key] = draw(JSON_VALUES)
    data = "".join(json.dumps(r) + "\n" for r in recs).encode()
    damage = draw(st.sampled_from(["none", "none", "truncate", "insert", "binary"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif damage == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif damage == "binary":
        data = draw(st.binary(max_size=64))
    return data


def run_cli(*argv: str) -> tuple[int, str]:
    """The console script in-process: its exit code and stderr; any exception but a UserError escapes."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def assert_one_sentence(code: int, err: str) -> None:
    assert code in (0, 1), (code, err)
    if code == 1:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err


def assert_user_error_or_ok(fn, *args) -> None:
    try:
        fn(*args)
    except UserError as e:
        assert "\n" not in str(e).strip(), str(e)


@pytest.mark.timeout(600)
@SETTINGS
@given(data=mutated(TREES))
def test_malformed_trees_files_are_one_sentence(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("fuzz")
    trees, out = d / "trees.jsonl", d / "pairs.jsonl"
    trees.write_bytes(data)
    for strategy in ("q-gap", "first-error", "subtree-outcome", "ranked-list", "outcome"):
        code, err = run_cli("pairs", "--trees", str(trees), "--out", str(out), "--strategy", strategy)
        assert_one_sentence(code, err)
        if code == 1:
            assert not out.exists() and not [p for p in d.iterdir() if p.name.startswith(".")]
            break
        out.unlink()
    assert_one_sentence(*run_cli("tree", "show", str(trees)))
    for fmt in ("json", "graphml", "dot"):
        assert_one_sentence(*run_cli("tree", "export", str(trees), "--format", fmt))


@pytest.mark.timeout(600)
@SETTINGS
@given(data=mutated([PAIR, LIST, PAIR]))
def test_malformed_pairs_files_are_one_sentence(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("fuzz")
    pairs = d / "pairs.jsonl"
    pairs.write_bytes(data)
    assert_user_error_or_ok(read_records, pairs)  # what `train` reads first
    assert_user_error_or_ok(pair_marks_file, pairs, "tree-a")
    assert_one_sentence(*run_cli("tree", "show", str(FIXTURES / "pairs_trees.jsonl"), "--pairs", str(pairs)))


@pytest.mark.timeout(300)
@SETTINGS
@given(data=mutated([SFT, SFT]))
def test_malformed_sft_files_are_one_sentence(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "sft.jsonl"
    path.write_bytes(data)
    assert_user_error_or_ok(read_sft, path)
