"""`selfimprove pairs`: turn search trees into preference pairs or ranked lists (JSONL)."""

from __future__ import annotations

import typer

from selfimprove.cli.app import JSON_OPTION, app, emit, parse_sets


@app.command("pairs")
def pairs(
    trees: str = typer.Option(..., "--trees", help="trees.jsonl written by search."),
    strategy: str = typer.Option("q-gap", "--strategy", help="q-gap | first-error | selected-vs-pruned | "
                                 "subtree-outcome | ranked-list | outcome"),
    out: str = typer.Option(..., "--out", help="Preference JSONL to write."),
    set_: list[str] = typer.Option(None, "--set", help="Strategy knob key=value (repeatable), e.g. min_gap=0.2."),
    iteration: int = typer.Option(0, "--iteration", help="Iteration number recorded in each record."),
    seed: int = typer.Option(0, "--seed", help="Seed for random choices (rejected=random, sampling)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Extract preference records from trees with a strategy; print counts, mean margin, depth histogram.

    --out is replaced only when it is a file selfimprove wrote (or empty)."""
    from envs.io import check_file_output
    from search.tree import read_trees
    from selfimprove.pairs import extract, write_records

    check_file_output(out, inputs=[trees])
    records, stats = extract(read_trees(trees), strategy, parse_sets(set_), iteration=iteration, seed=seed)
    write_records(out, records)
    emit({**stats, "out": out}, as_json, title=f"pairs ({strategy})")
