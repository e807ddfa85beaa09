"""`selfimprove policy init`: build the embedded tiny policy (tokenizer + SFT warm start) with a progress bar."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from selfimprove.cli.app import JSON_OPTION, KNOB_OPTION, app, emit, err_console, parse_sets

policy_app = typer.Typer(help="The policy model: build the embedded tiny policy.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("init")
def policy_init(
    env: str = typer.Option("arithmetic", "--env", help="Environment whose reference solutions to train on."),
    out: str = typer.Option(..., "--out", help="Directory to write the HF model into."),
    steps: int = typer.Option(1200, "--steps", help="Optimizer steps (batch 64); fewer = weaker policy."),
    seed: int = typer.Option(0, "--seed", help="Seed for data, initialisation and sampling."),
    eval_problems: int = typer.Option(200, "--eval-problems", help="Held-out test problems for the accuracy report."),
    knobs: list[str] = KNOB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a byte-level BPE tokenizer and a small Llama from scratch by SFT, then report its accuracy.

    Re-running with the same settings on a complete directory does nothing.
    """
    from transformers.utils import logging as hf_logging

    from agents.policy_init import build_tiny_policy

    hf_logging.disable_progress_bar()  # our own bar says what is happening
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task({"train": "training", "eval": "evaluating"}.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done)

        summary = build_tiny_policy(env, out, steps=steps, seed=seed, progress=progress,
                                    eval_problems=eval_problems, knobs=parse_sets(knobs))
    emit(summary, as_json, title=f"tiny policy for '{env}'")
