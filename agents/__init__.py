"""Policy and value models behind one batched interface (HF transformers, vLLM), and the embedded tiny policy."""

from agents.base import Policy, Sample, ValueModel

__all__ = ["Policy", "Sample", "ValueModel"]
