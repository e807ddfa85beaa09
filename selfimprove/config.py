"""The run configuration: one YAML file, validated by pydantic, with `--set key.sub=value` overrides.

Every section forbids unknown keys. The `train` section is the trainer's own config
(`selfimprove.train.config.PolicyTrainConfig`), `value.training` the value trainer's; `search.config` and
`pairs.config` are parsed into the algorithm's and the strategy's own config classes as the sections
validate. Cross-checks the schema cannot express (the environment and its knobs, model paths that must
exist) run in `check` after parsing; every failure is one sentence naming the file and the field,
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
    model_validator,
)

from envs.errors import UserError, pydantic_message
from envs.prompting import PromptConfig
from search.types import SearchConfig
from selfimprove.overrides import apply_overrides
from selfimprove.pairs.strategies import STRATEGIES, StrategyConfig
from selfimprove.train.config import PolicyTrainConfig, ValueTrainConfig
from selfimprove.vllm_section import VLLMSection

TINY = "tiny"
__all__ = ["TINY", "RunConfig", "apply_overrides", "check", "config_diff", "load_config", "parse_config"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvSection(Section):
    name: str = "arithmetic"
    knobs: dict[str, Any] = Field(default_factory=dict, description="The environment's config (its knobs).")


class TinyBuild(Section):
    """How `policy.path: tiny` builds the embedded policy (cached by these settings)."""

    steps: int | None = Field(default=None, ge=1, description="SFT steps; None = the builder's default.")
    seed: int = 0
    cache_dir: str = Field(default=".cache/tiny-policy", description="Built policies live here, one per setting.")


class PolicySection(Section):
    path: str = Field(default=TINY, description="An HF model directory or GGUF file, 'tiny' to build the embedded "
                                                "policy, or 'smollm2-135m' (SmolLM2-135M-Instruct, embedded).")
    tiny: TinyBuild = Field(default_factory=TinyBuild)
    backend: Literal["hf", "vllm"] = "hf"
    device: str = Field(default="auto", description="auto (CUDA GPU, else MPS, else CPU), cpu, cuda, cuda:N, mps: "
                        "where the HF backend, the value model and training run.")
    dtype: str = Field(default="auto", description="auto, bfloat16, float16, float32. auto: bf16 (fp16 without it) "
                       "on a GPU, fp32 on CPU; training keeps fp32 master weights unless a dtype is given.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        default="sdpa", description="Attention kernel for search and eval (training's packed block mask needs SDPA).")
    vllm: VLLMSection = Field(default_factory=VLLMSection)


class Launch(Section):
    """How the loop runs a training stage: in its own process ("inline"), or as a job of its own under
    `accelerate launch` (`selfimprove train` / `train-value` with this stage's config) on `num_processes`
    processes, with the accelerate config file the user names (DDP, FSDP, DeepSpeed ZeRO)."""

    launcher: Literal["inline", "accelerate"] = "inline"
    num_processes: int | None = Field(default=None, ge=1, description="Processes for accelerate launch "
                                      "(default: the config file's, else 1).")
    config_file: str | None = Field(default=None, description="An accelerate config file (accelerate config).")

    @field_validator("config_file")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is None:
            return v
        p = Path(v).expanduser()
        if not p.is_file():
            raise ValueError(f"accelerate config file '{v}' does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"accelerate config file '{v}' is not valid YAML ({getattr(e, 'problem', None) or e})") \
                from None
        if not isinstance(data, dict):
            raise ValueError(f"accelerate config file '{v}' is not a mapping of accelerate settings")
        return v


class ValueTraining(ValueTrainConfig):
    """The value trainer's config with the loop's defaults (a fresh head on the tiny policy learns fast)."""

    launch: Launch = Field(default_factory=Launch)

    epochs: int = Field(default=2, ge=1)
    lr: float = Field(default=1e-3, gt=0)


class ValueSection(Section):
    enabled: bool = False
    init: str = Field(default="policy", description="'policy' (a value head on the current policy's trunk) or a value-model directory.")
    training: ValueTraining = Field(default_factory=ValueTraining)


class SearchSection(Section):
    """The search algorithm and its config, parsed into that algorithm's own config class (`MCTSConfig`, ...).

    Written back (config.yaml, `config_diff`) as the keys that were given, like any other mapping.
    """

    algo: str = "mcts"
    config: SearchConfig = Field(default_factory=dict, validate_default=True, description="The algorithm's config.")
    problems: int = Field(default=32, ge=1, description="Fresh training problems searched per iteration.")
    max_batch: int = Field(default=256, ge=1)
    workers: int = Field(default=1, ge=1, description="Ray actors searching (and evaluating) shares of the "
                         "problems, each with its own backend; 1: in this process, no Ray.")
    ray_address: str | None = Field(default=None, description="A Ray cluster for the workers (host:port, "
                                    "ray://host:port, auto); default: a local runtime for the run.")

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
    config: StrategyConfig = Field(default_factory=StrategyConfig, validate_default=True,
                                   description="The strategy's config, parsed into the strategy's own class.")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy '{v}' (choose from: {', '.join(STRATEGIES)})")
        return v

    @field_validator("config", mode="before")
    @classmethod
    def _strategy_config(cls, v: Any, info) -> Any:
        strategy = info.data.get("strategy")  # absent when the strategy itself failed validation
        if strategy is None or isinstance(v, STRATEGIES[strategy].config):
            return v
        if isinstance(v, StrategyConfig):  # the default, or another strategy's: keep what it set
            v = v.model_dump(exclude_unset=True)
        return STRATEGIES[strategy].config.model_validate(v if v is not None else {})

    @field_serializer("config")
    def _set_fields_only(self, v: StrategyConfig) -> dict[str, Any]:
        """Only what the config set, as written (like any other mapping in config.yaml)."""
        return v.model_dump(mode="json", exclude_unset=True)


class TrainSection(PolicyTrainConfig):
    """The trainer's config with the loop's defaults (the tiny policy, short step completions).

    Older run configs held trainer keywords under `train.options`; they are read as fields of this section.
    `launch` says how the loop runs the stage (the trainer itself ignores it).
    """

    launch: Launch = Field(default_factory=Launch)

    lr: float = Field(default=1e-4, gt=0, description="Peak learning rate (AdamW).")
    max_length: int = Field(default=256, ge=8, description="Token limit of prompt + completion.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and "options" in data:
            data = dict(data)
            options = data.pop("options") or {}
            if not isinstance(options, dict):
                raise ValueError("'options' must be a mapping of trainer fields")
            both = sorted(set(options) & set(data))
            if both:
                raise ValueError(f"'{both[0]}' is set both in train and in train.options")
            data.update(options)
        return data


class EvalSection(Section):
    problems: int = Field(default=100, ge=1, description="Held-out problems, fixed for the whole run.")
    k: int = Field(default=8, ge=1, description="Samples per problem for maj@k and pass@k.")
    temperature: float = Field(default=1.0, gt=0)
    search: bool = Field(default=False, description="Also evaluate the run's search algorithm on the held-out split.")
    max_batch: int = Field(default=256, ge=1)


class RunConfig(Section):
    name: str | None = Field(default=None, description="Run name; the run directory is runs/<name> (default: the file's stem).")
    seed: int = 0
    iterations: int = Field(default=3, ge=1)
    env: EnvSection = Field(default_factory=EnvSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="How problems are put to the model.")
    value: ValueSection = Field(default_factory=ValueSection)
    search: SearchSection = Field(default_factory=SearchSection)
    pairs: PairsSection = Field(default_factory=PairsSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @model_validator(mode="after")
    def _pretrained_defaults(self) -> RunConfig:
        """An embedded pretrained policy trains with LoRA unless `train.lora` is set."""
        from agents.embedded import PRETRAINED_TRAIN_DEFAULTS, is_embedded

        if is_embedded(self.policy.path):
            for k, v in PRETRAINED_TRAIN_DEFAULTS.items():
                if k not in self.train.model_fields_set:
                    setattr(self.train, k, v)
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


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
    from envs.io import check_input_file

    path = check_input_file(path, "config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte at offset {e.start}); is this a binary file?") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if raw is None or raw == {}:
        raise UserError(f"{path}: the config file is empty; a run needs at least its env and policy (see "
                        f"examples/demo.yaml), so nothing was run")
    raw = apply_overrides(raw, overrides) if isinstance(raw, dict) else raw
    cfg = parse_config(raw, str(path.name))
    if cfg.name is None:
        cfg.name = path.stem
    return cfg


def _field_error(source: str, field: str, msg: str) -> UserError:
    return UserError(f"{source}: field '{field}': {msg}")


def _sub_error(source: str, prefix: str, err: ValidationError) -> UserError:
    """A nested config's validation error (knobs, algorithm config) under the run config's field path."""
    return UserError(pydantic_message(err, source, prefix=prefix))


def check(cfg: RunConfig, source: str) -> None:
    """Cross-checks beyond the schema: names that must exist in registries, paths that must exist."""
    from envs.registry import get_env_class

    try:
        env_cls = get_env_class(cfg.env.name)
    except UserError as e:
        raise _field_error(source, "env.name", str(e)) from None
    try:
        env_cls(env_cls.Config.model_validate(cfg.env.knobs))
    except ValidationError as e:
        raise _sub_error(source, "env.knobs", e) from None
    except UserError as e:
        raise _field_error(source, "env.knobs", str(e)) from None

    if cfg.train.loss == "tpo" and cfg.pairs.strategy != "ranked-list":
        raise _field_error(source, "pairs.strategy", "loss 'tpo' trains on ranked lists: use strategy 'ranked-list'")

    check_placement(cfg, source)
    from agents.embedded import is_embedded

    if cfg.policy.path != TINY and not is_embedded(cfg.policy.path) and not Path(cfg.policy.path).expanduser().exists():
        raise _field_error(source, "policy.path", f"model path '{cfg.policy.path}' does not exist")
    if cfg.value.enabled and cfg.value.init != "policy" and not Path(cfg.value.init).expanduser().exists():
        raise _field_error(source, "value.init", f"value model path '{cfg.value.init}' does not exist")


def check_placement(cfg: RunConfig, source: str) -> None:
    """The device exists, the dtype runs on it, the attention kernel is installed, QLoRA has CUDA, TRL
    options exist: one sentence naming the field, before any model loads."""
    from agents.devices import placement

    pol = cfg.policy
    try:
        where = placement(pol.device, pol.dtype, pol.attn_implementation, prefix="policy.")
        placement(pol.device, pol.dtype, "sdpa", training=True, prefix="policy.")
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    if cfg.train.qlora and not where.device.startswith("cuda"):
        raise _field_error(source, "train.qlora", f"QLoRA (bitsandbytes 4-bit) runs on CUDA only, not on "
                           f"'{where.device}' (policy.device)")


# Where a run's work happens, not what it computes: a resumed run may change these.
LAYOUT_FIELDS = ("policy.device", "search.workers", "search.ray_address", "train.launch", "value.training.launch")


def config_diff(a: RunConfig, b: RunConfig) -> str | None:
    """The first dotted field where two configs differ (LAYOUT_FIELDS aside), or None when they are equal."""
    def walk(x: Any, y: Any, prefix: str) -> str | None:
        if prefix in LAYOUT_FIELDS:
            return None
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(x) + [k for k in y if k not in x]:
                d = walk(x.get(k), y.get(k), f"{prefix}.{k}" if prefix else k)
                if d:
                    return d
            return None
        return None if x == y else prefix or "(top level)"

    return walk(a.model_dump(mode="json"), b.model_dump(mode="json"), "")
