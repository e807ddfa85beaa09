"""Training: the trainers' typed configs, preference losses, the one training loop (`fit`), the policy
trainers (ours, TRL's, SFT), value-model training and the tiny-policy builder.

`fit_*` write into the directory they are given; `train_*` write atomically (a temp directory swapped
in whole). The trainers are imported on first use, so `import selfimprove.train.config` (which the run
config and the CLI do) stays light: no torch, no transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from selfimprove.train.config import LOSSES, PolicyTrainConfig, ValueTrainConfig

if TYPE_CHECKING:
    from selfimprove.train.policy import fit_policy, train_policy
    from selfimprove.train.value import fit_value, train_value

_LAZY = {"fit_policy": "selfimprove.train.policy", "train_policy": "selfimprove.train.policy",
         "fit_value": "selfimprove.train.value", "train_value": "selfimprove.train.value"}
__all__ = ["LOSSES", "PolicyTrainConfig", "ValueTrainConfig", "fit_policy", "fit_value", "train_policy",
           "train_value"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'selfimprove.train' has no attribute '{name}'")
