"""`selfimprove train` (policy on preference data) and `selfimprove train-value` (value model on trees)."""

from __future__ import annotations

from collections.abc import Callable

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from selfimprove.cli.app import JSON_OPTION, app, emit, err_console, quiet_transformers


class _Bar:
    """A rich progress bar on stderr fed by the trainers' progress(step, total, row) callback."""

    def __enter__(self) -> Callable:
        self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeElapsedColumn(), console=err_console, transient=True)
        self.bar.__enter__()
        self.task = None

        def update(step: int, total: int, row: dict) -> None:
            if self.task is None:
                self.task = self.bar.add_task("train", total=total, info="")
            self.bar.update(self.task, completed=step, info=f"loss {row.get('loss', float('nan')):.4f}")

        return update

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)


def _summary(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "history"}


@app.command("train")
def train(
    policy: str = typer.Option(..., "--policy", help="Policy HF directory to start from (also the reference)."),
    data: str = typer.Option(..., "--data", help="Preference JSONL (from `selfimprove pairs`)."),
    loss: str = typer.Option("step-dpo", "--loss", help="step-dpo | dpo | ipo | cdpo | rpo | tpo"),
    out: str = typer.Option(..., "--out", help="Directory for the trained policy (written atomically)."),
    backend: str = typer.Option("compact", "--backend", help="compact (ours, prefix-shared) | trl (DPOTrainer)."),
    lora: bool = typer.Option(False, "--lora", help="Train a LoRA adapter (merged into the saved model)."),
    beta: float = typer.Option(0.1, "--beta"),
    lr: float = typer.Option(1e-5, "--lr"),
    epochs: int = typer.Option(1, "--epochs"),
    batch_size: int = typer.Option(8, "--batch-size"),
    alpha: float = typer.Option(1.0, "--alpha", help="NLL weight of rpo."),
    max_length: int = typer.Option(1024, "--max-length", help="Token limit of prompt + completion."),
    ref: str = typer.Option(None, "--ref", help="Reference model directory (default: --policy)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train the policy on preference pairs or lists; print loss, margins and throughput."""
    quiet_transformers()
    from selfimprove.train import train_policy

    with _Bar() as progress:
        metrics = train_policy(policy, data, out, loss=loss, beta=beta, lr=lr, epochs=epochs, batch_size=batch_size,
                               lora=lora, ref_dir=ref, seed=seed, max_length=max_length, alpha=alpha,
                               backend=backend, progress=progress)
    emit({**_summary(metrics), "out": out}, as_json, title=f"train ({loss}, {backend})")


@app.command("train-value")
def train_value(
    trees: str = typer.Option(..., "--trees", help="trees.jsonl written by search."),
    out: str = typer.Option(..., "--out", help="Directory for the value model (written atomically)."),
    init: str = typer.Option(None, "--init", help="Policy directory (fresh head) or value directory to start from."),
    policy: str = typer.Option(None, "--policy", help="Alias of --init."),
    epochs: int = typer.Option(3, "--epochs"),
    lr: float = typer.Option(1e-4, "--lr"),
    target: str = typer.Option("mc", "--target", help="mc (subtree success rate) | q (MCTS Q)."),
    heldout: float = typer.Option(0.2, "--heldout", help="Fraction of trees held out for AUROC."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train the value model on tree nodes; print held-out AUROC before and after."""
    from envs.errors import UserError

    init_from = init or policy
    if not init_from:
        raise UserError("train-value needs --init POLICY_OR_VALUE_DIR")
    quiet_transformers()
    from selfimprove.train import train_value as _train_value

    with _Bar() as progress:
        metrics = _train_value(trees, out, init_from=init_from, epochs=epochs, lr=lr, seed=seed,
                               heldout_fraction=heldout, target=target, progress=progress)
    emit({**_summary(metrics), "out": out}, as_json, title="train-value")
