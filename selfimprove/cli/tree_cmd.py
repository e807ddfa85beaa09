"""`selfimprove tree show|export|browse`: look inside the trees a search wrote."""

from __future__ import annotations

from pathlib import Path

import typer

from selfimprove.cli.app import JSON_OPTION, KNOB_OPTION, app, console, emit, parse_sets

tree_app = typer.Typer(help="Inspect search trees: render one in the terminal, browse them, or export one.",
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


def _env(env: str | None, knobs: list[str], near: Path):
    """The environment named by --env (and --knob), else the run's when `near` lies in a run directory."""
    from envs.registry import make_env
    from selfimprove.rundir import run_env

    if env is not None:
        return make_env(env, parse_sets(knobs, option="--knob"))
    found = run_env(near)
    return None if found is None else make_env(found[0], {**found[1], **parse_sets(knobs, option="--knob")})


ENV_OPTION = typer.Option(None, "--env", help="Environment whose step check judges steps and pairs "
                          "(default: the run's, inside a run directory).")


@tree_app.command("export")
def tree_export(
    file: Path = typer.Argument(..., help="A trees.jsonl file."),
    fmt: str = typer.Option("json", "--format", "-f", help="json | graphml | dot | html"),
    index: int = typer.Option(None, "--index", "-i", help="Which tree (0-based line); default the first."),
    problem: str = typer.Option(None, "--problem", "-p", help="Select the tree of this problem id."),
    out: Path = typer.Option(None, "--out", "-o", help="Write here (atomically) instead of stdout."),
    pairs: list[Path] = typer.Option(None, "--pairs", help="html: pairs.jsonl files whose records to mark "
                                     "on the nodes (default: pairs.jsonl beside FILE in a run)."),
    env: str = ENV_OPTION,
    knobs: list[str] = KNOB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Export one tree as JSON, GraphML (networkx, flat attributes), Graphviz DOT or a self-contained HTML
    page (collapsible nodes with every number, pairs marked; opens offline in any browser).

    --out is replaced only when it is an export selfimprove wrote (or empty)."""
    from envs.errors import UserError
    from envs.io import check_file_output
    from selfimprove.tree_sources import load_sources
    from selfimprove.tree_view import export_tree, select_tree

    if fmt != "html" and (pairs or env or knobs):
        raise UserError("--pairs, --env and --knob apply to --format html only")
    if out is not None:
        check_file_output(out, inputs=[file, *(pairs or [])])
    overlay, environment = None, None
    if fmt == "html":
        environment = _env(env, knobs, file)
        src = load_sources([file], pairs, environment).iterations[0]
        tree = select_tree(src.trees, str(file), index=index, problem=problem)
        overlay = src.overlay(tree) if src.records else None
    else:
        from search.tree import read_trees

        tree = select_tree(read_trees(file), str(file), index=index, problem=problem)
    text = export_tree(tree, fmt, out, overlay=overlay, env=environment)
    if out is None and not as_json:
        print(text, end="")
    elif out is not None or as_json:
        emit({"tree": tree.id, "problem": tree.problem.id, "format": fmt, "nodes": len(tree),
              "out": str(out) if out else None}, as_json, title="tree export")


@tree_app.command("browse")
def tree_browse(
    paths: list[Path] = typer.Argument(..., metavar="FILE|RUN_DIR...", help="trees.jsonl files, iter-NNN "
                                       "directories or run directories (every iteration)."),
    pairs: list[Path] = typer.Option(None, "--pairs", help="pairs.jsonl files to overlay (default: the "
                                     "pairs.jsonl beside each trees file of a run)."),
    problem: str = typer.Option(None, "--problem", "-p", help="Open this problem id first."),
    env: str = ENV_OPTION,
    knobs: list[str] = KNOB_OPTION,
) -> None:
    """Browse trees interactively (textual): pick an iteration and problem, expand nodes, see every number,
    the answer path, pairs, and the same problem in another iteration side by side. `q` quits."""
    from selfimprove.tree_browse import TreeBrowser
    from selfimprove.tree_sources import load_sources

    sources = load_sources(paths, pairs, _env(env, knobs, paths[0]))
    TreeBrowser(sources, problem=problem).run()
