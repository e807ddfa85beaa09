"""The code sandbox: run untrusted Python with tests under bubblewrap (or a documented fallback)."""

from envs.sandbox.core import UNSAFE_ENV, Check, Limits, Result, Sandbox, available, missing_prerequisite

__all__ = ["UNSAFE_ENV", "Check", "Limits", "Result", "Sandbox", "available", "missing_prerequisite"]
