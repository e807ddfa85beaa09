"""The run configuration: one YAML file, validated by pydantic, with `--set key.sub=value` overrides.

Every section forbids unknown keys. The search algorithm's config is parsed into that algorithm's own
config class while the schema validates. Cross-checks the schema cannot express (the environment's
knobs, the pair strategy and its knobs, the loss name, model paths that must exist) run in `check`
after parsing; every failure is one sentence naming the file and the field,
e.g. ``config.yaml: field 'search.algo': unknown algorithm 'mctz'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from envs.errors import UserError, pydantic_message
from search.types import SearchConfig

LOSSES = ("step-dpo", "dpo", "ipo", "cdpo", "rpo", "tpo", "sft")
TINY = "tiny"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvSection(Section):
    name: str = "arithmetic"
    knobs: dict[str, Any] = Field(default_factory=dict, description="The environment's config (its knobs).")


class TinyBuild(Section):
    """How `policy.path: tiny` builds the embedded policy (cached by these settings)."""

    steps: int | None = Field(None, ge=1, description="SFT steps; None = the builder's default.")
    seed: int = 0
    cache_dir: str = Field(".cache/tiny-policy", description="Built policies live here, one per setting.")


class PolicySection(Section):
    path: str = Field(TINY, description="An HF model directory or GGUF file, or 'tiny' to build the embedded policy.")
    tiny: TinyBuild = Field(default_factory=TinyBuild)
    backend: Literal["hf", "vllm"] = "hf"
    device: str = "cpu"


class ValueTraining(Section):
    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    heldout_fraction: float = Field(0.2, ge=0, lt=1)


class ValueSection(Section):
    enabled: bool = False
    init: str = Field("policy", description="'policy' (a value head on the current policy's trunk) or a value-model directory.")
    training: ValueTraining = Field(default_factory=ValueTraining)


class SearchSection(Section):
    """The search algorithm and its config, parsed into that algorithm's own config class (`MCTSConfig`, ...).

    Written back (config.yaml, `config_diff`) as the keys that were given, like any other mapping.
    """

    algo: str = "mcts"
    config: SearchConfig = Field(default_factory=dict, validate_default=True, description="The algorithm's config.")
    problems: int = Field(32, ge=1, description="Fresh training problems searched per iteration.")
    max_batch: int = Field(256, ge=1)

    @field_validator("algo")
    @classmethod
    def _known_algo(cls, algo: str) -> str:
        from search.registry import unknown_algorithm

        why = unknown_algorithm(algo, noun="algorithm")
        if why is not None:
            raise ValueError(why)
        return algo

    @field_validator("config", mode="before")
    @classmethod
    def _algo_config(cls, config: Any, info: ValidationInfo) -> Any:
        """The mapping as the config class of `algo` (when `algo` is valid; its own error comes first)."""
        from search.registry import ALGORITHMS

        algo = info.data.get("algo")
        if algo not in ALGORITHMS:
            return config
        cls = ALGORITHMS[algo][0]
        if isinstance(config, cls):
            return config
        if isinstance(config, BaseModel):
            config = config.model_dump(exclude_unset=True)
        return cls.model_validate({} if config is None else config)

    @field_serializer("config")
    def _given_keys(self, config: SearchConfig, info: SerializationInfo) -> dict[str, Any]:
        return config.model_dump(mode=info.mode, exclude_unset=True)


class PairsSection(Section):
    strategy: str = "q-gap"
    config: dict[str, Any] = Field(default_factory=dict, description="The strategy's config.")


class TrainSection(Section):
    loss: str = "step-dpo"
    beta: float = Field(0.1, gt=0)
    lr: float = Field(1e-4, gt=0)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    lora: bool = False
    max_length: int = Field(256, ge=8)
    options: dict[str, Any] = Field(default_factory=dict, description="Further keyword arguments for the trainer.")


class EvalSection(Section):
    problems: int = Field(100, ge=1, description="Held-out problems, fixed for the whole run.")
    k: int = Field(8, ge=1, description="Samples per problem for maj@k and pass@k.")
    temperature: float = Field(1.0, gt=0)
    search: bool = Field(False, description="Also evaluate the run's search algorithm on the held-out split.")
    max_batch: int = Field(256, ge=1)


class RunConfig(Section):
    name: str | None = Field(None, description="Run name; the run directory is runs/<name> (default: the file's stem).")
    seed: int = 0
    iterations: int = Field(3, ge=1)
    env: EnvSection = Field(default_factory=EnvSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    value: ValueSection = Field(default_factory=ValueSection)
    search: SearchSection = Field(default_factory=SearchSection)
    pairs: PairsSection = Field(default_factory=PairsSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --- overrides ------------------------------------------------------------------------------------
def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key.sub=value` pairs set into a copy of `raw`; the value is parsed as YAML (`3`, `true`, `[1]`)."""
    out = _deepcopy(raw)
    for item in overrides:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--set '{item}': expected key.sub=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"--set '{item}': the value is not valid YAML") from None
        node = out
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise UserError(f"--set '{item}': '{'.'.join(parts[:i + 1])}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


# --- loading and cross-checks ---------------------------------------------------------------------
def parse_config(raw: Any, source: str) -> RunConfig:
    """Validate a raw mapping (already overridden) and cross-check it; errors name `source` and the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        cfg = RunConfig(**raw)
    except ValidationError as e:
        raise UserError(pydantic_message(e, source)) from None
    check(cfg, source)
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read, override, validate and cross-check a run config file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    raw = apply_overrides(raw if raw is not None else {}, overrides) if isinstance(raw, dict) or raw is None \
        else raw
    cfg = parse_config(raw, str(path.name))
    if cfg.name is None:
        cfg.name = path.stem
    return cfg


def _field_error(source: str, field: str, msg: str) -> UserError:
    return UserError(f"{source}: field '{field}': {msg}")


def _sub_error(source: str, prefix: str, err: UserError | ValidationError) -> UserError:
    """Re-home a nested error (knob, algorithm or strategy config) under the config's field path."""
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        msg = "unknown key" if first.get("type") == "extra_forbidden" else first.get("msg", "invalid value")
        return _field_error(source, f"{prefix}.{loc}" if loc else prefix, msg)
    text = str(err)
    if "field '" in text:  # "<what>: field 'x': msg" from pydantic_message
        loc, _, msg = text.split("field '", 1)[1].partition("': ")
        return _field_error(source, f"{prefix}.{loc}", msg)
    return _field_error(source, prefix, text)


def check(cfg: RunConfig, source: str) -> None:
    """Cross-checks beyond the schema: names that must exist in registries, paths that must exist."""
    from envs.registry import make_env

    try:
        make_env(cfg.env.name, cfg.env.knobs)
    except UserError as e:
        field = "env.name" if "unknown environment" in str(e) else "env.knobs"
        raise _sub_error(source, field, e) from None

    from selfimprove.pairs import STRATEGIES, make_config

    if cfg.train.loss != "sft":
        if cfg.pairs.strategy not in STRATEGIES:
            raise _field_error(source, "pairs.strategy", f"unknown strategy '{cfg.pairs.strategy}' "
                                                         f"(choose from: {', '.join(STRATEGIES)})")
        try:
            make_config(cfg.pairs.strategy, cfg.pairs.config)
        except UserError as e:
            raise _sub_error(source, "pairs.config", e) from None
    if cfg.train.loss not in LOSSES:
        raise _field_error(source, "train.loss", f"unknown loss '{cfg.train.loss}' (choose from: {', '.join(LOSSES)})")
    if cfg.train.loss == "tpo" and cfg.pairs.strategy != "ranked-list":
        raise _field_error(source, "pairs.strategy", "loss 'tpo' trains on ranked lists: use strategy 'ranked-list'")

    if cfg.policy.path != TINY and not Path(cfg.policy.path).expanduser().exists():
        raise _field_error(source, "policy.path", f"model path '{cfg.policy.path}' does not exist")
    if cfg.value.enabled and cfg.value.init != "policy" and not Path(cfg.value.init).expanduser().exists():
        raise _field_error(source, "value.init", f"value model path '{cfg.value.init}' does not exist")


def config_diff(a: RunConfig, b: RunConfig) -> str | None:
    """The first dotted field where two configs differ, or None when they are equal."""
    def walk(x: Any, y: Any, prefix: str) -> str | None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(x) + [k for k in y if k not in x]:
                d = walk(x.get(k), y.get(k), f"{prefix}.{k}" if prefix else k)
                if d:
                    return d
            return None
        return None if x == y else prefix or "(top level)"

    return walk(a.model_dump(mode="json"), b.model_dump(mode="json"), "")
