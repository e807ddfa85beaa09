"""The loop scaled out: search and evaluation over 2 Ray workers, policy and value training each as a
2-process `accelerate launch` job (DDP over gloo on this CPU machine) — the same run as in one process."""

from __future__ import annotations

import json

import pytest
from test_loop import tiny_config, warm_policy_dir  # noqa: F401  # pyright: ignore[reportMissingImports]

from selfimprove.config import parse_config
from selfimprove.loop import run_loop


def _metrics(run, i: int = 0) -> dict:
    return json.loads((run / f"iter-{i:03d}" / "metrics.json").read_text())


@pytest.mark.slow
def test_loop_with_ray_workers_and_launched_training_matches_one_process(tmp_path, warm_policy_dir):  # noqa: F811
    pytest.importorskip("ray")
    base = tiny_config(warm_policy_dir, iterations=1)
    plain = run_loop(parse_config(base, "plain.yaml"), tmp_path / "plain")
    launch = {"launcher": "accelerate", "num_processes": 2}
    scaled_cfg = {**base, "search": {**base["search"], "workers": 2},
                  "train": {**base["train"], "launch": launch},
                  "value": {**base["value"], "training": {**base["value"]["training"], "launch": launch}}}
    scaled = run_loop(parse_config(scaled_cfg, "scaled.yaml"), tmp_path / "scaled")
    a, b = _metrics(tmp_path / "plain"), _metrics(tmp_path / "scaled")
    assert b["search"]["stats"]["workers"] == 2 and b["train"]["processes"] == 2
    for key in ("trees", "nodes", "tokens"):
        assert b["search"][key] == a["search"][key]
    assert b["pairs"]["count"] == a["pairs"]["count"] and b["train"]["steps"] == a["train"]["steps"]
    assert b["train"]["final_loss"] == pytest.approx(a["train"]["final_loss"], abs=1e-4)
    assert b["value"]["train_examples"] == a["value"]["train_examples"]
    assert b["value"]["final_loss"] == pytest.approx(a["value"]["final_loss"], abs=1e-3)
    assert [r["greedy_acc"] for r in scaled["rows"]] == [r["greedy_acc"] for r in plain["rows"]]
    assert not list((tmp_path / "scaled").glob("iter-*/.*"))  # no temp directories left behind
    import ray

    assert not ray.is_initialized()  # the run's local Ray runtime was shut down at its end


def test_a_launch_config_file_that_does_not_parse_is_one_sentence(tmp_path, warm_policy_dir):  # noqa: F811
    from envs.errors import UserError

    bad = tmp_path / "accel.yaml"
    bad.write_text("compute_environment: [LOCAL_MACHINE\n")
    cfg = tiny_config(warm_policy_dir)
    cfg["train"] = {**cfg["train"], "launch": {"launcher": "accelerate", "config_file": str(bad)}}
    with pytest.raises(UserError, match=r"run.yaml: field 'train.launch.config_file': .*accel.yaml' is not valid YAML"):
        parse_config(cfg, "run.yaml")


def test_a_resumed_run_may_change_where_its_work_runs(warm_policy_dir):  # noqa: F811
    from selfimprove.config import config_diff

    a = parse_config(tiny_config(warm_policy_dir), "a.yaml")
    moved = tiny_config(warm_policy_dir)
    moved["search"] = {**moved["search"], "workers": 4, "ray_address": "head:6379"}
    moved["train"] = {**moved["train"], "launch": {"launcher": "accelerate", "num_processes": 8}}
    assert config_diff(a, parse_config(moved, "b.yaml")) is None
    moved["search"]["problems"] = 5
    assert config_diff(a, parse_config(moved, "b.yaml")) == "search.problems"
