"""Search benchmark: ratios measured side by side in one run.

(a) bookkeeping speed: MCTS on the toy chain-sum task with the instant scripted backend (node
    expansions/s, and bookkeeping time per expansion = wall time outside backend calls / expansions);
(b) 64 problems on the tiny policy: cross-problem batching vs one problem at a time, same trees (asserted);
(c) share of wall time inside model calls (the batched run of (b));
(d) greedy vs best-of-N vs beam vs MCTS on the tiny policy at matched generated-token budgets: accuracy of
    the returned answer, and the share of problems whose tree holds a verified-correct answer; MCTS and
    beam with the outcome verifier alone and with the env's process verifier (`step_check`) too.

    .venv/bin/python bench/search.py [--policy DIR] [--problems 64] [--accuracy-problems 256] [--sims 32]
                                     [--threads N] [--json]

The environment is the demo's (examples/demo.yaml: `arithmetic` with its knobs); without --policy the
demo's tiny policy is built or reused from the same cache as `selfimprove demo`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

# Run as `python bench/search.py`, this file's folder comes first on sys.path and would shadow the
# `search` package: put the repository root there instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def compare_trees(a, b) -> tuple[bool, float]:
    """(same structure, max |logprob difference|). Structure = every node's parent, step, visits, value
    sum, terminal flag, score and answer. Logprobs may differ in the last float bits: a row's logits
    depend slightly on its batch-mates' padding."""
    key = lambda n: (n.parent, n.step, n.visits, n.value_sum, n.terminal, n.score, n.answer)  # noqa: E731
    same = all([key(n) for n in x] == [key(n) for n in y] for x, y in zip(a, b, strict=True))
    diff = max((abs(n.logprob - m.logprob) for x, y in zip(a, b, strict=True) for n, m in zip(x, y, strict=False)),
               default=0.0)
    return same, diff


def bench_bookkeeping(problems: int, sims: int) -> dict:
    from search.api import run_search
    from search.testing import ScriptedPolicy, ScriptedValue, ToyEnv, chain_sum_policy, chain_sum_value

    env = ToyEnv(max_steps=12)
    probs = env.load("test", problems, seed=0)
    out = {}
    for label, val in (("rollouts", None), ("value", ScriptedValue(chain_sum_value()))):
        pol = ScriptedPolicy(chain_sum_policy())
        r = run_search(env, probs, pol, val, algo="mcts", config={"simulations": sims})
        s = r.stats
        book = s["wall_s"] - s["model_s"]
        out[label] = {"expansions": s["expansions"], "nodes": s["nodes"], "simulations": s["simulations"],
                      "wall_s": round(s["wall_s"], 3),
                      "expansions_per_s": round(s["expansions"] / s["wall_s"]),
                      "simulations_per_s": round(s["simulations"] / s["wall_s"]),
                      "bookkeeping_us_per_expansion": round(1e6 * book / max(1, s["expansions"]), 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--policy", help="policy directory (default: the demo's tiny policy, built or reused)")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--sims", type=int, default=32)
    ap.add_argument("--accuracy-problems", type=int, default=256, help="problems for part (d)")
    ap.add_argument("--batching-sims", type=int, default=8, help="MCTS simulations for part (b)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads for every run (default: all cores; the batched runs use them, the "
                         "one-at-a-time runs are bound by per-call overhead)")
    ap.add_argument("--skip-sequential", action="store_true", help="skip the one-at-a-time run of (b)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    report: dict = {"threads": args.threads}
    print(f"torch threads: {args.threads}", flush=True)

    print("(a) bookkeeping, instant scripted backend", flush=True)
    report["a_bookkeeping"] = bench_bookkeeping(200, args.sims)
    for k, v in report["a_bookkeeping"].items():
        print(f"    mcts/{k}: {v['expansions_per_s']:,} expansions/s, {v['simulations_per_s']:,} simulations/s, "
              f"{v['bookkeeping_us_per_expansion']} µs bookkeeping per expansion", flush=True)

    import yaml

    from agents import load_policy
    from envs.registry import make_env
    from search.api import run_search
    from selfimprove.cli.run_cmd import demo_config_text
    from selfimprove.config import parse_config

    demo = parse_config(yaml.safe_load(demo_config_text()), "demo.yaml")
    policy_dir: str | None = args.policy
    if policy_dir is None:
        from selfimprove.loop import build_tiny_base

        t0 = time.perf_counter()
        built, info = build_tiny_base(demo)
        policy_dir = str(built)
        print(f"    tiny policy: greedy {info['greedy_accuracy']:.2f}, pass@16 {info['best_of_16_accuracy']:.2f} "
              f"({'cached' if info.get('cached') else f'built in {time.perf_counter() - t0:.0f} s'})", flush=True)
    env = make_env(demo.env.name, demo.env.knobs)
    probs = env.load("test", args.problems, seed=0)

    # (b) + (c): the same MCTS search, batched across problems vs one problem at a time; with one leaf per
    # problem per round (cross-problem batching alone) and with four (virtual loss adds in-tree batching).
    print(f"(b) {args.problems} problems, MCTS {args.batching_sims} simulations: batched vs one at a time",
          flush=True)
    for leaves in (1, 4):
        cfg = {"simulations": args.batching_sims, "parallel_leaves": leaves}
        batched = run_search(env, probs, load_policy(policy_dir, seed=0), algo="mcts", config=cfg, seed=0)
        b = batched.stats
        row: dict[str, Any] = {"batched": {k: b[k] for k in ("wall_s", "model_s", "backend_calls", "mean_batch",
                                                            "tokens")}}
        line = (f"    parallel_leaves={leaves}: batched {b['wall_s']:.1f} s ({b['backend_calls']} calls, "
                f"mean batch {b['mean_batch']:.1f})")
        if not args.skip_sequential:
            seq = run_search(env, probs, load_policy(policy_dir, seed=0), algo="mcts", config=cfg, seed=0,
                             max_active=1)
            q = seq.stats
            same, diff = compare_trees(batched.trees, seq.trees)
            row["sequential"] = {k: q[k] for k in ("wall_s", "model_s", "backend_calls", "mean_batch", "tokens")}
            row.update(speedup=q["wall_s"] / b["wall_s"], same_trees=same, max_logprob_diff=diff)
            line += (f"; one at a time {q['wall_s']:.1f} s ({q['backend_calls']} calls) -> batching "
                     f"{row['speedup']:.1f}x faster; same trees: {same} (logprobs within {diff:.1e})")
            assert same, "batched and one-at-a-time searches built different trees"
        print(line, flush=True)
        report[f"b_parallel_leaves_{leaves}"] = row
    shares = {k: v["batched"]["model_s"] / v["batched"]["wall_s"] for k, v in report.items() if k.startswith("b_")}
    report["c_model_share"] = shares
    print("(c) share of wall time inside model calls (batched runs): "
          + ", ".join(f"{k[2:]} {v:.1%}" for k, v in shares.items()), flush=True)

    # (d) accuracy at matched token budgets, on their own (larger) problem set: 64 problems is too few to
    # tell methods a few points apart.
    probs = env.load("test", args.accuracy_problems, seed=0)
    print(f"(d) accuracy on {len(probs)} problems at matched generated tokens", flush=True)
    pol = load_policy(policy_dir, seed=0)
    rows = {}

    def run(label, algo, config):
        r = run_search(env, probs, pol, algo=algo, config=config, seed=0)
        s = r.stats
        solved = sum(any(n.correct for n in t.terminals()) for t in r.trees) / len(probs)
        rows[label] = {"accuracy": s["accuracy"], "solved": solved, "tokens_per_problem": s["tokens"] / len(probs),
                       "wall_s": round(s["wall_s"], 1)}
        print(f"    {label:<44} answer accuracy {s['accuracy']:.3f}   verified answer found {solved:.3f}   "
              f"tokens/problem {rows[label]['tokens_per_problem']:6.1f}", flush=True)
        return s

    g = run("greedy", "greedy", {})
    per_solution = max(1.0, g["tokens"] / len(probs))
    # MCTS with the outcome verifier only, then with the env's process verifier too (`step_check`: a step
    # the calculator check rejects is a dead end); each is followed by best-of-N at its token budget.
    for label, cfg in (("mcts (outcome verifier)", {"simulations": args.sims}),
                       ("mcts (+ step check, expand_n=2)", {"simulations": args.sims, "step_check": True,
                                                            "expand_n": 2})):
        m = run(f"{label}, {args.sims} sims", "mcts", cfg)
        n = max(1, round(m["tokens"] / len(probs) / per_solution))
        run(f"  best_of_n majority (N={n})", "best_of_n", {"n": n, "vote": "majority"})
        run(f"  best_of_n verifier/pass@N (N={n})", "best_of_n", {"n": n, "vote": "verifier"})
        budget = max(1, round(m["tokens"] / len(probs)))
        run(f"  beam (k=8, n=4, verifier, {budget} tokens)", "beam",
            {"beam_width": 8, "expand_n": 4, "token_budget": budget})
        run(f"  beam (k=8, n=4, + step check, {budget} tokens)", "beam",
            {"beam_width": 8, "expand_n": 4, "token_budget": budget, "step_check": True})
    report["d_accuracy"] = rows
    if args.json:
        print(json.dumps(report, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
