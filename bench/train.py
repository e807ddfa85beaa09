"""Preference-training throughput: our prefix-shared trainer vs TRL's DPOTrainer, side by side.

Same tiny policy, same step pairs (long shared prompt = problem + several prefix steps, one-step
completions), same batch size, loss (DPO), optimizer steps and thread count. Each trainer runs in its own
subprocess; we report pair tokens per second (prompt + completion for chosen and for rejected, the
tokens a one-sequence-per-completion trainer processes; the same numerator for every row), wall time of
training including reference log-probs, and peak RSS growth during the run (ru_maxrss minus the RSS
before training). Usage: ``python bench/train.py [--pairs 256] [--batch-size 16] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_policy(out: Path, vocab: int, hidden: int, layers: int, seed: int) -> None:
    from agents.tiny import build_llama, train_tokenizer

    corpus = [f"Q: {a}+{b}*{c}-{d}\n{b}*{c}={b * c}\n{a}+{b * c}={a + b * c}\n{a + b * c}-{d}={a + b * c - d}\n"
              for a in range(1, 20) for b in range(1, 10) for c in range(1, 6) for d in range(1, 4)]
    tok = train_tokenizer(corpus, vocab_size=vocab)
    model = build_llama(tok, hidden=hidden, layers=layers, heads=4, intermediate=4 * hidden, seed=seed)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def make_pairs(n: int, prefix_steps: int, seed: int):
    """Step pairs at depth `prefix_steps`: the prompt renders the problem and the steps so far."""
    from selfimprove.pairs import PreferencePair

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = rng.randint(1, 20)
        steps = []
        for _ in range(prefix_steps):
            y = rng.randint(1, 9)
            steps.append(f"{x}+{y}*{y}={x + y * y}")
            x = x + y * y
        y = rng.randint(1, 9)
        prompt = f"Q: start at {steps[0].split('+')[0]} and add squares\n" + "".join(s + "\n" for s in steps)
        out.append(PreferencePair(strategy="bench", prompt=prompt, chosen=f"{x}+{y}*{y}={x + y * y}\n",
                                  rejected=f"{x}+{y}*{y}={x + y * y + rng.choice([1, 2, 10])}\n"))
    return out


def worker(args) -> None:
    import torch
    import trl  # noqa: F401  both workers import the same libraries before the baseline

    from selfimprove.train.policy import train_policy

    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    base = rss_mb()
    backend, share = {"ours": ("compact", True), "ours-noshare": ("compact", False), "trl": ("trl", True)}[args.worker]
    t0 = time.perf_counter()
    m = train_policy(args.policy, args.data, args.out, {"loss": "dpo", "beta": 0.1, "lr": 1e-4, "epochs": 1,
                     "batch_size": args.batch_size, "backend": backend, "share_prefix": share, "max_length": 512},
                     seed=0)
    total = time.perf_counter() - t0
    train_s = m["train_s"] + m.get("reference_s", 0.0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"name": args.worker, "steps": m["steps"], "tokens": m["tokens"], "train_s": train_s,
                      "tokens_per_s": m["tokens"] / train_s, "peak_rss_mb": peak, "rss_growth_mb": peak - base,
                      "total_s": total, "final_loss": m["final_loss"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--prefix-steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="Run each trainer this many times; keep the best.")
    ap.add_argument("--worker", choices=["ours", "ours-noshare", "trl"])
    ap.add_argument("--policy")
    ap.add_argument("--data")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from selfimprove.pairs import write_records

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        make_policy(tmp / "policy", args.vocab, args.hidden, args.layers, seed=0)
        data = tmp / "pairs.jsonl"
        pairs = make_pairs(args.pairs, args.prefix_steps, seed=0)
        write_records(data, pairs)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        rows = {}
        for _ in range(args.repeats):
            for name in ("trl", "ours-noshare", "ours"):
                cmd = [sys.executable, __file__, "--worker", name, "--policy", str(tmp / "policy"), "--data",
                       str(data), "--out", str(tmp / f"out-{name}"), "--batch-size", str(args.batch_size),
                       "--threads", str(args.threads)]
                res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                if res.returncode != 0:
                    sys.exit(f"{name} failed:\n{res.stderr[-3000:]}")
                row = json.loads(res.stdout.strip().splitlines()[-1])
                if name not in rows or row["tokens_per_s"] > rows[name]["tokens_per_s"]:
                    rows[name] = row
    trl_row = rows["trl"]
    print(f"DPO on {args.pairs} step pairs (prompt = problem + {args.prefix_steps} steps), batch {args.batch_size}, "
          f"{rows['ours']['steps']} steps, {args.threads} thread(s), Llama {args.layers}x{args.hidden}, "
          f"vocab {args.vocab}, best of {args.repeats}")
    print(f"{'trainer':<14}{'tokens/s':>11}{'train s':>9}{'peak RSS MB':>13}{'RSS growth MB':>15}{'speed vs TRL':>14}"
          f"{'mem growth vs TRL':>19}")
    for name in ("trl", "ours-noshare", "ours"):
        r = rows[name]
        print(f"{name:<14}{r['tokens_per_s']:>11.0f}{r['train_s']:>9.2f}{r['peak_rss_mb']:>13.0f}"
              f"{r['rss_growth_mb']:>15.1f}{r['tokens_per_s'] / trl_row['tokens_per_s']:>13.2f}x"
              f"{r['rss_growth_mb'] / max(trl_row['rss_growth_mb'], 1e-9):>18.2f}x")


if __name__ == "__main__":
    main()
