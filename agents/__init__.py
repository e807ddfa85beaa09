"""Policy and value models behind one batched interface (HF transformers, vLLM), and the embedded tiny policy."""

from agents.base import Policy, Sample, ValueModel
from envs.errors import UserError

BACKENDS = ("hf", "vllm")


def load_policy(path: str, backend: str = "hf", **kw) -> Policy:
    """A Policy on the checkpoint at `path` (HF directory, or GGUF file for "hf").

    backend "hf": agents.hf.HFPolicy(path, device=, dtype=, max_batch=, seed=);
    backend "vllm": agents.vllm_backend.VLLMPolicy(path, seed=, gpu_memory_utilization=, ...).
    """
    if backend == "hf":
        from agents.hf import HFPolicy

        return HFPolicy(path, **kw)
    if backend == "vllm":
        from agents.vllm_backend import VLLMPolicy

        return VLLMPolicy(path, **kw)
    raise UserError(f"unknown policy backend '{backend}'; use one of: {', '.join(BACKENDS)}")


def load_value_model(path: str, **kw) -> ValueModel:
    """A ValueModel from a directory written by ValueHeadModel.save_pretrained (values in [-1, 1])."""
    from agents.value import HFValueModel

    return HFValueModel(path, **kw)


__all__ = ["BACKENDS", "Policy", "Sample", "ValueModel", "load_policy", "load_value_model"]
