"""The tiny-policy build (selfimprove.train.tiny_policy): injected wrong steps, tokenizer boundaries, a short real build, caching."""

from __future__ import annotations

import json
import random

import pytest

from envs.arithmetic import parse_step
from envs.errors import UserError
from envs.progress import Progress
from envs.registry import make_env
from selfimprove.train.tiny_policy import (
    MANIFEST,
    build_tiny_policy,
    read_manifest,
    solution_steps,
    work_arithmetic,
)


class Stages(Progress):
    """Records the stage of every progress report."""

    def __init__(self):
        self.stages: list[str] = []

    def update(self, done, total=None, **info):
        self.stages.append(info["stage"])


def test_work_arithmetic_one_wrong_step_carried_forward():
    seen_offsets = set()
    for seed in range(40):
        rng = random.Random(seed)
        steps = work_arithmetic("3+4*2-5", wrong_at=rng.randrange(3), rng=rng)
        ops = [op for op in map(parse_step, steps[:-1]) if op is not None]
        assert len(ops) == len(steps) - 1  # every step but the answer parses
        assert [(a, op, b) for a, op, b, _ in ops][:1] == [(4, "*", 2)]
        wrong = [i for i, (a, op, b, c) in enumerate(ops) if {"+": a + b, "-": a - b, "*": a * b}[op] != c]
        assert len(wrong) == 1
        i = wrong[0]
        a, op, b, c = ops[i]
        seen_offsets.add(c - {"+": a + b, "-": a - b, "*": a * b}[op])
        for later in ops[i + 1:i + 2]:  # the wrong result is an operand of the next operation
            assert c in (later[0], later[2])
        assert steps[-1] == f"A: {ops[-1][3]}" and steps[-1] != "A: 6"
    assert seen_offsets <= {-10, -2, -1, 1, 2, 10} and len(seen_offsets) >= 3


def test_work_arithmetic_bug_is_carried_forward():
    assert work_arithmetic("3+4*2-15") == ["4*2=8", "3+8=11", "11-15=-4", "A: -4"]
    # smaller-from-larger: 11-15 written as 4; only when 0 <= a < b
    assert work_arithmetic("3+4*2-15", smaller_from_larger=True) == ["4*2=8", "3+8=11", "11-15=4", "A: 4"]
    assert work_arithmetic("3-5-2", smaller_from_larger=True) == ["3-5=2", "2-2=0", "A: 0"]
    assert work_arithmetic("7-1", smaller_from_larger=True) == ["7-1=6", "A: 6"]
    assert work_arithmetic("2-5*3", wrong_at=0, rng=random.Random(0))[0] != "5*3=15"
    with pytest.raises(ValueError, match="rng"):
        work_arithmetic("2-5*3", wrong_at=0)


def test_cached_dir_is_one_directory_per_setting(tmp_path):
    from selfimprove.train.tiny_policy import cached_dir

    plain = cached_dir(tmp_path, "arithmetic")
    assert plain == tmp_path / "arithmetic-seed0-stepsdefault"
    a = cached_dir(tmp_path, "arithmetic", knobs={"max_ops": 3, "operand_max": 9})
    assert a == cached_dir(tmp_path, "arithmetic", knobs={"operand_max": 9, "max_ops": 3})  # order-free
    assert len({plain, a, cached_dir(tmp_path, "arithmetic", knobs={"max_ops": 2}),
                cached_dir(tmp_path, "arithmetic", steps=300), cached_dir(tmp_path, "arithmetic", seed=1)}) == 5
    assert ":" not in cached_dir(tmp_path, "gym:leg_counting").name


def test_tokenizer_keeps_step_delimiter_separate():
    from agents.tiny import train_tokenizer

    env = make_env("arithmetic")
    texts = [env.render(p, env.reference_steps(p) or []) for p in env.load("train", 300, 0)]
    tok = train_tokenizer(texts, 1000, individual_digits=True)
    assert len(tok) <= 1000
    nl = tok.convert_tokens_to_ids("Ċ")
    for t in texts[:50]:
        ids = tok(t)["input_ids"]
        assert tok.decode(ids) == t
        assert ids.count(nl) == t.count("\n")  # every newline is its own token
        pieces = tok.convert_ids_to_tokens(ids)
        assert all(len(p) == 1 for p in pieces if any(ch.isdigit() for ch in p))  # digits one by one


def test_solution_steps_split():
    env = make_env("arithmetic")
    assert solution_steps(env, "4*2=8\n3+8=11\nA: 11\n") == ["4*2=8", "3+8=11", "A: 11"]
    assert solution_steps(env, "") == []


def test_short_build_is_a_standard_hf_dir_and_cached(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "p"
    reports = Stages()
    s = build_tiny_policy("arithmetic", out, steps=3, seed=0, eval_problems=4, progress=reports)
    calls = reports.stages
    assert s["cached"] is False and 0 <= s["greedy_accuracy"] <= s["best_of_16_accuracy"] <= 1
    assert s["vocab_size"] <= 1000 and s["params"] > 100_000 and s["build_seconds"] > 0
    assert "train" in calls and "eval" in calls
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", MANIFEST):
        assert (out / f).is_file()
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tok) and model.config.tie_word_embeddings
    assert model.config.hidden_size // model.config.num_attention_heads >= 32  # vLLM CPU kernels need it
    again = build_tiny_policy("arithmetic", out, steps=3, seed=0, eval_problems=4)
    assert again["cached"] is True and again["greedy_accuracy"] == s["greedy_accuracy"]
    man = read_manifest(out)
    assert man is not None and man["settings"]["steps"] == 3
    assert json.loads((out / MANIFEST).read_text())["summary"]["steps"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dirs cleaned up


def test_build_refuses_foreign_directory_and_bad_args(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(UserError, match="not a tiny-policy directory"):
        build_tiny_policy("arithmetic", tmp_path, steps=2, eval_problems=2)
    with pytest.raises(UserError, match="steps"):
        build_tiny_policy("arithmetic", tmp_path / "x", steps=0)
    with pytest.raises(UserError, match="unknown environment"):
        build_tiny_policy("nope", tmp_path / "y", steps=2)
    with pytest.raises(UserError, match="max_opz"):
        build_tiny_policy("arithmetic", tmp_path / "z", steps=2, knobs={"max_opz": 3})
    assert not (tmp_path / "z").exists()


def test_cli_policy_init(tmp_path, capsys):
    from selfimprove.cli import main

    out = tmp_path / "cli"
    assert main(["policy", "init", "--env", "arithmetic", "--out", str(out), "--steps", "2",
                 "--eval-problems", "3", "--knob", "max_ops=2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and "greedy_accuracy" in summary and "best_of_16_accuracy" in summary
    man = read_manifest(out)
    assert summary["knobs"] == {"max_ops": 2} and man is not None and man["settings"]["knobs"] == {"max_ops": 2}
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "a.txt").write_text("x")
    assert main(["policy", "init", "--out", str(tmp_path / "foreign"), "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "not a tiny-policy directory" in err and "Traceback" not in err
