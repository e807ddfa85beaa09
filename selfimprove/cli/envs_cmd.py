"""`selfimprove envs list`."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from selfimprove.cli.app import JSON_OPTION, app, console

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
