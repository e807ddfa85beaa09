"""`selfimprove search`: run a search algorithm over an environment's problems and write trees.jsonl."""

from __future__ import annotations

import typer

from envs.errors import UserError
from selfimprove.cli.app import (
    ATTN_OPTION,
    CHAT_OPTION,
    DEVICE_OPTION,
    DTYPE_OPTION,
    JSON_OPTION,
    KNOB_OPTION,
    PROMPT_NAMES,
    RAY_ADDRESS_OPTION,
    SHOTS_OPTION,
    SYSTEM_OPTION,
    TEMPLATE_OPTION,
    WORKERS_OPTION,
    app,
    emit,
    parse_sets,
    placed,
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
    workers: int = WORKERS_OPTION,
    ray_address: str | None = RAY_ADDRESS_OPTION,
    knobs: list[str] = KNOB_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    attn: str = ATTN_OPTION,
    chat: str = CHAT_OPTION,
    system: str | None = SYSTEM_OPTION,
    shots: int = SHOTS_OPTION,
    template: str | None = TEMPLATE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Search every problem with one policy (and value model), batching all problems' requests together.

    --out is replaced only when it is a trees file selfimprove wrote (or empty)."""
    from envs.io import check_file_output
    from search.registry import make_config
    from search.tree import write_trees

    if split not in ("train", "test"):
        raise UserError(f"--split must be 'train' or 'test', got '{split}'")
    check_file_output(out)
    config = make_config(algo, parse_sets(sets))  # bad algo / key fails before any model loads
    where = placed(device, dtype, attn)
    prompting = prompt_from_options(chat, system, shots, template)

    from functools import partial

    from agents import load_policy
    from selfimprove.cli.bars import Bars
    from selfimprove.prompting import prompted_env
    from selfimprove.ray_search import searcher

    # one recipe for the environment: built here, and again by each Ray worker (same prompt text)
    make_env = partial(prompted_env, env, parse_sets(knobs, option="--knob"), prompting, policy, names=PROMPT_NAMES)
    environment = make_env()
    items = environment.load(split, problems, seed=seed)
    make_value = None
    if value is not None:
        from pathlib import Path

        from agents.value import HFValueModel

        if not Path(value).is_dir():
            raise UserError(f"--value '{value}' is not a directory (a saved value model)")
        make_value = partial(HFValueModel, value, **where)
    make_policy = partial(load_policy, policy, seed=seed, **where)
    with searcher(workers, ray_address, make_env, make_policy, make_value, device=where["device"]) \
            as (search_fn, pol, val), Bars("searching") as bars:
        result = search_fn(environment, items, pol, val, algo=algo, config=config, seed=seed,
                           max_batch=max_batch, progress=bars)
    write_trees(out, result.trees)  # only once every worker's share is done
    s = result.stats
    summary = {"out": out, "algo": algo, "env": env, "problems": s["problems"], "accuracy": s["accuracy"],
               "nodes": s["nodes"], "backend_calls": s["backend_calls"], "mean_batch": s["mean_batch"],
               "tokens": s["tokens"], "wall_s": s["wall_s"], "model_share": s["model_share"], "workers": workers}
    if "retries" in s:
        summary["retries"] = s["retries"]
    emit(summary, as_json, title="search")
