"""`selfimprove pairs`: turn search trees into preference pairs or ranked lists (JSONL); `pairs audit`
judges a pairs file's labels with the environment's own step check."""

from __future__ import annotations

from pathlib import Path

import typer

from envs.errors import UserError
from selfimprove.cli.app import JSON_OPTION, KNOB_OPTION, app, console, emit, parse_sets

pairs_app = typer.Typer(invoke_without_command=True, help="Extract preference records from search trees "
                        "(`pairs --trees T --out P`), or audit them (`pairs audit P`).")
app.add_typer(pairs_app, name="pairs")


@pairs_app.callback()
def pairs(
    ctx: typer.Context,
    trees: str = typer.Option(None, "--trees", help="trees.jsonl written by search."),
    strategy: str = typer.Option("q-gap", "--strategy", help="q-gap | first-error | selected-vs-pruned | "
                                 "subtree-outcome | ranked-list | outcome | step-check"),
    out: str = typer.Option(None, "--out", help="Preference JSONL to write."),
    set_: list[str] = typer.Option(None, "--set", help="Strategy knob key=value (repeatable), e.g. min_gap=0.2."),
    iteration: int = typer.Option(0, "--iteration", help="Iteration number recorded in each record."),
    seed: int = typer.Option(0, "--seed", help="Seed for random choices (rejected=random, sampling)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Extract preference records from trees with a strategy; print counts, mean margin, depth histogram.

    --out is replaced only when it is a file selfimprove wrote (or empty)."""
    if ctx.invoked_subcommand is not None:
        return
    if trees is None or out is None:
        raise UserError("pairs: --trees and --out are required (or run `selfimprove pairs audit PAIRS`)")
    from envs.io import check_file_output
    from search.tree import read_trees
    from selfimprove.pairs import extract, write_records

    check_file_output(out, inputs=[trees])
    records, stats = extract(read_trees(trees), strategy, parse_sets(set_), iteration=iteration, seed=seed)
    write_records(out, records)
    emit({**stats, "out": out}, as_json, title=f"pairs ({strategy})")


@pairs_app.command("audit")
def audit(
    pairs_file: Path = typer.Argument(..., metavar="PAIRS", help="A pairs.jsonl file (pairs or ranked lists)."),
    trees: list[Path] = typer.Option(None, "--trees", help="The trees the records came from (repeatable; "
                                     "default: trees.jsonl beside PAIRS)."),
    env: str = typer.Option(None, "--env", help="Environment whose step check judges the steps "
                            "(default: the run's, when PAIRS lies in a run directory)."),
    knobs: list[str] = KNOB_OPTION,
    examples: int = typer.Option(3, "--examples", min=0, help="Inverted pairs to print."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Label precision: right-vs-wrong, inverted, both wrong, both right, unknown — by strategy and depth."""
    import json

    from envs.registry import make_env
    from search.tree import read_trees
    from selfimprove.pairs import read_records
    from selfimprove.pairs.audit import audit_summary, has_step_check, render_audit
    from selfimprove.rundir import run_env

    if not pairs_file.is_file():
        raise UserError(f"{pairs_file}: pairs file not found")
    if env is not None:
        name, env_knobs = env, parse_sets(knobs, option="--knob")
    else:
        found = run_env(pairs_file)
        if found is None:
            raise UserError(f"{pairs_file}: not inside a run directory; name the environment with --env")
        name, env_knobs = found[0], {**found[1], **parse_sets(knobs, option="--knob")}
    environment = make_env(name, env_knobs)
    if not has_step_check(environment):
        raise UserError(f"environment '{name}' has no per-step check (check_step), so there is nothing to "
                        "judge the pairs against")
    tree_files = list(trees or [pairs_file.parent / "trees.jsonl"])
    for f in tree_files:
        if not f.is_file():
            raise UserError(f"{f}: trees file not found (the audit needs each pair's problem; pass --trees)")
    all_trees = [t for f in tree_files for t in read_trees(f)]
    summary = audit_summary(read_records(pairs_file), all_trees, environment, examples=examples)
    summary = {"pairs_file": str(pairs_file), "env": name, **summary}
    if as_json:
        print(json.dumps(summary))
    else:
        console.print(render_audit(summary, f"{pairs_file}: labels judged by {name}'s step check"))
