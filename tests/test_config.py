"""Run-config validation: every bad config is one sentence naming the file and the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from envs.errors import UserError
from search.algorithms.beam import BeamConfig
from search.algorithms.mcts import MCTSConfig
from selfimprove.config import apply_overrides, config_diff, load_config

CLI = str(Path(sys.executable).parent / "selfimprove")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write(tmp_path: Path, data: dict, name: str = "config.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def base(tiny_dir: str = "tiny") -> dict:
    return {"env": {"name": "arithmetic"}, "policy": {"path": tiny_dir},
            "search": {"algo": "mcts", "config": {"simulations": 4}}}


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(UserError) as e:
        load_config(path, overrides)
    return str(e.value)


def test_valid_config_defaults_and_name(tmp_path, tiny_policy_dir):
    cfg = load_config(write(tmp_path, base(tiny_policy_dir), "my-run.yaml"))
    assert cfg.name == "my-run" and cfg.iterations == 3 and isinstance(cfg.search.config, MCTSConfig)
    assert cfg.search.config.model_dump(exclude_unset=True) == {"simulations": 4}
    assert cfg.train.loss == "step-dpo" and cfg.pairs.strategy == "q-gap"


@pytest.mark.parametrize("data, expected", [
    ({"serach": {}}, "config.yaml: field 'serach': unknown key"),
    ({"search": {"algo": "mcts", "problem": 3}}, "config.yaml: field 'search.problem': unknown key"),
    ({"iterations": "three"}, "config.yaml: field 'iterations': Input should be a valid integer"),
    ({"search": {"problems": 0}}, "config.yaml: field 'search.problems': Input should be greater than or equal to 1"),
    ({"search": {"algo": "mctz"}}, "config.yaml: field 'search.algo': unknown algorithm 'mctz'"),
    ({"search": {"algo": "mcts", "config": {"simulatons": 3}}},
     "config.yaml: field 'search.config.simulatons': unknown key"),
    ({"search": {"algo": "mcts", "config": {"simulations": "many"}}},
     "config.yaml: field 'search.config.simulations': Input should be a valid integer"),
    ({"pairs": {"strategy": "qgap"}}, "config.yaml: field 'pairs.strategy': unknown strategy 'qgap'"),
    ({"pairs": {"strategy": "q-gap", "config": {"min_gap": "big"}}}, "config.yaml: field 'pairs.config.min_gap'"),
    ({"train": {"loss": "dpp"}}, "config.yaml: field 'train.loss': unknown loss 'dpp'"),
    ({"train": {"loss": "tpo"}}, "config.yaml: field 'pairs.strategy': loss 'tpo' trains on ranked lists"),
    ({"env": {"name": "arithmetc"}}, "config.yaml: field 'env.name': unknown environment 'arithmetc'"),
    ({"env": {"name": "arithmetic", "knobs": {"max_ops": "x"}}}, "config.yaml: field 'env.knobs.max_ops'"),
    ({"env": {"name": "arithmetic", "knobs": {"colour": 1}}}, "config.yaml: field 'env.knobs.colour': unknown key"),
    ({"policy": {"path": "/no/such/model"}},
     "config.yaml: field 'policy.path': model path '/no/such/model' does not exist"),
    ({"value": {"enabled": True, "init": "/no/value"}},
     "config.yaml: field 'value.init': value model path '/no/value' does not exist"),
    ({"policy": {"backend": "onnx"}}, "config.yaml: field 'policy.backend': Input should be 'hf' or 'vllm'"),
])
def test_bad_configs_name_file_and_field(tmp_path, data, expected):
    msg = error_of(write(tmp_path, data))
    assert msg.startswith(expected), msg
    assert "\n" not in msg


def test_missing_file_and_bad_yaml(tmp_path):
    assert error_of(tmp_path / "nope.yaml").endswith("nope.yaml: config file not found")
    p = tmp_path / "config.yaml"
    p.write_text("search: {algo: mcts\n  x: [")
    assert "config.yaml:" in error_of(p) and "not valid YAML" in error_of(p)
    p.write_text("- 1\n- 2\n")
    assert "expected a mapping" in error_of(p)


def test_overrides(tmp_path):
    raw = {"search": {"algo": "mcts", "config": {"simulations": 4}}}
    out = apply_overrides(raw, ["search.config.simulations=8", "train.lora=true", "eval.k=4",
                                "env.knobs={max_ops: 2}", "name=x"])
    assert out["search"]["config"]["simulations"] == 8 and out["train"]["lora"] is True
    assert out["env"]["knobs"] == {"max_ops": 2} and out["eval"]["k"] == 4 and out["name"] == "x"
    assert raw["search"]["config"]["simulations"] == 4  # the input is not modified
    with pytest.raises(UserError, match=r"expected key\.sub=value"):
        apply_overrides(raw, ["search.algo"])
    with pytest.raises(UserError, match=r"'search\.algo' is not a section"):
        apply_overrides(raw, ["search.algo.x=1"])
    p = write(tmp_path, {"search": {"algo": "mcts"}})
    assert error_of(p, ["search.algo=mctz"]).startswith("config.yaml: field 'search.algo': unknown algorithm")
    assert load_config(p, ["iterations=5"]).iterations == 5


def test_config_diff(tmp_path):
    p = write(tmp_path, {"search": {"algo": "mcts"}})
    a, b = load_config(p), load_config(p, ["train.beta=0.2"])
    assert config_diff(a, a) is None and config_diff(a, b) == "train.beta"


def test_search_config_is_the_algorithms_own_class(tmp_path):
    p = write(tmp_path, {"search": {"algo": "beam"}})
    assert type(load_config(p).search.config) is BeamConfig
    cfg = load_config(write(tmp_path, {"search": {"algo": "mcts", "config": {"expand_n": 2}}}),
                      ["search.config.simulations=8"])
    mcts = cfg.search.config
    assert isinstance(mcts, MCTSConfig) and (mcts.simulations, mcts.expand_n) == (8, 2)
    # config.yaml keeps the keys that were given; reading it back gives the same config.
    dumped = yaml.safe_load(cfg.to_yaml())
    assert dumped["search"]["config"] == {"simulations": 8, "expand_n": 2}
    again = load_config(write(tmp_path, dumped, "again.yaml"))
    assert config_diff(cfg, again) is None and again.search.config == cfg.search.config
    assert config_diff(cfg, load_config(p, ["search.algo=mcts", "search.config.simulations=9",
                                           "search.config.expand_n=2"])) == "search.config.simulations"


def test_evaluation_takes_the_typed_search_config():
    from search.testing import ScriptedPolicy, ToyEnv, chain_sum_policy
    from selfimprove.evaluate import evaluate

    env = ToyEnv()
    probs = env.load("test", 6, seed=2)
    cfg = MCTSConfig(simulations=4)

    def run(config):
        out = evaluate(env, probs, ScriptedPolicy(chain_sum_policy()), k=2, search_algo="mcts", search_config=config)
        return {k: v for k, v in out.items() if not k.endswith("_s")}

    assert run(cfg) == run({"simulations": 4}) and run(cfg)["search_acc"] is not None
    assert cfg.verifier is True  # the held-out run hides the verifier on a copy


def test_examples_are_valid():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        load_config(path)


def test_cli_bad_config_is_one_sentence(tmp_path):
    p = write(tmp_path, {"search": {"algo": "mctz"}})
    res = subprocess.run([CLI, "run", str(p), "--out", str(tmp_path / "run")], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert res.returncode == 1
    assert "config.yaml: field 'search.algo': unknown algorithm 'mctz'" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "run").exists()


def test_sections_are_the_trainers_and_strategys_own_configs(tmp_path):
    from selfimprove.pairs.strategies import QGapConfig, RankedListConfig
    from selfimprove.train import PolicyTrainConfig, ValueTrainConfig

    cfg = load_config(write(tmp_path, {"pairs": {"config": {"nodes": "all"}},
                                       "train": {"warmup_steps": 5, "alpha": 0.5}}))
    assert isinstance(cfg.train, PolicyTrainConfig) and cfg.train.warmup_steps == 5 and cfg.train.lr == 1e-4
    assert isinstance(cfg.value.training, ValueTrainConfig) and cfg.value.training.epochs == 2
    assert isinstance(cfg.pairs.config, QGapConfig) and cfg.pairs.config.nodes == "all"
    # only what the file set is written back (an unset delimiter stays the env's at run time)
    assert yaml.safe_load(cfg.to_yaml())["pairs"]["config"] == {"nodes": "all"}
    lists = load_config(write(tmp_path, {"pairs": {"strategy": "ranked-list"}, "train": {"loss": "tpo"}}))
    assert isinstance(lists.pairs.config, RankedListConfig)
    # a config written before the trainer was typed: train.options becomes fields
    old = load_config(write(tmp_path, {"train": {"loss": "rpo", "options": {"alpha": 4.0}}}))
    assert old.train.alpha == 4.0 and config_diff(old, load_config(write(tmp_path, {"train": {
        "loss": "rpo", "alpha": 4.0}}))) is None


@pytest.mark.parametrize("data, expected", [
    ({"train": {"warmup": 5}}, "config.yaml: field 'train.warmup': unknown key"),
    ({"train": {"loss": "cdpo", "backend": "trl"}}, "config.yaml: field 'train.backend': loss 'cdpo' is not "
                                                    "available through TRL"),
    ({"train": {"options": {"bogus": 1}}}, "config.yaml: field 'train.bogus': unknown key"),
    ({"value": {"training": {"rank_weigth": 1}}}, "config.yaml: field 'value.training.rank_weigth': unknown key"),
])
def test_trainer_fields_are_checked_by_name(tmp_path, data, expected):
    assert error_of(write(tmp_path, data)).startswith(expected)


def test_train_cli_options_and_set_map_onto_the_config(tmp_path, capsys):
    from selfimprove.cli import main

    assert main(["train", "--policy", "x", "--data", "x", "--out", str(tmp_path / "o"), "--set", "warmup=3"]) == 1
    assert "train: field 'warmup': unknown key" in capsys.readouterr().err
    assert main(["train", "--policy", "x", "--data", "x", "--out", str(tmp_path / "o"), "--lr", "0"]) == 1
    assert "train: field 'lr': Input should be greater than 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
