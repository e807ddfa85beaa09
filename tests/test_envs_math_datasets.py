"""`jsonl-math` on real dataset layouts: MATH files with LaTeX gold answers, HF `datasets` directories,
parquet/JSON files through `datasets`, field maps, and the reference steps of both layouts."""

import json
from pathlib import Path

import pytest

from envs.errors import UserError
from envs.registry import make_env
from envs.solutions import gsm8k_steps, math_steps

DATA = Path(__file__).parent / "data"
MATH = str(DATA / "math_train.jsonl")


def by_line(problems):
    return {p.metadata["line"]: p for p in problems}


@pytest.fixture(scope="module")
def math_env():
    return make_env("jsonl-math", layout="math", train_path=MATH, test_path=MATH)


def test_math_layout_loads_latex_gold_answers(math_env):
    problems = by_line(math_env.load("test", 10))
    assert [problems[i].answer for i in range(1, 7)] == [
        r"\frac{3}{4}", r"2\sqrt{2}", "(1, 2)", "x^2+7x+10", r"\text{Sunday}", "6"]
    assert problems[1].prompt == r"What is $\frac{1}{2} + \frac{1}{4}$?"
    assert problems[1].id == "math_train-1"
    # each is graded against its own gold by math-verify
    assert math_env.score(problems[1], [r"The sum is $\boxed{0.75}$."]) == 1.0
    assert math_env.score(problems[2], [r"So \boxed{\sqrt{8}}"]) == 1.0
    assert math_env.score(problems[3], ["A: (1,2)"]) == 1.0
    assert math_env.score(problems[4], [r"\boxed{(x+5)(x+2)}"]) == 1.0
    assert math_env.score(problems[5], [r"\boxed{\text{Monday}}"]) == 0.0
    assert math_env.score(problems[6], ["The answer is 6."]) == 1.0
    assert math_env.verdict(problems[1], [r"\boxed{\frac{4}{3}}"]) == r"wrong answer 4/3 (expected \frac{3}{4})"


def test_math_reference_steps_are_sentences(math_env):
    problems = by_line(math_env.load("test", 10))
    assert math_env.reference_steps(problems[1]) == [
        r"We write both over $4$: $\frac{2}{4} + \frac{1}{4} = \frac{3}{4}$.",
        r"So the sum is $\boxed{\frac{3}{4}}$."]
    steps = math_env.reference_steps(problems[2])
    assert steps == [r"Since $8 = 4 \cdot 2$, we have", r"$$ \sqrt{8} = \sqrt{4}\cdot\sqrt{2}. $$",
                     r"Hence $\sqrt{8} = \boxed{2\sqrt{2}}$."]  # display math kept whole, on one line
    # a solution without a box ends with the answer field
    assert math_env.reference_steps(problems[5])[-1] == r"A: \text{Sunday}"
    for p in problems.values():  # every reference solution is a finished, correct one
        ref = math_env.reference_steps(p)
        assert ref and math_env.is_terminal(p, ref) and math_env.score(p, ref) == 1.0


def test_math_steps_rule():
    assert math_steps("First. Second step! Third? $a. B$ stays.\n\nLast $\\boxed{1}$. Remark.") == [
        "First.", "Second step!", "Third?", "$a. B$ stays.", "Last $\\boxed{1}$."]
    assert math_steps("x = 1.5 so 2.5 total.", "2.5") == ["x = 1.5 so 2.5 total.", "A: 2.5"]
    assert math_steps("  \n ") is None


def test_gsm8k_steps_rule():
    assert gsm8k_steps("48/2 = <<48/2=24>>24 rolls.\n\n48+24 = <<48+24=72>>72\n", "72") == [
        "48/2 = 24 rolls.", "48+24 = 72", "A: 72"]
    assert gsm8k_steps("", "72") is None


@pytest.mark.parametrize("name, message", [
    ("math_no_boxed", "math_no_boxed.jsonl:2: field 'solution' has no \\boxed{...} answer and there is no "
                      "'answer' field"),
    ("math_bad_gold", "math_bad_gold.jsonl:3: field 'answer': gold answer '\\frac{5}{' cannot be parsed by "
                      "math-verify"),
])
def test_broken_math_files_name_file_line_and_field(name, message):
    path = str(DATA / f"{name}.jsonl")
    env = make_env("jsonl-math", layout="math", train_path=path, test_path=path)
    with pytest.raises(UserError) as e:
        env.load("test", 5)
    assert message in str(e.value)


def test_unknown_field_name_and_missing_mapped_field(tmp_path):
    with pytest.raises(UserError, match="field 'fields': unknown name 'rationale'"):
        make_env("jsonl-math", fields={"rationale": "x"})
    env = make_env("jsonl-math", layout="math", train_path=MATH, fields={"question": "prompt"})
    with pytest.raises(UserError, match=r"math_train\.jsonl:1: field 'prompt' is missing"):
        env.load("train", 5)


# --- HF datasets ------------------------------------------------------------------------------------
ROWS = [{"problem": f"What is {i} + {i}?", "final": str(2 * i) if i % 2 else f"\\frac{{{4 * i}}}{{2}}",
         "level": i} for i in range(1, 11)]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("hf")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(root / "single"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:8]),
                          "test": datasets.Dataset.from_list(ROWS[8:])}).save_to_disk(str(root / "dict"))
    datasets.Dataset.from_list(ROWS).to_parquet(str(root / "rows.parquet"))
    (root / "rows.json").write_text(json.dumps(ROWS))
    return root


FIELDS = {"question": "problem", "answer": "final"}


@pytest.mark.parametrize("path", ["single", "rows.parquet", "rows.json"])
def test_datasets_files_and_directories_load_through_datasets(hf_dir, path):
    env = make_env("jsonl-math", layout="math", train_path=str(hf_dir / path), test_path=str(hf_dir / path),
                   fields=FIELDS)
    problems = sorted(env.load("test", 20), key=lambda p: p.metadata["record"])
    assert [p.prompt for p in problems] == [r["problem"] for r in ROWS]
    assert problems[0].id == f"{Path(path).stem}-0" and problems[0].metadata["record"] == 0
    assert problems[0].answer == "2" and problems[1].answer == r"\frac{8}{2}"
    assert env.score(problems[1], ["A: 4"]) == 1.0 and env.score(problems[1], ["A: 8"]) == 0.0
    assert env.reference_steps(problems[0]) is None  # no solution field


def test_dataset_dict_splits_are_addressed_by_directory(hf_dir):
    env = make_env("jsonl-math", layout="math", train_path=str(hf_dir / "dict" / "train"),
                   test_path=str(hf_dir / "dict" / "test"), fields=FIELDS)
    assert len(env.load("train", 20)) == 8 and len(env.load("test", 20)) == 2
    whole = make_env("jsonl-math", layout="math", train_path=str(hf_dir / "dict"), fields=FIELDS)
    with pytest.raises(UserError, match=r"holds the splits train, test; point the path at one of them"):
        whole.load("train", 5)


def test_datasets_errors_name_the_file_record_and_field(hf_dir, tmp_path):
    env = make_env("jsonl-math", layout="math", train_path=str(hf_dir / "rows.parquet"),
                   fields={"question": "question"})
    with pytest.raises(UserError, match=r"rows.parquet: field 'question' is missing \(its fields: problem, final"):
        env.load("train", 5)
    import datasets

    bad = tmp_path / "bad.parquet"
    datasets.Dataset.from_list([{"problem": "a?", "final": "1"}, {"problem": "b?", "final": "\\sqrt{"}]
                               ).to_parquet(str(bad))
    env = make_env("jsonl-math", layout="math", train_path=str(bad), test_path=str(bad), fields=FIELDS)
    with pytest.raises(UserError, match=r"bad\.parquet record 1: field 'final': gold answer '\\sqrt\{' cannot"):
        env.load("test", 5)
    assert len(env.load("test", 1)) == 1  # LaTeX gold answers are parsed for the problems loaded only
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(UserError, match=r"junk\.parquet: cannot be read as parquet"):
        make_env("jsonl-math", train_path=str(junk)).load("train", 5)
    with pytest.raises(UserError, match="not a `datasets` directory"):
        make_env("jsonl-math", train_path=str(tmp_path)).load("train", 5)
    with pytest.raises(UserError, match=r"missing\.parquet: file not found"):
        make_env("jsonl-math", train_path=str(tmp_path / "missing.parquet")).load("train", 5)
