"""The typer app every command module registers on, and the helpers they share."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from selfimprove.overrides import parse_sets

__all__ = ["CHAT_OPTION", "JSON_OPTION", "KNOB_OPTION", "SHOTS_OPTION", "SYSTEM_OPTION", "TEMPLATE_OPTION", "app", "console", "emit", "err_console", "parse_sets", "prompt_from_options", "quiet_transformers"]

app = typer.Typer(
    name="selfimprove",
    help="Self-improving language models: search, step-level preferences, step-DPO/TPO training, in one loop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

JSON_OPTION = typer.Option(False, "--json", help="Print a machine-readable summary as the last line.")
KNOB_OPTION = typer.Option([], "--knob", help="Set an environment knob, KEY=VALUE (repeatable), e.g. max_ops=3.")

CHAT_OPTION = typer.Option("auto", "--chat", help="Chat template: auto (when the model has one), on, off.")
SYSTEM_OPTION = typer.Option(None, "--system", help="System prompt.")
SHOTS_OPTION = typer.Option(0, "--shots", min=0, help="Worked examples from the env's reference solutions.")
TEMPLATE_OPTION = typer.Option(None, "--template", help="The question's text with a '{question}' slot.")
PROMPT_NAMES = {"chat": "--chat", "shots": "--shots"}


def prompt_from_options(chat: str, system: str | None, shots: int, template: str | None):
    """The `PromptConfig` the prompt options describe; a bad value is a UserError naming the option."""
    from envs.errors import UserError
    from envs.prompting import QUESTION, PromptConfig

    if chat not in ("auto", "on", "off"):
        raise UserError(f"--chat must be 'auto', 'on' or 'off', got '{chat}'")
    if template is not None and QUESTION not in template:
        raise UserError("--template must contain the question slot '{question}'")
    return PromptConfig(chat=chat, system=system, shots=shots, template=template)  # pyright: ignore[reportArgumentType]


def emit(summary: dict[str, Any], as_json: bool, title: str | None = None) -> None:
    """Print a command's summary: a rich table, or (with --json) one JSON line last on stdout."""
    if as_json:
        print(json.dumps(summary, default=str))
        return
    table = Table(title=title, show_header=False)
    for k, v in summary.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v, default=str)
        table.add_row(str(k), str(v))
    console.print(table)


def quiet_transformers() -> None:
    """No per-load/save tqdm bars or info logs from transformers: commands load checkpoints repeatedly."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
