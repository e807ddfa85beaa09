"""Training: preference losses, the policy trainers (ours and TRL's), and value-model training.

`train_policy` and `train_value` are imported lazily so `import selfimprove.train` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train_policy", "train_value"]


def train_policy(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from selfimprove.train.policy import train_policy as _train_policy

    return _train_policy(*args, **kwargs)


def train_value(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from selfimprove.train.value import train_value as _train_value

    return _train_value(*args, **kwargs)


train_policy.__doc__ = "Train a policy on preference records; see selfimprove.train.policy.train_policy."
train_value.__doc__ = "Train a value model on search trees; see selfimprove.train.value.train_value."
