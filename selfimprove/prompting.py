"""Apply a run's `prompt` section to an environment, with the policy's own chat template.

The one place a Prompter is built (the loop, `search` and `eval` all come here), so search, pairs and
training read the same prompt text: the tree records it (`Tree.prompt`) and pairs/SFT records reuse it.
"""

from __future__ import annotations

from envs.base import Environment
from envs.prompting import ChatTemplate, PromptConfig, Prompter


def chat_template_of(policy_path: str) -> ChatTemplate | None:
    """The tokenizer's chat template as a function of messages, or None when the tokenizer has none."""
    from agents.loading import load_tokenizer, resolve_model_path

    tok = load_tokenizer(resolve_model_path(policy_path, what="policy"))
    if not getattr(tok, "chat_template", None):
        return None

    def render(messages: list[dict[str, str]]) -> str:
        return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    return render


def apply_prompting(env: Environment, config: PromptConfig, policy_path: str, *,
                    names: dict[str, str] | None = None) -> Prompter:
    """Make `env` render its prompts per `config` for the policy at `policy_path`; returns the Prompter.

    `names` names the settings in error messages (default: the run config's `prompt.*` fields).
    """
    chat = chat_template_of(policy_path) if config.chat != "off" else None
    prompter = Prompter(env, config, chat, names=names)
    env.set_prompting(prompter)
    return prompter


def prompted_env(name: str, knobs: dict, config: PromptConfig, policy_path: str, *,
                 names: dict[str, str] | None = None) -> Environment:
    """A fresh environment `name` with `knobs`, rendering prompts per `config` for `policy_path`: what a
    Ray search worker builds (bound with functools.partial), so its trees carry the same prompt text."""
    from envs.registry import make_env

    env = make_env(name, knobs)
    apply_prompting(env, config, policy_path, names=names)
    return env
