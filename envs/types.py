"""Core types shared by every package: a task problem and the schema version of what is written.

They live in `envs`, the bottom of the dependency chain (selfimprove → search → agents → envs), so that
every package can import them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Version tag written into every tree and preference record; bump when their JSON layout changes.
SCHEMA_VERSION = "selfimprove/1"


class Problem(BaseModel):
    """One task instance: what the policy is asked, and what the verifier checks against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    prompt: str = Field(description="The question as the user would read it (the env's template wraps it).")
    answer: str | None = Field(default=None, description="Reference answer, as text; None when only tests verify.")
    metadata: dict[str, Any] = Field(default_factory=dict)
