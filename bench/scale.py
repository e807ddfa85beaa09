"""Scale-out benchmark: search over Ray workers, ratios measured side by side in one run.

(a) Ray's start-up cost: a local runtime (`ray.init` → first remote call), and (in (b)) two actors
    loading the tiny HF policy;
(b) real search on this machine: the demo's tiny policy, MCTS on the same problems in this process (no
    Ray), on 1 Ray worker and on 2 (each worker one CPU, one torch thread; same trees, checked), the three
    interleaved `--reps` times, medians;
(c) orchestration at scale, simulated: a scripted backend that sleeps a fixed latency per call (a model
    saturated at `--sim-batch` sequences per call), the same problems on 1 / 2 / 4 / 8 workers; the
    speed-up against 1 worker, over the worker count, says how close to linear the orchestration stays
    (its own cost: shards out, trees back as JSON, progress polls, merge).

    .venv/bin/python bench/scale.py [--policy DIR] [--problems 64] [--sims 8] [--reps 3] [--sim-problems 512]
                                    [--latency 0.02] [--sim-batch 16] [--json]

The machine is shared: its load average is printed beside the numbers. Worker counts above the CPU
count in (c) are logical Ray CPUs (the workers sleep in their backend calls).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def load() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.1f} / {la[1]:.1f} (1 / 5 min) on {os.cpu_count()} CPUs"


def same_trees(a, b) -> bool:
    key = lambda n: (n.parent, n.step, n.visits, n.terminal, n.score, n.answer)  # noqa: E731
    return all([key(n) for n in x] == [key(n) for n in y] for x, y in zip(a, b, strict=True))


def bench_startup() -> dict[str, float]:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    def ping() -> int:
        return 1

    ray.get(ping.remote())
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.shutdown()
    return {"ray_init_s": up, "ray_shutdown_s": time.perf_counter() - t0}


def bench_real(policy_dir: str, env_name: str, knobs: dict, problems: int, sims: int, reps: int) -> dict[str, Any]:
    """In process, 1 worker, 2 workers, interleaved `reps` times (the machine's load drifts): the same two
    actors serve both worker counts (the 1-worker runs use only the first), so start-up is measured once."""
    import statistics

    import ray
    import torch

    from agents import load_policy
    from envs.registry import make_env
    from search.api import run_search
    from selfimprove.ray_search import SearchPool

    torch.set_num_threads(1)
    env = make_env(env_name, knobs)
    probs = env.load("test", problems, seed=0)
    cfg = {"simulations": sims}
    policy = load_policy(policy_dir, seed=0)
    run_search(env, probs[:4], policy, algo="mcts", config=cfg, seed=0)  # warm-up, as the workers get below
    out: dict[str, Any] = {}
    times: dict[str, list[float]] = {"in_process": [], "workers_1": [], "workers_2": []}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        pool = SearchPool(2, partial(make_env, env_name, knobs), partial(load_policy, policy_dir, seed=0))
        out["actors_2_start_s"] = time.perf_counter() - t0
        both = list(pool.actors)
        with pool:
            pool.run_search(env, probs[:4], algo="mcts", config=cfg, seed=0)  # warm-up
            for _ in range(reps):
                t0 = time.perf_counter()
                local = run_search(env, probs, policy, algo="mcts", config=cfg, seed=0)
                times["in_process"].append(time.perf_counter() - t0)
                for n in (1, 2):
                    pool.actors = both[:n]
                    t0 = time.perf_counter()
                    res = pool.run_search(env, probs, algo="mcts", config=cfg, seed=0)
                    times[f"workers_{n}"].append(time.perf_counter() - t0)
                    out[f"workers_{n}_same_trees"] = same_trees(res.trees, local.trees)
            pool.actors = both
    finally:
        ray.shutdown()
    out["tokens"] = local.stats["tokens"]
    for k, v in times.items():
        out[f"{k}_s"] = statistics.median(v)
        out[f"{k}_all_s"] = v
    return out


def bench_simulated(problems: int, latency: float, batch: int, counts: tuple[int, ...]) -> dict[str, Any]:
    import ray

    from search.testing import ScriptedPolicy, ToyEnv, chain_sum_policy
    from selfimprove.ray_search import SearchPool

    env = ToyEnv(ToyEnv.Config())
    probs = env.load("train", problems, 0)
    cfg = {"simulations": 8, "expand_n": 2}
    make_policy = partial(ScriptedPolicy, chain_sum_policy(), delay_s=latency)
    out: dict[str, Any] = {}
    ray.init(num_cpus=max(counts), include_dashboard=False, log_to_driver=False)
    try:
        base_trees = None
        for n in counts:
            with SearchPool(n, partial(ToyEnv, ToyEnv.Config()), make_policy) as pool:
                t0 = time.perf_counter()
                res = pool.run_search(env, probs, algo="mcts", config=cfg, seed=0, max_batch=batch)
                out[f"workers_{n}_s"] = time.perf_counter() - t0
                out[f"workers_{n}_calls"] = res.stats["backend_calls"]
                out[f"workers_{n}_model_share"] = res.stats["model_share"]
            base_trees = base_trees or res.trees
            out[f"workers_{n}_same_trees"] = same_trees(res.trees, base_trees)
    finally:
        ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", help="policy directory (default: the demo's tiny policy, built or reused)")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--sims", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of (b)")
    ap.add_argument("--sim-problems", type=int, default=512)
    ap.add_argument("--latency", type=float, default=0.02, help="simulated seconds per backend call")
    ap.add_argument("--sim-batch", type=int, default=16, help="simulated sequences per backend call")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import yaml

    from selfimprove.cli.app import quiet_transformers
    from selfimprove.cli.run_cmd import demo_config_text
    from selfimprove.config import parse_config

    quiet_transformers()
    demo = parse_config(yaml.safe_load(demo_config_text()), "demo.yaml")
    policy_dir = args.policy
    if policy_dir is None:
        from selfimprove.loop import build_tiny_base

        policy_dir = str(build_tiny_base(demo)[0])
    result: dict[str, Any] = {"machine": load()}
    print(f"machine: {result['machine']}", flush=True)

    print("(a) Ray start-up", flush=True)
    result["startup"] = s = bench_startup()
    print(f"    local runtime up (ray.init → first task) {s['ray_init_s']:.1f} s, shutdown {s['ray_shutdown_s']:.1f} s",
          flush=True)

    print(f"(b) real search: tiny policy, MCTS {args.sims} simulations, {args.problems} problems", flush=True)
    result["real"] = r = bench_real(policy_dir, demo.env.name, dict(demo.env.knobs), args.problems, args.sims,
                                    args.reps)
    print(f"    2 actors loading the policy: {r['actors_2_start_s']:.1f} s", flush=True)
    print(f"    median of {args.reps} interleaved runs: in process (1 thread) {r['in_process_s']:.2f} s, 1 worker "
          f"{r['workers_1_s']:.2f} s, 2 workers {r['workers_2_s']:.2f} s → 2 workers {r['workers_1_s'] / r['workers_2_s']:.2f}× "
          f"1 worker, 1 worker {r['in_process_s'] / r['workers_1_s']:.2f}× in process (same trees: "
          f"{r['workers_1_same_trees']}, {r['workers_2_same_trees']})", flush=True)

    counts = (1, 2, 4, 8)
    print(f"(c) simulated: {args.sim_problems} problems, {args.latency * 1000:.0f} ms per call of ≤ {args.sim_batch} "
          "sequences", flush=True)
    result["simulated"] = m = bench_simulated(args.sim_problems, args.latency, args.sim_batch, counts)
    for n in counts:
        speedup = m["workers_1_s"] / m[f"workers_{n}_s"]
        m[f"workers_{n}_efficiency"] = speedup / n
        print(f"    {n} worker{'s' if n > 1 else ' '}: {m[f'workers_{n}_s']:6.2f} s, {m[f'workers_{n}_calls']} calls, "
              f"speed-up {speedup:.2f}× = {speedup / n:.2f} of linear; workers in backend calls "
              f"{m[f'workers_{n}_model_share']:.0%} of their time (same trees: {m[f'workers_{n}_same_trees']})",
              flush=True)
    print("    (more workers, more calls: each shard's last batch of a round is partial; the rest of the gap is "
          "orchestration: shards out, trees back, progress polls)", flush=True)
    result["machine_after"] = load()
    print(f"machine after: {result['machine_after']}", flush=True)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
