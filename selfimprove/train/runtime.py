"""Where a trainer runs: one process, or one of many under `accelerate launch` (DDP; FSDP and DeepSpeed
through the accelerate config file the user names), with mixed precision and gradient checkpointing —
accelerate's `Accelerator`, and nothing home-made beside it.

An optimiser step is the same whatever the layout: the step's records (`batch_size` of them) are cut into
processes × accumulation micro-batches (`micro_batches`), each process backpropagates its own, and `fit`
normalises every loss term by its count over the *whole* step (all micro-batches, all processes), so 2
processes, or accumulation 2, take the same step as 1 process on the whole batch (within float error).
Only the main process writes artifacts (`output_dir`, `save_model`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import torch

from envs.io import atomic_dir

T = TypeVar("T")
MIXED_PRECISION = ("no", "bf16", "fp16")


RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")  # torchrun / deepspeed, then MPI
SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _env_int(names: Sequence[str], default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def process_index() -> int:
    """This process's rank as the launcher set it (`accelerate launch`, torchrun, deepspeed, mpirun): 0 alone."""
    return _env_int(RANK_VARS, 0)


def is_main_process() -> bool:
    return process_index() == 0


def process_device(device: str) -> str:
    """Where this process trains, given the resolved `policy.device`: a bare "cuda" is this process's own
    GPU under a launcher (LOCAL_RANK; cuda:0 alone); any other device is taken as given."""
    if device != "cuda":
        return device
    return f"cuda:{_env_int(('LOCAL_RANK', 'MPI_LOCALRANKID', 'OMPI_COMM_WORLD_LOCAL_RANK'), 0)}"


@contextmanager
def output_dir(out: str | os.PathLike, **atomic: Any) -> Iterator[Path]:
    """The directory a trainer fills: on the main process an `atomic_dir(out, **atomic)` swapped in for
    `out` whole (`atomic`: its ownership rules, kind / replace); on the others a scratch directory that is
    thrown away (they write nothing)."""
    if is_main_process():
        with atomic_dir(out, **atomic) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory(prefix=".selfimprove-rank-") as tmp:
            yield Path(tmp)


class Runtime:
    """One trainer's `Accelerator` (built lazily: a plain single-process fp32 run never needs one), and
    how a step's records are split across processes and accumulation micro-batches."""

    def __init__(self, mixed_precision: str = "no", gradient_accumulation_steps: int = 1,
                 gradient_checkpointing: bool = False):
        if mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
        self.mixed_precision = mixed_precision
        self.accumulation = max(1, int(gradient_accumulation_steps))
        self.checkpointing = gradient_checkpointing
        self._acc: Any = None
        self.world = _env_int(SIZE_VARS, 1)
        self.rank = process_index()

    @classmethod
    def of(cls, cfg: Any) -> Runtime:
        """The runtime a trainer config asks for (its mixed_precision, accumulation and checkpointing)."""
        return cls(getattr(cfg, "mixed_precision", "no"), getattr(cfg, "gradient_accumulation_steps", 1),
                   getattr(cfg, "gradient_checkpointing", False))

    @property
    def accelerator(self):
        if self._acc is None:
            from accelerate import Accelerator
            from accelerate.state import AcceleratorState

            # The state is a process-wide singleton that refuses a second mixed_precision: trainers in one
            # process (the loop, tests) each bring their own, so start from a clean state.
            AcceleratorState._reset_state(reset_partial_state=False)
            # cpu=True without a GPU: launched processes (accelerate launch, torchrun) then join over gloo;
            # otherwise accelerate treats a CPU-only process as alone whatever WORLD_SIZE says.
            self._acc = Accelerator(mixed_precision=self.mixed_precision, cpu=not torch.cuda.is_available())
            self.world, self.rank = self._acc.num_processes, self._acc.process_index
        return self._acc

    @property
    def plain(self) -> bool:
        """One process, no accumulation, fp32: the step is the classic one, bit for bit."""
        return self.world == 1 and self.accumulation == 1 and self.mixed_precision == "no"

    @property
    def splits(self) -> int:
        return self.world * self.accumulation

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def prepare(self, model, optimizer):
        """Model and optimiser ready for this layout (DDP/FSDP/DeepSpeed wrapper, autocast); gradient
        checkpointing (non-reentrant) switched on first when asked. A plain run changes nothing."""
        if self.checkpointing:
            enable_checkpointing(model)
        if self.plain:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def unwrap(self, model):
        return model if self._acc is None else self._acc.unwrap_model(model)

    def backward(self, loss: torch.Tensor) -> None:
        if self._acc is None:
            loss.backward()
        else:
            self._acc.backward(loss)

    def clip(self, model_or_params, max_norm: float) -> None:
        if self._acc is None:
            params = model_or_params.parameters() if isinstance(model_or_params, torch.nn.Module) else model_or_params
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            self._acc.clip_grad_norm_(model_or_params.parameters() if isinstance(model_or_params, torch.nn.Module)
                                      else model_or_params, max_norm)

    def no_sync(self, model, skip: bool):
        """No gradient all-reduce for this micro-batch (all but a step's last): DDP's no_sync."""
        if not skip or self._acc is None or self.world == 1 or model is None:
            return nullcontext()
        return self._acc.no_sync(model)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over processes (a tensor on this process's device)."""
        if self.world == 1:
            return values
        return self.accelerator.reduce(values.to(self.accelerator.device), reduction="sum")

    def micro_batches(self, batch: Sequence[T]) -> list[list[T]]:
        """This process's `accumulation` micro-batches of one step's records: the step cut into
        processes × accumulation contiguous parts (contiguous keeps shared prompts together), process r
        taking parts r·A … r·A + A − 1. A part may be empty when the step has fewer records than parts."""
        n, k = len(batch), self.splits
        cuts = [i * n // k for i in range(k + 1)]
        mine = range(self.rank * self.accumulation, (self.rank + 1) * self.accumulation)
        return [list(batch[cuts[i]:cuts[i + 1]]) for i in mine]

    def wait(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    def state_dict(self, model) -> dict[str, torch.Tensor] | None:
        """The full state dict when the weights are sharded (FSDP, DeepSpeed: every process must call
        this, it gathers); None when the unwrapped model holds them (one process, DDP)."""
        if self._acc is None or self._acc.distributed_type.value not in ("FSDP", "DEEPSPEED"):
            return None
        return self._acc.get_state_dict(model)


def enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing on a transformers model, or on a module holding one
    (`model` of a scorer, `trunk` of a value head)."""
    for m in (model, getattr(model, "model", None), getattr(model, "trunk", None)):
        if m is None:
            continue
        if hasattr(m, "activation_checkpointing_enable"):  # transformers ≥ 5.x's name
            m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            return
        if hasattr(m, "gradient_checkpointing_enable"):
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return
    raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
