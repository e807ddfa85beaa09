"""The run config's `policy.vllm` section: the vLLM engine's arguments, passed through to `vllm.LLM`.

Named fields for what vLLM users set most; `extra` for any other EngineArgs field, checked against vLLM's
own EngineArgs when vLLM is importable here (the main venv has no vLLM; `.venv-vllm` does).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# vLLM engine options this section names; anything else EngineArgs has goes under `extra`.
VLLM_NAMED = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype", "enable_prefix_caching",
              "enforce_eager", "seed", "enable_sleep_mode")


class VLLMSection(BaseModel):
    """The vLLM engine's arguments (`vllm.LLM(**...)`), for `policy.backend: vllm`. One engine serves the
    whole run: kept across baseline, search and eval, slept (CUDA) or shut down (elsewhere) while training
    runs, given the new weights in place where that works (CUDA) and restarted otherwise."""

    model_config = ConfigDict(extra="forbid")

    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1, description="Fraction of GPU memory vLLM "
                                          "takes for weights + KV cache (preallocated).")
    max_model_len: int | None = Field(default=None, ge=1, description="Context length (default: the model's).")
    dtype: str = Field(default="auto", description="vLLM's dtype: auto, bfloat16, float16, float32.")
    enable_prefix_caching: bool = True
    enforce_eager: bool = Field(default=False, description="No CUDA graphs (faster start, slower decode).")
    seed: int | None = Field(default=None, description="Engine seed (default: the run's seed).")
    enable_sleep_mode: bool | None = Field(default=None, description="Sleep the engine while training (default: "
                                           "where the platform supports it, i.e. CUDA).")
    sleep_level: Literal[1, 2] = Field(default=1, description="1: offload weights to CPU, drop the KV cache; "
                                       "2: drop both (new weights are loaded after waking anyway).")
    reload: Literal["auto", "in_place", "restart"] = Field(
        default="auto", description="New weights: in place on CUDA (auto), always in place, or restart the engine.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Any other vllm EngineArgs field, as given.")

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in ("auto", "bfloat16", "float16", "float32", "half", "float", "bf16"):
            raise ValueError(f"unknown vLLM dtype '{v}' (use auto, bfloat16, float16 or float32)")
        return v

    @field_validator("extra")
    @classmethod
    def _known_engine_args(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key in VLLM_NAMED:
                raise ValueError(f"'{key}' has its own field: set policy.vllm.{key}")
            if key in ("model", "tokenizer"):
                raise ValueError(f"'{key}' comes from policy.path")
        bad = unknown_engine_args(v)
        if bad:
            raise ValueError(f"'{bad}' is not a vLLM engine argument (EngineArgs has no such field)")
        return v

    def engine_kwargs(self, run_seed: int) -> dict[str, Any]:
        """Keyword arguments for agents.vllm_backend.VLLMPolicy (and through it vllm.LLM)."""
        kw = self.model_dump(exclude={"extra", "seed", "enable_sleep_mode", "sleep_level", "reload",
                                      "max_model_len"})
        if self.max_model_len is not None:
            kw["max_model_len"] = self.max_model_len
        kw.update(self.extra)
        kw["sleep_mode"], kw["sleep_level"] = self.enable_sleep_mode, self.sleep_level
        kw["in_place_reload"] = None if self.reload == "auto" else self.reload == "in_place"
        kw["seed"] = run_seed if self.seed is None else self.seed
        return kw


def unknown_engine_args(options: dict[str, Any]) -> str | None:
    """The first key of `options` that vLLM's EngineArgs lacks, when vLLM is importable here (else None)."""
    if not options:
        return None
    try:
        import dataclasses

        from vllm.engine.arg_utils import EngineArgs  # pyright: ignore[reportMissingImports]
    except ImportError:
        return None
    known = {f.name for f in dataclasses.fields(EngineArgs)}
    return next((k for k in options if k not in known), None)
