"""Prompting per model and environment: a real chat template (ChatML, as SmolLM2 and Qwen use) on the tiny
test tokenizer, system prompts, few-shot examples from reference solutions, templates, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from pydantic import ValidationError

from envs.arithmetic import ArithmeticEnv
from envs.errors import UserError
from envs.prompting import PromptConfig, Prompter
from selfimprove.prompting import apply_prompting, chat_template_of

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
          "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")


@pytest.fixture(scope="module")
def chat_policy_dir(tiny_policy_dir, tmp_path_factory):
    """The tiny test policy with a ChatML chat template on its tokenizer."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("chat_policy")
    shutil.copytree(tiny_policy_dir, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = CHATML
    tok.save_pretrained(out)
    return str(out)


def _env() -> ArithmeticEnv:
    return ArithmeticEnv(min_ops=1, max_ops=2, operand_max=9)


def test_plain_layout_is_the_envs_own_when_nothing_is_set(tiny_policy_dir):
    env = _env()
    p = env.load("test", 1, seed=0)[0]
    assert chat_template_of(tiny_policy_dir) is None
    apply_prompting(env, PromptConfig(), tiny_policy_dir)  # chat: auto, and the tiny tokenizer has no template
    assert env.model_prompt(p) == env.prompt(p) == f"Q: {p.prompt}\n"
    assert env.render(p, ["1+2=3"]) == f"Q: {p.prompt}\n1+2=3\n"


def test_chat_template_system_and_shots(chat_policy_dir):
    env = _env()
    p = env.load("test", 1, seed=0)[0]
    prompter = apply_prompting(env, PromptConfig(system="Be exact.", shots=2), chat_policy_dir)
    shots = env.load("train", 3, seed=0)
    turns = "".join(f"<|im_start|>user\nQ: {s.prompt}<|im_end|>\n<|im_start|>assistant\n"
                    + "\n".join(env.reference_steps(s)) + "<|im_end|>\n" for s in shots[:2])
    want = f"<|im_start|>system\nBe exact.<|im_end|>\n{turns}<|im_start|>user\nQ: {p.prompt}<|im_end|>\n" \
           "<|im_start|>assistant\n"
    assert env.model_prompt(p) == want
    assert env.render(p, ["3*4=12"]) == want + "3*4=12\n"
    # a shot never asks the question itself: the spare example takes its place
    own = shots[0]
    assert f"Q: {own.prompt}<|im_end|>\n<|im_start|>assistant\n{env.reference_steps(own)[0]}" not in prompter(own)
    assert prompter(own).count("<|im_start|>user") == 3


def test_template_and_plain_few_shot(chat_policy_dir):
    env = _env()
    p = env.load("test", 1, seed=0)[0]
    apply_prompting(env, PromptConfig(chat="off", system="Solve.", shots=1, template="Compute {question}.\n"),
                    chat_policy_dir)
    shot = env.load("train", 2, seed=0)[0]
    sol = "".join(s + "\n" for s in env.reference_steps(shot))
    assert env.model_prompt(p) == f"Solve.\n\nCompute {shot.prompt}.\n{sol}\nCompute {p.prompt}.\n"
    apply_prompting(env, PromptConfig(chat="on", template="What is {question}?"), chat_policy_dir)
    assert env.model_prompt(p) == f"<|im_start|>user\nWhat is {p.prompt}?<|im_end|>\n<|im_start|>assistant\n"


def test_bad_prompt_settings_are_one_sentence(tiny_policy_dir):
    with pytest.raises(ValidationError, match="question slot"):
        PromptConfig(template="no slot here")
    with pytest.raises(UserError, match=r"field 'prompt.chat' is 'on' but the policy's tokenizer has no chat template"):
        apply_prompting(_env(), PromptConfig(chat="on"), tiny_policy_dir)

    class NoRefs(ArithmeticEnv):
        def reference_steps(self, problem):  # type: ignore[override]
            return None

    with pytest.raises(UserError, match=r"field 'prompt.shots': environment 'arithmetic' has no reference"):
        Prompter(NoRefs(), PromptConfig(shots=2), None)


def test_run_config_prompt_section(tmp_path):
    from selfimprove.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("prompt: {chat: on, system: hi, shots: 3}\n")
    assert load_config(cfg).prompt == PromptConfig(chat="on", system="hi", shots=3)
    cfg.write_text("prompt: {template: 'Q {q}'}\n")
    with pytest.raises(UserError, match=r"c.yaml: field 'prompt.template'.*question slot"):
        load_config(cfg)
    cfg.write_text("prompt: {chat: maybe}\n")
    with pytest.raises(UserError, match=r"field 'prompt.chat'"):
        load_config(cfg)
    cfg.write_text("policy: {path: smollm2-135m}\n")
    assert load_config(cfg).train.lora is True  # LoRA by default for the embedded pretrained model
    cfg.write_text("policy: {path: smollm2-135m}\ntrain: {lora: false}\n")
    assert load_config(cfg).train.lora is False


def test_search_cli_records_the_rendered_prompt(chat_policy_dir, tmp_path, capsys):
    from search.tree import read_trees
    from selfimprove.cli import main

    out = tmp_path / "t.jsonl"
    args = ["search", "--policy", chat_policy_dir, "--env", "arithmetic", "--knob", "max_ops=2", "--knob",
            "operand_max=9", "--algo", "greedy", "--problems", "2", "--shots", "1", "--system", "S.",
            "--set", "max_step_tokens=4", "--set", "max_depth=2", "--json"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["problems"] == 2
    env = ArithmeticEnv(max_ops=2, operand_max=9)
    prompter = apply_prompting(env, PromptConfig(system="S.", shots=1), chat_policy_dir)
    for tree in read_trees(out):
        assert tree.prompt == prompter(tree.problem)
        assert tree.prompt.startswith("<|im_start|>system\nS.<|im_end|>\n")

    bad = tmp_path / "bad.jsonl"
    assert main([*args, "--template", "nothing", "--out", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "--template must contain the question slot" in err and "Traceback" not in err
    plain = tmp_path / "plain"
    shutil.copytree(chat_policy_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tc = json.loads((plain / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(tc))
    argv = [*args, "--chat", "on", "--out", str(bad)]
    argv[2] = str(plain)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--chat is 'on' but the policy's tokenizer has no chat template" in err and not bad.exists()
