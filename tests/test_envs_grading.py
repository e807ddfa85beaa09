"""Answers graded the way math benchmarks grade them (`envs.grading`, math-verify), through `jsonl-math`'s
`score`: a table of GSM8K- and MATH-style answer texts, right and wrong; unparsable answers score 0."""

import json
import signal
import threading
import time

import pytest

from envs import grading
from envs.errors import UserError
from envs.grading import find_answer, grade, parse_gold, time_limit
from envs.registry import make_env

# (gold answer as the dataset writes it, the solution's text (one step per line), expected score)
GSM8K = [
    ("72", "48/2 = 24\n48+24 = 72\n#### 72", 1.0),
    ("72", "48/2 = 24\n48+24 = 73\n#### 73", 0.0),
    ("72", "48+24 = 72\nSo the answer is 72.", 1.0),
    ("72", "The answer is: 72", 1.0),
    ("72", "A: 72 rolls", 1.0),
    ("72", "Answer: $72", 1.0),
    ("72", "**Answer:** 72", 1.0),
    ("72", "Final answer: 72.", 1.0),
    ("2,468", "A: 2,468", 1.0),
    ("2,468", "A: 2468 apples.", 1.0),
    ("2,468", "A: 2,46,8", 0.0),
    ("1000000", "A: 1,000,000", 1.0),
    ("10", "A: $10.00", 1.0),
    ("18", "#### $18", 1.0),
    ("10", "A: 10.5", 0.0),
    ("10", "A: 10 or 11", 0.0),  # a hedge is not an answer
    ("28", "Answer: 28 or 29", 0.0),
    ("10", "A: 10 apples and 3 pears", 0.0),
    ("-6", "4 - 10 = −6\nA: −6", 1.0),
    ("-6", "A: 6", 0.0),
    ("3/4", "A: 0.75", 1.0),
    ("0.75", r"A: \frac{3}{4}", 1.0),
    ("0.75", "A: 3/4 cup", 1.0),
    ("0.75", "A: 0.7", 0.0),
    ("50", "A: 50%", 1.0),
    ("12", "24 / 2 = 12 boys\nA: 12 boys", 1.0),
    # no answer stated (the solution ended at EOS or max_steps): the one number the last step ends on
    ("12", "24 / 2 = 12 boys", 1.0),
    ("12", "There are 24 children.\nSo there are 12 boys.", 1.0),
    ("12", "24 / 2 = 13 boys", 0.0),
    ("12", "In 2 hours he walks 12 km", 0.0),  # two numbers: no result
    ("28", "It is 28 or 29", 0.0),
    ("12", "12 boys\nSo the count is done", 0.0),  # only the last step counts
    ("12", "There are 24 children.\n\nSo 24 / 2 = 12 boys", 1.0),
    ("12", "A: 11\nA: 12", 1.0),  # the last statement counts, as benchmarks grade
    ("12", "A: 12\nA: 11", 0.0),
    ("12", "The answer is 12.\n#### 12\n", 1.0),  # a trailing blank step is skipped
    ("12", "A: 12\nCheck: 6 * 2 = 12", 1.0),
    ("12", "A: twelve", 0.0),
    ("12", "A:", 0.0),
    ("12", "The answer is unclear", 0.0),
    ("5", "A: x = 5", 1.0),
    ("5", "A: x = 6", 0.0),
    ("10", r"The final answer is $\boxed{10}$. I hope it is correct.", 1.0),
    ("10", "So the answer is 11. The answer is 10.", 1.0),  # the last statement counts
    ("10", "A: ?!", 0.0),
    # how instruct models write it
    ("12", "The answer is **12**.", 1.0),
    ("12", "**Answer: 12 boys**", 1.0),
    ("12", r"Therefore, the final answer is: $\boxed{12}$", 1.0),
    ("12", r"The answer is \(12\).", 1.0),
    ("18", "She makes 9 * 2 = $18 every day.\n#### 18", 1.0),
    ("18", "She makes 9 * 2 = $18 every day.\nThe answer is **$19**.", 0.0),
    ("12", "The answer is **13**.", 0.0),
    ("72", "#### 72.5", 0.0),
    ("2", "A: 2 pi", 0.0),  # words that change the value are not units
    ("1", "A: 1 million", 0.0),
]
MATH = [
    (r"\frac{3}{4}", r"So $x = \boxed{\frac{3}{4}}$.", 1.0),
    (r"\frac{3}{4}", r"\boxed{0.75}", 1.0),
    (r"\frac{3}{4}", r"\boxed{\frac{4}{3}}", 0.0),
    (r"\frac{3}{4}", r"\boxed{\dfrac{3}{4}}", 1.0),
    (r"\frac{3}{4}", r"The sum is $\boxed{\frac{3}{4}", 0.0),  # unclosed box: no answer, no error
    (r"\frac12", "The answer is 0.5.", 1.0),
    (r"\frac12", r"\boxed{\frac{1}{2}}", 1.0),
    (r"\frac{1}{3}", r"\boxed{0.3333}", 0.0),
    (r"\sqrt8", r"\boxed{2\sqrt2}", 1.0),
    (r"\sqrt8", r"\boxed{2\sqrt3}", 0.0),
    (r"2\sqrt{2}", r"$\sqrt{8}$ is the answer, so \boxed{\sqrt{8}}", 1.0),
    ("(1, 2)", r"\boxed{(1,2)}", 1.0),
    ("(1, 2)", r"\boxed{(2,1)}", 0.0),
    ("1+x^2", r"\boxed{x^2+1}", 1.0),
    ("1+x^2", r"\boxed{x^2-1}", 0.0),
    ("x^2+7x+10", r"\boxed{(x+2)(x+5)}", 1.0),
    ("10", r"First \boxed{9}, then \boxed{10}", 1.0),  # the last box counts
    ("9", r"First \boxed{9}, then \boxed{10}", 0.0),
    (r"\text{Sunday}", r"\boxed{\text{Sunday}}", 1.0),
    (r"\text{Sunday}", r"\boxed{\text{Monday}}", 0.0),
    ("[-2,7]", r"\boxed{[-2, 7]}", 1.0),
    ("[-2,7]", r"\boxed{(-2, 7)}", 0.0),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\boxed{\begin{pmatrix}1\\2\end{pmatrix}}", 1.0),
    (r"10\%", r"\boxed{10\%}", 1.0),
    (r"5\text{ cm}", r"\boxed{5}", 1.0),
    (r"\infty", r"\boxed{\infty}", 1.0),
    (r"2\pi", r"\boxed{2 \pi}", 1.0),
    (r"2\pi", r"\boxed{6.28}", 0.0),
    (r"\frac{3}{4}", r"A: \frac{", 0.0),
    ("5", "A: " + "1+" * 200 + "1", 0.0),  # too long to be a final answer
    (r"\frac{3}{4}", r"\boxed{3/5}", 0.0),
    ("(1, 2)", r"\boxed{(1, 2, 3)}", 0.0),
    ("1+x^2", r"\boxed{1+y^2}", 0.0),
]
TABLE = GSM8K + MATH


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """`jsonl-math` (MATH layout) holding one problem per distinct gold answer of the table."""
    golds = sorted({g for g, _, _ in TABLE})
    path = tmp_path_factory.mktemp("golds") / "golds.jsonl"
    path.write_text("".join(json.dumps({"problem": f"question {i}?", "answer": g}) + "\n"
                            for i, g in enumerate(golds)))
    env = make_env("jsonl-math", layout="math", train_path=str(path), test_path=str(path))
    problems = {p.metadata["raw_answer"]: p for p in env.load("test", len(golds))}
    return env, problems


def test_table_is_large_and_balanced():
    assert len(TABLE) >= 50
    assert sum(e == 1.0 for _, _, e in TABLE) >= 25 and sum(e == 0.0 for _, _, e in TABLE) >= 25


@pytest.mark.parametrize("gold, text, expected", TABLE)
def test_answer_formats(graded, gold, text, expected):
    env, problems = graded
    steps = text.split("\n")
    assert env.score(problems[gold], steps) == expected
    # finished once the last step states an answer (a solution ending on a bare result is finished by EOS)
    assert env.is_terminal(problems[gold], steps) == (find_answer(steps[-1]) is not None)
    if expected == 1.0:
        assert env.extract_answer(problems[gold], steps) is not None


def test_last_result_can_be_turned_off(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"question": "How many boys?", "answer": "#### 12"}) + "\n")
    strict = make_env("jsonl-math", train_path=str(path), test_path=str(path), last_result=False)
    p = strict.load("test", 1)[0]
    assert strict.score(p, ["24 / 2 = 12 boys"]) == 0.0 and strict.verdict(p, ["24 / 2 = 12 boys"]) == "no answer"
    assert strict.score(p, ["24 / 2 = 12 boys", "A: 12"]) == 1.0


def test_arithmetic_and_countdown_keep_their_exact_path():
    arith = make_env("arithmetic")
    p = arith.load("test", 1)[0]
    assert arith.score(p, [f"A: {p.answer}"]) == 1.0
    assert arith.score(p, [f"A: {p.answer} apples"]) == 0.0  # no units, no math-verify there
    assert arith.score(p, [f"#### {p.answer}"]) == 0.0


def test_find_answer_takes_the_last_statement():
    assert find_answer(r"so \boxed{9} and later \boxed{10}") == "10"
    assert find_answer("#### 5") == "5"
    assert find_answer(r"A: $\boxed{5}$") == "5"
    assert find_answer("The answer is $12$.") == "12"
    assert find_answer("no answer here") is None
    assert find_answer("The answer is unclear.") is None
    assert find_answer("A:") == ""


def test_gold_answers_are_parsed_once_and_bad_ones_are_user_errors():
    assert parse_gold(r"\frac{3}{4}").number == grading.Fraction(3, 4)
    assert parse_gold("x^2+1").number is None
    for bad in (r"\frac{5}{", "?!", "four", ""):
        with pytest.raises(UserError, match="cannot be parsed by math-verify"):
            parse_gold(bad, "data.jsonl:3: field 'answer'")


def test_grading_never_raises_on_model_text():
    for text in ["", "   ", "}{", r"\frac{", r"\boxed{", "$$", "\x00", "A: " + "(" * 50, "1/0", r"\frac{1}{0}"]:
        assert grade("5", text) is False


def test_a_pathological_answer_is_cut_off_and_scored_zero(monkeypatch):
    monkeypatch.setattr(grading, "TIME_LIMIT_S", 0.2)
    t0 = time.monotonic()
    assert grade("5", "2^{2^{2^{100}}} + 1") is False  # sympy would evaluate this for a long time
    assert time.monotonic() - t0 < 5.0


def test_time_limit_keeps_an_outer_timer():
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        with time_limit(1.0):
            pass
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < left <= 30.0  # re-armed with what was left, not cancelled
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(grading.GradingTimeout), time_limit(1.0):
            time.sleep(0.5)  # the outer timer falls due inside: the block stops...
        time.sleep(0.05)
        assert fired == [True]  # ...and the outer handler still runs
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_grading_works_off_the_main_thread():
    out = []
    t = threading.Thread(target=lambda: out.append((grade(r"\sqrt8", r"2\sqrt2"), grade("10", "11"))))
    t.start()
    t.join()
    assert out == [(True, False)]
