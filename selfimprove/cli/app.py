"""The typer app every command module registers on, and the helpers they share."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from selfimprove.overrides import parse_sets

__all__ = ["ATTN_OPTION", "CHAT_OPTION", "DEVICE_OPTION", "DTYPE_OPTION", "JSON_OPTION", "KNOB_OPTION",
           "RAY_ADDRESS_OPTION", "SHOTS_OPTION", "SYSTEM_OPTION", "TEMPLATE_OPTION", "WORKERS_OPTION", "app",
           "console", "emit", "err_console", "parse_sets", "placed", "prompt_from_options", "quiet_transformers"]

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
DEVICE_OPTION = typer.Option("auto", "--device", help="auto (CUDA GPU, else MPS, else CPU) | cpu | cuda | cuda:N | mps.")
DTYPE_OPTION = typer.Option("auto", "--dtype", help="auto | bfloat16 | float16 | float32 (auto: bf16 on a GPU, "
                            "fp32 on CPU; fp32 master weights when training).")
ATTN_OPTION = typer.Option("sdpa", "--attn", help="Attention kernel: sdpa | eager | flash_attention_2.")


def placed(device: str, dtype: str, attn: str, *, training: bool = False) -> dict[str, Any]:
    """--device / --dtype / --attn resolved and checked (one sentence naming the option) before any model loads."""
    from agents.devices import placement

    where = placement(device, dtype, attn, training=training, prefix="--")
    return {"device": where.device, "dtype": where.dtype, "attn_implementation": where.attn_implementation}
WORKERS_OPTION = typer.Option(1, "--workers", min=1, help="Ray actors searching shares of the problems, each "
                              "with its own backend (1: no Ray).")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", help="A Ray cluster (host:port, ray://host:port or auto) "
                                  "for --workers; default: a local runtime started and stopped here.")

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
