"""`selfimprove tree show|export`: look inside the trees a search wrote."""

from __future__ import annotations

from pathlib import Path

import typer

from selfimprove.cli.app import JSON_OPTION, app, console, emit

tree_app = typer.Typer(help="Inspect search trees: render one in the terminal, or export it.",
                       no_args_is_help=True)
app.add_typer(tree_app, name="tree")


@tree_app.command("show")
def tree_show(
    file: Path = typer.Argument(..., help="A trees.jsonl file (one tree per line)."),
    index: int = typer.Option(None, "--index", "-i", help="Which tree (0-based line); default the first."),
    problem: str = typer.Option(None, "--problem", "-p", help="Select the tree of this problem id."),
    depth: int = typer.Option(None, "--depth", "-d", min=0, help="Fold nodes deeper than this."),
    min_visits: int = typer.Option(None, "--min-visits", min=0,
                                   help="Fold children with fewer visits (default 1 for MCTS trees, else 0)."),
    pairs: Path = typer.Option(None, "--pairs", help="A pairs.jsonl file: mark chosen (+) / rejected (-) steps."),
    width: int = typer.Option(80, "--width", min=40, help="Columns to fit."),
) -> None:
    """Render a tree: elided steps with N, Q, V, prior and verdict; ▶ marks the answer path."""
    from envs.errors import UserError
    from search.tree import read_trees
    from selfimprove.tree_view import pair_marks_file, render_tree, select_tree

    if index is not None and problem is not None:
        raise UserError("--index and --problem select a tree two ways; give one")
    tree = select_tree(read_trees(file), str(file), index=index, problem=problem)
    marks = pair_marks_file(pairs, tree.id) if pairs is not None else None
    console.print(render_tree(tree, depth=depth, min_visits=min_visits, marks=marks, width=width))


@tree_app.command("export")
def tree_export(
    file: Path = typer.Argument(..., help="A trees.jsonl file."),
    fmt: str = typer.Option("json", "--format", "-f", help="json | graphml | dot"),
    index: int = typer.Option(None, "--index", "-i", help="Which tree (0-based line); default the first."),
    problem: str = typer.Option(None, "--problem", "-p", help="Select the tree of this problem id."),
    out: Path = typer.Option(None, "--out", "-o", help="Write here (atomically) instead of stdout."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export one tree as JSON, GraphML (networkx, flat attributes) or Graphviz DOT.

    --out is replaced only when it is an export selfimprove wrote (or empty)."""
    from envs.io import check_file_output
    from search.tree import read_trees
    from selfimprove.tree_view import export_tree, select_tree

    if out is not None:
        check_file_output(out, inputs=[file])
    tree = select_tree(read_trees(file), str(file), index=index, problem=problem)
    text = export_tree(tree, fmt, out)
    if out is None and not as_json:
        print(text, end="")
    elif out is not None or as_json:
        emit({"tree": tree.id, "problem": tree.problem.id, "format": fmt, "nodes": len(tree),
              "out": str(out) if out else None}, as_json, title="tree export")
