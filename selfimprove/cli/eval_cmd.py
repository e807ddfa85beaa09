"""`selfimprove eval`: held-out greedy accuracy, maj@k, pass@k and diversity of one policy."""

from __future__ import annotations

import typer

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
    device: str = typer.Option("cpu", "--device"),
    knobs: list[str] = KNOB_OPTION,
    chat: str = CHAT_OPTION,
    system: str | None = SYSTEM_OPTION,
    shots: int = SHOTS_OPTION,
    template: str | None = TEMPLATE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Evaluate a policy on the environment's test split with the verifier."""
    import time

    from agents import load_policy
    from envs.registry import make_env
    from selfimprove.cli.app import quiet_transformers
    from selfimprove.cli.bars import Bars
    from selfimprove.evaluate import evaluate

    quiet_transformers()
    prompting = prompt_from_options(chat, system, shots, template)
    environment = make_env(env, parse_sets(knobs, option="--knob"))
    probs = environment.load("test", problems, seed=seed)
    pol = load_policy(policy, device=device, seed=seed)
    from selfimprove.prompting import apply_prompting

    apply_prompting(environment, prompting, policy, names=PROMPT_NAMES)
    vm = None
    if value is not None:
        from agents.value import HFValueModel

        vm = HFValueModel(value, device=device)
    if search is not None:
        from envs.errors import UserError
        from search.registry import unknown_algorithm

        why = unknown_algorithm(search, noun="algorithm")
        if why is not None:
            raise UserError(f"--search: {why}")
    t0 = time.perf_counter()
    with Bars("evaluating", quiet=as_json) as bars:
        out = evaluate(environment, probs, pol, k=k, temperature=temperature, seed=seed, value_model=vm,
                       search_algo=search, progress=bars)
    out = {"policy": policy, "env": env, **out, "wall_s": round(time.perf_counter() - t0, 2)}
    emit(out, as_json, title=f"eval {policy} on {env}")
