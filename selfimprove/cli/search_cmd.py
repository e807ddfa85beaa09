"""`selfimprove search`: run a search algorithm over an environment's problems and write trees.jsonl."""

from __future__ import annotations

import typer

from envs.errors import UserError
from selfimprove.cli.app import (
    CHAT_OPTION,
    JSON_OPTION,
    KNOB_OPTION,
    PROMPT_NAMES,
    SHOTS_OPTION,
    SYSTEM_OPTION,
    TEMPLATE_OPTION,
    app,
    emit,
    parse_sets,
    prompt_from_options,
)


@app.command("search")
def search(
    policy: str = typer.Option(..., "--policy", help="Policy model directory (HF), GGUF file, or 'smollm2-135m'."),
    value: str | None = typer.Option(None, "--value", help="Value model directory (optional)."),
    env: str = typer.Option(..., "--env", help="Environment name (see `selfimprove envs list`)."),
    algo: str = typer.Option("mcts", "--algo", help="mcts, beam, dfs, best_of_n or greedy."),
    problems: int = typer.Option(16, "--problems", min=1, help="How many problems to search."),
    seed: int = typer.Option(0, "--seed", help="Seed for problem choice and sampling."),
    split: str = typer.Option("test", "--split", help="train or test."),
    out: str = typer.Option("trees.jsonl", "--out", help="Where to write the trees (one per line)."),
    sets: list[str] = typer.Option([], "--set", help="Algorithm config key=value (repeatable)."),
    max_batch: int = typer.Option(256, "--max-batch", min=1, help="Most sequences per backend call."),
    knobs: list[str] = KNOB_OPTION,
    chat: str = CHAT_OPTION,
    system: str | None = SYSTEM_OPTION,
    shots: int = SHOTS_OPTION,
    template: str | None = TEMPLATE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Search every problem with one policy (and value model), batching all problems' requests together."""
    from envs.registry import make_env
    from search.api import run_search
    from search.registry import make_config
    from search.tree import write_trees

    if split not in ("train", "test"):
        raise UserError(f"--split must be 'train' or 'test', got '{split}'")
    config = make_config(algo, parse_sets(sets))  # bad algo / key fails before any model loads
    prompting = prompt_from_options(chat, system, shots, template)
    environment = make_env(env, parse_sets(knobs, option="--knob"))
    items = environment.load(split, problems, seed=seed)

    from agents import load_policy
    from selfimprove.cli.bars import Bars
    from selfimprove.prompting import apply_prompting

    pol = load_policy(policy, seed=seed)
    apply_prompting(environment, prompting, policy, names=PROMPT_NAMES)
    val = None
    if value is not None:
        from pathlib import Path

        from agents.value import HFValueModel

        if not Path(value).is_dir():
            raise UserError(f"--value '{value}' is not a directory (a saved value model)")
        val = HFValueModel(value)
    with Bars("searching") as bars:
        result = run_search(environment, items, pol, val, algo=algo, config=config, seed=seed,
                            max_batch=max_batch, progress=bars)
    write_trees(out, result.trees)
    s = result.stats
    summary = {"out": out, "algo": algo, "env": env, "problems": s["problems"], "accuracy": s["accuracy"],
               "nodes": s["nodes"], "backend_calls": s["backend_calls"], "mean_batch": s["mean_batch"],
               "tokens": s["tokens"], "wall_s": s["wall_s"], "model_share": s["model_share"]}
    emit(summary, as_json, title="search")
