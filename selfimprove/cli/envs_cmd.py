"""`selfimprove envs list` and `selfimprove envs show NAME`."""

from __future__ import annotations

import json
from typing import Any, cast

import typer
from rich.panel import Panel
from rich.table import Table

from envs.base import Split
from envs.errors import UserError
from selfimprove.cli.app import JSON_OPTION, app, console, parse_sets

envs_app = typer.Typer(help="Environments: built-ins, reasoning-gym tasks, plug-ins.", no_args_is_help=True)
app.add_typer(envs_app, name="envs")


@envs_app.command("list")
def envs_list(
    as_json: bool = JSON_OPTION,
    gym: bool = typer.Option(True, "--gym/--no-gym", help="Include every reasoning-gym task."),
) -> None:
    """List the environments `--env` accepts: name, kind, where it comes from, description."""
    from envs.registry import list_envs

    infos = list_envs(include_gym=gym)
    if as_json:
        print(json.dumps([vars(i) for i in infos]))
        return
    table = Table("name", "kind", "source", "description", title=f"{len(infos)} environments")
    for i in infos:
        table.add_row(i.name, i.kind, i.source, i.description)
    console.print(table)


@envs_app.command("show")
def envs_show(
    name: str = typer.Argument(..., help="Environment name, e.g. arithmetic or gym:chain_sum."),
    knob: list[str] = typer.Option([], "--set", help="Set a knob, KEY=VALUE (repeatable)."),
    split: str = typer.Option("train", "--split", help="Split the sample problem comes from."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample problem."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Describe one environment: kind, source, knobs with defaults, and a sample problem."""
    from envs.registry import env_source, make_env

    knobs = parse_sets(knob)
    env = make_env(name, knobs)
    cls = type(env)
    fields = []
    for field, info in cls.Config.model_fields.items():
        fields.append({"name": field, "default": info.get_default(call_default_factory=True),
                       "value": getattr(env.config, field), "description": info.description or ""})
    summary: dict[str, Any] = {
        "name": name, "kind": cls.kind, "source": env_source(name), "description": cls.description,
        "step_delimiter": env.step_delimiter, "knobs": fields,
    }
    try:
        problem = env.load(cast(Split, split), 1, seed=seed)[0]  # the env names a bad split
    except UserError as e:
        if knobs:  # the user's own knobs led here: that is an error, not a note
            raise
        summary["sample"] = None
        summary["sample_unavailable"] = str(e)
    else:
        steps = env.reference_steps(problem)
        summary["sample"] = {
            "id": problem.id, "answer": problem.answer, "prompt": env.prompt(problem),
            "reference_steps": steps,
            "verdict_of_reference": None if steps is None else env.verdict(problem, steps),
        }
    if as_json:
        print(json.dumps(summary, default=str))
        return
    console.print(f"[bold]{name}[/] ({cls.kind}, {summary['source']}): {cls.description}", highlight=False)
    table = Table("knob", "value", "default", "description")
    for f in fields:
        table.add_row(f["name"], repr(f["value"]), repr(f["default"]), f["description"])
    console.print(table)
    sample = summary["sample"]
    if sample is None:
        console.print(f"sample: unavailable ({summary['sample_unavailable']})", highlight=False)
        return
    text = sample["prompt"] if sample["reference_steps"] is None else \
        env.render(problem, sample["reference_steps"])
    console.print(Panel(text.rstrip("\n"), title=f"sample {sample['id']} (answer {sample['answer']})",
                        subtitle="no reference solution" if sample["reference_steps"] is None
                        else f"reference: {sample['verdict_of_reference']}"), highlight=False)
