"""Bad input through the real console script: one sentence naming the file (and line or field), exit 1, no
traceback, nothing written. Binary files, fields of the wrong type, a parent cycle, a directory where a
file belongs, an empty config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "selfimprove")
FIXTURES = Path(__file__).parent / "fixtures"
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


def assert_one_sentence(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in res.stderr, (needle, res.stderr)


def tree_lines(mutate=None) -> str:
    """The fixture's trees, the first one changed by `mutate(tree_dict)`."""
    trees = [json.loads(line) for line in (FIXTURES / "pairs_trees.jsonl").read_text().splitlines()]
    if mutate is not None:
        mutate(trees[0])
    return "".join(json.dumps(t) + "\n" for t in trees)


def _set(i: int, key: str, value):
    def mutate(t):
        t["nodes"][i][key] = value
    return mutate


def _cycle(t):
    t["nodes"][1]["parent"], t["nodes"][3]["parent"] = 3, 1  # 1 → 3 → 1


@pytest.mark.parametrize(("name", "mutate", "needle"), [
    ("visits-as-text", _set(2, "visits", "3"), "field 'nodes.2.visits'"),
    ("null-depth", _set(2, "depth", None), "field 'nodes.2.depth'"),
    ("cycle", _cycle, "field 'nodes.1.parent': must be an earlier node"),
])
def test_malformed_trees(tmp_path, tiny_policy_dir, name, mutate, needle):
    trees = tmp_path / "trees.jsonl"
    trees.write_text(tree_lines(mutate))
    out = tmp_path / "out"
    runs = [cli("pairs", "--trees", str(trees), "--out", str(out / "pairs.jsonl")),
            cli("tree", "show", str(trees)),
            cli("tree", "export", str(trees), "--out", str(out / "t.json"))]
    if name == "cycle":  # the value trainer reads trees the same way (one case: it loads torch)
        runs.append(cli("train-value", "--trees", str(trees), "--init", tiny_policy_dir, "--out", str(out / "v")))
    for res in runs:
        assert_one_sentence(res, f"{trees}:1: {needle}")
    assert not out.exists()


def test_binary_files(tmp_path, tiny_policy_dir):
    blob = tmp_path / "weights.bin"
    blob.write_bytes(BINARY)
    needle = f"{blob}:1: not UTF-8 text (byte 0x89 at column 1)"
    out = tmp_path / "out"
    assert_one_sentence(cli("pairs", "--trees", str(blob), "--out", str(out / "p.jsonl")), needle)
    assert_one_sentence(cli("tree", "show", str(blob)), needle)
    assert_one_sentence(cli("tree", "show", str(FIXTURES / "pairs_trees.jsonl"), "--pairs", str(blob)), needle)
    for loss in ("dpo", "sft"):
        res = cli("train", "--policy", tiny_policy_dir, "--data", str(blob), "--loss", loss, "--out", str(out / "m"))
        assert_one_sentence(res, needle)
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(BINARY)
    assert_one_sentence(cli("run", str(cfg), "--out", str(out / "run")), str(cfg), "not UTF-8 text")
    assert not out.exists()


def test_a_directory_where_a_file_belongs(tmp_path, tiny_policy_dir):
    d = tmp_path / "adir"
    d.mkdir()
    needle = f"{d}: is a directory, not a"
    out = tmp_path / "out"
    assert_one_sentence(cli("pairs", "--trees", str(d), "--out", str(out / "p.jsonl")), needle)
    assert_one_sentence(cli("tree", "show", str(d)), needle)
    assert_one_sentence(cli("train", "--policy", tiny_policy_dir, "--data", str(d), "--out", str(out / "m")), needle)
    assert_one_sentence(cli("run", str(d)), f"{d}: is a directory, not a config file")
    assert not out.exists()


@pytest.mark.parametrize("text", ["", "\n# nothing but a comment\n", "{}\n"])
def test_an_empty_config_is_refused(tmp_path, text):
    cfg = tmp_path / "empty.yaml"
    cfg.write_text(text)
    res = cli("run", str(cfg), cwd=tmp_path)
    assert_one_sentence(res, f"{cfg}: the config file is empty", "nothing was run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.yaml"]  # no runs/ directory


def test_pairs_with_wrong_types(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"kind": ["pair"], "prompt": "p", "chosen": "a", "rejected": "b", "strategy": "x"})
                     + "\n")
    res = cli("tree", "show", str(FIXTURES / "pairs_trees.jsonl"), "--pairs", str(pairs))
    assert res.returncode == 0, res.stderr  # tree show only reads the node ids of its tree's records
    pairs.write_text(json.dumps({"tree_id": "tree-a", "chosen_node": "3", "rejected_node": 1}) + "\n")
    res = cli("tree", "show", str(FIXTURES / "pairs_trees.jsonl"), "--pairs", str(pairs))
    assert_one_sentence(res, f"{pairs}:1: field 'chosen_node': expected a node id")
