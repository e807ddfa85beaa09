"""Policy and value models behind one batched interface (HF transformers, vLLM), and the embedded tiny policy."""

from agents.base import Policy, Sample, ValueModel
from envs.errors import UserError

BACKENDS = ("hf", "vllm")


def load_policy(path: str, backend: str = "hf", *, device: str = "cpu", seed: int = 0, **kw) -> Policy:
    """A Policy on the checkpoint at `path` (HF directory, or GGUF file for "hf"): the one way to build a
    backend for search and evaluation (training loads raw models: selfimprove.train.checkpoint).

    backend "hf": agents.hf.HFPolicy(path, device=, seed=, dtype=, max_batch=, attn_implementation=);
    backend "vllm": agents.vllm_backend.VLLMPolicy(path, seed=, gpu_memory_utilization=, ...), on the
    device its build runs on (`device` and `attn_implementation` are the HF backend's; the run config's
    policy.vllm section holds the engine's).
    """
    if backend == "hf":
        from agents.hf import HFPolicy

        return HFPolicy(path, device=device, seed=seed, **kw)
    if backend == "vllm":
        from agents.vllm_backend import VLLMPolicy

        kw.pop("attn_implementation", None)
        return VLLMPolicy(path, seed=seed, **kw)
    raise UserError(f"unknown policy backend '{backend}'; use one of: {', '.join(BACKENDS)}")


def load_value_model(path: str, **kw) -> ValueModel:
    """A ValueModel from a directory written by ValueHeadModel.save_pretrained (values in [-1, 1])."""
    from agents.value import HFValueModel

    return HFValueModel(path, **kw)


__all__ = ["BACKENDS", "Policy", "Sample", "ValueModel", "load_policy", "load_value_model"]
