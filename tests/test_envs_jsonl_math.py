"""`jsonl-math`: the GSM8K-format loader on good and broken files, and numeric answer checking."""

import json
from pathlib import Path

import pytest

from envs.errors import UserError
from envs.registry import make_env

DATA = Path(__file__).parent / "data"
TRAIN, TEST = str(DATA / "gsm8k_train.jsonl"), str(DATA / "gsm8k_test.jsonl")


@pytest.fixture
def env():
    return make_env("jsonl-math", train_path=TRAIN, test_path=TEST)


def by_line(problems):
    return {p.metadata["line"]: p for p in problems}


def test_loads_gsm8k_format(env):
    train = by_line(env.load("train", 100))
    assert sorted(train) == [2, 3, 5, 6, 7]  # line 1's question is also in the test file; line 4 is blank
    assert train[3].answer == "2468"  # "#### 2,468"
    assert train[5].answer == "-6"  # "#### −6"
    assert train[6].answer == "0.75"  # "#### 3/4"
    assert train[2].id == "gsm8k_train-2"
    assert env.reference_steps(train[2]) == [
        "Mia earns 12/60 = $0.2 per minute.", "In 50 minutes she earned 0.2 x 50 = $10.", "A: 10"]
    assert env.prompt(train[2]) == f"Q: {train[2].prompt}\n"
    test = env.load("test", 100)
    assert len(test) == 3
    assert env.reference_steps(by_line(test)[3]) is None  # no worked solution before ####


def test_seeded_order(env):
    a = env.load("train", 5, seed=0)
    assert a == env.load("train", 5, seed=0)
    assert [p.id for p in env.load("train", 5, seed=1)] != [p.id for p in a]
    assert env.load("train", 2, seed=0) == a[:2]


def test_single_file_is_split_by_hash():
    env = make_env("jsonl-math", train_path=TRAIN)
    train, test = env.load("train", 100), env.load("test", 100)
    assert len(train) + len(test) == 6
    assert not {p.prompt for p in train} & {p.prompt for p in test}


@pytest.mark.parametrize("last, expected", [
    ("A: 2468", 1.0), ("A: 2,468", 1.0), ("A: 2468.0", 1.0), ("A:2468", 1.0), ("A: $2,468", 1.0),
    ("A: 2468.", 1.0), ("A: 2467", 0.0), ("A: 2468 or 2469", 0.0), ("Answer: 28 or 29", 0.0),
    ("A: 2468 apples", 1.0), ("A: 2468 apples and 3 pears", 0.0), ("A: 2,46,8", 0.0), ("A:", 0.0),
    ("", 1.0),  # no answer line: the result the solution ends on (blank steps skipped)
])
def test_numeric_answers(env, last, expected):
    p = by_line(env.load("train", 100))[3]
    assert env.score(p, ["1,234 * 2 = 2,468", last]) == expected


def test_fractions_decimals_negatives(env):
    train = by_line(env.load("train", 100))
    assert env.score(train[6], ["A: 3/4"]) == 1.0
    assert env.score(train[6], ["A: .75"]) == 1.0
    assert env.score(train[6], ["A: 6/8"]) == 1.0
    assert env.score(train[6], ["A: 0.7"]) == 0.0
    assert env.score(train[5], ["A: −6"]) == 1.0
    assert env.score(train[5], ["A: -6"]) == 1.0
    assert env.score(train[5], ["A: 6"]) == 0.0
    assert env.score(train[5], ["A: 6", "A: -6"]) == 1.0  # the last answer counts
    assert env.score(train[5], ["A: -6", "A: 6"]) == 0.0
    assert env.verdict(train[5], ["A: 6"]) == "wrong answer 6 (expected -6)"
    assert env.verdict(train[5], ["A: minus six"]) == "wrong answer minus six (expected -6)"
    assert env.verdict(train[5], ["A: ?!"]) == "malformed answer"
    assert env.verdict(train[5], ["so I am done"]) == "no answer"
    assert env.verdict(train[5], ["4 - 10 = -6"]) == "correct"  # no answer line: the result it ends on


def test_custom_field_map():
    env = make_env("jsonl-math", train_path=str(DATA / "custom_fields.jsonl"), test_path=str(DATA / "custom_fields.jsonl"),
                   question_field="problem", answer_field="solution", answer_regex=r"answer is (\S+?)\.?$")
    problems = by_line(env.load("test", 10))
    assert problems[1].answer == "42" and problems[2].answer == "2.5"
    assert env.reference_steps(problems[1]) is None  # the answer sits inside a sentence
    assert env.load("train", 10) == []  # every train question is also a test question


def test_whole_field_answer(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"q": "2+2?", "a": 4}) + "\n" + json.dumps({"q": "half of 3?", "a": "1.5"}) + "\n")
    env = make_env("jsonl-math", train_path=str(path), test_path=str(path), question_field="q",
                   answer_field="a", answer_regex="")
    assert [p.answer for p in sorted(env.load("test", 5), key=lambda p: p.id)] == ["4", "1.5"]


@pytest.mark.parametrize("name, message", [
    ("missing_answer", "missing_answer.jsonl:2: field 'answer' is missing"),
    ("bad_json", "bad_json.jsonl:2: not valid JSON"),
    ("no_marker", "no_marker.jsonl:1: field 'answer' does not match answer_regex"),
    ("not_number", "not_number.jsonl:1: field 'answer': gold answer 'four' cannot be parsed by math-verify"),
    ("bad_question", "bad_question.jsonl:1: field 'question' must be a non-empty string"),
    ("does_not_exist", "does_not_exist.jsonl: file not found"),
])
def test_broken_files_name_file_line_and_field(name, message):
    env = make_env("jsonl-math", train_path=str(DATA / f"{name}.jsonl"))
    with pytest.raises(UserError) as e:
        env.load("train", 5)
    assert message in str(e.value)


def test_empty_file_and_missing_paths(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="no problems"):
        make_env("jsonl-math", train_path=str(empty)).load("train", 1)
    with pytest.raises(UserError, match="train_path"):
        make_env("jsonl-math").load("train", 1)


@pytest.mark.parametrize("knobs, field", [
    ({"answer_regex": "(unclosed"}, "answer_regex"),
    ({"answer_regex": "####.*"}, "answer_regex"),  # no group
    ({"prompt_template": "Q:"}, "prompt_template"),
    ({"train_file": "x.jsonl"}, "train_file"),
])
def test_invalid_knobs_name_the_field(knobs, field):
    with pytest.raises(UserError, match=f"field '{field}'"):
        make_env("jsonl-math", knobs)
