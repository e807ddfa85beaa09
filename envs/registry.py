"""Find environments by name: built-ins, `gym:<task>` for any reasoning-gym task, and third-party
classes declared under the entry-point group ``selfimprove.envs``."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from envs.base import Environment
from envs.errors import UserError

ENTRY_POINT_GROUP = "selfimprove.envs"

# name -> "module:Class"; imported lazily so `envs list` stays fast.
BUILTINS: dict[str, str] = {
    "arithmetic": "envs.arithmetic:ArithmeticEnv",
    "countdown": "envs.countdown:CountdownEnv",
    "jsonl-math": "envs.jsonl_math:JsonlMathEnv",
    "code-humaneval": "envs.code:HumanEvalEnv",
    "code-jsonl": "envs.code:CodeJsonlEnv",
    "code-tiny": "envs.code:CodeTinyEnv",
}
GYM_PREFIX = "gym:"


@dataclass(frozen=True)
class EnvInfo:
    name: str
    kind: str
    source: str
    description: str


def _load_class(target: str) -> type[Environment]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _third_party() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(name: str, ep: Any) -> type[Environment]:
    try:
        cls = ep.load()
    except Exception as e:  # a broken plug-in is the user's error, named
        raise UserError(f"environment '{name}' (entry point {ep.value}) failed to load: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise UserError(f"environment '{name}' (entry point {ep.value}) is not an Environment subclass")
    return cls


def get_env_class(name: str) -> type[Environment]:
    if name in BUILTINS:
        try:
            return _load_class(BUILTINS[name])
        except ImportError as e:  # an optional dependency is missing
            raise UserError(f"environment '{name}' is not available here: {e}") from None
    if name.startswith(GYM_PREFIX):
        from envs.gym import gym_env_class

        return gym_env_class(name[len(GYM_PREFIX):])
    eps = _third_party()
    if name in eps:
        return _load_entry_point(name, eps[name])
    known = sorted([*BUILTINS, *eps, "gym:<task>"])
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UserError(f"unknown environment '{name}'{hint}; known: {', '.join(known)}")


def env_source(name: str) -> str:
    """Where environment `name` comes from: 'builtin', 'reasoning-gym' or 'entry point module:Class'."""
    if name in BUILTINS:
        return "builtin"
    if name.startswith(GYM_PREFIX):
        return "reasoning-gym"
    ep = _third_party().get(name)
    return f"entry point {ep.value}" if ep is not None else "unknown"


def make_env(name: str, config: dict[str, Any] | None = None, **knobs: Any) -> Environment:
    """Build the environment `name` with its knobs validated (unknown or bad knobs are UserErrors)."""
    return get_env_class(name)(config, **knobs)


def list_envs(include_gym: bool = True) -> list[EnvInfo]:
    """Every environment `make_env` can build: built-ins, reasoning-gym tasks, entry points."""
    out = []
    for name, target in BUILTINS.items():
        try:
            cls = _load_class(target)
        except ImportError:
            continue
        out.append(EnvInfo(name, cls.kind, "builtin", cls.description))
    if include_gym:
        from envs.gym import gym_task_names

        out += [EnvInfo(GYM_PREFIX + t, "math", "reasoning-gym", f"reasoning-gym task '{t}', whole-answer scoring")
                for t in gym_task_names()]
    for name, ep in _third_party().items():
        if name in BUILTINS or name.startswith(GYM_PREFIX):
            continue  # a built-in name always means the built-in
        try:
            cls = _load_entry_point(name, ep)
            out.append(EnvInfo(name, cls.kind, f"entry point {ep.value}", cls.description))
        except UserError as e:
            out.append(EnvInfo(name, "?", f"entry point {ep.value}", f"unusable: {e}"))
    return out
