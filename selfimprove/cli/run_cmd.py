"""`selfimprove run CONFIG.yaml` (the loop) and `selfimprove demo` (the embedded default, end to end)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import typer

from selfimprove.cli.app import JSON_OPTION, app, console, err_console, quiet_transformers


def run_and_report(cfg, run_dir: Path, *, resume: bool, as_json: bool, show_tree: bool = False,
                   overwrite: bool = False) -> dict:
    from selfimprove.cli.bars import Bars
    from selfimprove.loop import run_loop
    from selfimprove.report import summary_table

    quiet_transformers()
    with Bars(transient=False) as bars:
        summary = run_loop(cfg, run_dir, resume=resume, overwrite=overwrite, progress=bars)
    out = console if not as_json else err_console
    if show_tree:
        _show_one_tree(run_dir, cfg.iterations - 1, out)
    out.print(summary_table(summary))
    out.print(f"run directory: {run_dir}  (summary.json, summary.png)")
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), **summary}, default=str))
    return summary


def _show_one_tree(run_dir: Path, iteration: int, out) -> None:
    """Render the first solved tree of an iteration with its extracted pairs marked."""
    from envs.io import read_jsonl
    from search.tree import read_trees
    from selfimprove.rundir import RunDir
    from selfimprove.tree_view import pair_marks, render_tree

    run = RunDir(run_dir)
    trees = read_trees(run.trees(iteration))
    pairs = read_jsonl(run.pairs(iteration)) if run.pairs(iteration).is_file() else []
    if not trees:
        return
    per_tree: dict[str, int] = {}
    for p in pairs:
        if (tid := p.get("tree_id")) is not None:
            per_tree[tid] = per_tree.get(tid, 0) + 1
    # the tree with the most extracted pairs that still reads on one screen
    tree = max(trees, key=lambda t: (len(t) <= 40, per_tree.get(t.id, 0), -len(t)))
    out.print(f"one tree from iteration {iteration} (selfimprove tree show {run.trees(iteration)} "
              f"--problem {tree.problem.id} --pairs {run.pairs(iteration)}):")
    out.print(render_tree(tree, depth=6, marks=pair_marks(pairs, tree.id)))


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="The run's YAML config."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in its directory (skip finished stages)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the run in its directory over (only a "
                                   "directory selfimprove wrote; everything in it is removed)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config field: key.sub=value (repeatable)."),
    out: Path = typer.Option(None, "--out", help="Run directory (default runs/<name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, print the plan and per-stage memory "
                                 "estimates, exit without loading a model."),
    gpu: float = typer.Option(None, "--gpu", help="With --dry-run: plan for one CUDA GPU of this many GiB "
                              "(bf16) instead of this machine's devices."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The self-improvement loop: search → pairs → value model → policy → evaluation, per iteration."""
    from selfimprove.config import load_config

    cfg = load_config(config, overrides)
    if dry_run:
        from selfimprove.plan import build_plan, plan_tables

        plan = build_plan(cfg, gpu_gib=gpu, source=config.name)
        if as_json:
            print(json.dumps(plan, default=str))
        else:
            for table in plan_tables(plan):
                console.print(table)
        return
    run_and_report(cfg, out or Path("runs") / (cfg.name or config.stem), resume=resume, overwrite=overwrite,
                   as_json=as_json)


DEMO_CONFIG = "demo.yaml"


def demo_config_text() -> str:
    """examples/demo.yaml from the source tree, or the copy shipped inside the package."""
    src = Path(__file__).resolve().parents[2] / "examples" / DEMO_CONFIG
    if src.is_file():
        return src.read_text(encoding="utf-8")
    shipped = resources.files("selfimprove").joinpath(DEMO_CONFIG)
    if shipped.is_file():
        return shipped.read_text(encoding="utf-8")
    from envs.errors import UserError

    raise UserError(f"{src}: the demo config is missing (run from a source checkout)")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory."),
    overwrite: bool = typer.Option(False, "--overwrite", "--fresh",
                                   help="Start the demo run in --out over (only a run directory selfimprove wrote)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The embedded default: tiny arithmetic policy, 3 iterations of MCTS → q-gap pairs → step-DPO.

    A demo run already in --out with the same config is resumed (a finished one just reports); one
    with another config is started over only with --overwrite; a directory selfimprove did not write
    is never touched."""
    import yaml

    from envs.errors import UserError
    from selfimprove.config import config_diff, parse_config
    from selfimprove.rundir import RunDir

    cfg = parse_config(yaml.safe_load(demo_config_text()), DEMO_CONFIG)
    cfg.name = cfg.name or "demo"
    run = RunDir(out)
    run.check_ours()  # a folder that is not a run of ours: refused before anything else
    resume = False
    if run.is_started() and not overwrite:
        diff = None  # a run killed before it wrote its config resumes as the demo
        if run.config.is_file():
            try:
                stored = parse_config(yaml.safe_load(run.config.read_text(encoding="utf-8")), str(run.config))
                diff = config_diff(stored, cfg)
            except (UserError, yaml.YAMLError):
                diff = "(config.yaml unreadable)"
        if diff is not None:
            raise UserError(f"{out}: holds a run with another config (field '{diff}'); pass --overwrite to "
                            f"start the demo over there, or choose another --out")
        resume = True
    elif overwrite and run.is_started():
        err_console.print(f"{out}: starting the demo over (--overwrite)")
    run_and_report(cfg, out, resume=resume, overwrite=overwrite and run.is_started(), as_json=as_json,
                   show_tree=True)
