"""`selfimprove policy init`: build the embedded tiny policy (tokenizer + SFT warm start) with a progress bar."""

from __future__ import annotations

import typer

from selfimprove.cli.app import JSON_OPTION, KNOB_OPTION, app, emit, parse_sets

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
    overwrite: bool = typer.Option(False, "--overwrite", help="Rebuild --out when it holds a tiny policy built "
                                   "with other settings (never a directory selfimprove did not write)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a byte-level BPE tokenizer and a small Llama from scratch by SFT, then report its accuracy.

    Re-running with the same settings on a complete directory does nothing.
    """
    from transformers.utils import logging as hf_logging

    from selfimprove.cli.bars import Bars
    from selfimprove.train.tiny_policy import build_tiny_policy

    hf_logging.disable_progress_bar()  # our own bar says what is happening
    with Bars(stages={"train": "training", "eval": "evaluating"}) as bars:
        summary = build_tiny_policy(env, out, steps=steps, seed=seed, progress=bars, eval_problems=eval_problems,
                                    knobs=parse_sets(knobs, option="--knob"), overwrite=overwrite)
    emit(summary, as_json, title=f"tiny policy for '{env}'")
