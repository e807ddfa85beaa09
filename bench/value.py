"""Value-model benchmark: does a value model learnt from search trees make search pay? Side by side, one run.

Per environment (the demo's `arithmetic` policy, and a tiny `countdown` policy), step check off:

1. training trees: MCTS (verifier at the leaves, re-expansion, stop once found) on fresh training problems;
2. a value model trained on them (MSE + sibling margin + sibling Bradley–Terry; held-out AUROC, ECE, by
   depth) and a Tree-PLV-style step verifier (the Bradley–Terry preference term alone);
3. on held-out problems: MCTS + value (re-expansion, stop once found) by simulations, each next to
   best-of-N (verifier = pass@N) at the N that matches its tokens: the share of problems with a verified
   answer in the tree ("found") and tokens per problem; the headline is the `--sims` budget;
4. test time (no gold verifier): MCTS + value answering by a value-weighted vote, best-of-16 by majority,
   by a vote weighted by the value model or the step verifier, and reranked (the single best-rated
   sample) by either: returned accuracy.

    .venv/bin/python bench/value.py [--quick] [--envs arithmetic,countdown] [--threads 1] [--json]

`--quick` (≈ 10 min on an idle 2-core machine) uses fewer problems; its last line is one JSON object with
`mcts_value_found`, `mcts_value_tokens`, `best_of_n_found`, `best_of_n_tokens`, `found_by_budget` (MCTS +
value, smallest budget first) and per-environment details. Policies come from the shared tiny-policy cache
(built on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The environments and the knobs of their tiny policies (arithmetic: the demo's).
COUNTDOWN_KNOBS = {"min_numbers": 3, "max_numbers": 3}
VALUE_TRAINING = {"epochs": 3, "lr": 1e-3, "heldout_fraction": 0.2, "batch_size": 32, "bt_weight": 1.0}
VERIFIER_TRAINING = {"epochs": 3, "lr": 1e-3, "heldout_fraction": 0.2, "batch_size": 32, "regression_weight": 0.0,
                     "rank_weight": 0.0, "bt_weight": 1.0}
WIDEN = {"widen": "reexpand", "stop_when_found": True}


def policy_for(env_name: str) -> tuple[str, dict, dict]:
    """(policy dir, env knobs, search knobs) of the tiny policy for `env_name`, built on first use."""
    import yaml

    from selfimprove.cli.run_cmd import demo_config_text
    from selfimprove.config import parse_config
    from selfimprove.loop import build_tiny_base

    demo = parse_config(yaml.safe_load(demo_config_text()), "demo.yaml")
    search = {k: v for k, v in demo.search.config.model_dump().items() if k in ("max_depth", "max_step_tokens")}
    if env_name == "countdown":
        demo = demo.model_copy(update={"env": demo.env.model_copy(update={"name": "countdown",
                                                                          "knobs": COUNTDOWN_KNOBS})})
        search = {"max_depth": 6, "max_step_tokens": 24}
    elif env_name != "arithmetic":
        raise SystemExit(f"bench/value.py: unknown environment '{env_name}' (arithmetic or countdown)")
    built, info = build_tiny_base(demo)
    print(f"  policy {built}: greedy {info['greedy_accuracy']:.2f}, pass@16 {info['best_of_16_accuracy']:.2f}",
          flush=True)
    return str(built), dict(demo.env.knobs), search


def found(trees) -> float:
    return sum(any(n.correct for n in t.terminals()) for t in trees) / max(1, len(trees))


def bench_env(env_name: str, a: argparse.Namespace) -> dict[str, Any]:
    from agents import load_policy
    from agents.value import HFValueModel
    from envs.registry import make_env
    from search.api import run_search
    from selfimprove.train.value import fit_value

    print(f"== {env_name}", flush=True)
    policy_dir, knobs, sk = policy_for(env_name)
    env = make_env(env_name, knobs)
    pol = load_policy(policy_dir, seed=0)
    out: dict[str, Any] = {"env": env_name, "knobs": knobs, "policy": policy_dir}

    def search(probs, algo, cfg, value=None, label=""):
        t0 = time.perf_counter()
        r = run_search(env, probs, pol, value, algo=algo, config={**sk, **cfg}, seed=0)
        row = {"found": found(r.trees), "accuracy": r.stats["accuracy"],
               "tokens": r.stats["tokens"] / max(1, len(probs)), "wall_s": round(time.perf_counter() - t0, 1)}
        if label:
            print(f"    {label:<46} found {row['found']:.3f}  returned {row['accuracy']:.3f}  "
                  f"tokens/problem {row['tokens']:7.1f}  ({row['wall_s']} s)", flush=True)
        return r, row

    # 1. training trees
    train = env.load("train", a.train_problems, seed=1)
    r, row = search(train, "mcts", {"simulations": a.train_sims, "expand_n": 4, **WIDEN},
                    label=f"training trees: mcts {a.train_sims} sims, {len(train)} problems")
    out["training_search"] = row
    # 2. value model and step verifier
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name, cfg in (("value", VALUE_TRAINING), ("verifier", VERIFIER_TRAINING)):
            t0 = time.perf_counter()
            m = fit_value(r.trees, os.path.join(tmp, name), cfg, init_from=policy_dir, seed=0)
            out[f"{name}_training"] = {k: m[k] for k in ("train_examples", "heldout_examples", "heldout_auroc",
                                                         "heldout_ece", "heldout_pair_accuracy", "heldout_by_depth", "rank_pairs",
                                                         "bt_pairs", "steps")}
            print(f"  {name}: {m['train_examples']} examples, {m['steps']} steps, held-out AUROC "
                  f"{m['heldout_auroc']:.3f} (before {m['heldout_auroc_before']}), ECE {m['heldout_ece']:.3f}, "
                  f"sibling-pair accuracy {m['heldout_pair_accuracy']} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            print("    by depth: " + ", ".join(f"{d}: AUROC {v['auroc'] if v['auroc'] is None else round(v['auroc'], 3)}"
                                               f" ECE {v['ece']:.3f} (n={v['examples']})"
                                               for d, v in m["heldout_by_depth"].items()), flush=True)
            models[name] = HFValueModel(os.path.join(tmp, name))
        value, verifier = models["value"], models["verifier"]

        # 3. coverage on held-out problems
        test = env.load("test", a.test_problems, seed=0)
        print(f"  held-out: {len(test)} problems (verifier on: 'found' = a verified answer in the tree)", flush=True)
        _, one = search(test, "best_of_n", {"n": 1, "vote": "verifier"}, label="best-of-1")
        per_sample = one["tokens"]
        by_budget, matched = {}, {}
        for s in a.budgets:
            _, by_budget[s] = search(test, "mcts", {"simulations": s, "expand_n": 4, **WIDEN}, value,
                                     label=f"mcts + value, {s} sims")
            n = max(1, round(by_budget[s]["tokens"] / per_sample))
            _, matched[s] = search(test, "best_of_n", {"n": n, "vote": "verifier"},
                                   label=f"  best-of-{n} (pass@{n}, matched tokens)")
            matched[s]["n"] = n
        out["mcts_value_by_budget"] = {str(s): v for s, v in by_budget.items()}
        out["best_of_n_matched_by_budget"] = {str(s): v for s, v in matched.items()}
        if not a.quick:
            out["mcts_by_budget"] = {str(s): search(test, "mcts", {"simulations": s, "expand_n": 4, **WIDEN},
                                                    label=f"mcts (verifier only), {s} sims")[1] for s in a.budgets}
        if a.sims not in by_budget:
            raise SystemExit(f"bench/value.py: --sims {a.sims} is not one of the budgets {a.budgets}")
        out["headline"] = {"sims": a.sims, "mcts_value": by_budget[a.sims], "best_of_n": matched[a.sims]}

        # 4. test time: no gold verifier
        print("  test time (verifier off): returned accuracy", flush=True)
        tt = {}
        _, tt["mcts_value_answer_by_value"] = search(
            test, "mcts", {"simulations": a.sims, "expand_n": 4, "widen": "reexpand", "verifier": False,
                           "answer_rule": "value"}, value, label=f"mcts + value, {a.sims} sims, answer by value")
        for vote, vm, name in (("majority", None, "majority"), ("value", value, "vote weighted by value"),
                               ("value", verifier, "vote weighted by step verifier"),
                               ("rerank", value, "rerank by value"), ("rerank", verifier, "rerank by step verifier")):
            _, tt[f"best_of_{a.rerank_n}_{name.replace(' ', '_')}"] = search(
                test, "best_of_n", {"n": a.rerank_n, "vote": vote, "verifier": False}, vm,
                label=f"best-of-{a.rerank_n}, {name}")
        out["test_time"] = tt
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer problems (≈ 10 min on an idle machine)")
    ap.add_argument("--envs", default="arithmetic,countdown")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: like for like on a shared machine)")
    ap.add_argument("--sims", type=int, default=32, help="MCTS simulations of the headline comparison")
    ap.add_argument("--json", action="store_true", help="(the last line is always the JSON summary)")
    a = ap.parse_args(argv)
    a.train_problems, a.train_sims = (768, 32) if a.quick else (2048, 32)
    a.test_problems = 96 if a.quick else 256
    a.budgets = [8, 32, 128] if a.quick else [8, 16, 32, 64, 128]
    a.rerank_n = 16

    import torch

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    envs = [e.strip() for e in a.envs.split(",") if e.strip()]
    per_env = {e: bench_env(e, a) for e in envs}
    first = per_env[envs[0]]
    head = first["headline"]
    summary = {
        "env": envs[0], "sims": a.sims,
        "mcts_value_found": head["mcts_value"]["found"], "mcts_value_tokens": head["mcts_value"]["tokens"],
        "best_of_n_found": head["best_of_n"]["found"], "best_of_n_tokens": head["best_of_n"]["tokens"],
        "best_of_n": head["best_of_n"]["n"], "budgets": a.budgets,
        "found_by_budget": [first["mcts_value_by_budget"][str(s)]["found"] for s in a.budgets],
        "best_of_n_found_by_budget": [first["best_of_n_matched_by_budget"][str(s)]["found"] for s in a.budgets],
        "tokens_by_budget": [first["mcts_value_by_budget"][str(s)]["tokens"] for s in a.budgets],
        "value_auroc": first["value_training"]["heldout_auroc"], "value_ece": first["value_training"]["heldout_ece"],
        "verifier_auroc": first["verifier_training"]["heldout_auroc"],
        "majority_accuracy": first["test_time"][f"best_of_{a.rerank_n}_majority"]["accuracy"],
        "verifier_rerank_accuracy": first["test_time"][f"best_of_{a.rerank_n}_rerank_by_step_verifier"]["accuracy"],
        "value_rerank_accuracy": first["test_time"][f"best_of_{a.rerank_n}_rerank_by_value"]["accuracy"],
        "verifier_vote_accuracy":
            first["test_time"][f"best_of_{a.rerank_n}_vote_weighted_by_step_verifier"]["accuracy"],
        "value_vote_accuracy": first["test_time"][f"best_of_{a.rerank_n}_vote_weighted_by_value"]["accuracy"],
        "mcts_value_answer_accuracy": first["test_time"]["mcts_value_answer_by_value"]["accuracy"],
        "threads": a.threads, "wall_s": round(time.perf_counter() - t0, 1), "per_env": per_env,
    }
    print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
