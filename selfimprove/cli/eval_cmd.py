"""`selfimprove eval`: held-out greedy accuracy, maj@k, pass@k and diversity of one policy."""

from __future__ import annotations

import typer

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


@app.command("eval")
def eval_cmd(
    policy: str = typer.Option(..., "--policy", help="An HF model directory, GGUF file, or 'smollm2-135m'."),
    env: str = typer.Option("arithmetic", "--env", help="Environment name (see `selfimprove envs list`)."),
    problems: int = typer.Option(100, "--problems", min=1, help="Held-out (test split) problems."),
    k: int = typer.Option(8, "--k", min=1, help="Samples per problem for maj@k and pass@k."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    seed: int = typer.Option(0, "--seed"),
    value: str = typer.Option(None, "--value", help="A value-model directory, used with --search."),
    search: str = typer.Option(None, "--search", help="Also report this search algorithm's accuracy."),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    attn: str = ATTN_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: str | None = RAY_ADDRESS_OPTION,
    knobs: list[str] = KNOB_OPTION,
    chat: str = CHAT_OPTION,
    system: str | None = SYSTEM_OPTION,
    shots: int = SHOTS_OPTION,
    template: str | None = TEMPLATE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Evaluate a policy on the environment's test split with the verifier."""
    import time
    from functools import partial

    from agents import load_policy
    from selfimprove.cli.app import quiet_transformers
    from selfimprove.cli.bars import Bars
    from selfimprove.evaluate import evaluate
    from selfimprove.ray_search import searcher

    quiet_transformers()
    where = placed(device, dtype, attn)
    prompting = prompt_from_options(chat, system, shots, template)
    from selfimprove.prompting import prompted_env

    # one recipe for the environment: built here, and again by each Ray worker (same prompt text)
    make_env = partial(prompted_env, env, parse_sets(knobs, option="--knob"), prompting, policy, names=PROMPT_NAMES)
    environment = make_env()
    probs = environment.load("test", problems, seed=seed)
    make_value = None
    if value is not None:
        from agents.value import HFValueModel

        make_value = partial(HFValueModel, value, **where)
    if search is not None:
        from envs.errors import UserError
        from search.registry import unknown_algorithm

        why = unknown_algorithm(search, noun="algorithm")
        if why is not None:
            raise UserError(f"--search: {why}")
    t0 = time.perf_counter()
    with searcher(workers, ray_address, make_env, partial(load_policy, policy, seed=seed, **where), make_value,
                  device=where["device"]) \
            as (search_fn, pol, vm), Bars("evaluating", quiet=as_json) as bars:
        out = evaluate(environment, probs, pol, k=k, temperature=temperature, seed=seed, value_model=vm,
                       search_algo=search, progress=bars, runner=search_fn)
    out = {"policy": policy, "env": env, **out, "wall_s": round(time.perf_counter() - t0, 2)}
    emit(out, as_json, title=f"eval {policy} on {env}")
