"""`selfimprove train` (policy on preference data or SFT records) and `selfimprove train-value` (value
model on trees). Each option is a field of the trainer's config (defaults from it); `--set` reaches the
rest. The command writes `--out` atomically: the trainer fills a temp directory swapped in whole. An
existing `--out` is replaced only when selfimprove wrote it and `--overwrite` is given (HF's
`overwrite_output_dir`); anything else there is refused before training starts.

Both run the same under `accelerate launch -m selfimprove.cli train ...` (DDP, or FSDP / DeepSpeed from
the accelerate config file): every process trains its share of each step, only the main one writes
`--out` and prints the summary.
"""

from __future__ import annotations

from typing import Any

import typer

from selfimprove.cli.app import (
    ATTN_OPTION,
    DEVICE_OPTION,
    DTYPE_OPTION,
    JSON_OPTION,
    app,
    emit,
    parse_sets,
    placed,
    quiet_transformers,
)
from selfimprove.train.config import LOSSES, PolicyTrainConfig, ValueTrainConfig


def _default(cls: type[PolicyTrainConfig] | type[ValueTrainConfig], field: str) -> Any:
    return cls.model_fields[field].default


def _summary(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "history"}


SET_OPTION = typer.Option([], "--set", help="Any other config field, key=value (repeatable), e.g. warmup_steps=10.")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace --out when it holds a model selfimprove saved "
                                "(never a directory it did not write).")


@app.command("train")
def train(
    policy: str = typer.Option(..., "--policy", help="Policy HF directory or 'smollm2-135m' to start from "
                                                     "(also the reference)."),
    data: str = typer.Option(..., "--data", help="Preference JSONL (from `selfimprove pairs`); SFT records for sft."),
    loss: str = typer.Option(_default(PolicyTrainConfig, "loss"), "--loss", help=" | ".join(LOSSES)),
    out: str = typer.Option(..., "--out", help="Directory for the trained policy (written atomically)."),
    backend: str = typer.Option(_default(PolicyTrainConfig, "backend"), "--backend",
                                help="compact (ours, prefix-shared) | trl (DPOTrainer)."),
    lora: bool | None = typer.Option(None, "--lora/--no-lora",
                                     help="Train a LoRA adapter (merged into the saved model); default: on for "
                                          "an embedded pretrained model (smollm2-135m), off otherwise."),
    beta: float = typer.Option(_default(PolicyTrainConfig, "beta"), "--beta"),
    lr: float = typer.Option(_default(PolicyTrainConfig, "lr"), "--lr"),
    epochs: int = typer.Option(_default(PolicyTrainConfig, "epochs"), "--epochs"),
    batch_size: int = typer.Option(_default(PolicyTrainConfig, "batch_size"), "--batch-size"),
    alpha: float = typer.Option(_default(PolicyTrainConfig, "alpha"), "--alpha", help="NLL weight of rpo."),
    max_length: int = typer.Option(_default(PolicyTrainConfig, "max_length"), "--max-length",
                                   help="Token limit of prompt + completion."),
    ref: str = typer.Option(None, "--ref", help="Reference model directory (default: --policy)."),
    seed: int = typer.Option(0, "--seed"),
    sets: list[str] = SET_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    attn: str = ATTN_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train the policy on preference pairs or lists (or SFT records); print loss, margins and throughput."""
    from agents.embedded import PRETRAINED_TRAIN_DEFAULTS, is_embedded
    from envs.errors import UserError
    from selfimprove.cli.bars import Bars
    from selfimprove.train.policy import fit_policy
    from selfimprove.train.runtime import is_main_process, output_dir

    if lora is None:
        lora = bool(PRETRAINED_TRAIN_DEFAULTS["lora"]) if is_embedded(policy) else _default(PolicyTrainConfig, "lora")
    cfg = PolicyTrainConfig.parse({"loss": loss, "backend": backend, "lora": lora, "beta": beta, "lr": lr,
                                   "epochs": epochs, "batch_size": batch_size, "alpha": alpha,
                                   "max_length": max_length, **parse_sets(sets)}, "train")
    where = placed(device, dtype, "sdpa" if attn == "flash_attention_2" and dtype == "auto" else attn, training=True)
    if cfg.qlora and not where["device"].startswith("cuda"):
        raise UserError(f"--set qlora=true: QLoRA (bitsandbytes 4-bit) runs on CUDA only, not on '{where['device']}'")
    quiet_transformers()
    with Bars("training", quiet=not is_main_process()) as bars, \
            output_dir(out, kind="policy", replace="ours" if overwrite else "never") as tmp:
        metrics = fit_policy(policy, data, tmp, cfg, ref_dir=ref, seed=seed, progress=bars, **where)
    if is_main_process():
        emit({**_summary(metrics), "out": out}, as_json, title=f"train ({cfg.loss}, {cfg.backend})")


@app.command("train-value")
def train_value(
    trees: str = typer.Option(..., "--trees", help="trees.jsonl written by search."),
    out: str = typer.Option(..., "--out", help="Directory for the value model (written atomically)."),
    init: str = typer.Option(None, "--init", help="Policy directory (fresh head) or value directory to start from."),
    policy: str = typer.Option(None, "--policy", help="Alias of --init."),
    epochs: int = typer.Option(_default(ValueTrainConfig, "epochs"), "--epochs"),
    lr: float = typer.Option(_default(ValueTrainConfig, "lr"), "--lr"),
    target: str = typer.Option(_default(ValueTrainConfig, "target"), "--target",
                               help="mc (subtree success rate) | q (MCTS Q)."),
    heldout: float = typer.Option(_default(ValueTrainConfig, "heldout_fraction"), "--heldout",
                                  help="Fraction of trees held out for AUROC."),
    seed: int = typer.Option(0, "--seed"),
    sets: list[str] = SET_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train the value model on tree nodes; print held-out AUROC before and after."""
    from envs.errors import UserError
    from selfimprove.cli.bars import Bars
    from selfimprove.train import fit_value
    from selfimprove.train.runtime import is_main_process, output_dir

    init_from = init or policy
    if not init_from:
        raise UserError("train-value needs --init POLICY_OR_VALUE_DIR")
    cfg = ValueTrainConfig.parse({"epochs": epochs, "lr": lr, "target": target, "heldout_fraction": heldout,
                                  **parse_sets(sets)}, "train-value")
    where = placed(device, dtype, "sdpa", training=True)
    quiet_transformers()
    with Bars("training", quiet=not is_main_process()) as bars, \
            output_dir(out, kind="value model", replace="ours" if overwrite else "never") as tmp:
        metrics = fit_value(trees, tmp, cfg, init_from=init_from, seed=seed, progress=bars, **where)
    if is_main_process():
        emit({**_summary(metrics), "out": out}, as_json, title="train-value")
