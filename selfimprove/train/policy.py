"""Train the next policy: `fit_policy` picks the trainer for the config's loss and backend and writes
into the directory it is given; `train_policy` does the same into a temp directory swapped in whole.

Trainers: our compact trainer (`compact`: every preference loss, per-record weight and eps, prefix
sharing), TRL's DPOTrainer (`dpo_trl`, backend "trl": dpo, step-dpo, ipo, rpo) and SFT on verified
solutions (`sft`, loss "sft"). Each writes a standard HF directory with `training_metrics.json` inside.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from envs.errors import UserError
from envs.io import atomic_dir, iter_jsonl
from envs.progress import SILENT, Progress
from selfimprove.pairs.records import Record, read_records
from selfimprove.train.config import SFT, PolicyTrainConfig

Records = Sequence[Any] | str | os.PathLike  # preference records, or {prompt, completion} dicts for SFT
SOURCE = "train config"


def load_records(records_or_path: Records) -> list[Record]:
    """Preference records from a JSONL path, or the given records as a list."""
    if isinstance(records_or_path, (str, os.PathLike)):
        return read_records(records_or_path)
    return list(records_or_path)


def read_sft(path: str | os.PathLike) -> list[dict[str, Any]]:
    """SFT records {prompt, completion} from JSONL; a field that is not a non-empty string is a UserError."""
    out = []
    for lineno, obj in iter_jsonl(path, required=("prompt", "completion")):
        for key in ("prompt", "completion"):
            if not isinstance(obj[key], str) or not obj[key]:
                raise UserError(f"{path}:{lineno}: field '{key}': expected a non-empty string")
        out.append(obj)
    return out


def fit_policy(policy_dir: str | os.PathLike, records_or_path: Records, out_dir: str | os.PathLike,
               config: PolicyTrainConfig | Mapping[str, Any] | None = None, *,
               ref_dir: str | os.PathLike | None = None, eval_records: Sequence[Record] | str | None = None,
               seed: int = 0, progress: Progress = SILENT, device: str = "auto", dtype: str = "auto",
               attn_implementation: str = "sdpa") -> dict[str, Any]:
    """Train `policy_dir` on records (preference records; {prompt, completion} for loss "sft") and write
    the new policy into `out_dir`; return the metrics.

    config: a PolicyTrainConfig or its fields as a mapping (bad fields are UserErrors). ref_dir: the
    DPO reference (default: the policy itself). eval_records: pairs whose margin β·h is measured before
    and after (metrics eval_margin_*). device / dtype / attn_implementation: where and in what the
    weights load (agents.devices; dtype "auto" = float32 master weights), checked before anything loads.
    """
    from agents.devices import placement

    cfg = PolicyTrainConfig.parse(config, SOURCE)
    where = placement(device, dtype, attn_implementation, training=True)
    place = {"device": where.device, "dtype": where.dtype, "attn_implementation": where.attn_implementation}
    if cfg.loss == SFT:
        from selfimprove.train.sft import train_sft

        sft = read_sft(records_or_path) if isinstance(records_or_path, (str, os.PathLike)) \
            else [dict(r) for r in records_or_path]
        return train_sft(policy_dir, sft, out_dir, cfg, seed=seed, progress=progress, **place)
    records = load_records(records_or_path)
    if not records:
        raise UserError(f"{records_or_path if isinstance(records_or_path, (str, os.PathLike)) else 'records'}: "
                        "no preference records to train on")
    evals = load_records(eval_records) if eval_records is not None else None
    if cfg.backend == "trl":
        from selfimprove.train.dpo_trl import train_trl

        return train_trl(policy_dir, records, out_dir, cfg, ref_dir=ref_dir, seed=seed, eval_records=evals,
                         progress=progress, **place)
    from selfimprove.train.compact import train_compact

    return train_compact(policy_dir, records, out_dir, cfg, ref_dir=ref_dir, seed=seed, eval_records=evals,
                         progress=progress, **place)


def train_policy(policy_dir: str | os.PathLike, records_or_path: Records, out_dir: str | os.PathLike,
                 config: PolicyTrainConfig | Mapping[str, Any] | None = None, *,
                 ref_dir: str | os.PathLike | None = None, eval_records: Sequence[Record] | str | None = None,
                 seed: int = 0, progress: Progress = SILENT, overwrite: bool = False, device: str = "auto",
                 dtype: str = "auto", attn_implementation: str = "sdpa") -> dict[str, Any]:
    """`fit_policy` into a temp directory beside `out_dir`, swapped in whole when training succeeds.

    An existing `out_dir` is replaced only when selfimprove saved it and `overwrite` is set."""
    cfg = PolicyTrainConfig.parse(config, SOURCE)  # a bad config fails before anything is written
    with atomic_dir(out_dir, kind="policy", replace="ours" if overwrite else "never") as tmp:
        return fit_policy(policy_dir, records_or_path, tmp, cfg, ref_dir=ref_dir, eval_records=eval_records,
                          seed=seed, progress=progress, device=device, dtype=dtype,
                          attn_implementation=attn_implementation)
