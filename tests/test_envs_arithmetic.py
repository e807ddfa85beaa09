"""Chain arithmetic: generator, exact layout, verifier, per-step check, knob validation."""

from typing import cast

import pytest

from envs.arithmetic import ArithmeticEnv, solve, split_of
from envs.errors import UserError
from envs.registry import make_env
from envs.types import Problem


def problem(expr: str) -> Problem:
    _, value = solve(expr)
    return Problem(id="t", prompt=expr, answer=str(value), metadata={"expression": expr})


@pytest.fixture(scope="module")
def env() -> ArithmeticEnv:
    return cast(ArithmeticEnv, make_env("arithmetic"))


def test_layout_of_the_worked_example(env):
    p = problem("3+4*2-5")
    assert p.answer == "6"
    assert env.prompt(p) == "Q: 3+4*2-5\n"
    assert env.reference_steps(p) == ["4*2=8", "3+8=11", "11-5=6", "A: 6"]
    assert env.render(p, env.reference_steps(p)) == "Q: 3+4*2-5\n4*2=8\n3+8=11\n11-5=6\nA: 6\n"
    assert env.stop == ["\n"]


def test_negative_intermediates_and_precedence():
    assert solve("3-10*2+5") == ([(10, "*", 2, 20), (3, "-", 20, -17), (-17, "+", 5, -12)], -12)
    assert solve("2*3*4") == ([(2, "*", 3, 6), (6, "*", 4, 24)], 24)
    assert solve("9-4-3") == ([(9, "-", 4, 5), (5, "-", 3, 2)], 2)  # left to right


def test_generated_problems_match_the_knobs():
    env = make_env("arithmetic", min_ops=2, max_ops=3, operand_min=5, operand_max=9, ops="+*")
    for p in env.load("train", 50, seed=3):
        ops = [c for c in p.prompt if c in "+-*"]
        numbers = [int(n) for n in p.prompt.replace("*", " ").replace("+", " ").split()]
        assert 2 <= len(ops) <= 3 and set(ops) <= {"+", "*"}
        assert all(5 <= n <= 9 for n in numbers)
        assert p.metadata["expression"] == p.prompt
        assert p.id.startswith("arith-train-3-")
        assert str(eval(p.prompt)) == p.answer  # Python agrees on precedence


def test_determinism_and_disjoint_splits(env):
    a = env.load("test", 40, seed=0)
    assert a == make_env("arithmetic").load("test", 40, seed=0)
    assert env.load("test", 10, seed=0) == a[:10]  # problem i does not depend on count
    assert [p.prompt for p in env.load("test", 40, seed=1)] != [p.prompt for p in a]
    assert a[0].id == "arith-test-0-0"
    train = {p.prompt for s in range(3) for p in env.load("train", 300, seed=s)}
    test = {p.prompt for s in range(3) for p in env.load("test", 300, seed=s)}
    assert train and test and not train & test
    assert all(split_of(e) == "test" for e in test)


def test_reference_steps_verify_for_many_problems():
    env = make_env("arithmetic", min_ops=1, max_ops=6, operand_min=0, operand_max=30)
    for split in ("train", "test"):
        for p in env.load(split, 200, seed=7):
            steps = env.reference_steps(p)
            assert steps is not None
            assert env.score(p, steps) == 1.0
            assert env.verdict(p, steps) == "correct"
            assert env.is_terminal(p, steps) and not env.is_terminal(p, steps[:-1])
            assert all(env.check_step(p, steps[:i], s) for i, s in enumerate(steps))


@pytest.mark.parametrize("last, expected", [
    ("A: 6", 1.0), ("A:6", 1.0), ("  A: 6  ", 1.0), ("A: +6", 1.0),
    ("A: 7", 0.0), ("A: 28 or 29", 0.0), ("A: 6 or 7", 0.0), ("A: 6 7", 0.0), ("A: 6 apples", 0.0),
    ("A: 6.", 0.0), ("A: six", 0.0), ("A:", 0.0), ("", 0.0), ("Answer: 6", 0.0), ("A: 6.0", 0.0),
])
def test_verifier_on_adversarial_answers(env, last, expected):
    p = problem("3+4*2-5")
    assert env.score(p, ["4*2=8", "3+8=11", "11-5=6", last]) == expected


def test_unicode_minus_answer(env):
    p = problem("3-4*2-1")
    assert p.answer == "-6"
    assert env.extract_answer(p, ["A: −6"]) == "-6"
    assert env.score(p, ["4*2=8", "3−8=−5", "−5-1=−6", "A: −6"]) == 1.0


def test_two_answers_and_no_answer(env):
    p = problem("3+4*2-5")
    assert env.score(p, ["A: 6", "A: 6"]) == 0.0
    assert env.score(p, ["A: 7", "A: 6"]) == 0.0
    assert env.score(p, []) == 0.0
    assert env.verdict(p, ["4*2=8"]) == "no answer"
    assert env.verdict(p, ["A: 28 or 29"]) == "malformed answer"
    assert env.verdict(p, ["A: 7"]) == "wrong answer 7 (expected 6)"


def test_terminal_rule():
    env = make_env("arithmetic", max_steps=3, max_ops=2)
    p = problem("3+4*2-5")
    assert not env.is_terminal(p, [])
    assert not env.is_terminal(p, ["4*2=8", "3+8=11"])
    assert env.is_terminal(p, ["A: 1"])
    assert env.is_terminal(p, ["4*2=8", "3+8=11", "11-5=6"])  # max_steps reached


def test_check_step(env):
    p = problem("3+4*2-5")
    assert env.check_step(p, [], "4*2=8") is True
    assert env.check_step(p, [], "4 * 2 = 8") is True
    assert env.check_step(p, [], "4*2=9") is False  # wrong arithmetic
    assert env.check_step(p, [], "3+4=7") is False  # right arithmetic, wrong order
    assert env.check_step(p, [], "A: 6") is False  # premature answer
    assert env.check_step(p, [], "let me think") is None
    assert env.check_step(p, ["4*2=8"], "3+8=11") is True
    # A wrong result is carried forward: the next step is judged on what was written.
    assert env.check_step(p, ["4*2=9"], "3+9=12") is True
    assert env.check_step(p, ["4*2=9", "3+9=12", "12-5=7"], "A: 7") is True
    assert env.check_step(p, ["4*2=8", "3+8=11", "11-5=6"], "A: 7") is False
    assert env.check_step(p, ["4*2=8", "3+8=11", "11-5=6"], "A: 6 or 7") is False
    # Untrackable history: only the arithmetic of the step itself is judged.
    assert env.check_step(p, ["hmm"], "3+8=11") is True
    assert env.check_step(p, ["hmm"], "3+8=12") is False


@pytest.mark.parametrize("knobs, field", [
    ({"min_ops": 3, "max_ops": 2}, "max_ops"),
    ({"min_ops": 0}, "min_ops"),
    ({"ops": "+/"}, "ops"),
    ({"ops": ""}, "ops"),
    ({"operand_min": -1}, "operand_min"),
    ({"operand_min": 10, "operand_max": 5}, "operand_max"),
    ({"min_opps": 2}, "min_opps"),
    ({"max_ops": 12}, "max_ops"),  # needs 13 steps, max_steps is 12
])
def test_invalid_knobs_name_the_field(knobs, field):
    with pytest.raises(UserError, match=f"field '{field}'"):
        make_env("arithmetic", knobs)


def test_too_small_a_problem_space_is_a_user_error():
    env = make_env("arithmetic", min_ops=1, max_ops=1, operand_min=1, operand_max=1, ops="+")
    with pytest.raises(UserError, match="too few distinct"):
        env.load("test", 1) if split_of("1+1") == "train" else env.load("train", 1)
