"""Search over Ray actors (`selfimprove.ray_search`): the same trees as one worker, a killed worker's
share retried on another, progress summed over workers, clear errors, and no Ray at all with one worker.

The Ray tests share one small local cluster (`ray.init(num_cpus=2)`), started once for the module."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import partial

import pytest

from envs.errors import UserError
from envs.progress import Progress
from search.api import run_search
from search.testing import ScriptedPolicy, ToyEnv, chain_sum_policy
from search.tree import read_trees
from selfimprove.cli import main
from selfimprove.ray_search import shares

SMALL = ["--set", "max_depth=3", "--set", "max_step_tokens=6"]


def canonical(trees) -> list[dict]:
    """Trees as JSON objects, without the one field that is a wall-clock time."""
    return [{**t.to_json(), "stats": {k: v for k, v in t.stats.items() if k != "wall_s"}} for t in trees]


def close(a, b, rel: float = 1e-5) -> bool:
    """Equal JSON, floats within `rel` (the HF backend's logprobs move by ~1e-8 with the batch's shape)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b


def test_shares_are_contiguous_balanced_and_cover_every_problem():
    assert shares(10, 3) == [range(0, 3), range(3, 6), range(6, 10)]
    assert shares(2, 4) == [range(0, 1), range(1, 2)]  # never an empty share
    assert [i for s in shares(97, 8) for i in s] == list(range(97))


@pytest.mark.slow  # a fresh interpreter loading torch and transformers: ~12 s on the shared machine
def test_one_worker_never_imports_ray(tiny_policy_dir, tmp_path):
    code = ("import sys; from selfimprove.cli import main; "
            f"rc = main(['search', '--policy', {tiny_policy_dir!r}, '--env', 'arithmetic', '--algo', 'greedy', "
            f"'--problems', '2', '--workers', '1', '--out', {str(tmp_path / 't.jsonl')!r}, '--json']); "
            "assert rc == 0, rc; print('RAY' if 'ray' in sys.modules else 'NO-RAY')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "NO-RAY" and len(read_trees(tmp_path / "t.jsonl")) == 2


def test_unreachable_ray_address_is_one_sentence(tiny_policy_dir, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    rc = main(["search", "--policy", tiny_policy_dir, "--env", "arithmetic", "--problems", "2", "--workers", "2",
               "--ray-address", "127.0.0.1:9", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "--ray-address 127.0.0.1:9: no Ray cluster reachable there" in err
    assert "Traceback" not in err and not out.exists()


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class Seen(Progress):
    def __init__(self):
        self.updates: list[tuple[int, int | None]] = []

    def update(self, done, total=None, **info):
        self.updates.append((done, total))


@pytest.mark.slow
def test_two_workers_write_the_trees_one_writes(ray_cluster, tiny_policy_dir, tmp_path, capsys):
    """The CLI on the real HF backend: --workers 2 (two actors, each loading the policy) = --workers 1:
    every step, visit count, verdict and id; values and logprobs within 1e-5 (a batch of another shape
    rounds the last bits of a logprob differently)."""
    args = ["search", "--policy", tiny_policy_dir, "--env", "arithmetic", "--algo", "mcts", "--problems", "5",
            "--seed", "3", "--set", "simulations=4", "--set", "expand_n=2", *SMALL, "--json"]
    assert main([*args, "--out", str(tmp_path / "one.jsonl")]) == 0
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "two.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["workers"] == 2 and summary["problems"] == 5 and summary["retries"] == 0
    one, two = read_trees(tmp_path / "one.jsonl"), read_trees(tmp_path / "two.jsonl")
    assert close(canonical(two), canonical(one)) and len({t.id for t in two}) == 5


@pytest.mark.slow
def test_eval_over_two_workers_reports_what_one_reports(ray_cluster, tiny_policy_dir, capsys):
    args = ["eval", "--policy", tiny_policy_dir, "--env", "arithmetic", "--problems", "4", "--k", "2",
            "--search", "mcts", "--seed", "1", "--json"]
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*args, "--workers", "2"]) == 0
    two = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    timeless = lambda d: {k: v for k, v in d.items() if not k.endswith("_s")}  # noqa: E731
    assert close(timeless(two), timeless(one)) and one["problems"] == 4


@pytest.mark.slow
def test_a_killed_worker_has_its_share_retried_on_another(ray_cluster):
    """Worker 1 is killed while it searches (at the first progress report): its share is searched again
    by worker 0, and the trees are still the one-process trees; progress counts up to every problem."""
    from selfimprove.ray_search import SearchPool

    env = ToyEnv(ToyEnv.Config())
    problems = env.load("train", 8, 0)
    config = {"simulations": 6}
    local = run_search(env, problems, ScriptedPolicy(chain_sum_policy()), algo="mcts", config=config, seed=5)
    pool = SearchPool(2, partial(ToyEnv, ToyEnv.Config()),
                      partial(ScriptedPolicy, chain_sum_policy(), delay_s=0.15))  # each share takes seconds
    victim = pool.actors[1]

    class KillOnce(Seen):
        def update(self, done, total=None, **info):
            if victim in pool.actors:
                ray_cluster.kill(victim)
            super().update(done, total)

    seen = KillOnce()
    with pool:
        result = pool.run_search(env, problems, algo="mcts", config=config, seed=5, progress=seen)
    assert result.stats["retries"] == 1 and result.stats["workers"] == 2
    assert canonical(result.trees) == canonical(local.trees)
    assert all(t == 8 for _, t in seen.updates) and seen.updates[-1][0] == 8


@pytest.mark.slow
def test_evaluation_over_workers_matches_one_process(ray_cluster):
    from selfimprove.evaluate import evaluate
    from selfimprove.ray_search import SearchPool

    env = ToyEnv(ToyEnv.Config())
    problems = env.load("test", 6, 0)
    local = evaluate(env, problems, ScriptedPolicy(chain_sum_policy()), k=4, seed=2, search_algo="mcts",
                     search_config={"simulations": 4})
    with SearchPool(2, partial(ToyEnv, ToyEnv.Config()), partial(ScriptedPolicy, chain_sum_policy())) as pool:
        spread = evaluate(env, problems, None, k=4, seed=2, search_algo="mcts", search_config={"simulations": 4},
                          runner=pool.run_search)
    timeless = lambda d: {k: v for k, v in d.items() if not k.endswith("_s")}  # noqa: E731
    assert timeless(spread) == timeless(local)


@pytest.mark.slow
def test_more_workers_than_the_cluster_holds_is_one_sentence(ray_cluster):
    from selfimprove.ray_search import SearchPool

    with pytest.raises(UserError, match=r"--workers 3 needs 3 CPUs .* the Ray cluster has 2"):
        SearchPool(3, partial(ToyEnv, ToyEnv.Config()), partial(ScriptedPolicy, chain_sum_policy()))
