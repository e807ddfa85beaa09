"""The trainers' typed configs (in the manner of TRL's `DPOConfig`): every knob of policy and value
training, validated once, with one-sentence errors that name the field.

`PolicyTrainConfig` drives `train_policy` (step-DPO / DPO / cDPO / IPO / RPO / TPO on preference
records, SFT on verified solutions); `ValueTrainConfig` drives `train_value`. The run config's `train`
and `value.training` sections are subclasses of these (with the loop's own defaults), so the loop hands
the section itself to the trainer. What is not a knob stays an argument of the call: the model paths,
the data, the seed (the loop derives one per stage) and the progress reporter.

This module imports no torch: the run config imports it to validate a YAML file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from envs.errors import UserError, pydantic_message

# The one list of losses: the pair losses, the list loss, and SFT (trained on {prompt, completion}).
PAIR_LOSSES = ("dpo", "step-dpo", "cdpo", "ipo", "rpo")
LIST_LOSSES = ("tpo",)
PREFERENCE_LOSSES = (*PAIR_LOSSES, *LIST_LOSSES)
SFT = "sft"
LOSSES = (*PREFERENCE_LOSSES, SFT)
# The losses TRL's DPOTrainer runs, as its (loss_type, the loss_weights entry that carries `alpha`).
TRL_LOSS_TYPES: dict[str, tuple[list[str], bool]] = {
    "dpo": (["sigmoid"], False), "step-dpo": (["sigmoid"], False), "ipo": (["ipo"], False),
    "rpo": (["sigmoid", "sft"], True),
}


class TrainerConfig(BaseModel):
    """A trainer config: unknown keys are errors; `parse` turns a mapping into one or a UserError.

    Every trainer runs through `fit` under an accelerate `Accelerator` (`runtime.Runtime`): these fields
    say how (the number of processes comes from `accelerate launch`, not from here).
    """

    model_config = ConfigDict(extra="forbid")

    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        default="no", description="Autocast forward passes in bf16 or fp16 (weights and optimizer stay fp32); "
        "bf16 works on CPU too.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Cut each step's batch into this many micro-batches (less memory, same step).")
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in backward (non-reentrant): less memory, ~30% slower.")

    @classmethod
    def parse(cls, config: BaseModel | Mapping[str, Any] | None, source: str) -> Self:
        """`config` as this class (a subclass instance passes through); bad fields are one UserError."""
        if isinstance(config, cls):
            return config
        data = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise UserError(pydantic_message(e, source)) from None


class PolicyTrainConfig(TrainerConfig):
    """How `train_policy` trains: the loss and its strength, the optimiser schedule, LoRA, the backend.

    backend "compact" (ours: every loss, per-record weight and eps, prefix sharing) or "trl"
    (`trl.DPOTrainer`: dpo, step-dpo, ipo, rpo). SFT ignores beta, alpha, LoRA and the backend.
    """

    loss: str = Field(default="step-dpo", description=f"One of: {', '.join(LOSSES)}.")
    beta: float = Field(default=0.1, gt=0, description="Strength of the KL anchor to the reference (β).")
    lr: float = Field(default=1e-5, gt=0, description="Peak learning rate (AdamW).")
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=8, ge=1, description="Records per optimizer step, over all processes and "
                            "accumulation micro-batches together.")
    max_length: int = Field(default=1024, ge=1, description="Token limit of prompt + completion.")
    lora: bool = Field(default=False, description="Train a LoRA adapter (merged into the saved model).")
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    qlora: bool = Field(default=False, description="QLoRA: the base in 4-bit NF4 (bitsandbytes, CUDA only) under a "
                        "LoRA adapter; implies lora.")
    alpha: float = Field(default=1.0, description="Weight of rpo's NLL term.")
    backend: Literal["compact", "trl"] = "compact"
    share_prefix: bool = Field(default=True, description="Encode a shared prompt once per batch (off: one row per "
                               "completion; same results, slower).")
    grad_clip: float = Field(default=1.0, ge=0, description="Clip the gradient norm to this (0: no clipping).")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps before the linear decay.")
    tpo_asr: bool = Field(default=True, description="TPO's Adaptive Step Reward (step-similarity weighting).")
    overlong: Literal["truncate", "skip"] = Field(
        default="truncate", description="Records longer than max_length: cut the prompt from the left (the "
        "completion keeps its start), or skip them; either way counted in the metrics.")
    trl: dict[str, Any] = Field(default_factory=dict, description="DPOConfig fields for backend 'trl' (e.g. bf16, "
                                "gradient_checkpointing, gradient_accumulation_steps), passed through as given.")

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        if v not in LOSSES:
            raise ValueError(f"unknown loss '{v}' (choose from: {', '.join(LOSSES)})")
        return v

    @field_validator("backend")
    @classmethod
    def _trl_has_loss(cls, v: str, info) -> str:
        loss = info.data.get("loss")
        if v == "trl" and loss is not None and loss not in TRL_LOSS_TYPES:
            raise ValueError(f"loss '{loss}' is not available through TRL (it has {', '.join(TRL_LOSS_TYPES)}); "
                             "use the compact backend")
        return v


    @field_validator("trl")
    @classmethod
    def _trl_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = unknown_trl_option(v)
        if bad is not None:
            raise ValueError(bad)
        return v


# DPOConfig fields the TRL trainer sets itself (where it writes, what it logs to).
TRL_OWNED = ("output_dir", "report_to", "save_strategy", "disable_tqdm", "logging_steps")


def unknown_trl_option(options: Mapping[str, Any]) -> str | None:
    """Why `options` cannot go to trl's DPOConfig (a field it does not have, or one we own), or None.

    Checked against DPOConfig's dataclass fields when TRL is importable (without it nothing runs them)."""
    for key in options:
        if key in TRL_OWNED:
            return f"'{key}' is set by the trainer itself and cannot be given in train.trl"
    if not options:
        return None
    try:
        import dataclasses

        from trl.trainer.dpo_config import DPOConfig
    except ImportError:
        return None
    known = {f.name for f in dataclasses.fields(DPOConfig)}
    for key in options:
        if key not in known:
            return f"'{key}' is not a field of trl's DPOConfig"
    return None


class ValueTrainConfig(TrainerConfig):
    """How `train_value` trains: regression onto the node targets, SVPO's sibling margin ranking and
    rStar-Math's sibling preference (Bradley–Terry) loss, each with its weight (0 turns a term off).

    A Tree-PLV-style step verifier is `regression_weight: 0, rank_weight: 0, bt_weight: 1`.
    """

    epochs: int = Field(default=3, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    heldout_fraction: float = Field(default=0.2, description="Trees held out for AUROC and MSE, in [0, 1).")
    batch_size: int = Field(default=32, ge=1)
    target: Literal["mc", "q"] = Field(default="mc", description="mc: subtree success rate; q: the MCTS Q.")
    regression: Literal["mse", "bce"] = Field(default="mse", description="mse: (tanh(raw) − target)²; bce: "
                                              "BCE(sigmoid(2·raw), (1 + target)/2), a process reward model.")
    regression_weight: float = Field(default=1.0, ge=0, description="Weight of the regression term.")
    confidence_k: float = Field(default=0.0, ge=0, description="Weigh each example's regression by n/(n + k), n = "
                                "outcomes behind its target (terminals below, or visits); 0 = all equal.")
    bt_weight: float = Field(default=0.0, ge=0, description="Weight of the sibling Bradley–Terry preference term "
                             "(a step reaching a verified answer over a sibling reaching only wrong ones).")
    rank_weight: float = Field(default=1.0, ge=0, description="Weight of the sibling margin-ranking term.")
    rank_margin: float = Field(default=0.1, description="Margin the better sibling's value must clear.")
    rank_gap: float = Field(default=0.1, description="Siblings are ranked when their targets differ by more.")
    max_length: int = Field(default=1024, ge=1, description="Longer prefixes are skipped.")
    lora: bool = Field(default=False, description="Train a LoRA adapter on the trunk (the head in full); merged "
                       "into the saved trunk.")
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _some_loss(self) -> Self:
        if self.regression_weight == 0 and self.rank_weight == 0 and self.bt_weight == 0:
            raise ValueError("regression_weight, rank_weight and bt_weight are all 0: nothing to train")
        return self

    @field_validator("heldout_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {v}")
        return v
