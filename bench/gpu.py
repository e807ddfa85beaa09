"""Device check, side by side on one accelerator (fits in 8 minutes on one H100/H200; `--device cpu --quick`
smokes it on a CPU in a couple of minutes).

Random-initialised models of real architectures and sizes (Qwen2-0.5B and Qwen2-1.5B configs built in
code; `--quick`: a small Qwen2) with the tiny byte-level tokenizer (the models' 151,936-token vocabulary is
kept, so sampling costs what it costs on the real model; ids the tokenizer lacks decode to nothing, so no
stop string fires and every row decodes the full budget). Needs PyTorch, transformers, peft; TRL only for
its row (skipped when not importable); no vLLM, no network.

1. Search decoding: our HF backend's `propose` (seeded on-device sampling, per-row stop checks, KV cache
   row dropping) vs plain `model.generate` (do_sample, same batch, same new tokens), tokens/s and peak
   memory, at batch 1/16/64/256 (quick: 1/4/16). Target: ours ≥ 0.7× generate at batch 64.
2. Training: our prefix-shared trainer vs TRL's `DPOTrainer` on the same step pairs (bf16 where the
   config has mixed precision), pair tokens/s and peak memory. Target: ≥ 2× TRL.
3. The dry-run memory estimate (`selfimprove.plan`) of the search and train stages vs the measured peaks.
   Target: within 20%.

Each measurement runs in its own subprocess (clean peak memory: CUDA's max_memory_allocated, or on CPU
the growth of peak RSS). Usage: ``python bench/gpu.py [--device cuda] [--quick] [--sizes 0.5b,1.5b]``.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QWEN2: dict[str, dict[str, Any]] = {  # the published Qwen2 configs' shapes (tied embeddings at these sizes)
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936},
    "1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
             "num_key_value_heads": 2, "vocab_size": 151936},
    "quick": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 8192},
}
PROMPT = "Q: start at 7 and add squares\n7+3*3=16\n16+2*2=20\n"
GIB = 1024 ** 3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_model(out: Path, size: str, dtype: str, device: str = "cpu") -> None:
    """A random-initialised Qwen2 of `size` with the tiny tokenizer, saved as an HF directory (initialised
    on `device`: seconds on a GPU for what takes a minute on a CPU)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from agents.tiny import train_tokenizer

    corpus = [f"Q: {a}+{b}*{b}={a + b * b}\n" for a in range(1, 30) for b in range(1, 10)]
    tok: Any = train_tokenizer(corpus, vocab_size=512)
    cfg = Qwen2Config(**QWEN2[size], max_position_embeddings=4096, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    model.save_pretrained(out)
    tok.save_pretrained(out)


class Peak:
    """Peak memory of what runs inside: CUDA's max_memory_allocated, or the growth of peak RSS on CPU."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = rss_bytes()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated()
        else:
            self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base
        return False


def worker_decode(a) -> dict:
    """One decoding measurement: `ours` (HFPolicy.propose) or `generate`, batch a.batch, a.tokens new tokens."""
    import torch

    from agents.hf import HFPolicy

    with Peak(a.device) as peak:
        pol = HFPolicy(a.model, device=a.device, dtype=a.dtype, max_batch=max(256, a.batch), seed=0)
        sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
        tok, model = pol.tokenizer, pol.model
        enc = tok([PROMPT] * a.batch, return_tensors="pt", padding=True).to(a.device)
        model.generation_config.pad_token_id = tok.pad_token_id

        def run() -> Any:
            if a.worker == "ours":
                return pol.propose([PROMPT], n=a.batch, stop=("\n\n\n",), temperature=1.0,
                                   max_step_tokens=a.tokens, seed=1)
            return model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                  max_new_tokens=a.tokens, min_new_tokens=a.tokens)
        # the first call warms up (kernels, allocator); its result is replaced below
        wall, out = float("inf"), run()
        for _ in range(2):  # best of two: a shared machine's noise only ever slows a run down
            sync()
            t0 = time.perf_counter()
            out = run()
            sync()
            wall = min(wall, time.perf_counter() - t0)
    if a.worker == "ours":
        produced = sum(s.num_tokens for row in out for s in row)
    else:
        produced = int(out.shape[0] * (out.shape[1] - enc["input_ids"].shape[1]))
    return {"tokens": produced, "wall_s": wall, "tokens_per_s": produced / wall, "peak_bytes": peak.bytes}


def step_pairs(n: int, seed: int = 0):
    """Step pairs with a shared multi-step prompt (the shape search produces)."""
    from selfimprove.pairs import PreferencePair

    rng = random.Random(seed)
    out = []
    for i in range(n):
        x, steps = rng.randint(1, 20), []
        for _ in range(6):
            y = rng.randint(1, 9)
            steps.append(f"{x}+{y}*{y}={x + y * y}")
            x += y * y
        prompt = f"Q: problem {i // 4} start at {steps[0].split('+')[0]}\n" + "".join(s + "\n" for s in steps)
        y = rng.randint(1, 9)
        out.append(PreferencePair(strategy="bench", prompt=prompt, chosen=f"{x}+{y}*{y}={x + y * y}\n",
                                  rejected=f"{x}+{y}*{y}={x + y * y + rng.choice([1, 2, 10])}\n"))
    return out


def train_config(a) -> dict:
    from selfimprove.train.config import PolicyTrainConfig

    cfg = {"loss": "dpo", "beta": 0.1, "lr": 1e-5, "epochs": 1, "batch_size": a.batch, "max_length": a.max_length,
           "backend": "trl" if a.worker == "trl" else "compact"}
    bf16 = a.device.startswith("cuda")
    if bf16 and "mixed_precision" in PolicyTrainConfig.model_fields:
        cfg["mixed_precision"] = "bf16"
    if a.worker == "trl":
        cfg["trl"] = {"bf16": bf16}
    return cfg


def worker_train(a) -> dict:

    from selfimprove.train.policy import fit_policy

    cfg = train_config(a)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-out-") as out, Peak(a.device) as peak:
        m = fit_policy(a.model, step_pairs(a.pairs), out, cfg, seed=0, device=a.device, dtype="float32")
    train_s = m["train_s"] + m.get("reference_s", 0.0)
    return {"tokens": m["tokens"], "train_s": train_s, "tokens_per_s": m["tokens"] / train_s, "steps": m["steps"],
            "peak_bytes": peak.bytes, "config": cfg}


def run_worker(kind: str, **kw) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", kind] + [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode != 0:
        print(f"  {kind} {kw.get('batch', '')}: failed: {res.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def estimates(model_dir: Path, device: str, a, batch: int) -> dict[str, int]:
    """The dry-run estimate of the search stage (decoding `batch` rows) and the train stage."""
    from selfimprove.config import parse_config
    from selfimprove.plan import _inference, _training, model_shape

    prompt_tokens = 40
    cfg = parse_config({"policy": {"path": str(model_dir), "device": "cpu"},
                        "search": {"max_batch": batch, "config": {"max_step_tokens": a.tokens}},
                        "train": train_config(argparse.Namespace(worker="ours", batch=a.train_batch,
                                                                 max_length=a.max_length, device=device))},
                       "bench")
    cfg.train.max_length = prompt_tokens  # the search stage's context: this prompt + the new tokens
    shape = model_shape(cfg)
    search = _inference("search", shape, cfg, device, a.dtype, batch, None).total
    cfg.train.max_length = a.max_length
    train = _training(shape, cfg, device, "float32").total
    return {"search": search, "train": train}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="A small Qwen2, batches 1/4/16, few pairs (CPU smoke).")
    ap.add_argument("--sizes", default="0.5b,1.5b")
    ap.add_argument("--dtype", default="auto", help="Decoding dtype (auto: bf16 on CUDA, fp32 on CPU).")
    ap.add_argument("--tokens", type=int, default=None, help="New tokens per row (default 64; quick 16).")
    ap.add_argument("--pairs", type=int, default=None)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--skip-train", action="store_true")
    # worker arguments
    ap.add_argument("--worker", choices=["ours", "generate", "trl", "compact"])
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    if a.worker:
        if a.worker in ("ours", "generate"):
            print(json.dumps(worker_decode(a)))
        else:
            a.worker = "trl" if a.worker == "trl" else "ours"
            print(json.dumps(worker_train(a)))
        return

    from agents.devices import placement

    where = placement(a.device, a.dtype, prefix="--")
    device, dtype = where.device, where.dtype
    sizes = ["quick"] if a.quick else a.sizes.split(",")
    batches = (1, 4, 16) if a.quick else (1, 16, 64, 256)
    tokens = a.tokens or (16 if a.quick else 64)
    pairs = a.pairs or (32 if a.quick else 256)
    a.tokens, a.dtype = tokens, dtype
    try:
        import trl  # noqa: F401
        has_trl = True
    except ImportError:
        has_trl = False
    import torch

    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    print(f"bench/gpu.py on {device} ({gpu}), decode dtype {dtype}, torch {torch.__version__}, "
          f"{tokens} new tokens per row, TRL {'yes' if has_trl else 'not installed'}", flush=True)
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench-gpu-{size}-") as tmp:
            model_dir = Path(tmp) / "model"
            make_model(model_dir, size, "bfloat16" if dtype == "bfloat16" else "float32", device)
            print(f"\nQwen2 {size} (random init): {QWEN2[size]}", flush=True)
            print(f"{'batch':>6}{'ours tok/s':>12}{'generate tok/s':>16}{'ratio':>8}{'ours peak':>11}{'gen peak':>10}"
                  f"{'estimate':>10}{'est/ours':>9}", flush=True)
            common = {"model": model_dir, "device": device, "dtype": dtype, "tokens": tokens}
            for b in batches:
                ours = run_worker("ours", batch=b, **common)
                gen = run_worker("generate", batch=b, **common)
                if ours is None or gen is None:
                    continue
                est = estimates(model_dir, device, a, b)["search"]
                print(f"{b:>6}{ours['tokens_per_s']:>12.0f}{gen['tokens_per_s']:>16.0f}"
                      f"{ours['tokens_per_s'] / gen['tokens_per_s']:>7.2f}x{ours['peak_bytes'] / GIB:>10.2f}G"
                      f"{gen['peak_bytes'] / GIB:>9.2f}G{est / GIB:>9.2f}G{est / max(1, ours['peak_bytes']):>8.2f}x",
                      flush=True)
            if a.skip_train:
                continue
            tcommon = {"model": model_dir, "device": device, "pairs": pairs, "batch": a.train_batch,
                       "max_length": a.max_length}
            rows: dict[str, Any] = {"ours": run_worker("compact", **tcommon)}
            if has_trl:
                rows["trl"] = run_worker("trl", **tcommon)
            est = estimates(model_dir, device, a, 1)["train"]
            print(f"\nDPO on {pairs} step pairs, batch {a.train_batch}, fp32 weights (estimate {est / GIB:.2f}G)")
            print(f"{'trainer':<8}{'precision':>11}{'tokens/s':>10}{'train s':>9}{'peak':>9}{'vs TRL':>8}{'est/peak':>10}")
            trl_row = rows.get("trl")
            for name, r in rows.items():
                if r is None:
                    continue
                vs = r["tokens_per_s"] / trl_row["tokens_per_s"] if trl_row else float("nan")
                c = r["config"]
                prec = "bf16" if c.get("mixed_precision") == "bf16" or c.get("trl", {}).get("bf16") else "fp32"
                print(f"{name:<8}{prec:>11}{r['tokens_per_s']:>10.0f}{r['train_s']:>9.2f}{r['peak_bytes'] / GIB:>8.2f}G"
                      f"{vs:>7.2f}x{est / max(1, r['peak_bytes']):>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
