"""`gym:<task>`: any reasoning-gym task by name, scored by that task's own scorer."""

import pytest

from envs.errors import UserError
from envs.gym import gym_env_class, gym_task_names
from envs.registry import make_env


def test_task_names_cover_reasoning_gym():
    names = gym_task_names()
    assert len(names) > 50
    assert {"chain_sum", "countdown", "basic_arithmetic", "gsm_symbolic"} <= set(names)


@pytest.fixture(scope="module")
def chain_sum():
    env = make_env("gym:chain_sum")
    return env, env.load("test", 5, seed=0)


def test_correct_and_adversarial_answers(chain_sum):
    env, problems = chain_sum
    p = problems[0]
    answer = int(p.answer)
    assert env.score(p, ["adding up left to right", f"A: {answer}"]) == 1.0
    assert env.verdict(p, [f"A: {answer}"]) == "correct"
    wrong = [
        [f"A: {answer + 1}"],
        [f"A: {answer} or {answer + 1}"],
        ["A: 28 or 29"],
        [f"Answer: {answer}"],
        [f"A: {answer} is the answer"],
        [f"A: {answer}", f"A: {answer}"],  # two answers
        ["A: "],
        [f"{answer}"],  # no answer marker
        [],
    ]
    for steps in wrong:
        assert env.score(p, steps) == 0.0, steps
    assert env.verdict(p, [f"{answer}"]) == "no answer"
    assert env.verdict(p, ["A: "]) == "malformed answer"
    assert env.verdict(p, [f"A: {answer} or {answer + 1}"]).startswith("wrong (task score")


def test_unicode_minus_reaches_the_scorer():
    env = make_env("gym:basic_arithmetic")
    p = next(p for p in env.load("train", 40, seed=0) if (p.answer or "").startswith("-"))
    assert p.answer is not None
    assert env.score(p, [f"A: {p.answer}"]) == 1.0
    assert env.score(p, [f"A: {p.answer.replace('-', '−')}"]) == 1.0
    assert env.score(p, [f"A: {p.answer.lstrip('-')}"]) == 0.0


def test_prompt_is_the_gym_question(chain_sum):
    env, problems = chain_sum
    p = problems[0]
    assert p.prompt in env.prompt(p)
    assert env.prompt(p).startswith("Q: ") and env.prompt(p).endswith("\n")
    assert env.is_terminal(p, ["A: 1"]) and not env.is_terminal(p, ["1 + 2 = 3"])
    assert env.reference_steps(p) is None


def test_determinism_and_disjoint_splits():
    env = make_env("gym:basic_arithmetic")
    a = env.load("test", 15, seed=0)
    assert a == make_env("gym:basic_arithmetic").load("test", 15, seed=0)
    assert env.load("test", 5, seed=0) == a[:5]
    assert [p.prompt for p in env.load("test", 15, seed=1)] != [p.prompt for p in a]
    train = {p.prompt for p in env.load("train", 60, seed=0)}
    assert not train & {p.prompt for p in a}


def test_problems_round_trip_through_json():
    """A problem read back from a tree file is scored against the same item."""
    from envs.types import Problem

    env = make_env("gym:gsm_symbolic")
    p = env.load("train", 1, seed=3)[0]
    back = Problem.model_validate_json(p.model_dump_json())
    fresh = make_env("gym:gsm_symbolic")
    assert fresh.score(back, [f"A: {p.answer}"]) == 1.0


def test_task_config_is_passed_and_validated():
    env = make_env("gym:chain_sum", task_config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})
    for p in env.load("train", 5):
        assert abs(int(p.answer or "")) < 20
    with pytest.raises(UserError, match="task_config"):
        make_env("gym:chain_sum", task_config={"no_such_knob": 1}).load("train", 1)


def test_unknown_task_lists_close_matches():
    with pytest.raises(UserError, match="gym:chain_sum"):
        gym_env_class("chain_summ")
    with pytest.raises(UserError, match="unknown reasoning-gym task"):
        make_env("gym:zzzz_nothing_like_it")
    assert gym_env_class("chain_sum").name == "gym:chain_sum"


def test_a_scorer_that_accepts_anything_is_not_trusted():
    """reasoning-gym's game_of_life_halting scorer compares bool(answer): any text gets full marks."""
    env = make_env("gym:game_of_life_halting")
    p = env.load("train", 1)[0]
    assert env.score(p, [f"A: {p.answer}"]) == 1.0
    assert env.score(p, ["A: 28 or 29"]) == 0.0
    wrong = "True" if p.answer == "False" else "False"
    assert env.score(p, [f"A: {wrong}"]) == 0.0


def test_gsm_symbolic_worked_solution_is_the_reference():
    env = make_env("gym:gsm_symbolic")
    problems = env.load("train", 3, seed=0)
    for p in problems:
        steps = env.reference_steps(p)
        assert steps is not None and len(steps) >= 3
        assert steps[-1] == f"A: {p.answer}"
        assert not any("####" in s or "<<" in s or not s.strip() for s in steps)
        assert env.is_terminal(p, steps) and env.score(p, steps) == 1.0  # a finished, correct solution
        assert not env.is_terminal(p, steps[:-1])
    assert make_env("gym:chain_sum").reference_steps(make_env("gym:chain_sum").load("train", 1)[0]) is None
