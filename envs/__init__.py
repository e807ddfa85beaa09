"""Environments: the task contract, the registry, built-in math and code tasks, the code sandbox."""

from envs.base import EnvConfig, Environment
from envs.errors import UserError
from envs.registry import list_envs, make_env
from envs.types import SCHEMA_VERSION, Problem

__all__ = ["SCHEMA_VERSION", "EnvConfig", "Environment", "Problem", "UserError", "list_envs", "make_env"]
