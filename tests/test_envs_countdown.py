"""Countdown: reasoning-gym problems, step legality, the scorer on answers, the solver."""

from typing import cast

import pytest

from envs.countdown import CountdownEnv, evaluate, solve, split_of
from envs.errors import UserError
from envs.registry import make_env
from envs.types import Problem


def problem(numbers, target) -> Problem:
    return Problem(id="t", prompt=f"Make {target} from {numbers}", answer=None,
                   metadata={"numbers": list(numbers), "target": target})


@pytest.fixture(scope="module")
def env() -> CountdownEnv:
    return cast(CountdownEnv, make_env("countdown"))


P = problem([25, 4, 3], 97)
GOOD = ["25*4=100", "100-3=97", "A: 25*4-3"]


def test_correct_solution_and_layout(env):
    assert env.score(P, GOOD) == 1.0
    assert env.verdict(P, GOOD) == "correct"
    assert env.prompt(P) == f"Q: {P.prompt}\n"
    assert env.score(P, ["25 * 4 = 100", "100 - 3 = 97", "A: (25 * 4) - 3"]) == 1.0


@pytest.mark.parametrize("steps, why", [
    (["25*4=100", "100-3=97", "A: 28 or 29"], "malformed"),
    (["25*4=100", "100-3=97", "Answer: 25*4-3"], "no answer"),
    (["25*4=100", "100-3=97", "A: 25*4-3 = 97"], "malformed"),  # trailing text
    (["25*4=100", "100-3=97", "A: 25*4-3 and 97"], "malformed"),
    (["25*4=100", "100-3=97", "A: 25*4-3", "A: 25*4-3"], "more than one answer"),  # two answers
    (["25*4=100", "100-3=97", "A: "], "malformed"),  # empty
    (["25*4=100", "100-3=97"], "no answer"),
    ([], "no answer"),
    (["25*4=100", "100-3=97", "A: 100-3"], "rejected"),  # does not use every number
    (["25*4=100", "100-3=97", "A: 25*4-3+0"], "rejected"),  # uses a number not given
    (["25*4=100", "100-3=97", "A: __import__('os').getcwd()"], "malformed"),  # never reaches sympy
    (["25*4=101", "101-4=97", "A: 25*4-3"], "wrong arithmetic"),
    (["25*4=100", "100-4=96", "A: 25*4-3"], "not available"),  # 4 already used
    (["25*25=625", "A: 25*4-3"], "not available"),  # only one 25
    (["25/3=8", "A: 25*4-3"], "wrong arithmetic"),  # inexact division
    (["25*4=100", "A: 25*4-3"], "not the target"),  # skipped a step
    (["A: 25*4-3"], "not the target"),  # no steps at all
    (["25 times 4 is 100", "100-3=97", "A: 25*4-3"], "not an operation"),
])
def test_verifier_rejects(env, steps, why):
    assert env.score(P, steps) == 0.0
    assert why in env.verdict(P, steps)


def test_unicode_minus_and_negative_intermediates(env):
    p = problem([3, 5, 10], 20)
    assert env.score(p, ["3−5=−2", "10*−2=−20", "A: 10*(5-3)"]) == 0.0  # steps end at -20
    assert env.score(p, ["5−3=2", "10*2=20", "A: 10*(5−3)"]) == 1.0
    assert env.extract_answer(p, ["5−3=2", "10*2=20", "A: 10*(5−3)"]) == "10*(5-3)"
    assert env.check_step(p, [], "3-5=-2") is True


def test_division_must_be_exact(env):
    p = problem([12, 4, 5], 15)
    assert env.score(p, ["12/4=3", "3*5=15", "A: 12/4*5"]) == 1.0
    assert env.check_step(p, [], "12/5=2") is False
    assert env.check_step(p, [], "5/0=0") is False


def test_check_step_tracks_remaining_numbers(env):
    assert env.check_step(P, [], "25*4=100") is True
    assert env.check_step(P, [], "25*4=99") is False
    assert env.check_step(P, [], "25*5=125") is False  # 5 is not given
    assert env.check_step(P, ["25*4=100"], "100-3=97") is True
    assert env.check_step(P, ["25*4=100"], "25-3=22") is False  # 25 is used up
    assert env.check_step(P, ["25*4=100", "100-3=97"], "A: 25*4-3") is True
    assert env.check_step(P, ["25*4=100", "100-3=97"], "A: 28 or 29") is False
    assert env.check_step(P, [], "think") is None


def test_evaluate_is_plain_arithmetic_only():
    assert evaluate("(25 + 4) * 3") == (87, [25, 4, 3])
    half = evaluate("7/2")
    assert half is not None and half[0] * 2 == 7
    for bad in ["2**10", "__import__('os')", "1/0", "x+1", "", "3 4", "abs(3)", "-3"]:
        assert evaluate(bad) is None


def test_solver_finds_solutions_and_reports_none():
    found = solve([25, 4, 3], 97)
    assert found is not None
    ops, expr = found
    value = evaluate(expr)
    assert value is not None
    assert value[0] == 97 and sorted(value[1]) == [3, 4, 25]
    assert ops[-1][3] == 97
    assert solve([1, 1], 7) is None
    assert solve([2, 3], 6, operators="+") is None


def test_generator_determinism_and_disjoint_splits(env):
    a = env.load("test", 20, seed=0)
    assert a == make_env("countdown").load("test", 20, seed=0)
    assert env.load("test", 5, seed=0) == a[:5]
    assert [p.prompt for p in env.load("test", 20, seed=1)] != [p.prompt for p in a]
    train = env.load("train", 100, seed=0)
    key = lambda p: (tuple(sorted(p.metadata["numbers"])), p.metadata["target"])  # noqa: E731
    assert not {key(p) for p in train} & {key(p) for p in a}
    assert all(split_of(p.metadata["numbers"], p.metadata["target"]) == "test" for p in a)
    for p in a:
        assert 3 <= len(p.metadata["numbers"]) <= 4
        assert 10 <= p.metadata["target"] <= 100
        assert all(1 <= n <= 25 for n in p.metadata["numbers"])
        assert p.prompt.startswith(f"Make {p.metadata['target']} from ")


def test_reference_steps_verify_for_many_problems(env):
    for p in env.load("train", 60, seed=5):
        steps = env.reference_steps(p)
        assert steps is not None
        assert env.score(p, steps) == 1.0, (p, steps)
        assert all(env.check_step(p, steps[:i], s) for i, s in enumerate(steps))
        assert env.is_terminal(p, steps) and not env.is_terminal(p, steps[:-1])
        # The generator's own answer expression is accepted by the same scorer.
        assert env.extract_answer(p, [*steps[:-1], f"A: {p.answer}"]) is not None


def test_reference_steps_for_harder_problems():
    env = make_env("countdown", min_numbers=5, max_numbers=6, max_value=100, min_target=100, max_target=999)
    for p in env.load("test", 6, seed=0):
        steps = env.reference_steps(p)
        assert steps is not None and env.score(p, steps) == 1.0


@pytest.mark.parametrize("knobs, field", [
    ({"min_numbers": 5, "max_numbers": 4}, "max_numbers"),
    ({"min_numbers": 1}, "min_numbers"),
    ({"operators": "+^"}, "operators"),
    ({"min_target": 50, "max_target": 10}, "max_target"),
    ({"min_value": 0}, "min_value"),
    ({"max_steps": 3}, "max_numbers"),  # 4 numbers need 3 operations and an answer
])
def test_invalid_knobs_name_the_field(knobs, field):
    with pytest.raises(UserError, match=f"field '{field}'"):
        make_env("countdown", knobs)


def test_unreachable_targets_are_a_user_error():
    env = make_env("countdown", max_value=2, min_target=1000, max_target=2000)
    with pytest.raises(UserError, match="cannot reach targets"):
        env.load("train", 1)
