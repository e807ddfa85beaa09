"""`pairs audit`: each label judged by arithmetic's step check on a hand-built tree, the rendered table
(snapshot), the CLI in and outside a run directory, and its clear errors.

Regenerate the stored snapshots with `SELFIMPROVE_UPDATE_SNAPSHOTS=1 pytest tests/test_pairs_audit.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_tree_view import assert_fits, check_snapshot, hand_tree

from envs.arithmetic import ArithmeticEnv
from envs.registry import make_env
from search.tree import write_trees
from selfimprove.pairs import PreferenceList, PreferencePair, write_records
from selfimprove.pairs.audit import (
    audit_records,
    audit_summary,
    has_step_check,
    render_audit_text,
    split_steps,
)

CLI = str(Path(sys.executable).parent / "selfimprove")
PROMPT = "Q: 3+4*2-5\n"


def pair(chosen: str, rejected: str, prefix: str = "", strategy: str = "q-gap", depth: int = 1,
         tree_id: str = "t7", margin: float = 0.5) -> PreferencePair:
    return PreferencePair(strategy=strategy, prompt=PROMPT + prefix, chosen=chosen, rejected=rejected,
                          tree_id=tree_id, problem_id="arith-7", depth=depth, margin=margin)


def records() -> list:
    """One record per label, a two-step continuation, a ranked list and a pair whose tree is missing."""
    return [
        pair("4*2=8\n", "4*2=9\n"),                            # right-vs-wrong
        pair("4*2=9\n", "4*2=8\n", margin=0.25),               # inverted
        pair("4*2=9\n", "3+4=7\n"),                            # both wrong (3+4 is done out of order)
        pair("3+8=11\n", "3+8=11\n", prefix="4*2=8\n", depth=2),  # both right
        pair("hello\n", "4*2=9\n"),                            # unknown: the check cannot parse "hello"
        # right-vs-wrong judged at the second step of the continuation
        pair("4*2=8\n3+8=11\n", "4*2=8\n3+8=12\n", strategy="first-error"),
        PreferenceList(strategy="ranked-list", prompt=PROMPT + "4*2=8\n", completions=["3+8=12\n", "3+8=11\n"],
                       steps=[["3+8=12"], ["3+8=11"]], scores=[0.5, 0.1], step_rewards=[[0.5], [0.1]],
                       node_ids=[5, 4], tree_id="t7", problem_id="arith-7", depth=2),  # inverted list
        pair("4*2=8\n", "4*2=9\n", tree_id="gone") .model_copy(update={"problem_id": "gone"}),  # unknown
    ]


def test_labels_on_a_hand_tree():
    env = ArithmeticEnv()
    audits = audit_records(records(), [hand_tree()], env)
    assert [a.label for a in audits] == ["right-vs-wrong", "inverted", "both wrong", "both right", "unknown",
                                         "right-vs-wrong", "inverted", "unknown"]
    assert (audits[0].chosen_ok, audits[0].rejected_ok) == (True, False)
    assert audits[4].chosen_ok is None and audits[4].rejected_ok is False
    assert audits[7].chosen_ok is None  # no tree for the pair: nothing to judge against


def test_tree_matched_by_problem_when_the_id_differs():
    rec = pair("4*2=9\n", "4*2=8\n", tree_id="renamed")
    assert audit_records([rec], [hand_tree()], ArithmeticEnv())[0].label == "inverted"


def test_summary_counts_by_strategy_and_depth():
    s = audit_summary(records(), [hand_tree()], ArithmeticEnv())
    assert s["pairs"] == 8 and s["counts"] == {"right-vs-wrong": 2, "inverted": 2, "both wrong": 1,
                                               "both right": 1, "unknown": 2}
    assert s["shares"]["inverted"] == 0.25 and s["precision"] == 2 / 6
    assert s["by_strategy"]["first-error"]["counts"]["right-vs-wrong"] == 1
    assert s["by_strategy"]["ranked-list"]["counts"]["inverted"] == 1
    assert s["by_depth"]["2"]["pairs"] == 2 and s["by_depth"]["1"]["pairs"] == 6
    assert [e["chosen"] for e in s["inverted_examples"]] == ["4*2=9\n", "3+8=12\n"]


def test_split_steps():
    assert split_steps("", "\n") == [] and split_steps("a\nb\n", "\n") == ["a", "b"]
    assert split_steps("a\n\nb\n\n", "\n\n") == ["a", "b"]


def test_step_check_detection():
    assert has_step_check(make_env("arithmetic"))
    assert not has_step_check(make_env("code-tiny"))


def test_audit_snapshot():
    s = audit_summary(records(), [hand_tree()], ArithmeticEnv())
    text = render_audit_text(s, "pairs.jsonl: labels judged by arithmetic's step check")
    assert_fits(text)
    check_snapshot("pairs_audit.txt", text)
    assert "inverted  arith-7  depth 1  margin 0.25" in text


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})


def test_cli_in_a_run_directory(tmp_path):
    run = tmp_path / "run"
    it = run / "iter-000"
    it.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "r", "env": {"name": "arithmetic",
                                                                         "knobs": {"max_ops": 3}}}))
    write_trees(it / "trees.jsonl", [hand_tree()])
    write_records(it / "pairs.jsonl", records())
    res = _run("pairs", "audit", str(it / "pairs.jsonl"), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["env"] == "arithmetic" and out["counts"]["inverted"] == 2 and out["pairs"] == 8
    assert out == {"pairs_file": str(it / "pairs.jsonl"), "env": "arithmetic",
                   **audit_summary(records(), [hand_tree()], ArithmeticEnv())}
    res = _run("pairs", "audit", str(it / "pairs.jsonl"))
    assert res.returncode == 0 and "right>wrong" in res.stdout and "depth 2" in res.stdout
    assert_fits(res.stdout)


def test_cli_errors(tmp_path):
    write_records(tmp_path / "pairs.jsonl", records())
    res = _run("pairs", "audit", str(tmp_path / "pairs.jsonl"))
    assert res.returncode == 1 and "not inside a run directory; name the environment with --env" in res.stderr
    res = _run("pairs", "audit", str(tmp_path / "pairs.jsonl"), "--env", "arithmetic")
    assert res.returncode == 1 and "trees.jsonl: trees file not found" in res.stderr
    res = _run("pairs", "audit", str(tmp_path / "pairs.jsonl"), "--env", "code-tiny")
    assert res.returncode == 1 and "has no per-step check" in res.stderr
    res = _run("pairs", "audit", str(tmp_path / "nope.jsonl"), "--env", "arithmetic")
    assert res.returncode == 1 and "pairs file not found" in res.stderr
    res = _run("pairs", "--trees", "x.jsonl")
    assert res.returncode == 1 and "--trees and --out are required" in res.stderr
    assert all("Traceback" not in r for r in (res.stderr,))
