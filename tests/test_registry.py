"""The registry and `selfimprove envs`: built-ins, reasoning-gym tasks, a real third-party entry point,
and one-sentence errors from the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from envs.arithmetic import ArithmeticEnv
from envs.errors import UserError
from envs.registry import env_source, list_envs, make_env

HERE = Path(__file__).parent
CLI = str(Path(sys.executable).parent / "selfimprove")


def run_cli(*args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=120)


# --- built-ins -------------------------------------------------------------------------------------
def test_list_envs_has_the_builtins_and_gym_tasks():
    infos = {i.name: i for i in list_envs()}
    for name in ("arithmetic", "countdown", "jsonl-math"):
        assert infos[name].kind == "math" and infos[name].source == "builtin" and infos[name].description
    gym = [n for n in infos if n.startswith("gym:")]
    assert len(gym) > 50 and "gym:chain_sum" in gym
    assert infos["gym:chain_sum"].source == "reasoning-gym"
    assert {i.name for i in list_envs(include_gym=False)}.isdisjoint(gym)


def test_make_env_builds_every_math_builtin():
    assert cast(ArithmeticEnv, make_env("arithmetic", max_ops=2)).config.max_ops == 2
    assert make_env("countdown").name == "countdown"
    assert make_env("gym:chain_sum").name == "gym:chain_sum"
    assert env_source("gym:chain_sum") == "reasoning-gym" and env_source("arithmetic") == "builtin"


def test_unknown_environment_lists_the_known_ones():
    with pytest.raises(UserError) as e:
        make_env("arithmatic")
    msg = str(e.value)
    assert "unknown environment 'arithmatic'" in msg and "did you mean 'arithmetic'" in msg
    for name in ("arithmetic", "countdown", "jsonl-math", "gym:<task>"):
        assert name in msg
    assert "\n" not in msg


def test_bad_knob_is_one_sentence():
    with pytest.raises(UserError, match=r"^environment 'arithmetic': field 'ops': ops may only contain"):
        make_env("arithmetic", ops="+/")


# --- CLI -------------------------------------------------------------------------------------------
def test_cli_envs_list_json_without_torch():
    code = ("import sys; from selfimprove.cli import main; rc = main(['envs', 'list', '--json']); "
            "assert 'torch' not in sys.modules, 'envs list imported torch'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    names = {r["name"] for r in rows}
    assert {"arithmetic", "countdown", "jsonl-math", "gym:chain_sum"} <= names
    assert all(set(r) == {"name", "kind", "source", "description"} for r in rows)


def test_cli_envs_show_json():
    out = run_cli("envs", "show", "arithmetic", "--set", "max_ops=2", "--set", "ops=+*", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    knobs = {k["name"]: k for k in summary["knobs"]}
    assert knobs["max_ops"]["value"] == 2 and knobs["max_ops"]["default"] == 4
    assert knobs["ops"]["value"] == "+*"
    sample = summary["sample"]
    assert sample["prompt"].startswith("Q: ") and sample["reference_steps"][-1].startswith("A: ")
    assert sample["verdict_of_reference"] == "correct"


def test_cli_envs_show_without_required_knobs_explains():
    out = run_cli("envs", "show", "jsonl-math", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["sample"] is None and "train_path" in summary["sample_unavailable"]
    out = run_cli("envs", "show", "jsonl-math", "--set", f"train_path={HERE / 'data' / 'gsm8k_train.jsonl'}")
    assert out.returncode == 0 and "reference: correct" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["envs", "show", "arithmatic"], "unknown environment 'arithmatic' (did you mean 'arithmetic'?)"),
    (["envs", "show", "gym:chain_summ"], "unknown reasoning-gym task 'chain_summ'; did you mean gym:chain_sum"),
    (["envs", "show", "arithmetic", "--set", "max_ops=1"], "field 'max_ops': max_ops (1) must be >= min_ops (2)"),
    (["envs", "show", "arithmetic", "--set", "max_ops"], "--set 'max_ops': expected key=value"),
    (["envs", "show", "jsonl-math", "--set", f"train_path={HERE / 'data' / 'missing_answer.jsonl'}"],
     "missing_answer.jsonl:2: field 'answer' is missing"),
])
def test_cli_errors_are_one_sentence_exit_1(args, message):
    out = run_cli(*args)
    assert out.returncode == 1
    assert message in " ".join(out.stderr.split())  # rich may wrap long lines
    assert "Traceback" not in out.stderr and out.stderr.strip().startswith("error:")


# --- a third-party environment through a real entry point -----------------------------------------
@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> str:
    """tests/plugin_pkg installed with pip into a fresh directory (not the test venv itself)."""
    root = tmp_path_factory.mktemp("plugin")
    src, target = root / "src", root / "site"
    shutil.copytree(HERE / "plugin_pkg", src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(src)],
                   check=True, timeout=300)
    assert list(target.glob("selfimprove_parity_env-*.dist-info/entry_points.txt"))
    return str(target)


@pytest.fixture
def plugin_on_path(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(plugin_site)
    yield plugin_site
    sys.modules.pop("selfimprove_parity_env", None)


def test_entry_point_env_is_listed_and_built(plugin_on_path):
    infos = {i.name: i for i in list_envs(include_gym=False)}
    assert infos["parity"].source == "entry point selfimprove_parity_env:ParityEnv"
    assert infos["parity"].kind == "math"
    assert infos["parity-broken"].kind == "?" and "not an Environment subclass" in infos["parity-broken"].description
    env = make_env("parity", max_value=10)
    problems = env.load("test", 5, seed=1)
    assert all(env.score(p, env.reference_steps(p) or []) == 1.0 for p in problems)
    with pytest.raises(UserError, match="field 'max_value'"):
        make_env("parity", max_value=0)
    with pytest.raises(UserError, match="not an Environment subclass"):
        make_env("parity-broken")
    with pytest.raises(UserError, match="parity"):  # the unknown-name message lists plug-ins too
        make_env("parrity")


def test_entry_point_env_absent_without_the_package():
    assert "parity" not in {i.name for i in list_envs(include_gym=False)}


def test_entry_point_env_through_the_cli(plugin_site):
    out = run_cli("envs", "list", "--no-gym", "--json", pythonpath=plugin_site)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout.strip().splitlines()[-1])}
    assert rows["parity"]["source"] == "entry point selfimprove_parity_env:ParityEnv"
    out = run_cli("envs", "show", "parity", "--json", pythonpath=plugin_site)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["source"].startswith("entry point") and summary["sample"]["verdict_of_reference"] == "correct"
    out = run_cli("envs", "show", "parity-broken", pythonpath=plugin_site)
    assert out.returncode == 1 and "not an Environment subclass" in out.stderr
