"""Code environments: reference solutions score 1.0, wrong ones less with a useful verdict, partial credit,
the terminal rule, splits, malformed files. Scoring runs in the real sandbox, in both modes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import pytest

from envs.base import Split
from envs.code import END_MARKER, CodeEnv, CodeJsonlEnv, humaneval_checks, tiny_reference
from envs.errors import UserError
from envs.registry import make_env as registry_make_env
from envs.sandbox import UNSAFE_ENV
from envs.types import Problem


def make_env(name: str, **knobs: Any) -> CodeEnv:
    """The registry's environment, typed as the code environment every name here is."""
    return cast(CodeEnv, registry_make_env(name, **knobs))


def reference(env: CodeEnv, p: Problem) -> list[str]:
    """The reference solution (every code environment here has one)."""
    steps = env.reference_steps(p)
    assert steps is not None
    return steps

DATA = Path(__file__).parent / "data" / "code_problems.jsonl"


# --- code-tiny ----------------------------------------------------------------------------------------
def test_tiny_references_score_one_in_both_modes(sandbox_mode):
    env = make_env("code-tiny", sandbox=sandbox_mode)
    problems = env.load("train", 12, seed=3) + env.load("test", 12, seed=3)
    assert env.score_many([(p, reference(env, p)) for p in problems]) == [1.0] * 24
    p = problems[0]
    assert env.verdict(p, reference(env, p)) == "correct (6/6 tests passed)"
    assert env.run(p, reference(env, p)).mode == sandbox_mode


def test_tiny_wrong_solution_partial_credit_and_verdict():
    env = make_env("code-tiny")
    p = next(q for q in env.load("train", 50, seed=0) if q.metadata["a"] != 1 and q.metadata["c"] != 0)
    a, c = p.metadata["a"], p.metadata["c"]
    found = [re.fullmatch(r"assert f\((-?\d+)\) == (-?\d+)", ch["code"]) for ch in p.metadata["checks"]]
    assert all(found)
    pairs = [tuple(map(int, m.groups())) for m in found if m is not None]
    assert pairs[:2] == [(0, c), (1, a + c)] and all(y == a * x + c for x, y in pairs)
    # Right offset, multiplier forgotten: only f(0) is right (a != 1), so 1 of 6 tests passes.
    wrong = [f"x = x+{c}" if c > 0 else f"x = x-{-c}", "return x"]
    assert env.score(p, wrong) == pytest.approx(1 / 6)
    assert env.verdict(p, wrong) == f"failed, 1/6 tests passed: test 1 failed: assert f(1) == {a + c} (got {1 + c})"
    assert env.score(p, ["x = x*", "return x"]) == 0.0
    assert "SyntaxError" in env.verdict(p, ["x = x*", "return x"])
    # Any body computing the same function is right.
    other = [f"y = {c} + x*{a}", "return y"]
    assert env.score(p, other) == 1.0


def test_tiny_layout_terminal_rule_and_determinism():
    env = make_env("code-tiny")
    p = env.load("train", 1, seed=0)[0]
    assert re.fullmatch(r"f\(0\)=-?\d+ f\(1\)=-?\d+ f\([2-9]\)=-?\d+\n", env.prompt(p))
    ref = reference(env, p)
    assert ref[-1] == "return x" and not any(s[:1].isspace() for s in ref)  # no step starts with whitespace
    assert not env.is_terminal(p, ref[:-1]) and env.is_terminal(p, ref)
    assert not env.is_terminal(p, ["x = x+1", ""]) and not env.is_terminal(p, ["returned = 1"])
    assert env.is_terminal(p, ["x = x+1"] * env.config.max_steps)
    # The return line is part of the program; lines after it are not.
    assert env.program(p, [*ref, "junk("]) == env.program(p, ref) == "def f(x):\n" + "".join(
        f"    {line}\n" for line in ref)
    assert env.extract_answer(p, ref) == "\n".join(ref) and env.extract_answer(p, []) is None
    assert env.score(p, []) == 0.0  # an empty body (`pass`) returns None
    again = make_env("code-tiny").load("train", 5, seed=0)
    assert [q.prompt for q in again] == [q.prompt for q in env.load("train", 5, seed=0)]
    assert [q.prompt for q in env.load("train", 5, seed=1)] != [q.prompt for q in again]


def test_tiny_reference_is_canonical():
    assert tiny_reference(3, 5) == ["x = x*3", "x = x+5", "return x"]
    assert tiny_reference(1, -4) == ["x = x-4", "return x"]
    assert tiny_reference(7, 0) == ["x = x*7", "return x"]


def test_tiny_splits_never_share_a_program():
    env = make_env("code-tiny")
    def programs(split):
        return {(p.metadata["a"], p.metadata["c"]) for p in env.load(split, 2000, seed=0)}
    train, test = programs("train"), programs("test")
    assert len(train) > 200 and len(test) > 30 and not train & test


def test_tiny_fits_a_small_bpe_vocabulary():
    from agents.tiny import train_tokenizer

    env = make_env("code-tiny")
    texts = [env.render(p, reference(env, p)) for p in env.load("train", 300, seed=0)]
    tok = train_tokenizer(texts, vocab_size=1000)
    assert len(tok) <= 1000
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    assert max(lengths) < 40


def test_tiny_knobs_are_validated():
    with pytest.raises(UserError, match="shown \\+ hidden"):
        make_env("code-tiny", shown=6, hidden=6)
    with pytest.raises(UserError, match="a_max"):
        make_env("code-tiny", a_max=0)
    with pytest.raises(UserError, match="unknown split"):
        make_env("code-tiny").load(cast(Split, "dev"), 1)


# --- code-humaneval -----------------------------------------------------------------------------------
def test_humaneval_loads_164_problems_in_a_fixed_partition():
    env = make_env("code-humaneval")
    train, test = env.load("train", 500), env.load("test", 500)
    assert len(train) + len(test) == 164 and len(test) == 32
    assert not {p.id for p in train} & {p.id for p in test}
    assert {p.id for p in env.load("test", 500, seed=7)} == {p.id for p in test}  # the seed only reorders
    other = make_env("code-humaneval", split_seed=1).load("test", 500)
    assert {p.id for p in other} != {p.id for p in test}
    p = next(q for q in train + test if q.id == "HumanEval/0")
    assert env.prompt(p).startswith("from typing import List\n\n\ndef has_close_elements(")
    assert env.prompt(p).rstrip().endswith('"""')


def test_humaneval_references_pass_and_partial_credit(sandbox_mode):
    env = make_env("code-humaneval", sandbox=sandbox_mode)
    problems = {p.id: p for p in env.load("train", 500) + env.load("test", 500)}
    some = [problems[f"HumanEval/{i}"] for i in (0, 2, 10, 32, 53, 90, 120, 163)]
    assert env.score_many([(p, reference(env, p)) for p in some]) == [1.0] * len(some)
    p = problems["HumanEval/0"]
    # check(candidate) holds 7 asserts, 4 expecting True: a body that always says True gets 4/7.
    assert env.score(p, ["    return True", END_MARKER]) == pytest.approx(4 / 7)
    assert env.verdict(p, ["    return True", END_MARKER]) == (
        "failed, 4/7 tests passed: test 1 failed: assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) "
        "== False (got True)")
    assert env.score(p, ["    return undefined_name", END_MARKER]) == 0.0
    assert "NameError" in env.verdict(p, ["    return undefined_name", END_MARKER])


@pytest.mark.slow
def test_humaneval_all_164_references_pass(sandbox_mode):
    env = make_env("code-humaneval", sandbox=sandbox_mode)
    problems = env.load("train", 500) + env.load("test", 500)
    scores = env.score_many([(p, reference(env, p)) for p in problems])
    assert [p.id for p, s in zip(problems, scores, strict=True) if s < 1.0] == []


def test_humaneval_checks_split_asserts_and_skip_setup():
    test = ("import math\nMETA = {}\n\ndef check(candidate):\n    xs = [1, 2]\n    for x in xs:\n"
            "        assert candidate(x) > 0\n    assert candidate(0) == 0\n    assert True\n")
    checks = humaneval_checks(test, "f")
    assert [(c.code, c.counted) for c in checks] == [
        ("import math\nMETA = {}", False), ("candidate = f", False), ("xs = [1, 2]", False),
        ("for x in xs:\n    assert candidate(x) > 0", True), ("assert candidate(0) == 0", True),
        ("assert True", False)]
    assert [(c.code, c.counted) for c in humaneval_checks("assert f(1) == 1\n", "f")] == [
        ("assert f(1) == 1\n\ncheck(f)", True)]


# --- code-jsonl ---------------------------------------------------------------------------------------
def test_jsonl_reads_both_styles_and_references_pass(sandbox_mode):
    env = make_env("code-jsonl", train_path=str(DATA), sandbox=sandbox_mode)
    problems = cast(CodeJsonlEnv, env).read_file(str(DATA))
    assert [p.metadata["layout"] for p in problems] == ["program"] * 3 + ["body"] * 2
    assert [p.id for p in problems] == ["1", "2", "3", "user/clamp", "user/is_even"]
    mbpp = problems[0]
    assert env.prompt(mbpp) == ('"""\nWrite a function to return the sum of the squares of a list of integers.\n'
                                'assert sum_squares([1, 2, 3]) == 14\n"""\n')
    assert env.score_many([(p, reference(env, p)) for p in problems]) == [1.0] * 5
    assert reference(env, problems[1])[0] == "def count_vowels(s):"  # \r\n normalised
    # The MBPP layout ends only at the explicit marker: a column-0 line is part of the program.
    assert not env.is_terminal(mbpp, ["def sum_squares(nums):", "    return 0"])
    assert env.is_terminal(mbpp, ["def sum_squares(nums):", "    return 0", END_MARKER])
    wrong = ["def sum_squares(nums):", "    return sum(nums) ** 2", END_MARKER]
    assert env.score(mbpp, wrong) == pytest.approx(2 / 3)
    assert env.verdict(mbpp, wrong) == ("failed, 2/3 tests passed: test 0 failed: assert sum_squares([1, 2, 3]) "
                                        "== 14 (got 36)")
    setup = problems[2]  # its test_setup_code runs first and is not counted
    assert env.run(setup, reference(env, setup)).total == 2
    even = problems[4]  # setup statements and `assert True` do not count; the for loop counts once
    res = env.run(even, ["    return n != 3 and n < 6", END_MARKER])
    assert (res.passed, res.total) == (1, 3)


def test_jsonl_splits(tmp_path):
    lines = DATA.read_text().splitlines()
    (tmp_path / "test.jsonl").write_text(lines[0] + "\n")
    env = make_env("code-jsonl", train_path=str(DATA), test_path=str(tmp_path / "test.jsonl"))
    assert [p.id for p in env.load("test", 10)] == ["1"]
    assert sorted(p.id for p in env.load("train", 10)) == ["2", "3", "user/clamp", "user/is_even"]
    only = make_env("code-jsonl", train_path=str(DATA))
    ids = {p.id for p in only.load("train", 10)} | {p.id for p in only.load("test", 10)}
    assert len(ids) == 5 and not {p.id for p in only.load("train", 10)} & {p.id for p in only.load("test", 10)}
    with pytest.raises(UserError, match="field 'train_path'"):
        make_env("code-jsonl").load("train", 1)


@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "t", "test_list": []}', "field 'test_list' must be a non-empty list of strings"),
    ('{"text": "", "test_list": ["assert 1"]}', "field 'text' must be a non-empty string"),
    ('{"text": "t", "test_list": ["assert f(1) =="]}', "field 'test_list' item 0 is not valid Python"),
    ('{"text": "t", "test_list": ["assert 1"], "code": 5}', "field 'code' must be a string"),
    ('{"prompt": "def f():\\n", "test": "def check(c): pass", "entry_point": "f()"}',
     "field 'entry_point' must be a Python identifier"),
    ('{"prompt": "def f():\\n", "entry_point": "f"}', "field 'test' must be a non-empty string"),
    ('{"question": "q", "answer": "a"}', "expected MBPP fields 'text' + 'test_list' or HumanEval fields"),
    ('{"text": "t", "test_list": ', "not valid JSON"),
    ('[1, 2]', "expected a JSON object"),
])
def test_jsonl_malformed_lines_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "ok", "test_list": ["assert True"]})
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(UserError) as e:
        make_env("code-jsonl", train_path=str(path)).load("train", 5)
    assert str(e.value).startswith(f"{path}:3: ") and message in str(e.value)


def test_jsonl_duplicate_ids_and_empty_files(tmp_path):
    dup = tmp_path / "dup.jsonl"
    row = {"task_id": 7, "text": "t", "test_list": ["assert True"]}
    dup.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(UserError, match="'7' appears more than once"):
        make_env("code-jsonl", train_path=str(dup)).load("train", 5)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="no problems"):
        make_env("code-jsonl", train_path=str(empty)).load("train", 5)


# --- the sandbox knob ---------------------------------------------------------------------------------
def test_unsandboxed_scoring_needs_an_explicit_opt_in(monkeypatch):
    monkeypatch.delenv(UNSAFE_ENV, raising=False)
    env = make_env("code-tiny", sandbox="none")
    p = env.load("train", 1)[0]
    assert reference(env, p)[-1] == "return x"
    with pytest.raises(UserError, match="without isolation"):
        env.score(p, reference(env, p))
    ok = make_env("code-tiny", sandbox="none", unsafe_no_sandbox=True)
    assert ok.score(p, reference(ok, p)) == 1.0
    with pytest.raises(UserError, match="sandbox"):
        make_env("code-tiny", sandbox="docker")


def test_results_are_cached_per_problem_not_per_task_id(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"task_id": 1, "text": "t", "test_list": ["assert f() == 1"]}) + "\n")
    b.write_text(json.dumps({"task_id": 1, "text": "t", "test_list": ["assert f() == 2"]}) + "\n")
    env = make_env("code-jsonl", train_path=str(a), test_path=str(b))
    jsonl = cast(CodeJsonlEnv, env)
    pa, pb = jsonl.read_file(str(a))[0], jsonl.read_file(str(b))[0]
    steps = ["def f():", "    return 1", END_MARKER]
    assert env.score_many([(pa, steps), (pb, steps), (pa, steps)]) == [1.0, 0.0, 1.0]
    assert len(env._cache) == 2


# --- tampering is counted and reported ----------------------------------------------------------------
def test_tampering_flows_from_the_verifier_into_search_stats_and_the_summary_table(sandbox_mode):
    from rich.console import Console

    from search.api import run_search
    from search.testing import ScriptedPolicy, cand
    from selfimprove.report import build_summary, row_from_metrics, summary_table

    env = make_env("code-tiny", sandbox=sandbox_mode)
    problems = env.load("train", 3, seed=0)
    hack = "return type('Y', (), {'__eq__': lambda s, o: True})()"
    policy = ScriptedPolicy(lambda prefix: [cand("return x"), cand(hack)], cycle=True)
    result = run_search(env, problems, policy, algo="best_of_n", config={"n": 2, "max_depth": 2}, seed=0)
    assert result.stats["tampering"] == 3  # one flagged solution per problem
    assert env.verdict(problems[0], [hack]).endswith("returned a non-builtin value (Y) [tampering: non-builtin]")
    again = run_search(env, problems, policy, algo="best_of_n", config={"n": 2, "max_depth": 2}, seed=0)
    assert again.stats["tampering"] == 0  # counted once per distinct solution
    row = row_from_metrics({"iteration": 0, "search": {"stats": result.stats}, "eval": {"greedy_acc": 0.5}})
    console = Console(width=160, record=True)
    console.print(summary_table(build_summary("t", 4, [row])))
    text = console.export_text()
    assert "hack" in text and "flagged as tampering" in text
    clean = row_from_metrics({"iteration": 0, "search": {"stats": {"tampering": 0}}, "eval": {}})
    console = Console(width=160, record=True)
    console.print(summary_table(build_summary("t", 4, [clean])))
    assert "hack" not in console.export_text()
